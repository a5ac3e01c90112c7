//! ICE candidates: the `candidate` attribute of [RFC 8839 §5.1](https://www.rfc-editor.org/rfc/rfc8839#section-5.1),
//! the TCP extension of [RFC 6544](https://www.rfc-editor.org/rfc/rfc6544) and mDNS host names
//! (`<uuid>.local`), parsed by hand into a [`Candidate`] whose [`Display`](fmt::Display) is the
//! normalized form that gets relayed.
//!
//! ```text
//! candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
//!           [raddr <address> rport <port>] [tcptype active|passive|so] *(<name> <value>)
//! ```

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

/// Longest candidate line accepted (bytes, without an `a=` prefix).
pub const MAX_CANDIDATE_LEN: usize = 1024;
/// Most extension name/value pairs accepted on one candidate.
pub const MAX_EXTENSIONS: usize = 16;
/// Longest mDNS host name accepted (bytes, RFC 1035 limit).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// Why a candidate line was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CandidateError {
    /// The line is longer than [`MAX_CANDIDATE_LEN`].
    #[error("candidate longer than {MAX_CANDIDATE_LEN} bytes")]
    TooLong,
    /// The line does not start with `candidate:` (after an optional `a=`).
    #[error("candidate does not start with \"candidate:\"")]
    MissingPrefix,
    /// A mandatory field is missing.
    #[error("candidate field missing: {0}")]
    Missing(&'static str),
    /// Two spaces in a row, a leading/trailing space, or a control character.
    #[error("candidate has bad separators or control characters")]
    BadSeparator,
    /// Foundation is not 1..=32 characters of `[A-Za-z0-9+/]`.
    #[error("invalid foundation")]
    Foundation,
    /// Component id is not an integer in 1..=256.
    #[error("invalid component id (1..=256)")]
    Component,
    /// Transport is neither UDP nor TCP.
    #[error("unsupported transport (UDP or TCP)")]
    Transport,
    /// Priority is not an integer in 1..=2^31-1.
    #[error("invalid priority (1..=2147483647)")]
    Priority,
    /// Address is not an IPv4/IPv6 address or an mDNS `.local` name.
    #[error("invalid connection address (IPv4, IPv6 or mDNS .local name)")]
    Address,
    /// Port is not an integer in 0..=65535.
    #[error("invalid port")]
    Port,
    /// The `typ` keyword is missing or misplaced.
    #[error("expected \"typ\"")]
    Typ,
    /// Candidate type is not host, srflx, prflx or relay.
    #[error("invalid candidate type (host, srflx, prflx, relay)")]
    CandidateType,
    /// `raddr` without `rport` or the other way round, or out of order.
    #[error("raddr and rport must appear together, in that order")]
    RelatedAddress,
    /// `tcptype` missing on a TCP candidate, present on a UDP one, or not active/passive/so.
    #[error("invalid tcptype (required for TCP: active, passive or so)")]
    TcpType,
    /// An extension name without a value, a repeated name, or more than [`MAX_EXTENSIONS`].
    #[error("invalid or too many extension attributes")]
    Extension,
}

/// Candidate transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (RFC 6544), with its [`TcpType`].
    Tcp(TcpType),
}

/// RFC 6544 TCP candidate type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpType {
    /// Opens outgoing connections only.
    Active,
    /// Accepts incoming connections only.
    Passive,
    /// Simultaneous open.
    So,
}

impl TcpType {
    fn as_str(self) -> &'static str {
        match self {
            TcpType::Active => "active",
            TcpType::Passive => "passive",
            TcpType::So => "so",
        }
    }
}

/// Candidate type (`typ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// A local interface address.
    Host,
    /// Server reflexive (learned from STUN).
    Srflx,
    /// Peer reflexive (learned from connectivity checks).
    Prflx,
    /// A TURN relay address.
    Relay,
}

impl CandidateType {
    fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::Srflx => "srflx",
            CandidateType::Prflx => "prflx",
            CandidateType::Relay => "relay",
        }
    }
}

/// A connection address: an IP address or an mDNS name ending in `.local` (RFC 8839 §5.1 allows
/// FQDNs; only mDNS names are accepted, as browsers use them to hide host addresses).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// IPv4 or IPv6.
    Ip(IpAddr),
    /// An mDNS name such as `1f4712db-ea17-4bcf-a596-105139dfd8bf.local`, stored lower-case.
    Mdns(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Mdns(name) => f.write_str(name),
        }
    }
}

/// A parsed ICE candidate. Build one with [`Candidate::parse`]; its `Display` is the normalized
/// `candidate:...` line (transport and keywords lower-case, IP addresses in canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// 1..=32 characters of `[A-Za-z0-9+/]`.
    pub foundation: String,
    /// 1..=256 (1 = RTP, 2 = RTCP).
    pub component: u16,
    /// UDP or TCP.
    pub transport: Transport,
    /// 1..=2^31-1.
    pub priority: u32,
    /// Where the candidate receives.
    pub address: Address,
    /// Port (0 and 9 occur for TCP active candidates).
    pub port: u16,
    /// host, srflx, prflx or relay.
    pub kind: CandidateType,
    /// `raddr`/`rport`.
    pub related: Option<(Address, u16)>,
    /// Further `name value` pairs (e.g. `generation 0`, `ufrag abc`, `network-id 1`), in order.
    pub extensions: Vec<(String, String)>,
}

fn is_ice_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// A byte-string token for extension names and values: visible ASCII (no space, no control).
fn is_ext_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_digits<T: std::str::FromStr>(s: &str, max_len: usize) -> Option<T> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_address(s: &str) -> Result<Address, CandidateError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Address::Ip(ip));
    }
    let lower = s.to_ascii_lowercase();
    let Some(host) = lower.strip_suffix(".local") else {
        return Err(CandidateError::Address);
    };
    if host.is_empty() || lower.len() > MAX_HOST_NAME_LEN {
        return Err(CandidateError::Address);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.split('.').all(label_ok) {
        Ok(Address::Mdns(lower))
    } else {
        Err(CandidateError::Address)
    }
}

impl Candidate {
    /// Parses a candidate line: `candidate:...`, optionally preceded by `a=`.
    pub fn parse(line: &str) -> Result<Candidate, CandidateError> {
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.len() > MAX_CANDIDATE_LEN {
            return Err(CandidateError::TooLong);
        }
        let body = match line.split_at_checked(10) {
            Some((p, body)) if p.eq_ignore_ascii_case("candidate:") => body,
            _ => return Err(CandidateError::MissingPrefix),
        };
        if body.bytes().any(|b| b.is_ascii_control())
            || body.starts_with(' ')
            || body.ends_with(' ')
            || body.contains("  ")
        {
            return Err(CandidateError::BadSeparator);
        }
        let mut it = body.split(' ');
        let mut next = |name: &'static str| it.next().ok_or(CandidateError::Missing(name));

        let foundation = next("foundation")?;
        if foundation.is_empty() || foundation.len() > 32 || !foundation.bytes().all(is_ice_char) {
            return Err(CandidateError::Foundation);
        }
        let component = parse_digits::<u16>(next("component")?, 3)
            .filter(|c| (1..=256).contains(c))
            .ok_or(CandidateError::Component)?;
        let transport = next("transport")?;
        let tcp = if transport.eq_ignore_ascii_case("udp") {
            false
        } else if transport.eq_ignore_ascii_case("tcp") {
            true
        } else {
            return Err(CandidateError::Transport);
        };
        let priority = parse_digits::<u32>(next("priority")?, 10)
            .filter(|p| (1..=0x7fff_ffff).contains(p))
            .ok_or(CandidateError::Priority)?;
        let address = parse_address(next("address")?)?;
        let port = parse_digits::<u16>(next("port")?, 5).ok_or(CandidateError::Port)?;
        if next("typ")? != "typ" {
            return Err(CandidateError::Typ);
        }
        let kind = match next("candidate type")? {
            "host" => CandidateType::Host,
            "srflx" => CandidateType::Srflx,
            "prflx" => CandidateType::Prflx,
            "relay" => CandidateType::Relay,
            _ => return Err(CandidateError::CandidateType),
        };

        let rest: Vec<&str> = it.collect();
        let mut rest = rest.as_slice();
        let mut related = None;
        if let [name, value, tail @ ..] = rest {
            if *name == "raddr" {
                let raddr = parse_address(value)?;
                let [rport_kw, rport, tail2 @ ..] = tail else {
                    return Err(CandidateError::RelatedAddress);
                };
                if *rport_kw != "rport" {
                    return Err(CandidateError::RelatedAddress);
                }
                let rport = parse_digits::<u16>(rport, 5).ok_or(CandidateError::Port)?;
                related = Some((raddr, rport));
                rest = tail2;
            }
        }
        let mut tcp_type = None;
        let mut extensions: Vec<(String, String)> = Vec::new();
        loop {
            match rest {
                [] => break,
                [_] => return Err(CandidateError::Extension),
                [name, value, tail @ ..] => {
                    match *name {
                        "raddr" | "rport" => return Err(CandidateError::RelatedAddress),
                        "typ" => return Err(CandidateError::Typ),
                        "tcptype" => {
                            if tcp_type.is_some() || !tcp {
                                return Err(CandidateError::TcpType);
                            }
                            tcp_type = Some(match *value {
                                "active" => TcpType::Active,
                                "passive" => TcpType::Passive,
                                "so" => TcpType::So,
                                _ => return Err(CandidateError::TcpType),
                            });
                        }
                        _ => {
                            if !is_ext_token(name)
                                || !is_ext_token(value)
                                || extensions.len() >= MAX_EXTENSIONS
                                || extensions.iter().any(|(n, _)| n == name)
                            {
                                return Err(CandidateError::Extension);
                            }
                            extensions.push(((*name).to_owned(), (*value).to_owned()));
                        }
                    }
                    rest = tail;
                }
            }
        }
        let transport = match (tcp, tcp_type) {
            (false, _) => Transport::Udp,
            (true, Some(t)) => Transport::Tcp(t),
            (true, None) => return Err(CandidateError::TcpType),
        };
        Ok(Candidate {
            foundation: foundation.to_owned(),
            component,
            transport,
            priority,
            address,
            port,
            kind,
            related,
            extensions,
        })
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp(_) => "tcp",
        };
        write!(
            f,
            "candidate:{} {} {} {} {} {} typ {}",
            self.foundation,
            self.component,
            transport,
            self.priority,
            self.address,
            self.port,
            self.kind.as_str()
        )?;
        if let Some((addr, port)) = &self.related {
            write!(f, " raddr {addr} rport {port}")?;
        }
        if let Transport::Tcp(t) = self.transport {
            write!(f, " tcptype {}", t.as_str())?;
        }
        for (name, value) in &self.extensions {
            write!(f, " {name} {value}")?;
        }
        Ok(())
    }
}
