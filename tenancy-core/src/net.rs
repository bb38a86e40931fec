//! Address classes for server-side request forgery protection: which IP
//! addresses are public unicast, and why the others are not.
//!
//! Shared by every part of the SDK that connects to a URL someone else
//! typed (webhook endpoints, a tenant's identity provider): each resolves
//! the host, checks every address with [`classify`] and connects only to a
//! checked one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressClass {
    /// A public unicast address.
    Public,
    /// Loopback (127/8, ::1).
    Loopback,
    /// Private networks (10/8, 172.16/12, 192.168/16) and IPv6 unique-local (fc00::/7).
    Private,
    /// Link-local, including cloud metadata at 169.254.169.254 (169.254/16, fe80::/10).
    LinkLocal,
    /// Carrier-grade NAT (100.64/10).
    SharedAddressSpace,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// Multicast (224/4, ff00::/8).
    Multicast,
    /// Documentation, benchmarking and other reserved ranges.
    Reserved,
}

/// Classifies an address; IPv4-mapped and IPv4-compatible IPv6 addresses
/// are classified as the IPv4 address they carry.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) => AddressClass::Private,
        (172, 16..=31, _) => AddressClass::Private,
        (192, 168, _) => AddressClass::Private,
        (169, 254, _) => AddressClass::LinkLocal,
        (100, 64..=127, _) => AddressClass::SharedAddressSpace,
        (192, 0, 0) => AddressClass::Reserved, // IETF protocol assignments
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Reserved, // documentation
        (198, 18..=19, _) => AddressClass::Reserved, // benchmarking
        (192, 88, 99) => AddressClass::Reserved, // 6to4 relay anycast (deprecated)
        (224..=239, _, _) => AddressClass::Multicast,
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (240..=255, _, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let segments = ip.segments();
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::new(
            (segments[6] >> 8) as u8,
            segments[6] as u8,
            (segments[7] >> 8) as u8,
            segments[7] as u8,
        ));
    }
    let first = segments[0];
    match first {
        0xff00..=0xffff => AddressClass::Multicast,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        0xfec0..=0xfeff => AddressClass::Reserved, // site-local (deprecated)
        0xfc00..=0xfdff => AddressClass::Private,
        // 2001:db8::/32 documentation, 3fff::/20 documentation.
        0x2001 if segments[1] == 0x0db8 => AddressClass::Reserved,
        0x3fff if segments[1] < 0x1000 => AddressClass::Reserved,
        // 2001:2::/48 benchmarking; 2001::/23 other IETF assignments (incl. Teredo 2001::/32).
        0x2001 if segments[1] < 0x0200 => AddressClass::Reserved,
        // 64:ff9b:1::/48 local-use NAT64 (RFC 8215): the IPv4 address sits
        // in other bits for a /48 prefix (RFC 6052), and the translator is a
        // local one anyway: refused outright.
        0x0064 if segments[1] == 0xff9b && segments[2] == 0x0001 => AddressClass::Reserved,
        // 64:ff9b::/96 well-known NAT64: classify the embedded IPv4 (its
        // last 32 bits); the rest of 64:ff9b::/32 is not assigned.
        0x0064 if segments[1] == 0xff9b && segments[2..6] != [0, 0, 0, 0] => AddressClass::Reserved,
        0x0064 if segments[1] == 0xff9b => classify_v4(Ipv4Addr::new(
            (segments[6] >> 8) as u8,
            segments[6] as u8,
            (segments[7] >> 8) as u8,
            segments[7] as u8,
        )),
        // 2002::/16 6to4: the embedded IPv4 is in segments 1 and 2.
        0x2002 => classify_v4(Ipv4Addr::new(
            (segments[1] >> 8) as u8,
            segments[1] as u8,
            (segments[2] >> 8) as u8,
            segments[2] as u8,
        )),
        // 100::/64 discard-only.
        0x0100 if segments[1..4] == [0, 0, 0] => AddressClass::Reserved,
        // Only 2000::/3 is global unicast.
        0x2000..=0x3fff => AddressClass::Public,
        _ => AddressClass::Reserved,
    }
}
