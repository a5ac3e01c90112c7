//! A bounded byte queue between a connection's producers (replies, relayed data) and its writer
//! task. Frames are appended into one ring buffer, so a warmed-up queue relays without allocating;
//! relayed data that does not fit is dropped (as UDP would), replies wait for room.
//!
//! With a [`Direct`] sink (plain TCP), a frame pushed while nothing is queued or being written
//! goes straight to the socket with a non-blocking write from the producer's thread — no wake-up
//! of the writer task, which is what dominated the cost of relaying to TCP clients. Order is
//! kept: the direct path is only taken while the queue is empty and the writer holds no bytes.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Bytes a connection may have queued before relayed data is dropped.
pub(crate) const QUEUE_BYTES: usize = 256 * 1024;

/// A socket a producer may write to directly (non-blocking; `WouldBlock` when it cannot).
pub(crate) trait Direct: Send + Sync {
    /// Writes a prefix of `buf` without blocking; returns how much.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

struct State {
    bytes: VecDeque<u8>,
    /// The writer took bytes out and has not finished writing them.
    writing: bool,
}

/// The queue; shared by producers and the writer through an `Arc`.
pub(crate) struct OutQueue {
    buf: Mutex<State>,
    direct: Option<Box<dyn Direct>>,
    data: Notify,
    room: Notify,
    closed: AtomicBool,
}

impl OutQueue {
    pub(crate) fn new() -> Self {
        Self::with_direct(None)
    }

    /// A queue whose producers write straight to `direct` when nothing is pending.
    pub(crate) fn with_direct(direct: Option<Box<dyn Direct>>) -> Self {
        OutQueue {
            buf: Mutex::new(State {
                // Grown on demand: an idle connection holds no buffer.
                bytes: VecDeque::new(),
                writing: false,
            }),
            direct,
            data: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `frame` if it fits (or writes it directly, see the module docs); false (dropped)
    /// otherwise or after close.
    pub(crate) fn try_push(&self, frame: &[u8]) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut q = self.lock();
            let mut rest = frame;
            if let Some(direct) = &self.direct {
                if q.bytes.is_empty() && !q.writing {
                    // Under the lock, so the writer cannot start in between.
                    match direct.try_write(frame) {
                        Ok(n) if n == frame.len() => return true,
                        Ok(n) => rest = &frame[n..],
                        // WouldBlock, or an error the writer will meet too: queue it.
                        Err(_) => {}
                    }
                }
            }
            if q.bytes.len() + rest.len() > QUEUE_BYTES {
                if rest.len() < frame.len() {
                    // Part of the frame is on the wire: the rest must follow, whatever the
                    // bound (at most one frame over it).
                    q.bytes.extend(rest);
                } else {
                    return false;
                }
            } else {
                q.bytes.extend(rest);
            }
        }
        self.data.notify_one();
        true
    }

    /// Appends `frame`, waiting for room; false if the queue closed meanwhile.
    pub(crate) async fn push(&self, frame: &[u8]) -> bool {
        loop {
            let room = self.room.notified();
            if self.try_push(frame) {
                return true;
            }
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            room.await;
        }
    }

    /// Moves up to `max` queued bytes into `out` (cleared first), waiting for data; an empty
    /// `out` means the queue is closed and drained. The writer calls [`OutQueue::written`] once
    /// it has written them.
    pub(crate) async fn pop_into(&self, out: &mut Vec<u8>, max: usize) {
        out.clear();
        self.pop_append(out, max).await;
    }

    /// Like [`OutQueue::pop_into`], but appends to what `out` holds (a writer that carries the
    /// start of a frame over from the previous batch). Returns false, appending nothing, once
    /// the queue is closed and drained.
    pub(crate) async fn pop_append(&self, out: &mut Vec<u8>, max: usize) -> bool {
        loop {
            let data = self.data.notified();
            {
                let mut q = self.lock();
                if !q.bytes.is_empty() {
                    let n = q.bytes.len().min(max);
                    out.extend(q.bytes.drain(..n));
                    q.writing = true;
                    drop(q);
                    self.room.notify_waiters();
                    return true;
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            data.await;
        }
    }

    /// The writer has written everything [`OutQueue::pop_into`] gave it.
    pub(crate) fn written(&self) {
        self.lock().writing = false;
    }

    /// No more frames; the writer drains what is queued and stops.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.data.notify_one();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_keep_order_and_bound_holds() {
        let q = OutQueue::new();
        assert!(q.try_push(b"abc"));
        assert!(q.push(b"def").await);
        let mut out = Vec::new();
        q.pop_into(&mut out, 4).await;
        assert_eq!(out, b"abcd");
        q.pop_into(&mut out, 100).await;
        assert_eq!(out, b"ef");
        let big = vec![0u8; QUEUE_BYTES];
        assert!(q.try_push(&big));
        assert!(!q.try_push(b"x"), "over the bound");
        q.pop_into(&mut out, usize::MAX).await;
        assert!(q.try_push(b"x"));
        q.close();
        q.pop_into(&mut out, 10).await;
        assert_eq!(out, b"x");
        q.pop_into(&mut out, 10).await;
        assert!(out.is_empty(), "closed and drained");
        assert!(!q.try_push(b"y"));
    }

    /// A socket that takes `take` bytes per call, or refuses with WouldBlock when 0.
    struct Sink {
        got: std::sync::Mutex<Vec<u8>>,
        take: std::sync::atomic::AtomicUsize,
    }

    impl Direct for std::sync::Arc<Sink> {
        fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
            let n = self.take.load(Ordering::Relaxed).min(buf.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.got.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    #[tokio::test]
    async fn direct_writes_only_while_nothing_is_pending_so_order_holds() {
        let sink = std::sync::Arc::new(Sink {
            got: Default::default(),
            take: 100.into(),
        });
        let q = OutQueue::with_direct(Some(Box::new(sink.clone())));
        assert!(q.try_push(b"one"));
        assert_eq!(*sink.got.lock().unwrap(), b"one", "written directly");
        // The socket takes only part: the rest is queued, and later frames queue behind it.
        sink.take.store(2, Ordering::Relaxed);
        assert!(q.try_push(b"two"));
        sink.take.store(100, Ordering::Relaxed);
        assert!(q.try_push(b"three"));
        assert_eq!(*sink.got.lock().unwrap(), b"onetw");
        let mut out = Vec::new();
        q.pop_into(&mut out, 100).await;
        assert_eq!(out, b"othree");
        // While the writer holds bytes, producers queue even though the ring is empty.
        assert!(q.try_push(b"four"));
        assert_eq!(*sink.got.lock().unwrap(), b"onetw");
        q.written();
        q.pop_into(&mut out, 100).await;
        assert_eq!(out, b"four");
        q.written();
        // Nothing pending again: direct; and WouldBlock falls back to the queue.
        assert!(q.try_push(b"five"));
        assert_eq!(*sink.got.lock().unwrap(), b"onetwfive");
        sink.take.store(0, Ordering::Relaxed);
        assert!(q.try_push(b"six"));
        q.pop_into(&mut out, 100).await;
        assert_eq!(out, b"six");
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let q = std::sync::Arc::new(OutQueue::new());
        assert!(q.try_push(&vec![1u8; QUEUE_BYTES]));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push(b"reply").await });
        tokio::task::yield_now().await;
        let mut out = Vec::new();
        q.pop_into(&mut out, QUEUE_BYTES).await;
        assert!(waiter.await.unwrap());
        q.pop_into(&mut out, 100).await;
        assert_eq!(out, b"reply");
    }
}
