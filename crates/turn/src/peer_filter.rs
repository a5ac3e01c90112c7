//! Which peer addresses a relay may reach (RFC 8656 §21, coturn's denied-peer-ip lists).
//!
//! By default every address that is not a public unicast address is refused: loopback, private
//! (RFC 1918, RFC 4193), shared (RFC 6598), link-local, multicast, broadcast, unspecified,
//! reserved ranges, IPv4-mapped and translated forms of those, and the server's own addresses:
//! those it was configured with and, refreshed by the I/O layer, every address of the host's
//! interfaces (a wildcard listener answers on all of them). `allow` entries take precedence over
//! every refusal (like coturn's allowed-peer-ip); `deny` entries add to the defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix such as `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected an address or CIDR such as 10.0.0.0/8 or 2001:db8::/32, got {0:?}")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| err())?,
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside this prefix (families must match).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                (u32::from(net) & mask) == (u32::from(ip) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                (u128::from(net) & mask) == (u128::from(ip) & mask)
            }
            _ => false,
        }
    }
}

/// Why a peer was refused (for logs and counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Matched a `--deny-peer` entry.
    Denied,
    /// A non-public address (loopback, private, link-local, multicast, …).
    NotPublic,
    /// One of the server's own addresses.
    OwnAddress,
}

/// The peer policy.
#[derive(Clone, Debug, Default)]
pub struct PeerFilter {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    own: Vec<IpAddr>,
    /// The host's interface addresses, refused like `own`.
    local: Vec<IpAddr>,
}

impl PeerFilter {
    /// A filter with `allow` exceptions, extra `deny` entries and the server's `own` addresses.
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>, own: Vec<IpAddr>) -> Self {
        PeerFilter {
            allow,
            deny,
            own,
            local: Vec::new(),
        }
    }

    /// Replaces the host's interface addresses, refused as the server's own (unless allowed).
    pub fn set_local(&mut self, local: Vec<IpAddr>) {
        self.local = local;
    }

    /// The host's interface addresses last set.
    pub fn local(&self) -> &[IpAddr] {
        &self.local
    }

    /// `Ok(())` when a relay may reach `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        if self.deny.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::Denied);
        }
        if self
            .own
            .iter()
            .chain(&self.local)
            .any(|o| canonical(*o) == ip)
        {
            return Err(Refusal::OwnAddress);
        }
        if !is_public(ip) {
            return Err(Refusal::NotPublic);
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0 // 0.0.0.0/8 "this network"
        || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10 shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // 240.0.0.0/4 reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return false;
    }
    match s[0] {
        x if (x & 0xFE00) == 0xFC00 => false, // fc00::/7 unique local
        x if (x & 0xFFC0) == 0xFE80 => false, // fe80::/10 link-local
        x if (x & 0xFFC0) == 0xFEC0 => false, // fec0::/10 site-local (deprecated)
        0x0064 if s[1] == 0xff9b => {
            // 64:ff9b::/96 NAT64: judge the embedded IPv4 address.
            let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            is_public_v4(v4)
        }
        0x2002 => {
            // 6to4: judge the embedded IPv4 address.
            let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
            is_public_v4(v4)
        }
        0x0000 if s[1..6] == [0, 0, 0, 0, 0] => false, // IPv4-compatible (deprecated)
        0x0100 if s[1..4] == [0, 0, 0] => false,       // 100::/64 discard-only
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_refuse_non_public() {
        let f = PeerFilter::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "100.64.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2002:0a00:0001::1",
            "64:ff9b::7f00:1",
        ] {
            assert_eq!(f.check(ip(bad)), Err(Refusal::NotPublic), "{bad}");
        }
        for good in [
            "203.0.113.5",
            "198.51.100.1",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:203.0.113.5",
            "2002:cb00:7105::1",
        ] {
            assert_eq!(f.check(ip(good)), Ok(()), "{good}");
        }
    }

    #[test]
    fn allow_wins_deny_adds_own_refused() {
        let f = PeerFilter::new(
            vec!["127.0.0.0/8".parse().unwrap(), "10.9.9.9".parse().unwrap()],
            vec!["203.0.113.0/24".parse().unwrap()],
            vec![ip("198.51.100.10")],
        );
        assert_eq!(f.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(f.check(ip("10.9.9.9")), Ok(()));
        assert_eq!(f.check(ip("10.9.9.8")), Err(Refusal::NotPublic));
        assert_eq!(f.check(ip("203.0.113.7")), Err(Refusal::Denied));
        assert_eq!(f.check(ip("198.51.100.10")), Err(Refusal::OwnAddress));
        assert_eq!(f.check(ip("198.51.100.11")), Ok(()));
    }

    #[test]
    fn interface_addresses_are_own_unless_allowed() {
        let mut f = PeerFilter::new(vec!["198.51.100.20".parse().unwrap()], vec![], vec![]);
        assert_eq!(f.check(ip("198.51.100.10")), Ok(()));
        f.set_local(vec![
            ip("198.51.100.10"),
            ip("198.51.100.20"),
            ip("127.0.0.1"),
        ]);
        assert_eq!(f.check(ip("198.51.100.10")), Err(Refusal::OwnAddress));
        assert_eq!(
            f.check(ip("::ffff:198.51.100.10")),
            Err(Refusal::OwnAddress)
        );
        assert_eq!(f.check(ip("127.0.0.1")), Err(Refusal::OwnAddress));
        // An explicit --allow-peer still wins.
        assert_eq!(f.check(ip("198.51.100.20")), Ok(()));
        f.set_local(vec![]);
        assert_eq!(f.check(ip("198.51.100.10")), Ok(()));
    }

    #[test]
    fn cidr_parsing() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        assert!(!"0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("::1")));
        assert_eq!(
            "192.0.2.0/24".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.0/24"
        );
    }
}
