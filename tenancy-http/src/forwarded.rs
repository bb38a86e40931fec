//! Who is calling, behind reverse proxies: the client address, scheme and
//! host that RFC 7239 `Forwarded` or `X-Forwarded-*` headers carry,
//! believed only as far as the host's own proxies wrote them.
//!
//! Anyone can send these headers, so by default they are ignored and the
//! client is the socket's peer. With [`TrustedProxies`], the pipeline walks
//! the chain from the nearest hop outwards and stops at the first address
//! that is not one of the host's proxies: that is the client. Whatever a
//! client wrote to the left of it is never read.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
pub use ipnet::IpNet;

/// The header a host's proxies append the chain to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// RFC 7239 `Forwarded: for=…;proto=…;host=…`, one element per hop.
    Forwarded,
    /// `X-Forwarded-For: client, proxy1, …`; the scheme and host come from
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`, which the proxies must
    /// set (overwrite), not append to.
    XForwardedFor,
}

/// Which peers may tell the pipeline who the client is.
///
/// ```
/// use tenancy_http::{ForwardedHeader, TrustedProxies};
///
/// // One load balancer in front of the app, appending to X-Forwarded-For.
/// let one = TrustedProxies::count(1, ForwardedHeader::XForwardedFor);
/// // Proxies in private networks, writing RFC 7239 `Forwarded`.
/// let private = TrustedProxies::networks(
///     ["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
///     ForwardedHeader::Forwarded,
/// );
/// assert_ne!(one, private);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TrustedProxies {
    /// No proxy: the client is the socket's peer; forwarding headers are
    /// ignored (default).
    #[default]
    None,
    /// The nearest `hops` hops (the peer included) are the host's proxies:
    /// the client is the `hops`-th address from the right of the chain.
    Count {
        /// How many proxies stand in front of the app.
        hops: usize,
        /// The header they append to.
        header: ForwardedHeader,
    },
    /// Peers and hops inside these networks are the host's proxies: the
    /// client is the rightmost address outside them.
    Networks {
        /// The proxies' networks.
        networks: Vec<IpNet>,
        /// The header they append to.
        header: ForwardedHeader,
    },
}

impl TrustedProxies {
    /// `hops` proxies in front of the app, appending to `header`.
    pub fn count(hops: usize, header: ForwardedHeader) -> Self {
        Self::Count { hops, header }
    }

    /// Proxies inside `networks`, appending to `header`.
    pub fn networks(networks: impl IntoIterator<Item = IpNet>, header: ForwardedHeader) -> Self {
        Self::Networks {
            networks: networks.into_iter().collect(),
            header,
        }
    }
}

/// The client as the proxies saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// The client's address: the peer, or the one the proxies name.
    pub(crate) ip: Option<IpAddr>,
    /// The scheme the client used, when a trusted proxy said so.
    pub(crate) proto: Option<String>,
    /// The host the client asked for, when a trusted proxy said so.
    pub(crate) host: Option<String>,
}

/// Longest chain read; hops beyond it (to the left) are never reached.
const MAX_HOPS: usize = 64;

#[derive(Debug, Default)]
struct Hop {
    node: Option<IpAddr>,
    proto: Option<String>,
    host: Option<String>,
}

/// Resolves the client of a request whose socket peer is `peer`.
pub(crate) fn resolve(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    proxies: &TrustedProxies,
) -> Forwarded {
    let direct = Forwarded {
        ip: peer,
        ..Forwarded::default()
    };
    let (header, trusted): (ForwardedHeader, Box<dyn Fn(usize, IpAddr) -> bool + '_>) =
        match proxies {
            TrustedProxies::None => return direct,
            TrustedProxies::Count { hops, header } => {
                (*header, Box::new(move |depth, _| depth < *hops))
            }
            TrustedProxies::Networks { networks, header } => (
                *header,
                Box::new(move |_, ip| networks.iter().any(|net| net.contains(&canonical(ip)))),
            ),
        };
    let Some(peer) = peer else { return direct };
    if !trusted(0, peer) {
        return direct;
    }
    let hops = match header {
        ForwardedHeader::Forwarded => forwarded_hops(headers),
        ForwardedHeader::XForwardedFor => x_forwarded_hops(headers),
    };
    // Walk from the nearest hop outwards; the last trusted address stands
    // in for a client a proxy could not name.
    let mut last_trusted = peer;
    let mut chosen: Option<&Hop> = None;
    for (depth, hop) in hops.iter().rev().enumerate().map(|(i, hop)| (i + 1, hop)) {
        chosen = Some(hop);
        match hop.node {
            Some(ip) if trusted(depth, ip) => last_trusted = ip,
            _ => break,
        }
    }
    let mut forwarded = match chosen {
        Some(hop) => Forwarded {
            ip: Some(hop.node.unwrap_or(last_trusted)),
            proto: hop.proto.clone(),
            host: hop.host.clone(),
        },
        None => direct,
    };
    if header == ForwardedHeader::XForwardedFor {
        forwarded.proto = first_value(headers, "x-forwarded-proto");
        forwarded.host = first_value(headers, "x-forwarded-host");
    }
    forwarded
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as dual-stack sockets
/// report IPv4 peers) compare as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_ascii_lowercase())
}

fn x_forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops: Vec<Hop> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().ok().unwrap_or("").split(','))
        .map(|entry| Hop {
            node: parse_node(entry.trim()),
            ..Hop::default()
        })
        .collect();
    keep_nearest(&mut hops);
    hops
}

fn forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        // A header that is not text is a hop nobody can name.
        let Ok(text) = value.to_str() else {
            hops.push(Hop::default());
            continue;
        };
        for element in split_outside_quotes(text, ',') {
            let mut hop = Hop::default();
            for pair in split_outside_quotes(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = unquote(value.trim());
                match name.trim().to_ascii_lowercase().as_str() {
                    "for" => hop.node = parse_node(&value),
                    "proto" => hop.proto = Some(value.to_ascii_lowercase()),
                    "host" => hop.host = Some(value.to_ascii_lowercase()),
                    _ => {}
                }
            }
            hops.push(hop);
        }
    }
    keep_nearest(&mut hops);
    hops
}

fn keep_nearest(hops: &mut Vec<Hop>) {
    if hops.len() > MAX_HOPS {
        hops.drain(..hops.len() - MAX_HOPS);
    }
}

/// Splits on `separator` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(value: &str) -> String {
    match value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    out.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// An RFC 7239 node (`192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:80`) or a
/// bare address; `unknown` and obfuscated names are no address.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    let inner = node.strip_prefix('[')?.split_once(']')?.0;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const PEER: &str = "10.0.0.1";

    #[test]
    fn untrusted_by_default() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.7;proto=https"),
        ]);
        let client = resolve(&h, Some(ip(PEER)), &TrustedProxies::None);
        assert_eq!(client.ip, Some(ip(PEER)));
        assert_eq!(client.proto, None);
    }

    #[test]
    fn counted_proxies_take_the_hop_they_wrote() {
        let one = TrustedProxies::count(1, ForwardedHeader::XForwardedFor);
        // The client forged the first entry; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(
            resolve(&h, Some(ip(PEER)), &one).ip,
            Some(ip("203.0.113.9"))
        );
        let two = TrustedProxies::count(2, ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.7")]);
        assert_eq!(
            resolve(&h, Some(ip(PEER)), &two).ip,
            Some(ip("203.0.113.9"))
        );
        // Split over two header lines, same chain.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.7"),
        ]);
        assert_eq!(
            resolve(&h, Some(ip(PEER)), &two).ip,
            Some(ip("203.0.113.9"))
        );
        // No header: the peer.
        assert_eq!(
            resolve(&HeaderMap::new(), Some(ip(PEER)), &one).ip,
            Some(ip(PEER))
        );
        // Zero proxies trusts nothing.
        let zero = TrustedProxies::count(0, ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(resolve(&h, Some(ip(PEER)), &zero).ip, Some(ip(PEER)));
    }

    #[test]
    fn networks_stop_at_the_first_outsider() {
        let private = TrustedProxies::networks(
            ["10.0.0.0/8".parse().unwrap()],
            ForwardedHeader::XForwardedFor,
        );
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(
            resolve(&h, Some(ip(PEER)), &private).ip,
            Some(ip("203.0.113.9"))
        );
        // A peer outside the networks is the client, whatever it claims.
        assert_eq!(
            resolve(&h, Some(ip("198.51.100.1")), &private).ip,
            Some(ip("198.51.100.1"))
        );
        // IPv4 peers seen through a dual-stack socket.
        assert_eq!(
            resolve(&h, Some(ip("::ffff:10.0.0.1")), &private).ip,
            Some(ip("203.0.113.9"))
        );
        // A garbled hop next to a proxy: the proxy's address stands in.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, garbage")]);
        assert_eq!(resolve(&h, Some(ip(PEER)), &private).ip, Some(ip(PEER)));
    }

    #[test]
    fn rfc_7239_elements() {
        let one = TrustedProxies::count(1, ForwardedHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            r#"for=1.2.3.4;proto=http, For="[2001:db8:cafe::17]:4711";proto=HTTPS;host="App.Example:8443""#,
        )]);
        let client = resolve(&h, Some(ip(PEER)), &one);
        assert_eq!(client.ip, Some(ip("2001:db8:cafe::17")));
        assert_eq!(client.proto.as_deref(), Some("https"));
        assert_eq!(client.host.as_deref(), Some("app.example:8443"));
        // Commas and semicolons inside quotes do not split.
        let h = headers(&[("forwarded", r#"for="198.51.100.7:80";host="a,b;c""#)]);
        let client = resolve(&h, Some(ip(PEER)), &one);
        assert_eq!(client.ip, Some(ip("198.51.100.7")));
        assert_eq!(client.host.as_deref(), Some("a,b;c"));
        // `unknown` and obfuscated nodes name no one: the proxy stands in.
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(resolve(&h, Some(ip(PEER)), &one).ip, Some(ip(PEER)));
        let h = headers(&[("forwarded", "for=_hidden;proto=https")]);
        assert_eq!(resolve(&h, Some(ip(PEER)), &one).ip, Some(ip(PEER)));
        // X-Forwarded-For is not read in Forwarded mode.
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(resolve(&h, Some(ip(PEER)), &one).ip, Some(ip(PEER)));
    }

    #[test]
    fn x_forwarded_proto_and_host() {
        let one = TrustedProxies::count(1, ForwardedHeader::XForwardedFor);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "HTTPS"),
            ("x-forwarded-host", "app.example"),
        ]);
        let client = resolve(&h, Some(ip(PEER)), &one);
        assert_eq!(client.proto.as_deref(), Some("https"));
        assert_eq!(client.host.as_deref(), Some("app.example"));
        // From an untrusted peer they are ignored.
        let private = TrustedProxies::networks(
            ["10.0.0.0/8".parse().unwrap()],
            ForwardedHeader::XForwardedFor,
        );
        let client = resolve(&h, Some(ip("198.51.100.1")), &private);
        assert_eq!(client.proto, None);
        assert_eq!(client.host, None);
    }

    fn chain() -> impl Strategy<Value = Vec<std::net::Ipv4Addr>> {
        proptest::collection::vec(any::<[u8; 4]>().prop_map(std::net::Ipv4Addr::from), 0..8)
    }

    proptest! {
        /// Whatever a client prepends, it never becomes the resolved
        /// address: with `n` trusted hops the answer is fixed by what the
        /// proxies appended.
        #[test]
        fn client_written_hops_never_win(forged in chain(), real in chain(), hops in 1usize..4) {
            let proxies = TrustedProxies::count(hops, ForwardedHeader::XForwardedFor);
            let appended: Vec<String> = real.iter().map(ToString::to_string).collect();
            let honest = headers(&[("x-forwarded-for", &appended.join(", "))]);
            let mut all: Vec<String> = forged.iter().map(ToString::to_string).collect();
            all.extend(appended.iter().cloned());
            let tampered = headers(&[("x-forwarded-for", &all.join(", "))]);
            let peer = Some(ip(PEER));
            let expected = resolve(&honest, peer, &proxies).ip;
            let got = resolve(&tampered, peer, &proxies).ip;
            if real.len() >= hops {
                prop_assert_eq!(got, expected);
            }
            // Always an address that is in the chain or the peer.
            let got = got.unwrap();
            prop_assert!(got == ip(PEER) || forged.iter().chain(&real).any(|a| IpAddr::V4(*a) == got));
        }

        #[test]
        fn never_panics_on_any_header(text in "\\PC{0,80}") {
            if let Ok(value) = http::HeaderValue::from_str(&text) {
                let mut h = HeaderMap::new();
                h.insert(http::header::FORWARDED, value.clone());
                h.insert("x-forwarded-for", value);
                for header in [ForwardedHeader::Forwarded, ForwardedHeader::XForwardedFor] {
                    let _ = resolve(&h, Some(ip(PEER)), &TrustedProxies::count(3, header));
                }
            }
        }
    }
}
