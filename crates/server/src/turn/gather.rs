//! Peer → client datagrams gathered per worker thread and sent with one `sendmmsg(2)` per
//! listener socket per scheduler round, instead of one `sendmsg` each.
//!
//! Every relay socket has its own task, and each wake-up of one usually carries a single
//! datagram from its peer; but the datagrams of all the relays a worker thread polls leave
//! through the same few listener sockets (the 5-tuples' server side). A relay task queues its
//! datagrams here and wakes this thread's flush task, which the current-thread scheduler runs
//! after the tasks already woken in the same round: under load, one system call carries the
//! datagrams of many relays; when idle, the flush runs right after the one relay task (a task
//! switch, no added system call, no timer).
//!
//! Only on a current-thread runtime (the STUN/TURN UDP workers), where the queue, the relay
//! tasks and the flush task share one thread; elsewhere [`queue`] declines and the caller sends
//! at once.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use metrics::Counter;
use tokio::io::Interest;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Notify;

use crate::net::sendmmsg::Batch;
use crate::net::Sock;

/// Datagrams gathered per listener socket before a flush is forced.
const CAPACITY: usize = 32;
/// Bytes per gathered datagram: the largest relayed payload plus TURN framing.
const SLOT: usize = 65_535 + switchboard_turn::PEER_OVERHEAD;

#[derive(Default)]
struct Pending {
    /// Whether this thread runs a current-thread runtime (decided on first use).
    usable: Option<bool>,
    /// Per listener socket, the datagrams waiting for the flush.
    socks: Vec<(Arc<Sock>, Batch)>,
    /// A flush is already due.
    armed: bool,
    /// Wakes this thread's flush task (spawned on first use).
    flush: Option<Arc<Notify>>,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// Queues `data` for `to` out of `sock` (from `src_ip` when set). False when this thread does
/// not gather (the caller sends now). A datagram the kernel refuses at flush time is counted in
/// `drops`, like any send that fails.
pub(super) fn queue(
    sock: &Arc<Sock>,
    to: SocketAddr,
    src_ip: Option<IpAddr>,
    data: &[u8],
    drops: &Counter,
) -> bool {
    if data.len() > SLOT {
        return false;
    }
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let usable = *p.usable.get_or_insert_with(|| {
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
        });
        if !usable {
            return false;
        }
        let i = match p.socks.iter().position(|(s, _)| Arc::ptr_eq(s, sock)) {
            Some(i) => i,
            None => {
                p.socks.push((sock.clone(), Batch::new(CAPACITY, SLOT)));
                p.socks.len() - 1
            }
        };
        let (s, batch) = &mut p.socks[i];
        if batch.is_full() {
            send_all(s, batch, drops);
        }
        batch.next_buf()[..data.len()].copy_from_slice(data);
        batch.commit(to, data.len(), src_ip);
        if !p.armed {
            p.armed = true;
            let notify = p.flush.get_or_insert_with(|| {
                let n = Arc::new(Notify::new());
                tokio::spawn(flusher(n.clone(), drops.clone()));
                n
            });
            notify.notify_one();
        }
        true
    })
}

/// This thread's flush task: sends whatever was gathered each time it is woken.
async fn flusher(notify: Arc<Notify>, drops: Counter) {
    loop {
        notify.notified().await;
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            p.armed = false;
            for (s, batch) in p.socks.iter_mut() {
                send_all(s, batch, &drops);
            }
        });
    }
}

/// Sends a socket's gathered datagrams now and empties its batch. When the send buffer is full
/// the rest are dropped and counted (as a single send that fails would be); an error that
/// concerns one datagram skips that one.
fn send_all(sock: &Sock, batch: &mut Batch, drops: &Counter) {
    let mut done = 0usize;
    while done < batch.len() {
        let r = sock.io.try_io(Interest::WRITABLE, || {
            let (n, r) = batch.send(&sock.io, done);
            done += n;
            r
        });
        match r {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                drops.increment((batch.len() - done) as u64);
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "relayed datagram to a client not sent");
                drops.increment(1);
                done += 1;
            }
        }
    }
    batch.clear();
}
