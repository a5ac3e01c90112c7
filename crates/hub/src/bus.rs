//! The node bus: small internal messages every node of a cluster must see, and that a node
//! starting later must still find (e.g. TURN credential revocations). It rides on the broker
//! like everything else: topic `T` is the channel `$bus:T` (no client can reach it: `$bus` can
//! never be a configured namespace), messages are publications kept in its history for the
//! topic's retention, and every subscribed node gets them through the broker's fan-out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_proto::v1 as proto;

use crate::broker::{Broker, HistoryQuery, HistoryRetention, PublishOptions};
use crate::error::HubError;
use crate::util::lock;

/// Prefix of the broker channel of a bus topic.
pub(crate) const BUS_PREFIX: &str = "$bus:";

/// Most messages a topic keeps.
const BUS_HISTORY: usize = 10_000;

/// Receives the messages of one bus topic. Called on the broker's reader: must not block.
pub type BusHandler = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Handlers per topic.
#[derive(Default)]
pub(crate) struct Bus {
    handlers: Mutex<HashMap<String, BusHandler>>,
}

fn retention(keep: Duration) -> HistoryRetention {
    HistoryRetention {
        size: BUS_HISTORY,
        ttl: keep.max(Duration::from_secs(1)),
        meta_ttl: keep.max(Duration::from_secs(1)),
    }
}

impl Bus {
    /// Publishes `data` on `topic` through `broker`, kept for `keep` (see
    /// [`crate::Hub::bus_publish`]).
    pub(crate) async fn publish(
        &self,
        broker: &dyn Broker,
        topic: &str,
        data: Vec<u8>,
        keep: Duration,
    ) -> Result<(), HubError> {
        let publication = proto::Publication {
            data,
            ..Default::default()
        };
        let options = PublishOptions {
            history: retention(keep),
            idempotency_key: None,
            idempotency_window: Duration::ZERO,
        };
        let channel = format!("{BUS_PREFIX}{topic}");
        broker.publish(&channel, publication, &options).await?;
        Ok(())
    }

    /// Registers `handler` for `topic` and subscribes the node through `broker`; returns the
    /// messages still kept (see [`crate::Hub::bus_subscribe`]).
    pub(crate) async fn subscribe(
        &self,
        broker: &dyn Broker,
        topic: &str,
        keep: Duration,
        handler: BusHandler,
    ) -> Result<Vec<Vec<u8>>, HubError> {
        let channel = format!("{BUS_PREFIX}{topic}");
        lock(&self.handlers).insert(topic.to_owned(), handler);
        if let Err(e) = broker.subscribe(&channel).await {
            lock(&self.handlers).remove(topic);
            return Err(e.into());
        }
        let page = broker
            .history(&channel, HistoryQuery::default(), &retention(keep))
            .await?;
        Ok(page.publications.into_iter().map(|p| p.data).collect())
    }

    /// A bus message from the broker.
    pub(crate) fn deliver(&self, topic: &str, publication: &proto::Publication) {
        let handler = lock(&self.handlers).get(topic).cloned();
        if let Some(handler) = handler {
            handler(&publication.data);
        }
    }
}
