//! The bounded per-session push queue.
//!
//! Bounded by message count and by encoded bytes. On overflow the queue is emptied (its memory
//! freed at once) and closed with 3008 "slow consumer"; the receiver then gets that disconnect
//! as its last push. A closed queue drops further pushes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use switchboard_proto::v1 as proto;
use tokio::sync::Notify;

use crate::codes;
use crate::push::SharedPush;
use crate::util::lock;

/// Bytes counted per queued push on top of its encoded length.
const ITEM_OVERHEAD: usize = 64;

/// Result of offering a push to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued.
    Queued,
    /// The queue was already closed; dropped.
    Closed,
    /// This push overflowed the queue: the queue is now closed as a slow consumer.
    Overflow,
}

pub(crate) struct PushQueue {
    state: Mutex<State>,
    notify: Notify,
    max_messages: usize,
    max_bytes: usize,
}

struct State {
    items: VecDeque<(Arc<SharedPush>, usize)>,
    bytes: usize,
    closed: Option<proto::Disconnect>,
    disconnect_taken: bool,
}

impl PushQueue {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                closed: None,
                disconnect_taken: false,
            }),
            notify: Notify::new(),
            max_messages,
            max_bytes,
        }
    }

    pub(crate) fn max_messages(&self) -> usize {
        self.max_messages
    }

    pub(crate) fn offer(&self, push: Arc<SharedPush>) -> Offer {
        let size = push.encoded_len() + ITEM_OVERHEAD;
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return Offer::Closed;
        }
        if st.items.len() >= self.max_messages || st.bytes + size > self.max_bytes {
            st.items = VecDeque::new();
            st.bytes = 0;
            st.closed = Some(codes::disconnect_message(codes::disconnect::SLOW_CONSUMER));
            drop(st);
            self.notify.notify_one();
            return Offer::Overflow;
        }
        st.items.push_back((push, size));
        st.bytes += size;
        drop(st);
        self.notify.notify_one();
        Offer::Queued
    }

    /// Closes the queue with `disconnect` (first close wins). With `discard`, pending pushes
    /// are dropped so the disconnect is delivered next; otherwise it follows them.
    pub(crate) fn close(&self, disconnect: proto::Disconnect, discard: bool) -> bool {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return false;
        }
        if discard {
            st.items = VecDeque::new();
            st.bytes = 0;
        }
        st.closed = Some(disconnect);
        drop(st);
        self.notify.notify_one();
        true
    }

    /// Drops the queued publications and join/leave pushes of `channel` (after the client
    /// unsubscribed: its reply is written before them, so they would arrive out of place).
    pub(crate) fn discard_channel(&self, channel: &str) {
        use proto::push::Push;
        let mut st = lock(&self.state);
        let mut freed = 0;
        st.items.retain(|(push, size)| {
            let of_channel = match &push.push {
                Some(Push::Publication(p)) => p.channel == channel,
                Some(Push::Join(j)) => j.channel == channel,
                Some(Push::Leave(l)) => l.channel == channel,
                _ => false,
            };
            if of_channel {
                freed += size;
            }
            !of_channel
        });
        st.bytes -= freed;
    }

    pub(crate) fn closed(&self) -> Option<proto::Disconnect> {
        lock(&self.state).closed.clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    /// Queued bytes and messages.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.items.len(), st.bytes)
    }

    /// The next push: queued items first, then the closing disconnect once, then `Err(())`
    /// (finished); `Ok(None)` when nothing is ready yet.
    pub(crate) fn try_pop(&self) -> Result<Option<Arc<SharedPush>>, ()> {
        let mut st = lock(&self.state);
        if let Some((push, size)) = st.items.pop_front() {
            st.bytes -= size;
            return Ok(Some(push));
        }
        match &st.closed {
            None => Ok(None),
            Some(_) if st.disconnect_taken => Err(()),
            Some(d) => {
                let push = proto::Push {
                    push: Some(proto::push::Push::Disconnect(d.clone())),
                };
                st.disconnect_taken = true;
                Ok(Some(Arc::new(SharedPush::new(push))))
            }
        }
    }

    /// Waits for the next push; `None` once the closing disconnect has been returned.
    /// Cancel-safe.
    pub(crate) async fn recv(&self) -> Option<Arc<SharedPush>> {
        loop {
            match self.try_pop() {
                Ok(Some(push)) => return Some(push),
                Err(()) => return None,
                Ok(None) => self.notify.notified().await,
            }
        }
    }
}
