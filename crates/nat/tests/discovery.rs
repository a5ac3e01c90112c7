//! The discovery state machine against a scripted RFC 5780 server behind an emulated NAT, on
//! fake time: every outcome, every NAT type, loss and retransmission, and broken servers.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use switchboard_nat::{
    Config, Filtering, Mapping, NatDiscovery, NatType, Outcome, Report, Socket, Test, TestResult,
};
use switchboard_stun::{Class, Message, MessageBuilder, Method};

const A1: &str = "192.0.2.1";
const A2: &str = "192.0.2.2";
const P1: u16 = 3478;
const P2: u16 = 3479;
const PUBLIC_IP: &str = "198.51.100.7";

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}
fn primary() -> SocketAddr {
    sa("10.0.0.2", 5000)
}
fn secondary() -> SocketAddr {
    sa("10.0.0.2", 5001)
}

/// An emulated NAT (or, with `Mapping::NoNat`, a stateful firewall) in front of the client.
struct Nat {
    mapping: Mapping,
    filtering: Filtering,
    hairpin: bool,
    public_ip: IpAddr,
    /// Mapping key → public port.
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// Public port → (local address, destinations it has sent to).
    ports: HashMap<u16, (SocketAddr, HashSet<SocketAddr>)>,
    next_port: u16,
}

impl Nat {
    fn new(mapping: Mapping, filtering: Filtering) -> Nat {
        Nat {
            mapping,
            filtering,
            hairpin: false,
            public_ip: if mapping == Mapping::NoNat {
                primary().ip()
            } else {
                PUBLIC_IP.parse().unwrap()
            },
            mappings: HashMap::new(),
            ports: HashMap::new(),
            next_port: 40_000,
        }
    }

    /// Outbound: the public source address the packet leaves with.
    fn outbound(&mut self, local: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let key = match self.mapping {
            Mapping::NoNat | Mapping::EndpointIndependent | Mapping::Unknown => (local, None),
            Mapping::AddressDependent => (local, Some(SocketAddr::new(dst.ip(), 0))),
            Mapping::AddressAndPortDependent => (local, Some(dst)),
        };
        let port = match self.mappings.get(&key) {
            Some(p) => *p,
            None => {
                let p = if self.mapping == Mapping::NoNat || !self.ports.contains_key(&local.port())
                {
                    local.port() // keep the port when it is free
                } else {
                    self.next_port += 1;
                    self.next_port
                };
                self.mappings.insert(key, p);
                p
            }
        };
        self.ports
            .entry(port)
            .or_insert_with(|| (local, HashSet::new()))
            .1
            .insert(dst);
        SocketAddr::new(self.public_ip, port)
    }

    /// Inbound from `src` to the public `dst`: the local address it is delivered to, if the
    /// filter lets it through.
    fn inbound(&self, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
        let (local, sent_to) = self.ports.get(&dst.port())?;
        let allowed = match self.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => sent_to.iter().any(|d| d.ip() == src.ip()),
            _ => sent_to.contains(&src),
        };
        allowed.then_some(*local)
    }
}

/// A scripted RFC 5780 server on A1/A2 × P1/P2.
struct Server {
    rfc5780: bool,
    honours_change: bool,
    answers: bool,
    error: Option<u16>,
    change_error: Option<u16>,
    alt_reachable: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            rfc5780: true,
            honours_change: true,
            answers: true,
            error: None,
            change_error: None,
            alt_reachable: true,
        }
    }
}

impl Server {
    fn is_mine(addr: SocketAddr) -> bool {
        [A1, A2]
            .iter()
            .any(|ip| addr.ip() == ip.parse::<IpAddr>().unwrap())
            && (addr.port() == P1 || addr.port() == P2)
    }

    fn flip_ip(ip: IpAddr) -> IpAddr {
        if ip == A1.parse::<IpAddr>().unwrap() {
            A2.parse().unwrap()
        } else {
            A1.parse().unwrap()
        }
    }

    /// Answers a request that arrived at `to` from `from`: (source of the answer, bytes).
    fn answer(
        &self,
        to: SocketAddr,
        from: SocketAddr,
        req: &[u8],
    ) -> Option<(SocketAddr, Vec<u8>)> {
        if !self.answers || (!self.alt_reachable && to.ip() != A1.parse::<IpAddr>().unwrap()) {
            return None;
        }
        let req = Message::parse(req).ok()?;
        assert_eq!(req.class(), Class::Request);
        assert_eq!(req.method(), Method::BINDING);
        assert_eq!(req.check_fingerprint(), Some(true));
        let mut buf = vec![0u8; 256];
        let change = req.change_request().unwrap();
        if let (Some(code), Some(_)) = (self.change_error, change) {
            let mut b = MessageBuilder::response_to(&mut buf, &req, Class::Error).unwrap();
            b.error_code(code, "no").unwrap();
            let n = b.finish();
            buf.truncate(n);
            return Some((to, buf));
        }
        if let Some(code) = self.error {
            let mut b = MessageBuilder::response_to(&mut buf, &req, Class::Error).unwrap();
            b.error_code(code, "no").unwrap();
            let n = b.finish();
            buf.truncate(n);
            return Some((to, buf));
        }
        let (cip, cport) = match change {
            Some(c) if self.honours_change => c,
            _ => (false, false),
        };
        let origin = SocketAddr::new(
            if cip { Self::flip_ip(to.ip()) } else { to.ip() },
            if cport {
                P1 + P2 - to.port()
            } else {
                to.port()
            },
        );
        let other = SocketAddr::new(Self::flip_ip(to.ip()), P1 + P2 - to.port());
        let mut b = MessageBuilder::response_to(&mut buf, &req, Class::Success).unwrap();
        b.xor_mapped_address(from).unwrap();
        if self.rfc5780 {
            b.other_address(other).unwrap();
            b.response_origin(origin).unwrap();
        }
        b.fingerprint().unwrap();
        let n = b.finish();
        buf.truncate(n);
        Some((origin, buf))
    }
}

struct Run {
    outcome: Outcome,
    elapsed: Duration,
    sent: Vec<(Duration, Test)>,
    d: NatDiscovery,
}

impl Run {
    fn count(&self, test: Test) -> usize {
        self.sent.iter().filter(|s| s.1 == test).count()
    }
    fn report(&self) -> Report {
        match self.outcome {
            Outcome::Complete(r) => r,
            o => panic!("expected a complete run, got {o:?}"),
        }
    }
}

/// Drives one discovery run through the NAT and server on fake time. `lose(test, n)` drops the
/// n-th request (0-based) of a test.
fn run_with(
    nat: &mut Nat,
    server: &Server,
    config: Config,
    lose: impl Fn(Test, usize) -> bool,
) -> Run {
    let t0 = Instant::now();
    let mut now = t0;
    let mut d = NatDiscovery::new(config, t0, 42);
    let mut sent: Vec<(Duration, Test)> = Vec::new();
    let mut steps = 0;
    while !d.is_done() {
        steps += 1;
        assert!(steps < 1000, "no progress");
        while let Some(t) = d.poll_transmit() {
            let n = sent.iter().filter(|s| s.1 == t.test).count();
            sent.push((now - t0, t.test));
            assert!(t.payload().len() <= switchboard_nat::MAX_REQUEST_LEN);
            if lose(t.test, n) {
                continue;
            }
            let local = match t.socket {
                Socket::Primary => primary(),
                Socket::Secondary => secondary(),
            };
            let public_src = nat.outbound(local, t.destination);
            if t.destination.ip() == nat.public_ip && nat.mapping != Mapping::NoNat {
                // Hairpinning: back in through the NAT's own public address.
                if nat.hairpin {
                    if let Some((to, _)) = nat.ports.get(&t.destination.port()) {
                        let to = *to;
                        let sock = if to == primary() {
                            Socket::Primary
                        } else {
                            Socket::Secondary
                        };
                        d.handle_receive(now, sock, public_src, t.payload());
                    }
                }
                continue;
            }
            if !Server::is_mine(t.destination) {
                continue;
            }
            let Some((origin, bytes)) = server.answer(t.destination, public_src, t.payload())
            else {
                continue;
            };
            if let Some(to) = nat.inbound(origin, public_src) {
                let sock = if to == primary() {
                    Socket::Primary
                } else {
                    Socket::Secondary
                };
                assert!(d.handle_receive(now, sock, origin, &bytes));
            }
        }
        if let Some(at) = d.poll_timeout() {
            assert!(at >= now, "timeouts never go backwards");
            now = at;
            d.handle_timeout(now);
        }
    }
    assert_eq!(d.poll_transmit(), None, "nothing is sent after the outcome");
    Run {
        outcome: *d.outcome().unwrap(),
        elapsed: now - t0,
        sent,
        d,
    }
}

fn cfg() -> Config {
    Config::new(sa(A1, P1), primary(), secondary())
}

fn run(mapping: Mapping, filtering: Filtering) -> Run {
    let mut nat = Nat::new(mapping, filtering);
    run_with(&mut nat, &Server::default(), cfg(), |_, _| false)
}

#[test]
fn full_cone() {
    let r = run(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let rep = r.report();
    assert_eq!(rep.mapping, Mapping::EndpointIndependent);
    assert_eq!(rep.filtering, Filtering::EndpointIndependent);
    assert_eq!(rep.nat_type(), NatType::FullCone);
    assert_eq!(rep.mapped, sa(PUBLIC_IP, 5000));
    assert_eq!(rep.other_address, sa(A2, P2));
    assert_eq!(rep.local, primary());
    assert!(rep.port_preserved());
    assert_eq!(rep.hairpinning, Some(false), "this NAT does not hairpin");
    // Mapping test III is not needed once test II matched; filtering III not after II answered.
    // (With zero latency, test II's answer arrives before test III's first request is polled.)
    assert!(r.count(Test::MappingIII) <= 1);
    assert_eq!(r.d.test_result(Test::MappingIII), TestResult::Cancelled);
    assert_eq!(r.d.test_result(Test::FilteringIII), TestResult::Cancelled);
    // Only the hairpinning probe had to time out.
    assert_eq!(r.elapsed, cfg().transaction_timeout());
}

#[test]
fn address_restricted_cone() {
    let r = run(Mapping::EndpointIndependent, Filtering::AddressDependent);
    let rep = r.report();
    assert_eq!(
        (rep.mapping, rep.filtering),
        (Mapping::EndpointIndependent, Filtering::AddressDependent)
    );
    assert_eq!(rep.nat_type(), NatType::AddressRestrictedCone);
    assert_eq!(r.d.test_result(Test::FilteringII), TestResult::TimedOut);
    assert!(matches!(
        r.d.test_result(Test::FilteringIII),
        TestResult::Answered { source, .. } if source == sa(A1, P2)
    ));
}

#[test]
fn port_restricted_cone_takes_one_transaction_timeout() {
    let r = run(
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    );
    let rep = r.report();
    assert_eq!(rep.filtering, Filtering::AddressAndPortDependent);
    assert_eq!(rep.nat_type(), NatType::PortRestrictedCone);
    // Filtering II and III (and the hairpin probe) ran concurrently and timed out together.
    assert_eq!(r.elapsed, cfg().transaction_timeout());
    assert!(r.elapsed < Duration::from_secs(10));
    for t in [Test::FilteringII, Test::FilteringIII, Test::Hairpinning] {
        assert_eq!(r.count(t), cfg().max_requests as usize, "{t:?}");
        assert_eq!(r.d.test_result(t), TestResult::TimedOut);
    }
}

#[test]
fn symmetric_address_and_port_dependent() {
    let r = run(
        Mapping::AddressAndPortDependent,
        Filtering::AddressAndPortDependent,
    );
    let rep = r.report();
    assert_eq!(rep.mapping, Mapping::AddressAndPortDependent);
    assert_eq!(rep.nat_type(), NatType::Symmetric);
    assert!(rep
        .nat_type()
        .verdict()
        .contains("symmetric or port-restricted"));
}

#[test]
fn symmetric_address_dependent() {
    let r = run(Mapping::AddressDependent, Filtering::AddressDependent);
    let rep = r.report();
    assert_eq!(rep.mapping, Mapping::AddressDependent);
    assert_eq!(rep.filtering, Filtering::AddressDependent);
    assert_eq!(rep.nat_type(), NatType::Symmetric);
}

#[test]
fn hairpinning_detected() {
    let mut nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    nat.hairpin = true;
    let r = run_with(&mut nat, &Server::default(), cfg(), |_, _| false);
    assert_eq!(r.report().hairpinning, Some(true));
    // Everything answered: the run is as quick as the network (zero here).
    assert_eq!(r.elapsed, Duration::ZERO);
}

#[test]
fn hairpinning_not_tested_when_disabled() {
    let mut c = cfg();
    c.hairpinning = false;
    let mut nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let r = run_with(&mut nat, &Server::default(), c, |_, _| false);
    assert_eq!(r.report().hairpinning, None);
    assert_eq!(r.count(Test::Hairpinning), 0);
    assert_eq!(r.elapsed, Duration::ZERO);
}

#[test]
fn open_internet() {
    let r = run(Mapping::NoNat, Filtering::EndpointIndependent);
    let rep = r.report();
    assert_eq!(rep.mapping, Mapping::NoNat);
    assert_eq!(rep.nat_type(), NatType::OpenInternet);
    assert!(!rep.nat_type().is_nat());
    assert_eq!(rep.mapped, primary());
    assert_eq!(rep.hairpinning, None, "no NAT, nothing to hairpin");
    // RFC 5780 §4.3: no NAT, no further mapping tests.
    assert_eq!(r.count(Test::MappingII), 0);
    assert_eq!(r.count(Test::MappingIII), 0);
    assert_eq!(r.count(Test::Hairpinning), 0);
}

#[test]
fn firewall_variants() {
    let r = run(Mapping::NoNat, Filtering::AddressDependent);
    assert_eq!(r.report().nat_type(), NatType::AddressRestrictedFirewall);
    let r = run(Mapping::NoNat, Filtering::AddressAndPortDependent);
    assert_eq!(r.report().nat_type(), NatType::PortRestrictedFirewall);
    assert_eq!(r.elapsed, cfg().transaction_timeout());
}

#[test]
fn server_without_rfc_5780() {
    let mut nat = Nat::new(
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    );
    let server = Server {
        rfc5780: false,
        ..Server::default()
    };
    let r = run_with(&mut nat, &server, cfg(), |_, _| false);
    assert_eq!(
        r.outcome,
        Outcome::NotRfc5780 {
            server: sa(A1, P1),
            local: primary(),
            mapped: sa(PUBLIC_IP, 5000)
        }
    );
    assert_eq!(r.elapsed, Duration::ZERO, "decided on the first answer");
    assert_eq!(r.count(Test::MappingII), 0);
}

#[test]
fn no_answer() {
    let mut nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let server = Server {
        answers: false,
        ..Server::default()
    };
    let r = run_with(&mut nat, &server, cfg(), |_, _| false);
    assert_eq!(r.outcome, Outcome::NoAnswer { server: sa(A1, P1) });
    assert_eq!(r.elapsed, cfg().transaction_timeout());
    assert_eq!(r.count(Test::MappingI), cfg().max_requests as usize);
    let at: Vec<Duration> = r
        .sent
        .iter()
        .filter(|s| s.1 == Test::MappingI)
        .map(|s| s.0)
        .collect();
    assert_eq!(at, cfg().send_offsets().collect::<Vec<_>>());
    assert_eq!(at, [0, 250, 750, 1750, 3750].map(Duration::from_millis));
}

#[test]
fn error_response_to_test_one() {
    let mut nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let server = Server {
        error: Some(403),
        ..Server::default()
    };
    let r = run_with(&mut nat, &server, cfg(), |_, _| false);
    assert_eq!(
        r.outcome,
        Outcome::ServerError {
            server: sa(A1, P1),
            code: 403
        }
    );
}

#[test]
fn server_ignoring_change_request_gives_unknown_filtering() {
    let mut nat = Nat::new(
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    );
    let server = Server {
        honours_change: false,
        ..Server::default()
    };
    let r = run_with(&mut nat, &server, cfg(), |_, _| false);
    let rep = r.report();
    assert_eq!(
        rep.filtering,
        Filtering::Unknown,
        "an answer from the unchanged address proves nothing"
    );
    assert_eq!(rep.nat_type(), NatType::Unknown);
    assert!(rep.nat_type().verdict().contains("TURN relay"));
}

#[test]
fn change_request_refused_gives_unknown_filtering() {
    let mut nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let server = Server {
        change_error: Some(420),
        ..Server::default()
    };
    let r = run_with(&mut nat, &server, cfg(), |_, _| false);
    assert_eq!(r.report().filtering, Filtering::Unknown);
    assert_eq!(r.report().mapping, Mapping::EndpointIndependent);
}

#[test]
fn unreachable_alternate_address_gives_unknown_mapping() {
    let mut nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let server = Server {
        alt_reachable: false,
        ..Server::default()
    };
    let r = run_with(&mut nat, &server, cfg(), |_, _| false);
    let rep = r.report();
    assert_eq!(rep.mapping, Mapping::Unknown);
    assert_eq!(rep.filtering, Filtering::EndpointIndependent);
    assert_eq!(rep.nat_type(), NatType::Unknown);
    assert_eq!(r.d.test_result(Test::MappingII), TestResult::TimedOut);
}

#[test]
fn lost_requests_are_retransmitted_with_doubling_rto() {
    let mut nat = Nat::new(
        Mapping::AddressAndPortDependent,
        Filtering::AddressDependent,
    );
    // The first two requests of every test are lost; the third gets through.
    let r = run_with(&mut nat, &Server::default(), cfg(), |_, n| n < 2);
    let rep = r.report();
    assert_eq!(rep.nat_type(), NatType::Symmetric);
    assert_eq!(rep.filtering, Filtering::AddressDependent);
    let at: Vec<Duration> = r
        .sent
        .iter()
        .filter(|s| s.1 == Test::MappingI)
        .map(|s| s.0)
        .collect();
    assert_eq!(at, [0, 250, 750].map(Duration::from_millis));
    // Tests II/III start when test I is answered (750 ms) and need three requests each.
    let at: Vec<Duration> = r
        .sent
        .iter()
        .filter(|s| s.1 == Test::MappingII)
        .map(|s| s.0)
        .collect();
    assert_eq!(at, [750, 1000, 1500].map(Duration::from_millis));
}

#[test]
fn last_request_alone_is_enough() {
    let rc = cfg().max_requests as usize;
    let mut nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let r = run_with(&mut nat, &Server::default(), cfg(), |t, n| {
        t == Test::MappingI && n < rc - 1
    });
    assert_eq!(r.report().nat_type(), NatType::FullCone);
    assert_eq!(r.count(Test::MappingI), rc);
}

#[test]
fn configurable_rc_rm_and_rto_bound_the_run() {
    let mut c = cfg();
    c.rto = Duration::from_millis(100);
    c.max_requests = 3;
    c.last_wait = 4;
    let mut nat = Nat::new(
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
    );
    let r = run_with(&mut nat, &Server::default(), c.clone(), |_, _| false);
    assert_eq!(r.report().nat_type(), NatType::PortRestrictedCone);
    assert_eq!(r.elapsed, Duration::from_millis(300 + 400));
    assert_eq!(r.elapsed, c.transaction_timeout());
    assert_eq!(r.count(Test::FilteringII), 3);
}

#[test]
fn stray_datagrams_are_ignored() {
    let t0 = Instant::now();
    let mut d = NatDiscovery::new(cfg(), t0, 7);
    let first = d.poll_transmit().unwrap();
    assert_eq!(first.test, Test::MappingI);
    assert_eq!(first.socket, Socket::Primary);
    assert_eq!(first.destination, sa(A1, P1));
    let req = Message::parse(first.payload()).unwrap();
    let answer = |class: Class, tid_from: &Message<'_>, fingerprint: bool| {
        let mut buf = vec![0u8; 128];
        let mut b = MessageBuilder::response_to(&mut buf, tid_from, class).unwrap();
        b.xor_mapped_address(sa(PUBLIC_IP, 1)).unwrap();
        b.other_address(sa(A2, P2)).unwrap();
        if fingerprint {
            b.fingerprint().unwrap();
        }
        let n = b.finish();
        buf.truncate(n);
        buf
    };
    // Junk, a response on the wrong socket, a corrupted FINGERPRINT, a request.
    assert!(!d.handle_receive(t0, Socket::Primary, sa(A1, P1), b"hello"));
    let good = answer(Class::Success, &req, true);
    assert!(!d.handle_receive(t0, Socket::Secondary, sa(A1, P1), &good));
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(!d.handle_receive(t0, Socket::Primary, sa(A1, P1), &bad));
    assert!(!d.handle_receive(t0, Socket::Primary, sa(A1, P1), first.payload()));
    assert_eq!(d.test_result(Test::MappingI), TestResult::Pending);
    // The real answer is taken once; a duplicate is not.
    assert!(d.handle_receive(t0, Socket::Primary, sa(A1, P1), &good));
    assert!(!d.handle_receive(t0, Socket::Primary, sa(A1, P1), &good));
    assert!(
        matches!(d.test_result(Test::MappingI), TestResult::Answered { mapped, .. } if mapped == sa(PUBLIC_IP, 1))
    );
}

#[test]
fn every_nat_type_has_distinct_transaction_ids() {
    let d = NatDiscovery::new(cfg(), Instant::now(), 9);
    let ids: HashSet<_> = Test::ALL.iter().map(|t| d.transaction_id(*t)).collect();
    assert_eq!(ids.len(), Test::ALL.len());
    let other = NatDiscovery::new(cfg(), Instant::now(), 10);
    assert_ne!(
        d.transaction_id(Test::MappingI),
        other.transaction_id(Test::MappingI)
    );
}
