//! The node bus: internal topics every node sees, with messages kept for late subscribers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

#[tokio::test]
async fn bus_messages_reach_subscribers_and_are_kept_for_late_ones() {
    let t = hub();
    let keep = Duration::from_secs(60);
    // Published before anyone subscribed: kept.
    t.hub
        .bus_publish("revoked", b"alice".to_vec(), keep)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = Arc::clone(&seen);
    let stored = t
        .hub
        .bus_subscribe(
            "revoked",
            keep,
            Arc::new(move |m: &[u8]| sink.lock().unwrap().push(m.to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(stored, vec![b"alice".to_vec()]);
    t.hub
        .bus_publish("revoked", b"bob".to_vec(), keep)
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![b"bob".to_vec()]);
    // Other topics do not reach this handler, and clients cannot subscribe to bus channels.
    t.hub
        .bus_publish("other", b"x".to_vec(), keep)
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    let s = t.connect("eve");
    let e = s.subscribe("$bus:revoked", None).await.unwrap_err();
    assert_eq!(e.code(), switchboard_hub::codes::error::UNKNOWN_CHANNEL);
    // Kept messages expire with the retention.
    t.advance(Duration::from_secs(61));
    let again = t
        .hub
        .bus_subscribe("revoked", keep, Arc::new(|_: &[u8]| {}))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}
