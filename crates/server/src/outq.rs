//! A bounded byte queue between a connection's producers (replies, relayed data) and its writer
//! task. Frames are appended into one ring buffer, so a warmed-up queue relays without allocating;
//! relayed data that does not fit is dropped (as UDP would), replies wait for room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Bytes a connection may have queued before relayed data is dropped.
pub(crate) const QUEUE_BYTES: usize = 256 * 1024;

/// The queue; shared by producers and the writer through an `Arc`.
pub(crate) struct OutQueue {
    buf: Mutex<VecDeque<u8>>,
    data: Notify,
    room: Notify,
    closed: AtomicBool,
}

impl OutQueue {
    pub(crate) fn new() -> Self {
        OutQueue {
            buf: Mutex::new(VecDeque::with_capacity(16 * 1024)),
            data: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u8>> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `frame` if it fits; false (dropped) otherwise or after close.
    pub(crate) fn try_push(&self, frame: &[u8]) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut q = self.lock();
            if q.len() + frame.len() > QUEUE_BYTES {
                return false;
            }
            q.extend(frame);
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
    /// `out` means the queue is closed and drained.
    pub(crate) async fn pop_into(&self, out: &mut Vec<u8>, max: usize) {
        out.clear();
        loop {
            let data = self.data.notified();
            {
                let mut q = self.lock();
                if !q.is_empty() {
                    let n = q.len().min(max);
                    out.extend(q.drain(..n));
                    drop(q);
                    self.room.notify_waiters();
                    return;
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            data.await;
        }
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
