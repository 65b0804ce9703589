//! The client's IP address. It is the socket peer, unless the peer is a trusted proxy
//! (`RAMPART_TRUSTED_PROXIES`): then `X-Forwarded-For` is read from the right and the
//! client is the rightmost address that is not itself a trusted proxy. A client can put
//! anything on the left of that header, so nothing left of the first untrusted hop is
//! ever believed (contract §9).
//!
//! An entry may carry a port (`203.0.113.9:51234`, `[2001:db8::1]:443`), which is
//! ignored. If the entry where the client should stand does not parse, the request is
//! refused with 400 `validation_failed` (by the post-routing checks, where the rate limit
//! would otherwise need the address): falling back to the proxy's address would make
//! every client share the proxy's one budget, hiding a misconfigured proxy.
//!
//! [`ClientIp`] is the full address (audit records and sessions keep it); per-IP limits
//! key it by [`rampart_core::net::client_key`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use ipnet::IpNet;

use crate::extract::ClientIp;

#[derive(Clone)]
pub struct TrustedProxies(pub Arc<Vec<IpNet>>);

/// A trusted proxy forwarded a chain whose client entry is not an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnparsableForwardedFor;

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer` carrying these `X-Forwarded-For` headers (in
    /// order). When every forwarded hop is trusted, the leftmost one is the client.
    pub fn resolve(
        &self,
        peer: IpAddr,
        forwarded_for: &[&str],
    ) -> Result<IpAddr, UnparsableForwardedFor> {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return Ok(client);
        }
        for header in forwarded_for.iter().rev() {
            for hop in header.rsplit(',') {
                client = canonical(parse_hop(hop).ok_or(UnparsableForwardedFor)?);
                if !self.trusts(client) {
                    return Ok(client);
                }
            }
        }
        Ok(client)
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[::1]:80`; a bracketed IPv6 address without a port is accepted too). A bare IPv6
/// address is never read as address plus port: `2001:db8::1:443` is the address it spells.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Resolves the client and stores it as [`ClientIp`], or stores
/// [`UnparsableForwardedFor`] (and no `ClientIp`) for the post-routing checks to refuse.
/// Puts the client's address ([`ClientIp`]), or [`UnparsableForwardedFor`], on the request.
pub(crate) fn resolve_into(proxies: &TrustedProxies, req: &mut Request) {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    // A header value that is not visible ASCII is an entry that does not parse.
    let headers: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .collect();
    match proxies.resolve(peer, &headers) {
        Ok(ip) => {
            req.extensions_mut().insert(ClientIp(ip));
        }
        Err(unparsable) => {
            req.extensions_mut().insert(unparsable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies(Arc::new(list.iter().map(|s| s.parse().unwrap()).collect()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.resolve(ip("203.0.113.9"), &["1.1.1.1"]),
            Ok(ip("203.0.113.9"))
        );
        assert_eq!(
            p.resolve(ip("203.0.113.9"), &["nonsense"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.resolve(ip("10.0.0.1"), &["6.6.6.6, 198.51.100.7, 10.0.0.2"]),
            Ok(ip("198.51.100.7"))
        );
        assert_eq!(
            p.resolve(ip("10.0.0.1"), &["6.6.6.6", "198.51.100.7"]),
            Ok(ip("198.51.100.7"))
        );
        assert_eq!(p.resolve(ip("10.0.0.1"), &[]), Ok(ip("10.0.0.1")));
        assert_eq!(
            p.resolve(ip("::ffff:10.0.0.1"), &["192.0.2.1"]),
            Ok(ip("192.0.2.1"))
        );
        // Garbage left of the client is never read.
        assert_eq!(
            p.resolve(ip("10.0.0.1"), &["nonsense, 198.51.100.7"]),
            Ok(ip("198.51.100.7"))
        );
    }

    #[test]
    fn an_unparsable_client_entry_is_refused_not_replaced_by_the_proxy() {
        let p = proxies(&["10.0.0.0/8"]);
        for chain in [
            &["nonsense, 10.0.0.3"][..],
            &["nonsense"],
            &["198.51.100.7, "],
            &["198.51.100.7", ""],
            &["unknown"],
            &["1.2.3.4.5"],
            &["[2001:db8::1"],
            &["203.0.113.9:99999"],
        ] {
            assert_eq!(
                p.resolve(ip("10.0.0.1"), chain),
                Err(UnparsableForwardedFor),
                "{chain:?}"
            );
        }
    }

    #[test]
    fn entries_with_ports() {
        let p = proxies(&["10.0.0.0/8"]);
        let cases = [
            ("203.0.113.9:51234", "203.0.113.9"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 203.0.113.9:1 ", "203.0.113.9"),
            ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
            // A bare IPv6 address is the address it spells, never address plus port.
            ("2001:db8::1:443", "2001:db8::1:443"),
        ];
        for (hop, client) in cases {
            assert_eq!(
                p.resolve(ip("10.0.0.1"), &[&format!("6.6.6.6, {hop}, 10.0.0.2:8080")]),
                Ok(ip(client)),
                "{hop}"
            );
        }
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in any::<String>()) {
            let _ = parse_hop(&text);
            let p = proxies(&["0.0.0.0/0", "::/0"]);
            let _ = p.resolve(ip("10.0.0.1"), &[&text]);
        }

        #[test]
        fn parsing_ascii_noise_never_panics(text in "[0-9a-fA-F:\\.\\[\\], ]{0,64}") {
            let _ = parse_hop(&text);
            let p = proxies(&["10.0.0.0/8"]);
            let _ = p.resolve(ip("10.0.0.1"), &[&text]);
        }

        #[test]
        fn an_address_with_any_port_is_that_address(addr in any_ip(), port in any::<u16>()) {
            let with_port = SocketAddr::new(addr, port).to_string();
            prop_assert_eq!(parse_hop(&with_port), Some(addr));
            prop_assert_eq!(parse_hop(&addr.to_string()), Some(addr));
            let p = proxies(&["10.0.0.0/8"]);
            prop_assert_eq!(
                p.resolve(ip("10.0.0.1"), &[&format!("{with_port}, 10.0.0.9")]),
                Ok(canonical(addr))
            );
        }
    }
}
