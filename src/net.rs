//! Client addresses behind proxies (`X-Forwarded-For` is believed only from
//! `TRUSTED_PROXIES`), and the one way to build an outgoing HTTP client.

use std::{net::IpAddr, str::FromStr};

/// An address block such as `10.0.0.0/8`, `192.168.1.7` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpBlock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl IpBlock {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`; treat them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpBlock>);

impl TrustedProxies {
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(IpBlock::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|b| b.contains(ip))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy, in which case the
    /// `X-Forwarded-For` chain is walked from the right past every trusted proxy. The first
    /// address not ours is the client; a malformed entry stops the walk (nothing left of it can
    /// be believed).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let Some(chain) = forwarded_for else {
            return client;
        };
        for hop in chain.rsplit(',').map(str::trim) {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                return client;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// An HTTP client builder over rustls with ring, the TLS stack the broker connection uses too
/// (reqwest leaves the choice to the process): every outgoing HTTP client starts here.
pub fn http_client() -> reqwest::ClientBuilder {
    // Installed once per process; a second call finds it in place.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_their_addresses() {
        let b: IpBlock = "10.0.0.0/8".parse().unwrap();
        assert!(b.contains(ip("10.200.1.1")) && !b.contains(ip("11.0.0.1")));
        assert!(b.contains(ip("::ffff:10.0.0.1")));
        let one: IpBlock = "192.168.1.7".parse().unwrap();
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let v6: IpBlock = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(
            "0.0.0.0/0"
                .parse::<IpBlock>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "example.com", "1.2.3.4/x"] {
            assert!(bad.parse::<IpBlock>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        let xff = Some("203.0.113.9, 198.51.100.2, 10.0.0.5");
        // An untrusted peer's header is ignored.
        assert_eq!(
            trusted.client_ip(ip("198.51.100.77"), xff),
            ip("198.51.100.77")
        );
        // From a trusted proxy: the rightmost address that is not a proxy of ours.
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), xff), ip("198.51.100.2"));
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), Some("garbage, 10.1.1.1")),
            ip("10.1.1.1")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("127.0.0.1"), xff),
            ip("127.0.0.1")
        );
    }
}
