//! Limits, each with its own code: message size, channels per connection, connections per user
//! and in total; slow consumers are disconnected with 3008 and their queue memory is bounded.

mod common;

use common::*;
use switchboard_hub::{codes, proto, HubError};

#[tokio::test]
async fn message_size_limit() {
    let mut c = config();
    c.limits.max_message_size = 16;
    let t = hub_with(c);
    let s = t.connect("ann");
    s.publish("chat:a", vec![b'1'; 16], "").await.unwrap();
    let e = s.publish("chat:a", vec![b'1'; 17], "").await.unwrap_err();
    assert!(matches!(e, HubError::MessageTooLarge { size: 17, max: 16 }));
    assert_eq!(e.code(), codes::error::MESSAGE_TOO_LARGE);
    let e = t
        .hub
        .publish("chat:a", vec![0; 17], Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), codes::error::MESSAGE_TOO_LARGE);
}

#[tokio::test]
async fn channels_per_connection_limit() {
    let mut c = config();
    c.limits.max_channels_per_connection = 2;
    let t = hub_with(c);
    let s = t.connect("ann");
    s.subscribe("a", None).await.unwrap();
    s.subscribe("b", None).await.unwrap();
    let e = s.subscribe("c", None).await.unwrap_err();
    assert_eq!(e.code(), codes::error::LIMIT_EXCEEDED);
    s.unsubscribe("a").await.unwrap();
    s.subscribe("c", None).await.unwrap();
}

#[tokio::test]
async fn channel_name_length_limit() {
    let mut c = config();
    c.limits.max_channel_length = 8;
    let t = hub_with(c);
    let s = t.connect("ann");
    s.subscribe("12345678", None).await.unwrap();
    assert_eq!(
        s.subscribe("123456789", None).await.unwrap_err().code(),
        codes::error::BAD_REQUEST
    );
}

#[tokio::test]
async fn connections_per_user_and_total_limits() {
    let mut c = config();
    c.limits.max_connections_per_user = 2;
    c.limits.max_connections = 3;
    let t = hub_with(c);
    let a1 = t.connect("ann");
    let _a2 = t.connect("ann");
    let req = proto::ConnectRequest {
        token: token_for("ann"),
        ..Default::default()
    };
    let e = t.hub.connect(&req, "test").unwrap_err();
    assert_eq!(e.code(), codes::error::USER_CONNECTION_LIMIT);
    assert_eq!(
        e.connect_disconnect().unwrap().code,
        codes::disconnect::CONNECTION_LIMIT
    );
    let _b1 = t.connect("bob");
    let req = proto::ConnectRequest {
        token: token_for("cat"),
        ..Default::default()
    };
    let e = t.hub.connect(&req, "test").unwrap_err();
    assert_eq!(e.code(), codes::error::CONNECTION_LIMIT);
    assert!(e.temporary());
    drop(a1);
    let _c1 = t.hub.connect(&req, "test").unwrap();
    let req = proto::ConnectRequest {
        token: token_for("ann"),
        ..Default::default()
    };
    assert_eq!(
        t.hub.connect(&req, "test").unwrap_err().code(),
        codes::error::CONNECTION_LIMIT
    );
}

#[tokio::test]
async fn slow_consumer_is_disconnected_and_its_queue_memory_freed() {
    let mut c = config();
    c.limits.queue_max_messages = 8;
    let t = hub_with(c);
    let slow = t.connect("slow");
    let fast = t.connect("fast");
    slow.subscribe("news", None).await.unwrap();
    fast.subscribe("news", None).await.unwrap();
    let mut fast_seen = 0;
    for i in 0..50u32 {
        t.hub
            .publish("news", i.to_string().into_bytes(), Default::default())
            .await
            .unwrap();
        let (msgs, _) = slow.queued();
        assert!(msgs <= 8, "bounded: {msgs}");
        fast_seen += drain(&fast).len(); // the fast reader keeps up
    }
    assert_eq!(fast_seen, 50);
    assert_eq!(slow.queued(), (0, 0), "overflow frees the queue");
    let first = slow.recv().await.unwrap();
    match &first.push {
        Some(proto::push::Push::Disconnect(d)) => {
            assert_eq!(d.code, codes::disconnect::SLOW_CONSUMER);
            assert_eq!(d.reason, "slow consumer");
            assert!(d.reconnect);
        }
        other => panic!("{other:?}"),
    }
    assert!(slow.recv().await.is_none());
    assert_eq!(
        slow.publish("news", b"x".to_vec(), "")
            .await
            .unwrap_err()
            .code(),
        codes::error::SESSION_CLOSED
    );
    assert!(fast.disconnected().is_none());
}

#[tokio::test]
async fn byte_bound_also_triggers_slow_consumer() {
    let mut c = config();
    c.limits.queue_max_bytes = 4096;
    let t = hub_with(c);
    let s = t.connect("ann");
    s.subscribe("news", None).await.unwrap();
    for _ in 0..4 {
        t.hub
            .publish("news", vec![b'x'; 1000], Default::default())
            .await
            .unwrap();
    }
    let (_, bytes) = s.queued();
    assert!(bytes <= 4096);
    assert_eq!(
        s.disconnected().map(|d| d.code),
        Some(codes::disconnect::SLOW_CONSUMER)
    );
}

#[tokio::test]
async fn recv_waits_for_pushes_across_tasks() {
    let t = hub();
    let s = std::sync::Arc::new(t.connect("ann"));
    s.subscribe("news", None).await.unwrap();
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 3 {
                let p = s.recv().await.unwrap();
                got.push(publication(&p).data.clone());
            }
            got
        })
    };
    tokio::task::yield_now().await;
    for i in 0..3u8 {
        t.hub
            .publish("news", vec![b'0' + i], Default::default())
            .await
            .unwrap();
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
}
