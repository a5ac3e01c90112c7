//! Every new bound counts when it bites, under the metric names of `switchboard_hub::metric`
//! with the documented labels: publish refusals by reason, the node channel cap, history
//! evictions, and room-cap refusals in the signaling refusal counter.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use switchboard_hub::{metric, proto, Hub, ManualClock, MemoryBroker, MemoryLimits};

/// Counters by `name{label=value,...}`.
#[derive(Default, Clone)]
struct Counters(Arc<Mutex<HashMap<String, u64>>>);

struct Handle(String, Counters);

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self.1 .0.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.1 .0.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(Arc::new(Handle(name, self.clone())))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Counters {
    fn get(&self, name: &str, label: &str) -> u64 {
        let key = format!("{name}{{{label}}}");
        self.0.lock().unwrap().get(&key).copied().unwrap_or(0)
    }
}

/// A hub whose memory broker takes its limits from `config`.
fn bounded(config: switchboard_hub::HubConfig) -> TestHub {
    let clock = Arc::new(ManualClock::new(T0));
    let limits = MemoryLimits::from_config(&config);
    let broker = Arc::new(MemoryBroker::with_limits(clock.clone(), limits));
    let hub = Hub::new(config, broker.clone(), clock.clone()).unwrap();
    TestHub { hub, clock, broker }
}

async fn join(s: &switchboard_hub::Session, room: &str) -> proto::Reply {
    s.handle(proto::Command {
        id: 1,
        method: Some(proto::command::Method::RoomJoin(proto::RoomJoinRequest {
            room: room.into(),
            peer_id: "p".into(),
            data: Vec::new(),
        })),
    })
    .await
}

#[test]
fn refusals_and_evictions_are_counted_by_reason() {
    let counters = Counters::default();
    metrics::with_local_recorder(&counters, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut c = config();
            c.history_memory_mib = 1;
            c.limits.max_channels = 2;
            c.limits.max_publications_per_second = 1;
            c.limits.publication_burst = 2;
            c.limits.max_message_size = 1000;
            c.limits.max_publish_bytes_per_second = 1000;
            c.rooms.max_rooms_per_connection = 1;
            c.rooms.max_rooms_per_user = 1;
            let t = bounded(c);
            let ann = t.connect("ann");
            ann.publish("chat:a", vec![b'1'; 1000], "").await.unwrap();
            assert!(ann.publish("chat:a", vec![b'1'; 10], "").await.is_err());
            ann.publish("plain:x", vec![], "").await.unwrap();
            assert!(ann.publish("plain:x", vec![], "").await.is_err());
            assert_eq!(
                counters.get(metric::REFUSED_TOTAL, "reason=publish_bytes"),
                1
            );
            assert_eq!(
                counters.get(metric::REFUSED_TOTAL, "reason=publish_rate"),
                1
            );

            // The memory broker's stream cap (chat:a holds one, the server adds one).
            t.hub
                .publish("chat:b", vec![], Default::default())
                .await
                .unwrap();
            assert!(t
                .hub
                .publish("chat:c", vec![], Default::default())
                .await
                .is_err());
            assert_eq!(
                counters.get(metric::REFUSED_TOTAL, "reason=node_channels"),
                1
            );
            // The cap on subscribed channels.
            ann.subscribe("plain:1", None).await.unwrap();
            ann.subscribe("plain:2", None).await.unwrap();
            assert!(ann.subscribe("plain:3", None).await.is_err());
            assert_eq!(
                counters.get(metric::REFUSED_TOTAL, "reason=node_channels"),
                2
            );

            // History evictions (the server API is not budgeted).
            let mut c = config();
            c.history_memory_mib = 1;
            let t = bounded(c);
            for i in 0..100 {
                t.hub
                    .publish(&format!("chat:{i}"), vec![b'x'; 60_000], Default::default())
                    .await
                    .unwrap();
            }
            let evicted = counters.get(metric::HISTORY_EVICTED_TOTAL, "what=publication");
            assert!(evicted > 0, "{evicted}");

            // Room caps, in the signaling refusal counter.
            let mut rooms = config();
            rooms.rooms.max_rooms_per_connection = 1;
            rooms.rooms.max_rooms_per_user = 2;
            let r = hub_with(rooms);
            let a = r.connect("ann");
            let b = r.connect("ann");
            let c = r.connect("ann");
            assert!(matches!(
                join(&a, "one").await.result,
                Some(proto::reply::Result::RoomJoin(_))
            ));
            assert!(matches!(
                join(&a, "two").await.result,
                Some(proto::reply::Result::Error(_))
            ));
            join(&b, "two").await;
            assert!(matches!(
                join(&c, "three").await.result,
                Some(proto::reply::Result::Error(_))
            ));
            let refused = metric::SIGNAL_REFUSED_TOTAL;
            assert_eq!(counters.get(refused, "reason=rooms_per_connection"), 1);
            assert_eq!(counters.get(refused, "reason=rooms_per_user"), 1);
        });
    });
}
