//! Presence lists and stats, join/leave pushes, presence expiry on fake time and its refresh
//! by `maintain`.

mod common;

use std::time::Duration;

use common::*;
use switchboard_hub::{codes, proto};

fn joins_and_leaves(
    pushes: &[std::sync::Arc<switchboard_hub::SharedPush>],
) -> (Vec<String>, Vec<String>) {
    let mut joins = Vec::new();
    let mut leaves = Vec::new();
    for p in pushes {
        match &p.push {
            Some(proto::push::Push::Join(j)) => joins.push(j.info.clone().unwrap().user),
            Some(proto::push::Push::Leave(l)) => leaves.push(l.info.clone().unwrap().user),
            _ => {}
        }
    }
    (joins, leaves)
}

#[tokio::test]
async fn presence_tracks_subscribers_with_join_and_leave() {
    let t = hub();
    let ann = t.connect("ann");
    let bob1 = t.connect("bob");
    let bob2 = t.connect("bob");
    ann.subscribe("chat:r", None).await.unwrap();
    bob1.subscribe("chat:r", None).await.unwrap();
    bob2.subscribe("chat:r", None).await.unwrap();
    let (joins, _) = joins_and_leaves(&drain(&ann));
    assert_eq!(joins, ["ann", "bob", "bob"]);

    let p = ann.presence("chat:r").await.unwrap().presence;
    assert_eq!(p.len(), 3);
    assert_eq!(p[bob1.client_id()].user, "bob");
    let stats = ann.presence_stats("chat:r").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (3, 2));

    bob2.unsubscribe("chat:r").await.unwrap();
    let (_, leaves) = joins_and_leaves(&drain(&ann));
    assert_eq!(leaves, ["bob"]);
    let stats = t.hub.presence_stats("chat:r").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));

    bob1.close().await;
    let (_, leaves) = joins_and_leaves(&drain(&ann));
    assert_eq!(leaves, ["bob"]);
    let stats = t.hub.presence_stats("chat:r").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
}

#[tokio::test]
async fn presence_permissions_for_subscribers_only() {
    let t = hub();
    let ann = t.connect("ann");
    let bob = t.connect("bob");
    ann.subscribe("chat:r", None).await.unwrap();
    // bob is not subscribed and chat allows presence for subscribers only.
    assert_eq!(
        bob.presence("chat:r").await.unwrap_err().code(),
        codes::error::PERMISSION_DENIED
    );
    assert_eq!(
        bob.presence_stats("chat:r").await.unwrap_err().code(),
        codes::error::PERMISSION_DENIED
    );
    let h = proto::HistoryRequest {
        channel: "chat:r".into(),
        limit: 1,
        ..Default::default()
    };
    assert_eq!(
        bob.history(&h).await.unwrap_err().code(),
        codes::error::PERMISSION_DENIED
    );
    assert!(ann.history(&h).await.is_ok());
    // Server API bypasses permissions.
    assert_eq!(t.hub.presence("chat:r").await.unwrap().presence.len(), 1);
}

#[tokio::test]
async fn presence_expires_unless_refreshed_by_maintain() {
    let t = hub();
    let ann = t.connect("ann");
    ann.subscribe("chat:r", None).await.unwrap();
    for _ in 0..5 {
        t.advance(Duration::from_secs(20));
        t.hub.maintain().await;
    }
    assert_eq!(
        t.hub.presence("chat:r").await.unwrap().presence.len(),
        1,
        "refreshed"
    );
    // An entry nobody refreshes (e.g. from a crashed node) expires.
    use switchboard_hub::Broker;
    let ghost = proto::ClientInfo {
        user: "ghost".into(),
        client_id: "g1".into(),
        conn_info: vec![],
    };
    t.broker
        .add_presence("chat:r", ghost, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(t.hub.presence("chat:r").await.unwrap().presence.len(), 2);
    t.advance(Duration::from_secs(61));
    t.hub.maintain().await;
    let p = t.hub.presence("chat:r").await.unwrap().presence;
    assert_eq!(p.len(), 1);
    assert!(p.contains_key(ann.client_id()));
}

#[tokio::test]
async fn conn_info_from_the_token_is_shown_in_presence() {
    let t = hub();
    let token = hs256(serde_json::json!({"sub": "ann", "info": {"name": "Ann"}}));
    let ann = t
        .hub
        .connect(
            &proto::ConnectRequest {
                token,
                ..Default::default()
            },
            "test",
        )
        .unwrap();
    ann.subscribe("chat:r", None).await.unwrap();
    let p = t.hub.presence("chat:r").await.unwrap().presence;
    assert_eq!(
        p[ann.client_id()].conn_info,
        br#"{"name": "Ann"}"#.iter().copied().filter(|b| *b != b' ').collect::<Vec<_>>()
    );
}
