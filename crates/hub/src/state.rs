//! The hub's shared state below `HubInner`: per-connection state
//! ([`SessionShared`]), the channel index (shards of [`ChannelSubs`] holding [`Subscriber`]s),
//! the session registry, and the cleanups left to run when a subscription or room peer ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use switchboard_proto::v1 as proto;

use crate::budget::{PublishBudget, TokenBucket};
use crate::channel::ChannelPattern;
use crate::codes;
use crate::config::NamespaceOptions;
use crate::error::HubError;
use crate::push::SharedPush;
use crate::queue::{Offer, PushQueue};
use crate::util::lock;

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) sessions: HashMap<String, Arc<SessionShared>>,
    /// Non-anonymous user → client ids.
    pub(crate) users: HashMap<String, HashSet<String>>,
    /// Publish budgets: per user, `""` for all anonymous connections together. Shared by the
    /// publisher's sessions; kept after the last one ends until the budget is full again, so
    /// reconnecting (or one-request HTTP publishes) does not refill it.
    pub(crate) publishers: HashMap<String, Arc<Mutex<PublishBudget>>>,
}

pub(crate) struct ChannelShard {
    /// Serializes broker subscribe/unsubscribe of this shard's channels with the
    /// "first subscriber / last subscriber" decisions.
    pub(crate) interest: tokio::sync::Mutex<()>,
    pub(crate) channels: Mutex<HashMap<String, ChannelSubs>>,
}

#[derive(Default)]
pub(crate) struct ChannelSubs {
    pub(crate) broker_subscribed: bool,
    pub(crate) subs: HashMap<String, Subscriber>,
}

pub(crate) struct Subscriber {
    pub(crate) session: Arc<SessionShared>,
    pub(crate) state: SubState,
    /// A presence entry was (or is being) added.
    pub(crate) presence: bool,
    /// A join was (or is being) published.
    pub(crate) joined: bool,
}

pub(crate) enum SubState {
    /// Subscribing: deliveries are buffered until the history position is known.
    Pending(Vec<Arc<SharedPush>>),
    /// Delivering; with history, the last delivered position (for dedupe and gap detection).
    Live(Option<proto::StreamPosition>),
}

/// What is left to do (on the broker) after a subscription ended.
pub(crate) enum Cleanup {
    Unsubscribed {
        channel: String,
        info: proto::ClientInfo,
        presence: bool,
        leave: bool,
    },
    /// A peer of a closed session left its signaling room.
    RoomLeft {
        room: String,
        peer: String,
        user: String,
    },
}

/// Per-connection state shared between the [`crate::Session`] handle and the hub's indexes.
pub(crate) struct SessionShared {
    pub(crate) info: proto::ClientInfo,
    pub(crate) anonymous: bool,
    pub(crate) channels: Option<Vec<ChannelPattern>>,
    pub(crate) expires_at: Option<u64>,
    pub(crate) transport: String,
    pub(crate) client_name: String,
    pub(crate) client_version: String,
    pub(crate) queue: PushQueue,
    /// Channels subscribed or being subscribed.
    pub(crate) subscriptions: Mutex<HashSet<String>>,
    /// Signaling rooms joined: room → peer id.
    pub(crate) rooms: Mutex<HashMap<String, String>>,
    /// Rate limit of the session's signaling commands.
    pub(crate) signal_budget: Mutex<TokenBucket>,
    /// The publish budget of the session's publisher (its user, or every anonymous session).
    pub(crate) publish_budget: Arc<Mutex<PublishBudget>>,
}

impl SessionShared {
    pub(crate) fn client_id(&self) -> &str {
        &self.info.client_id
    }

    pub(crate) fn ensure_open(&self) -> Result<(), HubError> {
        if self.queue.is_closed() {
            return Err(HubError::SessionClosed);
        }
        Ok(())
    }

    pub(crate) fn token_allows(&self, channel: &str) -> bool {
        self.channels
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(channel)))
    }

    /// Whether namespace options and token claims let this session subscribe to `channel`
    /// (also the permission to join the signaling room of that name).
    pub(crate) fn may_subscribe(&self, ns: &NamespaceOptions, channel: &str) -> bool {
        if self.anonymous && !ns.allow_subscribe_for_anonymous {
            return false;
        }
        match &self.channels {
            Some(patterns) => patterns.iter().any(|p| p.matches(channel)),
            None => ns.allow_subscribe_for_client,
        }
    }

    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        lock(&self.subscriptions).contains(channel)
    }
}

/// Outcome of handing one push to one subscriber.
#[derive(PartialEq, Eq)]
pub(crate) enum Delivery {
    Done,
    /// A gap or epoch change: the subscription must end with "insufficient state".
    Gap,
}

pub(crate) fn publication_push(p: proto::Publication) -> Arc<SharedPush> {
    Arc::new(SharedPush::new(proto::Push {
        push: Some(proto::push::Push::Publication(p)),
    }))
}

pub(crate) fn unsubscribe_push(channel: &str, code: u32, reason: &str) -> Arc<SharedPush> {
    Arc::new(SharedPush::new(proto::Push {
        push: Some(proto::push::Push::Unsubscribe(proto::Unsubscribe {
            channel: channel.to_owned(),
            code,
            reason: reason.to_owned(),
        })),
    }))
}

impl Subscriber {
    pub(crate) fn pending(session: Arc<SessionShared>) -> Self {
        Self {
            session,
            state: SubState::Pending(Vec::new()),
            presence: false,
            joined: false,
        }
    }

    /// Buffers (while pending) or queues `push`, deduping and gap-checking publications.
    pub(crate) fn deliver(&mut self, push: &Arc<SharedPush>) -> Delivery {
        match &mut self.state {
            SubState::Pending(buffer) => {
                if buffer.len() >= self.session.queue.max_messages() {
                    buffer.clear();
                    if self.session.queue.close(
                        codes::disconnect_message(codes::disconnect::SLOW_CONSUMER),
                        true,
                    ) {
                        metrics::counter!(crate::metric::SLOW_CONSUMER_DISCONNECTS_TOTAL)
                            .increment(1);
                    }
                } else {
                    buffer.push(Arc::clone(push));
                }
                Delivery::Done
            }
            SubState::Live(track) => {
                if let (Some(proto::push::Push::Publication(p)), Some(last)) = (&push.push, track) {
                    if p.offset > 0 {
                        if p.epoch != last.epoch || p.offset > last.offset.saturating_add(1) {
                            return Delivery::Gap;
                        }
                        if p.offset <= last.offset {
                            return Delivery::Done; // duplicate
                        }
                        last.offset = p.offset;
                    }
                }
                if self.session.queue.offer(Arc::clone(push)) == Offer::Overflow {
                    metrics::counter!(crate::metric::SLOW_CONSUMER_DISCONNECTS_TOTAL).increment(1);
                }
                Delivery::Done
            }
        }
    }
}
