//! Publish/subscribe fan-out, namespaces and their options, offsets, idempotent publish,
//! server API and the protocol-command entry point.

mod common;

use common::*;
use switchboard_hub::{codes, proto, ServerPublish};

#[tokio::test]
async fn publication_fans_out_to_every_subscriber_once() {
    let t = hub();
    let sessions: Vec<_> = ["ann", "bob", "cat"].iter().map(|u| t.connect(u)).collect();
    for s in &sessions {
        s.subscribe("news", None).await.unwrap();
    }
    let other = t.connect("dan");
    other.subscribe("plain:x", None).await.unwrap();

    t.hub
        .publish("news", br#"{"a":1}"#.to_vec(), Default::default())
        .await
        .unwrap();
    for s in &sessions {
        let pushes = drain(s);
        assert_eq!(pushes.len(), 1, "{pushes:?}");
        let p = publication(&pushes[0]);
        assert_eq!(
            (p.channel.as_str(), p.data.as_slice()),
            ("news", &br#"{"a":1}"#[..])
        );
        assert!(p.info.is_none(), "server publications carry no client info");
    }
    assert!(drain(&other).is_empty());
}

#[tokio::test]
async fn client_publish_carries_publisher_info_and_reaches_self() {
    let t = hub();
    let ann = t.connect("ann");
    let bob = t.connect("bob");
    ann.subscribe("chat:room", None).await.unwrap();
    bob.subscribe("chat:room", None).await.unwrap();
    drain(&ann);
    drain(&bob);
    let r = ann.publish("chat:room", b"1".to_vec(), "").await.unwrap();
    assert_eq!(r.offset, 1);
    for s in [&ann, &bob] {
        let pushes = drain(s);
        let p = publication(&pushes[0]);
        let info = p.info.as_ref().unwrap();
        assert_eq!(
            (info.user.as_str(), info.client_id.as_str()),
            ("ann", ann.client_id())
        );
    }
}

#[tokio::test]
async fn offsets_increase_by_one_and_epoch_is_stable() {
    let t = hub();
    let results = publish_n(&t.hub, "chat:a", 5).await;
    let offsets: Vec<u64> = results.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    assert!(results
        .iter()
        .all(|r| r.epoch == results[0].epoch && !r.epoch.is_empty()));
    // Channels are independent streams with their own epochs.
    let other = publish_n(&t.hub, "chat:b", 1).await;
    assert_eq!(other[0].offset, 1);
    // Without history: no offsets.
    let plain = publish_n(&t.hub, "plain:a", 2).await;
    assert!(plain.iter().all(|r| r.offset == 0 && r.epoch.is_empty()));
}

#[tokio::test]
async fn namespaces_pick_options_and_unknown_ones_are_refused() {
    let t = hub();
    let s = t.connect("ann");
    let e = s.subscribe("nope:x", None).await.unwrap_err();
    assert_eq!(e.code(), codes::error::UNKNOWN_CHANNEL);
    for bad in ["", "a b", ":x", "chat:", "x*"] {
        assert_eq!(
            s.subscribe(bad, None).await.unwrap_err().code(),
            codes::error::BAD_REQUEST,
            "{bad:?}"
        );
    }
    // default namespace: subscribe allowed, publish not.
    s.subscribe("news", None).await.unwrap();
    assert_eq!(
        s.publish("news", b"1".to_vec(), "")
            .await
            .unwrap_err()
            .code(),
        codes::error::PERMISSION_DENIED
    );
    // chat: history and presence on; plain: off.
    let sub = s.subscribe("chat:1", None).await.unwrap();
    assert!(sub.recoverable && !sub.epoch.is_empty() && sub.offset == 0);
    let sub = s.subscribe("plain:1", None).await.unwrap();
    assert!(!sub.recoverable && sub.epoch.is_empty());
    let h = proto::HistoryRequest {
        channel: "plain:1".into(),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        s.history(&h).await.unwrap_err().code(),
        codes::error::NOT_AVAILABLE
    );
    assert_eq!(
        s.presence("plain:1").await.unwrap_err().code(),
        codes::error::NOT_AVAILABLE
    );
    assert_eq!(
        s.presence_stats("plain:1").await.unwrap_err().code(),
        codes::error::NOT_AVAILABLE
    );
    assert_eq!(
        t.hub.presence("plain:1").await.unwrap_err().code(),
        codes::error::NOT_AVAILABLE
    );
}

#[tokio::test]
async fn publish_for_subscriber_only_and_subscribe_twice() {
    let mut c = config();
    c.namespaces.insert(
        "sub".into(),
        switchboard_hub::NamespaceOptions {
            allow_subscribe_for_client: true,
            allow_publish_for_subscriber: true,
            ..Default::default()
        },
    );
    let t = hub_with(c);
    let s = t.connect("ann");
    assert_eq!(
        s.publish("sub:x", b"1".to_vec(), "")
            .await
            .unwrap_err()
            .code(),
        codes::error::PERMISSION_DENIED
    );
    s.subscribe("sub:x", None).await.unwrap();
    assert_eq!(
        s.subscribe("sub:x", None).await.unwrap_err().code(),
        codes::error::ALREADY_SUBSCRIBED
    );
    s.publish("sub:x", b"1".to_vec(), "").await.unwrap();
    assert_eq!(drain(&s).len(), 1);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let t = hub();
    let s = t.connect("ann");
    s.subscribe("news", None).await.unwrap();
    s.unsubscribe("news").await.unwrap();
    s.unsubscribe("news").await.unwrap(); // idempotent
    t.hub
        .publish("news", b"1".to_vec(), Default::default())
        .await
        .unwrap();
    assert!(drain(&s).is_empty());
    assert!(s.channels().is_empty());
    assert_eq!(t.hub.info().num_channels, 0);
}

#[tokio::test]
async fn pushes_queued_before_an_unsubscribe_are_not_delivered_after_its_reply() {
    // A transport writes the unsubscribe reply before the pushes still queued: a publication
    // queued under the old subscription must not follow it, or a pipelined resubscribe with
    // recovery sees that offset twice (recovered, then the stale push).
    let t = hub();
    let s = t.connect("ann");
    let first = s.subscribe("chat:x", None).await.unwrap();
    publish_n(&t.hub, "chat:x", 2).await; // queued, not read yet
    t.hub
        .publish("news", b"{}".to_vec(), Default::default())
        .await
        .unwrap(); // another channel: not subscribed, never queued
    s.subscribe("news", None).await.unwrap();
    t.hub
        .publish("news", b"{}".to_vec(), Default::default())
        .await
        .unwrap(); // queued for the other subscription: stays
    s.unsubscribe("chat:x").await.unwrap();
    let again = s
        .subscribe("chat:x", Some(pos(first.offset, &first.epoch)))
        .await
        .unwrap();
    assert!(again.recovered);
    assert_eq!(again.publications.len(), 2);
    let queued = drain(&s);
    let channels: Vec<&str> = queued
        .iter()
        .filter_map(|p| match &p.push {
            Some(proto::push::Push::Publication(p)) => Some(p.channel.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(channels, ["news"], "stale pushes of the old subscription");
}

#[tokio::test]
async fn idempotent_publish_returns_first_result_and_publishes_once() {
    let t = hub();
    let s = t.connect("ann");
    s.subscribe("chat:x", None).await.unwrap();
    drain(&s);
    let a = s.publish("chat:x", b"1".to_vec(), "key-1").await.unwrap();
    let b = s.publish("chat:x", b"2".to_vec(), "key-1").await.unwrap();
    assert_eq!(a, b);
    assert_eq!(drain_offsets(&s), [1]);
    // Same key in another channel is independent.
    t.hub
        .publish(
            "chat:y",
            b"1".to_vec(),
            ServerPublish {
                idempotency_key: "key-1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // After the window the key is forgotten.
    t.advance(std::time::Duration::from_secs(301));
    let c = s.publish("chat:x", b"3".to_vec(), "key-1").await.unwrap();
    assert_eq!(c.offset, 2);
    // Server API too.
    let opts = ServerPublish {
        idempotency_key: "srv".into(),
        ..Default::default()
    };
    let d = t
        .hub
        .publish("chat:x", b"4".to_vec(), opts.clone())
        .await
        .unwrap();
    let e = t.hub.publish("chat:x", b"5".to_vec(), opts).await.unwrap();
    assert_eq!(d, e);
    let long = "k".repeat(129);
    assert_eq!(
        s.publish("chat:x", b"6".to_vec(), &long)
            .await
            .unwrap_err()
            .code(),
        codes::error::BAD_REQUEST
    );
}

#[tokio::test]
async fn handle_dispatches_commands_and_reports_errors_with_the_same_id() {
    let t = hub();
    let s = t.connect("ann");
    use proto::command::Method;
    use proto::reply::Result as R;
    let cmd = |id, m| proto::Command {
        id,
        method: Some(m),
    };
    let r = s
        .handle(cmd(
            1,
            Method::Subscribe(proto::SubscribeRequest {
                channel: "chat:x".into(),
                recover: None,
            }),
        ))
        .await;
    assert!(
        matches!(
            r,
            proto::Reply {
                id: 1,
                result: Some(R::Subscribe(_))
            }
        ),
        "{r:?}"
    );
    let r = s
        .handle(cmd(
            2,
            Method::Publish(proto::PublishRequest {
                channel: "chat:x".into(),
                data: b"{}".to_vec(),
                ..Default::default()
            }),
        ))
        .await;
    assert!(
        matches!(
            r,
            proto::Reply {
                id: 2,
                result: Some(R::Publish(proto::PublishResult { offset: 1, .. }))
            }
        ),
        "{r:?}"
    );
    let r = s
        .handle(cmd(
            3,
            Method::History(proto::HistoryRequest {
                channel: "chat:x".into(),
                limit: 5,
                ..Default::default()
            }),
        ))
        .await;
    let Some(R::History(h)) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(h.publications.len(), 1);
    let r = s
        .handle(cmd(
            4,
            Method::Presence(proto::PresenceRequest {
                channel: "chat:x".into(),
            }),
        ))
        .await;
    assert!(
        matches!(r.result, Some(R::Presence(ref p)) if p.presence.contains_key(s.client_id())),
        "{r:?}"
    );
    let r = s
        .handle(cmd(
            5,
            Method::PresenceStats(proto::PresenceStatsRequest {
                channel: "chat:x".into(),
            }),
        ))
        .await;
    assert!(
        matches!(
            r.result,
            Some(R::PresenceStats(proto::PresenceStatsResult {
                num_clients: 1,
                num_users: 1
            }))
        ),
        "{r:?}"
    );
    let r = s.handle(cmd(6, Method::Ping(proto::PingRequest {}))).await;
    assert!(matches!(r.result, Some(R::Ping(_))));
    let r = s
        .handle(cmd(
            7,
            Method::Unsubscribe(proto::UnsubscribeRequest {
                channel: "chat:x".into(),
            }),
        ))
        .await;
    assert!(matches!(r.result, Some(R::Unsubscribe(_))));
    let r = s.handle(cmd(8, Method::Connect(Default::default()))).await;
    assert!(
        matches!(
            r,
            proto::Reply {
                id: 8,
                result: Some(R::Error(proto::Error { code: 107, .. }))
            }
        ),
        "{r:?}"
    );
    let r = s
        .handle(proto::Command {
            id: 9,
            method: None,
        })
        .await;
    assert!(
        matches!(
            r,
            proto::Reply {
                id: 9,
                result: Some(R::Error(proto::Error { code: 104, .. }))
            }
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn server_api_broadcast_disconnect_unsubscribe_and_info() {
    let t = hub();
    let ann1 = t.connect("ann");
    let ann2 = t.connect("ann");
    let bob = t.connect("bob");
    for s in [&ann1, &ann2, &bob] {
        s.subscribe("chat:a", None).await.unwrap();
        s.subscribe("news", None).await.unwrap();
    }
    let info = t.hub.info();
    assert_eq!(
        (
            info.num_clients,
            info.num_users,
            info.num_channels,
            info.num_subs
        ),
        (3, 2, 2, 6)
    );

    let results = t
        .hub
        .broadcast(
            &["chat:a".into(), "news".into(), "bad:".into()],
            b"1",
            Default::default(),
        )
        .await;
    assert!(results[0].is_ok() && results[1].is_ok());
    assert_eq!(
        results[2].as_ref().unwrap_err().code(),
        codes::error::BAD_REQUEST
    );
    drain(&ann1);
    drain(&ann2);
    drain(&bob);

    t.hub
        .unsubscribe_user("ann", "chat:a", Some(ann1.client_id()))
        .await
        .unwrap();
    let pushes = drain(&ann1);
    assert!(pushes.iter().any(|p| matches!(&p.push, Some(proto::push::Push::Unsubscribe(u)) if u.channel == "chat:a" && u.code == codes::unsubscribe::SERVER)), "{pushes:?}");
    assert!(!ann1.channels().contains(&"chat:a".to_string()));
    assert!(ann2.channels().contains(&"chat:a".to_string()));

    t.hub.disconnect_user("ann", None, None).await.unwrap();
    for s in [&ann1, &ann2] {
        let pushes = drain(s);
        let last = pushes.last().unwrap();
        assert!(
            matches!(&last.push, Some(proto::push::Push::Disconnect(d)) if d.code == codes::disconnect::FORCE_DISCONNECT && !d.reconnect),
            "{pushes:?}"
        );
        assert!(s.recv().await.is_none());
        assert_eq!(s.ping().unwrap_err().code(), codes::error::SESSION_CLOSED);
    }
    assert!(bob.disconnected().is_none());
    drop(ann1);
    drop(ann2);
    assert_eq!(t.hub.info().num_clients, 1);
}

#[tokio::test]
async fn api_methods_answer_with_error_or_result() {
    let t = hub();
    let r = t
        .hub
        .api_publish(proto::ApiPublishRequest {
            channel: "chat:a".into(),
            data: b"1".to_vec(),
            tags: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        })
        .await;
    assert!(r.error.is_none() && r.result.as_ref().unwrap().offset == 1);
    let h = t
        .hub
        .api_history(proto::HistoryRequest {
            channel: "chat:a".into(),
            limit: 10,
            ..Default::default()
        })
        .await;
    let pubs = &h.result.unwrap().publications;
    assert_eq!(pubs[0].tags.get("k").map(String::as_str), Some("v"));
    let r = t
        .hub
        .api_publish(proto::ApiPublishRequest {
            channel: "zzz:a".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(r.error.unwrap().code, codes::error::UNKNOWN_CHANNEL);
    assert!(r.result.is_none());
    let r = t
        .hub
        .api_history_remove(proto::HistoryRemoveRequest {
            channel: "chat:a".into(),
        })
        .await;
    assert!(r.error.is_none());
    let h = t
        .hub
        .api_history(proto::HistoryRequest {
            channel: "chat:a".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .result
        .unwrap();
    assert!(h.publications.is_empty());
    assert_eq!(h.offset, 1, "history_remove keeps the position");
    let r = t
        .hub
        .api_disconnect(proto::DisconnectRequest::default())
        .await;
    assert_eq!(r.error.unwrap().code, codes::error::BAD_REQUEST);
    let info = t.hub.api_info(proto::InfoRequest {});
    assert_eq!(info.result.unwrap().nodes.len(), 1);
    let b = t
        .hub
        .api_broadcast(proto::BroadcastRequest {
            channels: vec!["chat:a".into(), "chat:b".into()],
            data: b"2".to_vec(),
            ..Default::default()
        })
        .await;
    assert_eq!(b.result.unwrap().responses.len(), 2);
}

#[tokio::test]
async fn dropping_a_session_unsubscribes_it_and_frees_the_slot() {
    let t = hub();
    let ann = t.connect("ann");
    let bob = t.connect("bob");
    ann.subscribe("chat:a", None).await.unwrap();
    bob.subscribe("chat:a", None).await.unwrap();
    drain(&ann);
    drop(bob);
    tokio::task::yield_now().await; // the spawned cleanup
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let pushes = drain(&ann);
    assert!(pushes.iter().any(|p| matches!(&p.push, Some(proto::push::Push::Leave(l)) if l.info.as_ref().unwrap().user == "bob")), "{pushes:?}");
    let p = t.hub.presence("chat:a").await.unwrap();
    assert_eq!(p.presence.len(), 1);
    assert_eq!(t.hub.connection_count(), 1);
}
