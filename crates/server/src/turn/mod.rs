//! The STUN/TURN data path: the shared core (the sans-IO TURN service behind a lock, relay
//! sockets, revocations and counters), the UDP workers, the TCP/TLS stream transport and the
//! out queue of a stream client; peer → client datagrams gathered per worker thread (`gather`).

mod core;
mod gather;
mod outq;
pub(crate) mod stream;
pub(crate) mod udp;

pub(crate) use self::core::{ticker, Core, REVOCATIONS_TOPIC};
