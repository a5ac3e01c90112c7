//! The RFC 5780 behaviour-discovery state machine.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_stun::{Class, Message, MessageBuilder, Method, TransactionId};

use crate::behaviour::{Filtering, Mapping, NatType};

/// Default initial retransmission timeout. RFC 8489 recommends 500 ms on an unknown path; NAT
/// discovery talks to one nearby server and must wait out lost answers on purpose, so it starts
/// lower.
pub const DEFAULT_RTO: Duration = Duration::from_millis(250);
/// Default Rc: requests sent per transaction (the first plus four retransmissions).
pub const DEFAULT_MAX_REQUESTS: u32 = 5;
/// Default Rm: after the last request, wait `Rm × RTO` before giving up.
pub const DEFAULT_LAST_WAIT: u32 = 8;
/// Largest request the client sends (Binding + CHANGE-REQUEST + FINGERPRINT is 36 bytes).
pub const MAX_REQUEST_LEN: usize = 48;

/// One of the client's two local UDP sockets.
///
/// Mapping tests and the hairpinning target use [`Socket::Primary`]; the filtering tests use
/// [`Socket::Secondary`], a fresh mapping that has only ever sent to the server's primary
/// address — otherwise the mapping tests' packets to the alternate address would open the
/// filter and every NAT would look endpoint-independent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Socket {
    /// Mapping tests; receives the hairpinning probe.
    Primary,
    /// Filtering tests; sends the hairpinning probe.
    Secondary,
}

/// The tests of RFC 5780 §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Test {
    /// §4.3 test I: Binding to the primary address; gives the mapped and OTHER-ADDRESS.
    MappingI,
    /// §4.3 test II: Binding to the alternate IP, primary port.
    MappingII,
    /// §4.3 test III: Binding to the alternate IP and port.
    MappingIII,
    /// §4.4 test I: Binding to the primary address from the secondary socket.
    FilteringI,
    /// §4.4 test II: CHANGE-REQUEST (change IP and port).
    FilteringII,
    /// §4.4 test III: CHANGE-REQUEST (change port).
    FilteringIII,
    /// §4.5: a Binding request from the secondary socket to the primary socket's mapped address.
    Hairpinning,
}

impl Test {
    /// Every test, in order.
    pub const ALL: [Test; 7] = [
        Test::MappingI,
        Test::MappingII,
        Test::MappingIII,
        Test::FilteringI,
        Test::FilteringII,
        Test::FilteringIII,
        Test::Hairpinning,
    ];

    const fn index(self) -> usize {
        self as usize
    }

    /// The socket the test sends from.
    pub const fn socket(self) -> Socket {
        match self {
            Test::MappingI | Test::MappingII | Test::MappingIII => Socket::Primary,
            _ => Socket::Secondary,
        }
    }

    /// The CHANGE-REQUEST flags `(change IP, change port)` the test carries.
    pub const fn change_request(self) -> Option<(bool, bool)> {
        match self {
            Test::FilteringII => Some((true, true)),
            Test::FilteringIII => Some((false, true)),
            _ => None,
        }
    }

    /// Short name, e.g. "mapping test II".
    pub const fn name(self) -> &'static str {
        match self {
            Test::MappingI => "mapping test I",
            Test::MappingII => "mapping test II",
            Test::MappingIII => "mapping test III",
            Test::FilteringI => "filtering test I",
            Test::FilteringII => "filtering test II",
            Test::FilteringIII => "filtering test III",
            Test::Hairpinning => "hairpinning test",
        }
    }
}

/// Settings of one discovery run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The server's primary address (where test I goes).
    pub server: SocketAddr,
    /// Local address of [`Socket::Primary`] as bound (a specific IP, not the wildcard: "no NAT"
    /// is decided by comparing it with the mapped address).
    pub primary: SocketAddr,
    /// Local address of [`Socket::Secondary`].
    pub secondary: SocketAddr,
    /// Initial retransmission timeout (RFC 8489 §6.2.1 RTO); doubled after each retransmission.
    pub rto: Duration,
    /// Rc: requests sent per transaction, retransmissions included (at least 1).
    pub max_requests: u32,
    /// Rm: after the last request, give up after `last_wait × rto`.
    pub last_wait: u32,
    /// Run the hairpinning test (only when a NAT is found).
    pub hairpinning: bool,
}

impl Config {
    /// Defaults: [`DEFAULT_RTO`], [`DEFAULT_MAX_REQUESTS`], [`DEFAULT_LAST_WAIT`], hairpinning on.
    pub fn new(server: SocketAddr, primary: SocketAddr, secondary: SocketAddr) -> Config {
        Config {
            server,
            primary,
            secondary,
            rto: DEFAULT_RTO,
            max_requests: DEFAULT_MAX_REQUESTS,
            last_wait: DEFAULT_LAST_WAIT,
            hairpinning: true,
        }
    }

    /// How long a transaction that never gets an answer lasts:
    /// `RTO × (2^(Rc−1) − 1) + Rm × RTO`. With the defaults, 5.75 s; with RFC 8489's defaults
    /// (500 ms, 7, 16), 39.5 s.
    pub fn transaction_timeout(&self) -> Duration {
        let rc = self.max_requests.clamp(1, 31);
        let doublings = (1u32 << (rc - 1)) - 1;
        self.rto
            .saturating_mul(doublings)
            .saturating_add(self.rto.saturating_mul(self.last_wait))
    }

    /// The send times of one transaction, relative to its start (for documentation and tests).
    pub fn send_offsets(&self) -> impl Iterator<Item = Duration> + '_ {
        let rc = self.max_requests.clamp(1, 31);
        (0..rc).map(move |k| self.rto.saturating_mul((1u32 << k) - 1))
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The local socket to send from.
    pub socket: Socket,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The test it belongs to.
    pub test: Test,
    buf: [u8; MAX_REQUEST_LEN],
    len: usize,
}

impl Transmit {
    /// The bytes to send.
    pub fn payload(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// What a test got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestResult {
    /// Not needed (yet).
    NotRun,
    /// Requests in flight.
    Pending,
    /// A success response (or, for the hairpinning test, the probe arrived).
    Answered {
        /// Where the response came from (as seen by the client).
        source: SocketAddr,
        /// XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS); the probe's source for hairpinning.
        mapped: SocketAddr,
        /// OTHER-ADDRESS, when present.
        other: Option<SocketAddr>,
        /// RESPONSE-ORIGIN, when present.
        origin: Option<SocketAddr>,
    },
    /// An error response with this code.
    Error(u16),
    /// Rc requests and `Rm × RTO` without an answer.
    TimedOut,
    /// Stopped because its answer was no longer needed.
    Cancelled,
}

/// The result of a run that completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// The server's primary address.
    pub server: SocketAddr,
    /// The server's OTHER-ADDRESS.
    pub other_address: SocketAddr,
    /// The primary socket's local address.
    pub local: SocketAddr,
    /// The primary socket's public (mapped) address from test I.
    pub mapped: SocketAddr,
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Hairpinning: `None` when not tested (no NAT, or turned off).
    pub hairpinning: Option<bool>,
}

impl Report {
    /// The classic RFC 3489 name.
    pub const fn nat_type(&self) -> NatType {
        NatType::classify(self.mapping, self.filtering)
    }

    /// True when the NAT kept the local port in the mapping.
    pub fn port_preserved(&self) -> bool {
        self.mapped.port() == self.local.port()
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every test finished (some results may be `Unknown`).
    Complete(Report),
    /// Test I got no answer: server down, wrong address, or UDP blocked.
    NoAnswer {
        /// The server asked.
        server: SocketAddr,
    },
    /// The server answers Binding but without OTHER-ADDRESS: it does not do RFC 5780, so only
    /// the mapped address is known.
    NotRfc5780 {
        /// The server asked.
        server: SocketAddr,
        /// The primary socket's local address.
        local: SocketAddr,
        /// Its mapped address.
        mapped: SocketAddr,
    },
    /// Test I got an error response.
    ServerError {
        /// The server asked.
        server: SocketAddr,
        /// The error code.
        code: u16,
    },
}

#[derive(Clone, Copy, Debug)]
struct Tx {
    tid: TransactionId,
    destination: Option<SocketAddr>,
    result: TestResult,
    /// Requests sent so far.
    sent: u32,
    /// When the next request goes out or, after the last one, when the transaction fails.
    next: Option<Instant>,
}

/// A sans-IO RFC 5780 NAT behaviour discovery client.
///
/// It never touches a socket or the clock: feed it received datagrams with
/// [`handle_receive`](Self::handle_receive) and wake-ups with
/// [`handle_timeout`](Self::handle_timeout), drain [`poll_transmit`](Self::poll_transmit), sleep
/// until [`poll_timeout`](Self::poll_timeout), and stop once [`outcome`](Self::outcome) is set.
#[derive(Debug)]
pub struct NatDiscovery {
    config: Config,
    txs: [Tx; 7],
    queue: VecDeque<Test>,
    outcome: Option<Outcome>,
}

impl NatDiscovery {
    /// Starts a run at `now`: test I on both sockets is due immediately. `seed` makes the
    /// transaction ids (pass a random value; tests pass a constant).
    pub fn new(config: Config, now: Instant, seed: u64) -> NatDiscovery {
        let mut rng = SplitMix64(seed);
        let txs = [(); 7].map(|()| {
            let a = rng.next().to_le_bytes();
            let b = rng.next().to_le_bytes();
            let mut id = [0u8; 12];
            for (d, s) in id.iter_mut().zip(a.iter().chain(b.iter())) {
                *d = *s;
            }
            Tx {
                tid: TransactionId(id),
                destination: None,
                result: TestResult::NotRun,
                sent: 0,
                next: None,
            }
        });
        let mut d = NatDiscovery {
            config,
            txs,
            queue: VecDeque::with_capacity(8),
            outcome: None,
        };
        let server = d.config.server;
        d.start(Test::MappingI, server, now);
        d.start(Test::FilteringI, server, now);
        d
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The result of one test so far.
    pub fn test_result(&self, test: Test) -> TestResult {
        self.tx(test).result
    }

    /// The transaction id a test uses.
    pub fn transaction_id(&self, test: Test) -> TransactionId {
        self.tx(test).tid
    }

    /// Set once the run has ended; nothing more is sent after that.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// True once [`outcome`](Self::outcome) is set.
    pub fn is_done(&self) -> bool {
        self.outcome.is_some()
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(test) = self.queue.pop_front() {
            let tx = self.tx(test);
            let (TestResult::Pending, Some(destination)) = (tx.result, tx.destination) else {
                continue;
            };
            let mut buf = [0u8; MAX_REQUEST_LEN];
            let Some(len) = build_request(&mut buf, tx.tid, test.change_request()) else {
                continue;
            };
            return Some(Transmit {
                socket: test.socket(),
                destination,
                test,
                buf,
                len,
            });
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        self.txs
            .iter()
            .filter(|t| t.result == TestResult::Pending)
            .filter_map(|t| t.next)
            .min()
    }

    /// Advances time: retransmits what is due, fails what has waited long enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        let rto = self.config.rto;
        let rc = self.config.max_requests.max(1);
        let rm = self.config.last_wait;
        let mut changed = false;
        for test in Test::ALL {
            let tx = &mut self.txs[test.index()];
            let (TestResult::Pending, Some(next)) = (tx.result, tx.next) else {
                continue;
            };
            if next > now {
                continue;
            }
            if tx.sent >= rc {
                tx.result = TestResult::TimedOut;
                tx.next = None;
                changed = true;
            } else {
                // Request number `sent + 1`; the interval doubles after each one.
                tx.sent += 1;
                tx.next = Some(if tx.sent >= rc {
                    now + rto.saturating_mul(rm)
                } else {
                    now + rto.saturating_mul(1 << (tx.sent - 1).min(30))
                });
                if !self.queue.contains(&test) {
                    self.queue.push_back(test);
                }
            }
        }
        if changed {
            self.advance(now);
        }
    }

    /// Feeds a datagram received on `socket` from `source`. Returns true if it belonged to this
    /// run (a response to one of its transactions, or the hairpinning probe).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        socket: Socket,
        source: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        let Ok(msg) = Message::parse(datagram) else {
            return false;
        };
        if msg.method() != Method::BINDING || msg.check_fingerprint() == Some(false) {
            return false;
        }
        let tid = msg.transaction_id();
        let Some(test) = Test::ALL.into_iter().find(|t| self.tx(*t).tid == tid) else {
            return false;
        };
        if self.tx(test).result != TestResult::Pending {
            return false;
        }
        let result = match (msg.class(), test) {
            (Class::Request, Test::Hairpinning) if socket == Socket::Primary => {
                TestResult::Answered {
                    source,
                    mapped: source,
                    other: None,
                    origin: None,
                }
            }
            (Class::Success, t) if t != Test::Hairpinning && socket == t.socket() => {
                let mapped = match msg.xor_mapped_address() {
                    Ok(Some(a)) => a,
                    _ => match msg.mapped_address() {
                        Ok(Some(a)) => a,
                        // A success without a usable mapped address is no answer.
                        _ => return false,
                    },
                };
                TestResult::Answered {
                    source,
                    mapped,
                    other: msg.other_address().ok().flatten(),
                    origin: msg.response_origin().ok().flatten(),
                }
            }
            (Class::Error, t) if t != Test::Hairpinning && socket == t.socket() => {
                TestResult::Error(msg.error_code().ok().flatten().map_or(0, |(c, _)| c))
            }
            _ => return false,
        };
        let tx = &mut self.txs[test.index()];
        tx.result = result;
        tx.next = None;
        self.advance(now);
        true
    }

    fn tx(&self, test: Test) -> &Tx {
        &self.txs[test.index()]
    }

    fn start(&mut self, test: Test, destination: SocketAddr, now: Instant) {
        let rto = self.config.rto;
        let rc = self.config.max_requests.max(1);
        let rm = self.config.last_wait;
        let tx = &mut self.txs[test.index()];
        if tx.result != TestResult::NotRun {
            return;
        }
        tx.destination = Some(destination);
        tx.result = TestResult::Pending;
        tx.sent = 1;
        tx.next = Some(if rc == 1 {
            now + rto.saturating_mul(rm)
        } else {
            now + rto
        });
        self.queue.push_back(test);
    }

    fn cancel(&mut self, test: Test) {
        let tx = &mut self.txs[test.index()];
        if matches!(tx.result, TestResult::Pending | TestResult::NotRun) {
            tx.result = TestResult::Cancelled;
            tx.next = None;
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        for t in Test::ALL {
            self.cancel(t);
        }
        self.queue.clear();
        self.outcome = Some(outcome);
    }

    /// Starts the tests whose prerequisites are met and decides the outcome when possible.
    fn advance(&mut self, now: Instant) {
        if self.outcome.is_some() {
            return;
        }
        let server = self.config.server;
        // Mapping test I decides whether there is anything to learn.
        let (m1, other) = match self.tx(Test::MappingI).result {
            TestResult::Pending => return,
            TestResult::TimedOut | TestResult::NotRun | TestResult::Cancelled => {
                return self.finish(Outcome::NoAnswer { server });
            }
            TestResult::Error(code) => return self.finish(Outcome::ServerError { server, code }),
            TestResult::Answered { mapped, other, .. } => (mapped, other),
        };
        let Some(other) = other else {
            return self.finish(Outcome::NotRfc5780 {
                server,
                local: self.config.primary,
                mapped: m1,
            });
        };
        let nat = m1 != self.config.primary;
        if nat {
            self.start(
                Test::MappingII,
                SocketAddr::new(other.ip(), server.port()),
                now,
            );
            self.start(Test::MappingIII, other, now);
            if self.config.hairpinning {
                self.start(Test::Hairpinning, m1, now);
            }
        }
        if let TestResult::Answered { .. } = self.tx(Test::FilteringI).result {
            self.start(Test::FilteringII, server, now);
            self.start(Test::FilteringIII, server, now);
        }

        let mapping = if nat {
            self.mapping(m1)
        } else {
            Some(Mapping::NoNat)
        };
        if mapping == Some(Mapping::EndpointIndependent) {
            // Test II settled it; test III is not needed.
            self.cancel(Test::MappingIII);
        }
        let filtering = self.filtering();
        if filtering == Some(Filtering::EndpointIndependent) {
            self.cancel(Test::FilteringIII);
        }
        let hairpinning = match self.tx(Test::Hairpinning).result {
            TestResult::NotRun | TestResult::Cancelled => Some(None),
            TestResult::Pending => None,
            TestResult::Answered { .. } => Some(Some(true)),
            TestResult::TimedOut | TestResult::Error(_) => Some(Some(false)),
        };
        if let (Some(mapping), Some(filtering), Some(hairpinning)) =
            (mapping, filtering, hairpinning)
        {
            self.finish(Outcome::Complete(Report {
                server,
                other_address: other,
                local: self.config.primary,
                mapped: m1,
                mapping,
                filtering,
                hairpinning,
            }));
        }
    }

    /// Mapping from tests II and III; `None` while undecided.
    fn mapping(&self, m1: SocketAddr) -> Option<Mapping> {
        match self.tx(Test::MappingII).result {
            TestResult::Pending | TestResult::NotRun => None,
            TestResult::Answered { mapped: m2, .. } if m2 == m1 => {
                Some(Mapping::EndpointIndependent)
            }
            TestResult::Answered { mapped: m2, .. } => match self.tx(Test::MappingIII).result {
                TestResult::Pending | TestResult::NotRun => None,
                TestResult::Answered { mapped: m3, .. } if m3 == m2 => {
                    Some(Mapping::AddressDependent)
                }
                TestResult::Answered { .. } => Some(Mapping::AddressAndPortDependent),
                _ => Some(Mapping::Unknown),
            },
            _ => Some(Mapping::Unknown),
        }
    }

    /// Filtering from tests I–III on the secondary socket; `None` while undecided.
    fn filtering(&self) -> Option<Filtering> {
        let server = self.config.server;
        match self.tx(Test::FilteringI).result {
            TestResult::Pending | TestResult::NotRun => return None,
            TestResult::Answered { .. } => {}
            _ => return Some(Filtering::Unknown),
        }
        match self.tx(Test::FilteringII).result {
            TestResult::Pending | TestResult::NotRun => None,
            // The answer must really come from the other IP and port, or the server ignored
            // CHANGE-REQUEST and the test proves nothing.
            TestResult::Answered { source, .. }
                if source.ip() != server.ip() && source.port() != server.port() =>
            {
                Some(Filtering::EndpointIndependent)
            }
            TestResult::Answered { .. } | TestResult::Error(_) | TestResult::Cancelled => {
                Some(Filtering::Unknown)
            }
            TestResult::TimedOut => match self.tx(Test::FilteringIII).result {
                TestResult::Pending | TestResult::NotRun => None,
                TestResult::Answered { source, .. }
                    if source.ip() == server.ip() && source.port() != server.port() =>
                {
                    Some(Filtering::AddressDependent)
                }
                TestResult::TimedOut => Some(Filtering::AddressAndPortDependent),
                _ => Some(Filtering::Unknown),
            },
        }
    }
}

fn build_request(
    buf: &mut [u8; MAX_REQUEST_LEN],
    tid: TransactionId,
    change: Option<(bool, bool)>,
) -> Option<usize> {
    let mut b = MessageBuilder::new(buf, Class::Request, Method::BINDING, tid).ok()?;
    if let Some((ip, port)) = change {
        b.change_request(ip, port).ok()?;
    }
    b.fingerprint().ok()?;
    Some(b.finish())
}

/// Transaction ids only need to be unpredictable enough not to collide with other traffic; the
/// caller seeds this from its own randomness.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::new(
            "192.0.2.1:3478".parse().unwrap(),
            "10.0.0.2:5000".parse().unwrap(),
            "10.0.0.2:5001".parse().unwrap(),
        )
    }

    #[test]
    fn retransmissions_follow_rfc_8489_rto_doubling() {
        let mut c = cfg();
        c.rto = Duration::from_millis(100);
        c.max_requests = 4;
        c.last_wait = 3;
        c.hairpinning = false;
        assert_eq!(
            c.send_offsets().collect::<Vec<_>>(),
            [0, 100, 300, 700].map(Duration::from_millis)
        );
        assert_eq!(c.transaction_timeout(), Duration::from_millis(1000));
        let t0 = Instant::now();
        let mut d = NatDiscovery::new(c, t0, 1);
        let mut sends: Vec<(Duration, Test)> = Vec::new();
        let mut now = t0;
        loop {
            while let Some(t) = d.poll_transmit() {
                sends.push((now - t0, t.test));
            }
            let Some(next) = d.poll_timeout() else { break };
            now = next;
            d.handle_timeout(now);
        }
        for test in [Test::MappingI, Test::FilteringI] {
            let at: Vec<Duration> = sends.iter().filter(|s| s.1 == test).map(|s| s.0).collect();
            assert_eq!(
                at,
                [0, 100, 300, 700].map(Duration::from_millis),
                "{test:?}"
            );
        }
        assert_eq!(
            sends.len(),
            8,
            "nothing but the two test I transactions: {sends:?}"
        );
        assert_eq!(now - t0, Duration::from_millis(1000));
        assert_eq!(
            d.outcome(),
            Some(&Outcome::NoAnswer {
                server: "192.0.2.1:3478".parse().unwrap()
            })
        );
        assert_eq!(d.test_result(Test::MappingI), TestResult::TimedOut);
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn default_full_timeout_stays_well_under_ten_seconds() {
        let c = cfg();
        assert_eq!(c.transaction_timeout(), Duration::from_millis(5750));
        let mut rfc = cfg();
        rfc.rto = Duration::from_millis(500);
        rfc.max_requests = 7;
        rfc.last_wait = 16;
        assert_eq!(rfc.transaction_timeout(), Duration::from_millis(39_500));
    }

    #[test]
    fn requests_carry_change_request_and_fingerprint() {
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = build_request(&mut buf, TransactionId([3; 12]), Some((true, true))).unwrap();
        assert_eq!(n, 36);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.change_request(), Ok(Some((true, true))));
        assert_eq!(m.check_fingerprint(), Some(true));
    }
}
