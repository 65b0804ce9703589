//! Client addresses as the per-client limits see them (contract §9): an IPv4 address
//! itself, an IPv6 address by the `RAMPART_IPV6_PREFIX`-bit network it lies in (default
//! /64, the block one subscriber line or host usually gets, RFC 6177), and an IPv4-mapped
//! IPv6 address as the IPv4 address it carries. One host holds a whole /64: keyed per
//! address, it could rotate through 2^64 budgets. Only limits use this key; audit records
//! and sessions keep the full address.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Default of `RAMPART_IPV6_PREFIX`.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// The prefix lengths `RAMPART_IPV6_PREFIX` accepts.
pub const IPV6_PREFIX_RANGE: std::ops::RangeInclusive<u8> = 32..=128;

/// The network a per-client limit (rate limits, the `email_ip` lockout scope) is kept
/// for: `ip/32` for IPv4 (also when mapped into IPv6), else the `ipv6_prefix`-bit network
/// holding `ip` (host bits zero). A prefix over 128 counts as 128.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::from(v4)),
            None => {
                // `new` refuses only a prefix over 128, which `min` rules out.
                let net = Ipv6Net::new(v6, ipv6_prefix.min(128)).unwrap_or_else(|_| v6.into());
                IpNet::V6(net.trunc())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_network() {
        let a = ip("2001:db8:1:2:aaaa::1");
        let b = ip("2001:db8:1:2:ffff:1:2:3");
        let other = ip("2001:db8:1:3::1");
        assert_eq!(client_key(a, 64), client_key(b, 64));
        assert_ne!(client_key(a, 64), client_key(other, 64));
        assert_eq!(client_key(a, 64).to_string(), "2001:db8:1:2::/64");
        // A shorter prefix joins more; 128 is per address.
        assert_eq!(client_key(a, 48), client_key(other, 48));
        assert_eq!(client_key(a, 48).to_string(), "2001:db8:1::/48");
        assert_ne!(client_key(a, 128), client_key(b, 128));
        assert_eq!(client_key(a, 128).to_string(), "2001:db8:1:2:aaaa::1/128");
        assert_eq!(client_key(a, 200), client_key(a, 128));
    }

    #[test]
    fn ipv4_and_mapped_ipv4_are_one_client() {
        let v4 = ip("192.0.2.7");
        assert_eq!(client_key(v4, 64).to_string(), "192.0.2.7/32");
        assert_eq!(client_key(ip("::ffff:192.0.2.7"), 64), client_key(v4, 64));
        assert_eq!(client_key(ip("::ffff:192.0.2.7"), 128), client_key(v4, 32));
        assert_ne!(client_key(ip("192.0.2.8"), 64), client_key(v4, 64));
    }
}
