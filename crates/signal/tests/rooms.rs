//! The rooms state machine on a fake clock: joins, leaves, relay, isolation, liveness, roles.

use std::time::{Duration, Instant};

use switchboard_signal::{
    Delivery, Event, LeaveReason, Member, Message, RoomError, Rooms, RoomsConfig, Target, Validator,
};

fn bye() -> Message {
    Validator::default().bye("done").unwrap()
}

fn rooms() -> (Rooms, Instant) {
    (Rooms::new(RoomsConfig::default()), Instant::now())
}

#[test]
fn join_returns_members_and_roles() {
    let (mut r, t) = rooms();
    let a = r.join("call:1", "alice", b"A", t).unwrap();
    assert!(a.members.is_empty());
    assert!(!a.polite);
    let b = r.join("call:1", "bob", b"B", t).unwrap();
    assert!(b.polite);
    assert_eq!(
        b.members,
        vec![Member {
            peer: "alice".into(),
            metadata: b"A".to_vec()
        }]
    );
    assert_eq!(
        b.event,
        Event::Joined {
            room: "call:1".into(),
            peer: "bob".into(),
            metadata: b"B".to_vec(),
            notify: vec!["alice".into()]
        }
    );
    let c = r.join("call:1", "carol", b"", t).unwrap();
    let names: Vec<_> = c.members.iter().map(|m| m.peer.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(r.is_polite("call:1", "bob", "alice"), Some(true));
    assert_eq!(r.is_polite("call:1", "alice", "bob"), Some(false));
    assert_eq!(r.is_polite("call:1", "carol", "bob"), Some(true));
    assert_eq!(r.is_polite("call:1", "bob", "bob"), None);
    assert_eq!(r.is_polite("call:1", "bob", "zed"), None);
    assert_eq!(r.is_polite("nope", "bob", "alice"), None);
    assert_eq!(r.members("call:1"), ["alice", "bob", "carol"]);
}

#[test]
fn rejoin_after_leave_is_polite_again() {
    let (mut r, t) = rooms();
    r.join("x", "alice", b"", t).unwrap();
    r.join("x", "bob", b"", t).unwrap();
    r.leave("x", "alice").unwrap();
    let a = r.join("x", "alice", b"", t).unwrap();
    assert!(a.polite);
    assert_eq!(r.is_polite("x", "bob", "alice"), Some(false));
}

#[test]
fn join_errors() {
    let (mut r, t) = rooms();
    for bad in ["", "a b", "a*", ":x", "x:", &"r".repeat(256)] {
        assert_eq!(
            r.join(bad, "p", b"", t),
            Err(RoomError::BadRoomName),
            "{bad:?}"
        );
    }
    assert!(r.join(&"r".repeat(255), "p", b"", t).is_ok());
    assert!(r.join("chat:room.1@x/y=+#$!~;,|", "p", b"", t).is_ok());
    for bad in ["", "a.b", "a b", "é", &"p".repeat(65)] {
        assert_eq!(
            r.join("room", bad, b"", t),
            Err(RoomError::BadPeerId),
            "{bad:?}"
        );
    }
    assert!(r.join("room", &"p".repeat(64), b"", t).is_ok());
    assert!(r.join("room", "A-z_09", b"", t).is_ok());
    assert_eq!(
        r.join("room", "A-z_09", b"", t),
        Err(RoomError::DuplicatePeer)
    );
    assert_eq!(
        r.join("room", "big", &[0; 4097], t),
        Err(RoomError::MetadataTooLarge)
    );
}

#[test]
fn room_full_and_too_many_rooms() {
    let mut r = Rooms::new(RoomsConfig {
        max_peers_per_room: 2,
        max_rooms: 2,
        ..RoomsConfig::default()
    });
    let t = Instant::now();
    r.join("a", "p1", b"", t).unwrap();
    r.join("a", "p2", b"", t).unwrap();
    assert_eq!(r.join("a", "p3", b"", t), Err(RoomError::RoomFull));
    // a duplicate in a full room is reported as a duplicate
    assert_eq!(r.join("a", "p1", b"", t), Err(RoomError::DuplicatePeer));
    r.join("b", "p1", b"", t).unwrap();
    assert_eq!(r.join("c", "p1", b"", t), Err(RoomError::TooManyRooms));
    r.leave("b", "p1").unwrap();
    assert!(r.join("c", "p1", b"", t).is_ok());
}

#[test]
fn leave_events_and_rooms_vanish() {
    let (mut r, t) = rooms();
    r.join("x", "a", b"", t).unwrap();
    r.join("x", "b", b"", t).unwrap();
    assert_eq!(
        r.leave("x", "a"),
        Ok(Event::Left {
            room: "x".into(),
            peer: "a".into(),
            reason: LeaveReason::Left,
            notify: vec!["b".into()]
        })
    );
    assert_eq!(r.leave("x", "a"), Err(RoomError::NotInRoom));
    assert_eq!(r.room_count(), 1);
    let Ok(Event::Left { notify, .. }) = r.leave("x", "b") else {
        panic!()
    };
    assert!(notify.is_empty());
    assert_eq!(r.room_count(), 0);
    assert!(r.members("x").is_empty());
    assert_eq!(r.leave("x", "b"), Err(RoomError::UnknownRoom));
}

#[test]
fn relay_to_one_and_to_others() {
    let (mut r, t) = rooms();
    for p in ["a", "b", "c"] {
        r.join("x", p, b"", t).unwrap();
    }
    let offer = Validator::default()
        .candidate("candidate:1 1 udp 1 ::1 1 typ host", Some("0"), None, None)
        .unwrap();
    assert_eq!(
        r.relay("x", "b", Target::Peer("a"), offer.clone()),
        Ok(vec![Delivery {
            room: "x".into(),
            from: "b".into(),
            to: "a".into(),
            message: offer
        }])
    );
    let all = r.relay("x", "b", Target::Others, bye()).unwrap();
    let to: Vec<_> = all.iter().map(|d| d.to.as_str()).collect();
    assert_eq!(to, ["a", "c"]);
    assert!(all.iter().all(|d| d.from == "b" && d.message == bye()));
}

#[test]
fn relay_alone_in_room_delivers_nothing() {
    let (mut r, t) = rooms();
    r.join("x", "a", b"", t).unwrap();
    assert_eq!(r.relay("x", "a", Target::Others, bye()), Ok(vec![]));
}

#[test]
fn relay_errors() {
    let (mut r, t) = rooms();
    r.join("x", "a", b"", t).unwrap();
    r.join("x", "b", b"", t).unwrap();
    assert_eq!(
        r.relay("nope", "a", Target::Peer("b"), bye()),
        Err(RoomError::UnknownRoom)
    );
    assert_eq!(
        r.relay("x", "zed", Target::Peer("b"), bye()),
        Err(RoomError::NotInRoom)
    );
    assert_eq!(
        r.relay("x", "a", Target::Peer("zed"), bye()),
        Err(RoomError::UnknownRecipient)
    );
    assert_eq!(
        r.relay("x", "a", Target::Peer("a"), bye()),
        Err(RoomError::SelfAddressed)
    );
}

#[test]
fn rooms_are_isolated() {
    let (mut r, t) = rooms();
    r.join("red", "a", b"", t).unwrap();
    r.join("red", "b", b"", t).unwrap();
    // the same peer id may exist in another room: it is a different peer
    let other = r.join("blue", "a", b"", t).unwrap();
    assert!(other.members.is_empty());
    assert!(!other.polite);
    r.join("blue", "c", b"", t).unwrap();
    // c (blue) cannot reach b (red), nor send from red
    assert_eq!(
        r.relay("blue", "c", Target::Peer("b"), bye()),
        Err(RoomError::UnknownRecipient)
    );
    assert_eq!(
        r.relay("red", "c", Target::Peer("b"), bye()),
        Err(RoomError::NotInRoom)
    );
    // broadcasts stay in the sender's room
    let to: Vec<_> = r
        .relay("blue", "c", Target::Others, bye())
        .unwrap()
        .into_iter()
        .map(|d| (d.room, d.to))
        .collect();
    assert_eq!(to, [("blue".to_string(), "a".to_string())]);
    // leaving one room leaves the namesake in the other alone
    r.leave("blue", "a").unwrap();
    assert_eq!(r.members("red"), ["a", "b"]);
    assert_eq!(r.members("blue"), ["c"]);
    assert_eq!(r.is_polite("red", "b", "a"), Some(true));
}

#[test]
fn liveness() {
    let mut r = Rooms::new(RoomsConfig {
        peer_timeout: Duration::from_secs(10),
        ..RoomsConfig::default()
    });
    let t0 = Instant::now();
    assert_eq!(r.next_expiry(), None);
    r.join("x", "a", b"", t0).unwrap();
    r.join("x", "b", b"", t0).unwrap();
    r.join("y", "c", b"", t0).unwrap();
    assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(10)));
    r.touch("x", "a", t0 + Duration::from_secs(8)).unwrap();
    // exactly the timeout is not longer than it
    assert!(r.expire(t0 + Duration::from_secs(10)).is_empty());
    let mut events = r.expire(t0 + Duration::from_secs(11));
    events.sort_by_key(|e| match e {
        Event::Left { room, .. } => room.clone(),
        Event::Joined { room, .. } => room.clone(),
    });
    assert_eq!(
        events,
        vec![
            Event::Left {
                room: "x".into(),
                peer: "b".into(),
                reason: LeaveReason::TimedOut,
                notify: vec!["a".into()]
            },
            Event::Left {
                room: "y".into(),
                peer: "c".into(),
                reason: LeaveReason::TimedOut,
                notify: vec![]
            },
        ]
    );
    assert_eq!(r.room_count(), 1);
    // a touch from the past does not move last-seen backwards
    r.touch("x", "a", t0).unwrap();
    assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(18)));
    assert_eq!(r.touch("x", "b", t0), Err(RoomError::NotInRoom));
    assert_eq!(r.touch("y", "c", t0), Err(RoomError::UnknownRoom));
    assert_eq!(r.expire(t0 + Duration::from_secs(19)).len(), 1);
    assert_eq!(r.room_count(), 0);
}

#[test]
fn expire_with_earlier_now_is_harmless() {
    let (mut r, t) = rooms();
    r.join("x", "a", b"", t + Duration::from_secs(5)).unwrap();
    assert!(r.expire(t).is_empty());
}
