//! Server-side request forgery protection: which addresses a webhook may
//! be sent to.
//!
//! The host name of an endpoint is resolved here, every resolved address
//! is checked, and the connection goes to a checked address (the HTTP
//! client's resolver checks again what it connects to), so a DNS answer
//! that changes between the check and the connection (rebinding) cannot
//! reach an internal address.

use std::net::{IpAddr, SocketAddr};

/// Which targets deliveries may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TargetPolicy {
    /// Public unicast addresses only, over `https` (the default).
    #[default]
    PublicOnly,
    /// Any address, and `http` too: for tests and development against a
    /// local receiver. Never in production.
    AllowPrivate,
}

impl TargetPolicy {
    /// Whether `ip` may be connected to.
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            TargetPolicy::AllowPrivate => true,
            TargetPolicy::PublicOnly => classify(ip) == AddressClass::Public,
        }
    }

    /// Whether plain `http` endpoints are accepted.
    pub fn allows_http(self) -> bool {
        self == TargetPolicy::AllowPrivate
    }
}

pub use tenancy_core::net::{AddressClass, classify};

/// A target refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetRefused {
    /// The URL is not an absolute `https` URL the policy accepts.
    #[error("the url scheme {0:?} is not allowed")]
    Scheme(String),
    /// The URL has no host.
    #[error("the url has no host")]
    NoHost,
    /// The host name did not resolve.
    #[error("the host {host:?} does not resolve")]
    Unresolvable {
        /// The host name.
        host: String,
    },
    /// The host resolves (or is) an address the policy refuses.
    #[error("the address {ip} of {host:?} is {class:?}, which is not allowed")]
    Address {
        /// The host as written in the URL.
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// Why it is refused.
        class: AddressClass,
    },
}

/// What a tenant is told when its endpoint's host resolves to an address
/// the policy refuses: the address and its class stay in the server's
/// logs, since they may describe the internal network.
pub const NON_PUBLIC_ADDRESS: &str = "the endpoint's host resolves to a non-public address";

impl TargetRefused {
    /// The refusal as a tenant may read it: [`TargetRefused::Address`]
    /// becomes [`NON_PUBLIC_ADDRESS`], without the resolved address or its
    /// class; the other variants only repeat what the tenant wrote.
    pub fn public_message(&self) -> String {
        match self {
            TargetRefused::Address { .. } => NON_PUBLIC_ADDRESS.to_owned(),
            other => other.to_string(),
        }
    }
}

/// Resolves `url`'s host and checks every address; returns them all.
pub async fn check_target(
    policy: TargetPolicy,
    url: &url::Url,
) -> Result<Vec<SocketAddr>, TargetRefused> {
    match url.scheme() {
        "https" => {}
        "http" if policy.allows_http() => {}
        other => return Err(TargetRefused::Scheme(other.to_owned())),
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let host = url.host().ok_or(TargetRefused::NoHost)?;
    let (name, addrs) = match host {
        url::Host::Ipv4(ip) => (ip.to_string(), vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        url::Host::Ipv6(ip) => (ip.to_string(), vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        url::Host::Domain(name) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| TargetRefused::Unresolvable {
                    host: name.to_owned(),
                })?
                .collect();
            (name.to_owned(), addrs)
        }
    };
    check_addrs(policy, &name, &addrs)?;
    Ok(addrs)
}

/// Refuses an empty list or any address the policy refuses.
pub(crate) fn check_addrs(
    policy: TargetPolicy,
    host: &str,
    addrs: &[SocketAddr],
) -> Result<(), TargetRefused> {
    if addrs.is_empty() {
        return Err(TargetRefused::Unresolvable {
            host: host.to_owned(),
        });
    }
    for addr in addrs {
        if !policy.allows(addr.ip()) {
            return Err(TargetRefused::Address {
                host: host.to_owned(),
                ip: addr.ip(),
                class: classify(addr.ip()),
            });
        }
    }
    Ok(())
}

/// The HTTP client's resolver: resolves and refuses what the policy
/// refuses, so the address connected to is always a checked one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedResolver(pub(crate) TargetPolicy);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Err(refused) = check_addrs(policy, &host, &addrs) {
                // The details go to the server log only: the error text
                // reaches the tenant's delivery log.
                tracing::warn!(%refused, "webhook connection refused by the target policy");
                return Err(refused.public_message().into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_known_ranges() {
        assert_eq!(v4("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(v4("10.0.0.1"), AddressClass::Private);
        assert_eq!(v4("172.16.0.1"), AddressClass::Private);
        assert_eq!(v4("172.31.255.255"), AddressClass::Private);
        assert_eq!(v4("172.32.0.1"), AddressClass::Public);
        assert_eq!(v4("192.168.1.1"), AddressClass::Private);
        assert_eq!(v4("169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(v4("100.64.0.1"), AddressClass::SharedAddressSpace);
        assert_eq!(v4("100.128.0.1"), AddressClass::Public);
        assert_eq!(v4("0.0.0.0"), AddressClass::Unspecified);
        assert_eq!(v4("255.255.255.255"), AddressClass::Broadcast);
        assert_eq!(v4("224.0.0.1"), AddressClass::Multicast);
        assert_eq!(v4("192.0.2.1"), AddressClass::Reserved);
        assert_eq!(v4("198.51.100.7"), AddressClass::Reserved);
        assert_eq!(v4("203.0.113.9"), AddressClass::Reserved);
        assert_eq!(v4("198.18.0.1"), AddressClass::Reserved);
        assert_eq!(v4("240.0.0.1"), AddressClass::Reserved);
        assert_eq!(v4("8.8.8.8"), AddressClass::Public);
        assert_eq!(v4("1.1.1.1"), AddressClass::Public);
        assert_eq!(v4("::1"), AddressClass::Loopback);
        assert_eq!(v4("::"), AddressClass::Unspecified);
        assert_eq!(v4("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(v4("fc00::1"), AddressClass::Private);
        assert_eq!(v4("fd12:3456::1"), AddressClass::Private);
        assert_eq!(v4("ff02::1"), AddressClass::Multicast);
        assert_eq!(v4("2001:db8::1"), AddressClass::Reserved);
        assert_eq!(v4("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(v4("::ffff:169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(v4("::10.0.0.1"), AddressClass::Private);
        assert_eq!(v4("64:ff9b::a00:1"), AddressClass::Private);
        assert_eq!(v4("64:ff9b::808:808"), AddressClass::Public);
        assert_eq!(v4("64:ff9b:1::808:808"), AddressClass::Reserved);
        assert_eq!(v4("64:ff9b:1:ffff::1"), AddressClass::Reserved);
        assert_eq!(v4("64:ff9b:0:0:1::808:808"), AddressClass::Reserved);
        assert_eq!(v4("2002:7f00:1::"), AddressClass::Loopback);
        assert_eq!(v4("2606:4700:4700::1111"), AddressClass::Public);
        assert_eq!(v4("::ffff:8.8.8.8"), AddressClass::Public);
    }

    proptest! {
        #[test]
        fn mapped_v6_is_classified_like_its_v4(bits in any::<u32>()) {
            let ip = Ipv4Addr::from(bits);
            prop_assert_eq!(classify(IpAddr::V6(ip.to_ipv6_mapped())), classify(IpAddr::V4(ip)));
        }

        #[test]
        fn private_ranges_are_never_public(host in any::<u32>(), range in 0usize..7) {
            let (base, prefix): (u32, u32) = [
                (0x7f00_0000, 8), (0x0a00_0000, 8), (0xac10_0000, 12), (0xc0a8_0000, 16),
                (0xa9fe_0000, 16), (0x6440_0000, 10), (0xe000_0000, 4),
            ][range];
            let mask = u32::MAX >> prefix;
            let ip = Ipv4Addr::from(base | (host & mask));
            prop_assert_ne!(classify(IpAddr::V4(ip)), AddressClass::Public);
            prop_assert!(!TargetPolicy::PublicOnly.allows(IpAddr::V4(ip)));
            prop_assert!(TargetPolicy::AllowPrivate.allows(IpAddr::V4(ip)));
        }

        #[test]
        fn v6_outside_global_unicast_is_never_public(segs in any::<[u16; 8]>()) {
            let ip = Ipv6Addr::from(segs);
            if !(0x2000..=0x3fff).contains(&segs[0]) && ip.to_ipv4_mapped().is_none()
                && segs[..6] != [0; 6] && !(segs[0] == 0x64 && segs[1] == 0xff9b) {
                prop_assert_ne!(classify(IpAddr::V6(ip)), AddressClass::Public);
            }
        }
    }

    #[test]
    fn public_message_hides_the_resolved_address() {
        let refused = TargetRefused::Address {
            host: "db.internal.corp".to_owned(),
            ip: "10.1.2.3".parse().unwrap(),
            class: AddressClass::Private,
        };
        assert!(refused.to_string().contains("10.1.2.3"));
        let public = refused.public_message();
        assert_eq!(public, NON_PUBLIC_ADDRESS);
        assert!(!public.contains("10.1.2.3") && !public.contains("Private"));
        let scheme = TargetRefused::Scheme("ftp".to_owned());
        assert_eq!(scheme.public_message(), scheme.to_string());
    }

    proptest! {
        #[test]
        fn local_use_nat64_is_never_public(rest in any::<[u16; 5]>()) {
            let mut segs = [0x64, 0xff9b, 1, 0, 0, 0, 0, 0];
            segs[3..].copy_from_slice(&rest);
            let ip = IpAddr::V6(Ipv6Addr::from(segs));
            prop_assert_eq!(classify(ip), AddressClass::Reserved);
        }
    }

    #[tokio::test]
    async fn refuses_internal_targets_by_default() {
        for url in [
            "https://127.0.0.1/hook",
            "https://10.0.0.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://localhost/hook",
        ] {
            let url = url::Url::parse(url).unwrap();
            let err = check_target(TargetPolicy::PublicOnly, &url)
                .await
                .unwrap_err();
            assert!(
                matches!(err, TargetRefused::Address { .. }),
                "{url}: {err:?}"
            );
        }
        let http = url::Url::parse("http://8.8.8.8/").unwrap();
        assert!(matches!(
            check_target(TargetPolicy::PublicOnly, &http).await,
            Err(TargetRefused::Scheme(_))
        ));
        let public = url::Url::parse("https://8.8.8.8/").unwrap();
        assert!(
            check_target(TargetPolicy::PublicOnly, &public)
                .await
                .is_ok()
        );
        let local = url::Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(
            check_target(TargetPolicy::AllowPrivate, &local)
                .await
                .is_ok()
        );
    }
}
