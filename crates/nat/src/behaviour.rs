//! The vocabulary of RFC 4787/5780 (mapping, filtering) and the classic RFC 3489 names.

use std::fmt;

/// How a NAT maps a local transport address to a public one (RFC 4787 §4.1, RFC 5780 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// The mapped address equals the local address: no NAT on the path.
    NoNat,
    /// One public address for every destination ("cone").
    EndpointIndependent,
    /// A new public address per destination IP address.
    AddressDependent,
    /// A new public address per destination IP address and port ("symmetric").
    AddressAndPortDependent,
    /// Mapping tests II/III got no usable answer.
    Unknown,
}

impl Mapping {
    /// Stable lower-case name (used in JSON output).
    pub const fn as_str(self) -> &'static str {
        match self {
            Mapping::NoNat => "no-nat",
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::AddressDependent => "address-dependent",
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
            Mapping::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which unsolicited inbound packets a NAT or firewall lets through to a mapping
/// (RFC 4787 §5, RFC 5780 §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Anyone may send to the mapping.
    EndpointIndependent,
    /// Only IP addresses the client has sent to (any port).
    AddressDependent,
    /// Only exact IP address and port pairs the client has sent to.
    AddressAndPortDependent,
    /// The filtering tests got no usable answer (test I lost, or the server did not honour
    /// CHANGE-REQUEST).
    Unknown,
}

impl Filtering {
    /// Stable lower-case name (used in JSON output).
    pub const fn as_str(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
            Filtering::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classic RFC 3489 name of a (mapping, filtering) combination, plus the firewall variants
/// for hosts with a public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatType {
    /// No NAT, no filtering: the host is reachable by anyone.
    OpenInternet,
    /// No NAT, address-dependent filtering.
    AddressRestrictedFirewall,
    /// No NAT, address-and-port-dependent filtering (RFC 3489's "symmetric UDP firewall").
    PortRestrictedFirewall,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering ("restricted cone").
    AddressRestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Address-dependent or address-and-port-dependent mapping.
    Symmetric,
    /// Not enough answers to say.
    Unknown,
}

impl NatType {
    /// Every type, in the order the documentation uses.
    pub const ALL: [NatType; 8] = [
        NatType::OpenInternet,
        NatType::AddressRestrictedFirewall,
        NatType::PortRestrictedFirewall,
        NatType::FullCone,
        NatType::AddressRestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
        NatType::Unknown,
    ];

    /// The RFC 3489 name for a (mapping, filtering) pair (RFC 5780 §1 lists the
    /// correspondence; any mapping other than endpoint-independent is "symmetric").
    pub const fn classify(mapping: Mapping, filtering: Filtering) -> NatType {
        match (mapping, filtering) {
            (Mapping::NoNat, Filtering::EndpointIndependent) => NatType::OpenInternet,
            (Mapping::NoNat, Filtering::AddressDependent) => NatType::AddressRestrictedFirewall,
            (Mapping::NoNat, Filtering::AddressAndPortDependent) => NatType::PortRestrictedFirewall,
            (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => NatType::FullCone,
            (Mapping::EndpointIndependent, Filtering::AddressDependent) => {
                NatType::AddressRestrictedCone
            }
            (Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => {
                NatType::PortRestrictedCone
            }
            (Mapping::AddressDependent | Mapping::AddressAndPortDependent, _) => NatType::Symmetric,
            _ => NatType::Unknown,
        }
    }

    /// Stable lower-case name (used in JSON output).
    pub const fn as_str(self) -> &'static str {
        match self {
            NatType::OpenInternet => "open-internet",
            NatType::AddressRestrictedFirewall => "address-restricted-firewall",
            NatType::PortRestrictedFirewall => "port-restricted-firewall",
            NatType::FullCone => "full-cone",
            NatType::AddressRestrictedCone => "address-restricted-cone",
            NatType::PortRestrictedCone => "port-restricted-cone",
            NatType::Symmetric => "symmetric",
            NatType::Unknown => "unknown",
        }
    }

    /// Human name, as printed by `switchboard nat-check`.
    pub const fn describe(self) -> &'static str {
        match self {
            NatType::OpenInternet => "open internet (no NAT, no filtering)",
            NatType::AddressRestrictedFirewall => "no NAT, address-restricted firewall",
            NatType::PortRestrictedFirewall => {
                "no NAT, port-restricted firewall (RFC 3489 symmetric UDP firewall)"
            }
            NatType::FullCone => "full cone",
            NatType::AddressRestrictedCone => "address-restricted cone (restricted cone)",
            NatType::PortRestrictedCone => "port-restricted cone",
            NatType::Symmetric => "symmetric",
            NatType::Unknown => "unknown",
        }
    }

    /// True when a NAT is on the path.
    pub const fn is_nat(self) -> bool {
        !matches!(
            self,
            NatType::OpenInternet
                | NatType::AddressRestrictedFirewall
                | NatType::PortRestrictedFirewall
        )
    }

    /// How this type behaves for hole punching: the traversal class.
    const fn class(self) -> Class {
        match self {
            NatType::OpenInternet
            | NatType::AddressRestrictedFirewall
            | NatType::FullCone
            | NatType::AddressRestrictedCone => Class::Open,
            NatType::PortRestrictedFirewall | NatType::PortRestrictedCone => Class::PortRestricted,
            NatType::Symmetric => Class::Symmetric,
            NatType::Unknown => Class::Unknown,
        }
    }

    /// The path ICE ends up with between a peer behind `self` and a peer behind `other`, both
    /// gathering server-reflexive and relayed candidates from the same STUN/TURN server:
    ///
    /// * a peer whose filter accepts packets from the other peer's *IP address* once it has sent
    ///   there (open, full cone, address-restricted) lets in the symmetric peer's checks, which
    ///   arrive from a port nobody could predict; the answer then goes back as a peer-reflexive
    ///   pair — direct;
    /// * port-restricted filtering only admits the exact address and port it sent to; a
    ///   symmetric NAT uses a new, unpredictable port towards the peer, so neither side's checks
    ///   get in — relay;
    /// * two symmetric NATs: neither side knows the port the other will use — relay.
    pub const fn path_with(self, other: NatType) -> Path {
        match (self.class(), other.class()) {
            (Class::Unknown, _) | (_, Class::Unknown) => Path::Unknown,
            (Class::Symmetric, Class::Symmetric)
            | (Class::Symmetric, Class::PortRestricted)
            | (Class::PortRestricted, Class::Symmetric) => Path::Relay,
            _ => Path::Direct,
        }
    }

    /// One sentence for a person: with whom direct connections work and when a relay is needed.
    pub const fn verdict(self) -> &'static str {
        match self.class() {
            Class::Open => {
                "direct connections will work with peers behind every NAT type, symmetric \
                 included; a TURN relay is only needed for peers whose network blocks UDP"
            }
            Class::PortRestricted => {
                "direct connections will work with peers behind cone NATs and on the open \
                 internet; you need a TURN relay for peers behind symmetric NATs"
            }
            Class::Symmetric => {
                "direct connections will work with peers behind full-cone or address-restricted \
                 cone NATs and on the open internet; you need a TURN relay for peers behind \
                 symmetric or port-restricted NATs"
            }
            Class::Unknown => {
                "the NAT behaviour could not be determined; keep a TURN relay available"
            }
        }
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Open,
    PortRestricted,
    Symmetric,
    Unknown,
}

/// The candidate pair ICE can use between two peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Host, server-reflexive or peer-reflexive candidates on both sides: a hole can be punched.
    Direct,
    /// At least one side must use its TURN relay.
    Relay,
    /// One side's type is unknown.
    Unknown,
}

impl Path {
    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relay => "relay",
            Path::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_names_follow_rfc_5780() {
        use Filtering as F;
        use Mapping as M;
        assert_eq!(
            NatType::classify(M::EndpointIndependent, F::EndpointIndependent),
            NatType::FullCone
        );
        assert_eq!(
            NatType::classify(M::EndpointIndependent, F::AddressDependent),
            NatType::AddressRestrictedCone
        );
        assert_eq!(
            NatType::classify(M::EndpointIndependent, F::AddressAndPortDependent),
            NatType::PortRestrictedCone
        );
        for f in [
            F::EndpointIndependent,
            F::AddressDependent,
            F::AddressAndPortDependent,
            F::Unknown,
        ] {
            assert_eq!(
                NatType::classify(M::AddressDependent, f),
                NatType::Symmetric
            );
            assert_eq!(
                NatType::classify(M::AddressAndPortDependent, f),
                NatType::Symmetric
            );
            assert_eq!(NatType::classify(M::Unknown, f), NatType::Unknown);
        }
        assert_eq!(
            NatType::classify(M::NoNat, F::EndpointIndependent),
            NatType::OpenInternet
        );
        assert_eq!(
            NatType::classify(M::NoNat, F::AddressDependent),
            NatType::AddressRestrictedFirewall
        );
        assert_eq!(
            NatType::classify(M::NoNat, F::AddressAndPortDependent),
            NatType::PortRestrictedFirewall
        );
        assert_eq!(NatType::classify(M::NoNat, F::Unknown), NatType::Unknown);
        assert_eq!(
            NatType::classify(M::EndpointIndependent, F::Unknown),
            NatType::Unknown
        );
    }

    #[test]
    fn relay_only_for_symmetric_with_symmetric_or_port_restricted() {
        use NatType::*;
        let four = [
            FullCone,
            AddressRestrictedCone,
            PortRestrictedCone,
            Symmetric,
        ];
        let mut relays = Vec::new();
        for a in four {
            for b in four {
                assert_eq!(a.path_with(b), b.path_with(a), "symmetric relation");
                if a.path_with(b) == Path::Relay {
                    relays.push((a, b));
                }
            }
        }
        assert_eq!(
            relays,
            [
                (PortRestrictedCone, Symmetric),
                (Symmetric, PortRestrictedCone),
                (Symmetric, Symmetric)
            ]
        );
        assert_eq!(OpenInternet.path_with(Symmetric), Path::Direct);
        assert_eq!(PortRestrictedFirewall.path_with(Symmetric), Path::Relay);
        assert_eq!(Unknown.path_with(FullCone), Path::Unknown);
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let names: std::collections::HashSet<_> = NatType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), NatType::ALL.len());
        assert!(NatType::Symmetric
            .verdict()
            .contains("symmetric or port-restricted"));
        assert!(NatType::PortRestrictedCone.verdict().contains("cone NATs"));
    }
}
