//! Signaling rooms per connection and per user are bounded (one connection used to be able to
//! take every room of the node): `rooms.max_rooms_per_connection` and
//! `rooms.max_rooms_per_user` refuse with 106 and a message naming the setting; leaving a room
//! or closing a connection gives its slots back; anonymous connections count per connection.

mod common;

use common::*;
use switchboard_hub::{codes, proto, HubConfig, NamespaceOptions, Session};

use proto::command::Method;
use proto::reply::Result as R;

fn limits_config(per_connection: usize, per_user: usize) -> HubConfig {
    let mut c = config();
    c.allow_anonymous = true;
    c.namespaces.insert(
        "call".into(),
        NamespaceOptions {
            allow_subscribe_for_client: true,
            allow_subscribe_for_anonymous: true,
            ..Default::default()
        },
    );
    c.rooms.max_rooms_per_connection = per_connection;
    c.rooms.max_rooms_per_user = per_user;
    c
}

async fn join(s: &Session, room: &str, peer: &str) -> R {
    let reply = s
        .handle(proto::Command {
            id: 1,
            method: Some(Method::RoomJoin(proto::RoomJoinRequest {
                room: room.into(),
                peer_id: peer.into(),
                data: Vec::new(),
            })),
        })
        .await;
    reply.result.expect("a result")
}

async fn leave(s: &Session, room: &str) -> R {
    let reply = s
        .handle(proto::Command {
            id: 2,
            method: Some(Method::RoomLeave(proto::RoomLeaveRequest {
                room: room.into(),
            })),
        })
        .await;
    reply.result.expect("a result")
}

fn refused(r: &R) -> &proto::Error {
    match r {
        R::Error(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn anonymous(t: &TestHub) -> Session {
    t.hub
        .connect(&proto::ConnectRequest::default(), "test")
        .expect("anonymous connect")
}

#[tokio::test]
async fn one_connection_cannot_take_every_room() {
    let t = hub_with(limits_config(3, 100));
    let s = t.connect("ann");
    for i in 0..3 {
        assert!(matches!(
            join(&s, &format!("call:{i}"), "p").await,
            R::RoomJoin(_)
        ));
    }
    let r = join(&s, "call:3", "p").await;
    let e = refused(&r);
    assert_eq!(e.code, codes::error::LIMIT_EXCEEDED);
    assert!(e.message.contains("max_rooms_per_connection"), "{e:?}");
    assert!(!e.temporary);
    assert_eq!(t.hub.room_count(), 3);
    // Another connection of the same user still may.
    let other = t.connect("ann");
    assert!(matches!(join(&other, "call:3", "q").await, R::RoomJoin(_)));
    // Leaving gives the slot back.
    assert!(matches!(leave(&s, "call:0").await, R::RoomLeave(_)));
    assert!(matches!(join(&s, "call:4", "p").await, R::RoomJoin(_)));
}

#[tokio::test]
async fn the_connections_of_one_user_share_a_room_budget() {
    let t = hub_with(limits_config(3, 4));
    let a = t.connect("ann");
    let b = t.connect("ann");
    for i in 0..3 {
        assert!(matches!(
            join(&a, &format!("call:a{i}"), "p").await,
            R::RoomJoin(_)
        ));
    }
    assert!(matches!(join(&b, "call:b0", "p").await, R::RoomJoin(_)));
    let r = join(&b, "call:b1", "p").await;
    let e = refused(&r);
    assert_eq!(e.code, codes::error::LIMIT_EXCEEDED);
    assert!(e.message.contains("max_rooms_per_user"), "{e:?}");
    // Other users are not affected.
    let bob = t.connect("bob");
    assert!(matches!(join(&bob, "call:b1", "p").await, R::RoomJoin(_)));
    // A failed join (duplicate peer id in the room) does not use up a slot of ann's.
    let r = join(&b, "call:b1", "p").await;
    assert_eq!(refused(&r).code, codes::error::LIMIT_EXCEEDED);
    // Closing a connection gives its rooms back to the user.
    a.close().await;
    let c = t.connect("ann");
    for i in 0..3 {
        assert!(matches!(
            join(&c, &format!("call:c{i}"), "p").await,
            R::RoomJoin(_)
        ));
    }
    let r = join(&b, "call:b9", "p").await;
    assert!(refused(&r).message.contains("max_rooms_per_user"));
}

#[tokio::test]
async fn timed_out_peers_give_their_slots_back() {
    let mut c = limits_config(2, 2);
    c.rooms.peer_timeout_secs = 5;
    let t = hub_with(c);
    let a = t.connect("ann");
    for i in 0..2 {
        assert!(matches!(
            join(&a, &format!("call:{i}"), "p").await,
            R::RoomJoin(_)
        ));
    }
    let b = t.connect("ann");
    assert_eq!(
        refused(&join(&b, "call:2", "p").await).code,
        codes::error::LIMIT_EXCEEDED
    );
    t.advance(std::time::Duration::from_secs(6));
    t.hub.maintain().await;
    assert!(matches!(join(&b, "call:2", "p").await, R::RoomJoin(_)));
    assert!(matches!(join(&b, "call:3", "p").await, R::RoomJoin(_)));
}

#[tokio::test]
async fn anonymous_connections_count_per_connection_only() {
    let t = hub_with(limits_config(2, 2));
    let x = anonymous(&t);
    let y = anonymous(&t);
    for s in [&x, &y] {
        for i in 0..2 {
            let room = format!("call:{}{i}", s.client_id());
            assert!(matches!(join(s, &room, "p").await, R::RoomJoin(_)));
        }
    }
    let r = join(&x, "call:more", "p").await;
    let e = refused(&r);
    assert!(e.message.contains("max_rooms_per_connection"), "{e:?}");
    assert_eq!(t.hub.room_count(), 4);
}

#[test]
fn room_caps_must_be_positive() {
    for (per_connection, per_user) in [(0, 1), (1, 0)] {
        let c = limits_config(per_connection, per_user);
        assert!(switchboard_hub::Hub::with_memory_broker(c).is_err());
    }
}
