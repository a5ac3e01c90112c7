//! One TURN allocation (RFC 8656 §5): its relay address, lifetime, permissions and channels.
//! Time is always passed in.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use switchboard_stun::TransactionId;

use crate::seam::FiveTuple;

/// Most permissions one allocation may hold (each a peer IP).
pub const MAX_PERMISSIONS: usize = 256;
/// Most channels one allocation may hold.
pub const MAX_CHANNELS: usize = 256;

#[derive(Clone, Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

/// A token bucket limiting relayed bytes per second (0 = unlimited).
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate as f64,
            last: now,
        }
    }

    /// Takes `bytes` if available (burst: one second's worth).
    pub(crate) fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// One allocation.
#[derive(Clone, Debug)]
pub struct Allocation {
    /// The client's 5-tuple.
    pub five: FiveTuple,
    /// The bound relay address.
    pub relay: SocketAddr,
    /// The relay address as advertised (XOR-RELAYED-ADDRESS, with `--external-ip`).
    pub advertised: SocketAddr,
    /// Who authenticated the Allocate.
    pub username: String,
    /// Whom the allocation counts against in the per-user quota ([`crate::auth::Verified::user`]).
    pub user: String,
    /// The key that signed the Allocate (later requests must use the same credentials).
    pub(crate) key: Vec<u8>,
    /// When it expires unless refreshed.
    pub expires: Instant,
    /// The Allocate transaction, so a retransmission gets the same answer.
    pub(crate) allocate_tid: TransactionId,
    /// The lifetime granted by that Allocate, for retransmissions.
    pub(crate) granted: u32,
    /// The token of the port reserved with this allocation (EVEN-PORT with R), repeated in the
    /// answer to a retransmitted Allocate. The reservation itself outlives neither its 30 s nor
    /// its first use, and does not end with this allocation.
    pub(crate) reserved: Option<[u8; 8]>,
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
    pub(crate) bucket: Bucket,
    /// When the Allocate succeeded.
    pub created: Instant,
    /// What it relayed so far.
    pub traffic: Traffic,
}

/// What one allocation relayed (payload bytes, without STUN or ChannelData framing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets sent to peers.
    pub packets_to_peer: u64,
    /// Payload bytes sent to peers.
    pub bytes_to_peer: u64,
    /// Packets sent to the client.
    pub packets_to_client: u64,
    /// Payload bytes sent to the client.
    pub bytes_to_client: u64,
}

/// Why a ChannelBind was refused (400 in RFC 8656 §12.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// Channel number outside 0x4000–0x7FFF (RFC 8656 says 0x4FFF; RFC 5766 clients use more).
    BadNumber,
    /// The number is bound to another peer, or the peer to another number.
    Conflict,
    /// Too many channels.
    Full,
}

impl Allocation {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        five: FiveTuple,
        relay: SocketAddr,
        advertised: SocketAddr,
        username: String,
        user: String,
        key: Vec<u8>,
        lifetime: Duration,
        tid: TransactionId,
        bandwidth: u64,
        now: Instant,
    ) -> Self {
        Allocation {
            five,
            relay,
            advertised,
            username,
            user,
            key,
            expires: now + lifetime,
            allocate_tid: tid,
            granted: lifetime.as_secs() as u32,
            reserved: None,
            permissions: Vec::new(),
            channels: Vec::new(),
            bucket: Bucket::new(bandwidth, now),
            created: now,
            traffic: Traffic::default(),
        }
    }

    /// Whether a permission for `ip` is live at `now`.
    pub fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|(p, exp)| *p == ip && *exp > now)
    }

    /// Installs or refreshes a permission; false when the table is full.
    pub fn permit(&mut self, ip: IpAddr, lifetime: Duration, now: Instant) -> bool {
        let expires = now + lifetime;
        if let Some(p) = self.permissions.iter_mut().find(|(p, _)| *p == ip) {
            p.1 = expires;
            return true;
        }
        self.permissions.retain(|(_, exp)| *exp > now);
        if self.permissions.len() >= MAX_PERMISSIONS {
            return false;
        }
        self.permissions.push((ip, expires));
        true
    }

    /// Binds (or refreshes) `number` to `peer` (RFC 8656 §12.2 rules).
    pub fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        lifetime: Duration,
        now: Instant,
    ) -> Result<(), BindError> {
        if !switchboard_stun::ChannelData::is_valid_channel(number) {
            return Err(BindError::BadNumber);
        }
        self.channels.retain(|c| c.expires > now);
        let by_number = self.channels.iter().position(|c| c.number == number);
        let by_peer = self.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(a), Some(b)) if a == b => {
                self.channels[a].expires = now + lifetime;
                Ok(())
            }
            (None, None) => {
                if self.channels.len() >= MAX_CHANNELS {
                    return Err(BindError::Full);
                }
                self.channels.push(Channel {
                    number,
                    peer,
                    expires: now + lifetime,
                });
                Ok(())
            }
            _ => Err(BindError::Conflict),
        }
    }

    /// The peer bound to `number`, if the binding is live.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
            .map(|c| c.peer)
    }

    /// The channel bound to `peer`, if live.
    pub fn peer_channel(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }

    /// Live permissions and channels at `now`.
    pub fn counts(&self, now: Instant) -> (usize, usize) {
        (
            self.permissions.iter().filter(|(_, e)| *e > now).count(),
            self.channels.iter().filter(|c| c.expires > now).count(),
        )
    }
}
