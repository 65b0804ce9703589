//! The client's IP address. It is the socket peer, unless the peer is a trusted proxy
//! (`RAMPART_TRUSTED_PROXIES`): then `X-Forwarded-For` is read from the right and the
//! client is the rightmost address that is not itself a trusted proxy. A client can put
//! anything on the left of that header, so nothing left of the first untrusted hop is
//! ever believed (contract §9).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::extract::ClientIp;

#[derive(Clone)]
pub struct TrustedProxies(pub Arc<Vec<IpNet>>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn resolve(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        for header in forwarded_for.iter().rev() {
            for hop in header.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                    // Garbage in the chain: stop at the last hop we could vouch for.
                    return client;
                };
                client = canonical(ip);
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub async fn layer(
    State(proxies): State<TrustedProxies>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let headers: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ip = proxies.resolve(peer, &headers);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.resolve(ip("10.0.0.1"), &["6.6.6.6, 198.51.100.7, 10.0.0.2"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            p.resolve(ip("10.0.0.1"), &["6.6.6.6", "198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(p.resolve(ip("10.0.0.1"), &[]), ip("10.0.0.1"));
        assert_eq!(
            p.resolve(ip("10.0.0.1"), &["nonsense, 10.0.0.3"]),
            ip("10.0.0.3")
        );
        assert_eq!(
            p.resolve(ip("::ffff:10.0.0.1"), &["192.0.2.1"]),
            ip("192.0.2.1")
        );
    }
}
