//! Everything that crosses between the sans-IO services and the I/O layer: where an input
//! arrived ([`Arrival`]), the time ([`Now`]), what to do with it ([`Output`], [`PeerOutput`]),
//! why nothing is sent ([`DropReason`], [`PeerDrop`]), the relay sockets the services ask for
//! ([`RelayProvider`]), and the sizes of the caller's output buffers ([`MAX_REPLY`],
//! [`PEER_OVERHEAD`]).

use std::net::SocketAddr;
use std::time::Instant;

/// Largest reply [`BindingService`](crate::BindingService) and
/// [`TurnService`](crate::TurnService) write; callers size their output buffers with it.
pub const MAX_REPLY: usize = 2048;

/// Room for the reply attributes around a relayed payload: the output buffer of
/// [`TurnService::handle_peer`](crate::TurnService::handle_peer) holds at least
/// `payload.len() + PEER_OVERHEAD` bytes.
pub const PEER_OVERHEAD: usize = 64;

// Inputs: where a message arrived, and when.

/// The transport a message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A frame from a plain TCP connection.
    Tcp,
    /// A frame from a TLS connection.
    Tls,
}

impl Transport {
    /// Lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Where a message arrived: the facts the caller's socket knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The client's address as seen by the server (the mapped address).
    pub peer: SocketAddr,
    /// The local address the message arrived on.
    pub local: SocketAddr,
    /// RFC 5780: the server address that differs from `local` in both IP and port, when the
    /// listener has an alternate address. `None` means the server cannot change address.
    pub other: Option<SocketAddr>,
    /// The transport.
    pub transport: Transport,
}

/// The client side of an allocation: client address, server address, transport (RFC 8656 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// The server address the client talks to.
    pub server: SocketAddr,
    /// The transport between them.
    pub transport: Transport,
}

/// The time, twice: monotonic for lifetimes, Unix seconds for REST credential expiry and nonces.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Seconds since the Unix epoch.
    pub unix: u64,
}

// Outputs: what to send, or why nothing is sent.

/// What to do with one input from a client: the answer of
/// [`BindingService::handle`](crate::BindingService::handle) (never [`Output::Relay`]) and of
/// [`TurnService::handle`](crate::TurnService::handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Send `out[..len]` to `to` from the listener socket chosen by `via`.
    Reply {
        /// Which socket sends.
        via: Via,
        /// Destination.
        to: SocketAddr,
        /// Bytes of the output buffer.
        len: usize,
        /// An error response.
        error: bool,
    },
    /// Send `data` from the relay socket `relay` to `peer`.
    Relay {
        /// The allocation's relay address.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The payload, borrowed from the input.
        data: &'a [u8],
    },
    /// Send nothing.
    Drop(DropReason),
}

/// Which of the listener's sockets sends the reply (RFC 5780 CHANGE-REQUEST).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The socket (or connection) the request arrived on.
    Same,
    /// Same port, the other IP address.
    ChangeIp,
    /// Same IP address, the other port.
    ChangePort,
    /// The other IP address and the other port.
    ChangeBoth,
}

impl Via {
    /// The source address a reply sent this way carries, given where the request arrived.
    /// `None` when the listener has no alternate address and `self` is not [`Via::Same`].
    pub fn origin(self, local: SocketAddr, other: Option<SocketAddr>) -> Option<SocketAddr> {
        match (self, other) {
            (Via::Same, _) => Some(local),
            (Via::ChangeIp, Some(o)) => Some(SocketAddr::new(o.ip(), local.port())),
            (Via::ChangePort, Some(o)) => Some(SocketAddr::new(local.ip(), o.port())),
            (Via::ChangeBoth, Some(o)) => Some(o),
            (_, None) => None,
        }
    }
}

/// Why an input got no reply. The caller counts these; for stream transports a reason where
/// [`DropReason::is_fault`] is true also closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a STUN message (first byte outside the STUN range).
    NotStun,
    /// A TURN ChannelData message while no TURN allocation exists.
    ChannelData,
    /// The STUN message failed to parse.
    Malformed,
    /// FINGERPRINT present but wrong.
    BadFingerprint,
    /// An indication: nothing to answer (Binding indications are keep-alives).
    Indication,
    /// A success or error response sent to the server: nothing to answer.
    Response,
    /// The caller's output buffer was too small for the reply (a server bug, never input).
    OutputTooSmall,
}

impl DropReason {
    /// Short stable name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotStun => "not_stun",
            DropReason::ChannelData => "channel_data",
            DropReason::Malformed => "malformed",
            DropReason::BadFingerprint => "bad_fingerprint",
            DropReason::Indication => "indication",
            DropReason::Response => "response",
            DropReason::OutputTooSmall => "output_too_small",
        }
    }

    /// True when the input shows the peer is not speaking STUN correctly.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            DropReason::NotStun
                | DropReason::ChannelData
                | DropReason::Malformed
                | DropReason::BadFingerprint
        )
    }
}

/// What to do with a datagram a peer sent to a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOutput {
    /// Send `out[..len]` (ChannelData or a Data indication) to the client of `five`.
    ToClient {
        /// The allocation's client side.
        five: FiveTuple,
        /// Bytes of the output buffer.
        len: usize,
    },
    /// Send nothing.
    Drop(PeerDrop),
}

/// Why a peer datagram was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerDrop {
    /// No allocation owns that relay address (it just expired).
    NoAllocation,
    /// No permission for the peer's IP.
    NoPermission,
    /// Over the allocation's bandwidth.
    Bandwidth,
    /// Output buffer too small (a server bug).
    OutputTooSmall,
}

// Relays: the sockets the TURN service asks the I/O layer for.

/// Address family of a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// What the state machine asks the I/O layer to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayRequest {
    /// The allocation's client 5-tuple (for logs).
    pub five: FiveTuple,
    /// Address family.
    pub family: Family,
    /// EVEN-PORT: `Some(reserve_next)` asks for an even port, and with `true` also reserves the
    /// next port.
    pub even: Option<bool>,
    /// A previously reserved address to take (RESERVATION-TOKEN).
    pub reserved: Option<SocketAddr>,
    /// Set DF on relayed datagrams (DONT-FRAGMENT).
    pub dont_fragment: bool,
}

/// A bound relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayBinding {
    /// The relay's address.
    pub addr: SocketAddr,
    /// With `even: Some(true)`: the reserved next address.
    pub reserved: Option<SocketAddr>,
}

/// Why no relay could be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// No port free in the range (508).
    NoCapacity,
    /// The host cannot relay this family (440).
    FamilyUnsupported,
}

/// The I/O layer's side of allocations: real sockets in the server, fakes in tests.
pub trait RelayProvider {
    /// Binds a relay socket.
    fn bind(&mut self, req: RelayRequest) -> Result<RelayBinding, RelayError>;
    /// Closes a relay (or reserved) socket.
    fn release(&mut self, addr: SocketAddr);
}
