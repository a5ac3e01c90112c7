//! WebRTC signaling rooms over `Session::handle`: join, relay of offer/answer/candidate/bye as
//! pushes, isolation between rooms, refusals with their codes, leave on close and on timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchboard_hub::{codes, proto, HubConfig, NamespaceOptions, Session};

use proto::command::Method;
use proto::push::Push;
use proto::reply::Result as R;

/// A data-channel-only offer as a browser makes it (shared with the other crate's tests).
const OFFER: &str = include_str!("../../signal/tests/fixtures/datachannel-offer.sdp");

/// The common test config plus namespace `call` (rooms `call:*`): subscribe allowed for
/// clients, nothing else; namespace `locked` where clients may not subscribe.
fn room_config() -> HubConfig {
    let mut c = config();
    let call = NamespaceOptions {
        allow_subscribe_for_client: true,
        ..Default::default()
    };
    c.namespaces.insert("call".into(), call);
    c.namespaces
        .insert("locked".into(), NamespaceOptions::default());
    c
}

fn rooms_hub() -> TestHub {
    hub_with(room_config())
}

fn answer_sdp() -> String {
    OFFER.replace("a=setup:actpass", "a=setup:active")
}

async fn call(s: &Session, method: Method) -> R {
    let reply = s
        .handle(proto::Command {
            id: 7,
            method: Some(method),
        })
        .await;
    assert_eq!(reply.id, 7);
    reply.result.expect("a result")
}

async fn join(s: &Session, room: &str, peer: &str) -> proto::RoomJoinResult {
    match call(
        s,
        Method::RoomJoin(proto::RoomJoinRequest {
            room: room.into(),
            peer_id: peer.into(),
            data: br#"{"name":"x"}"#.to_vec(),
        }),
    )
    .await
    {
        R::RoomJoin(r) => r,
        other => panic!("join refused: {other:?}"),
    }
}

fn error_code(r: &R) -> u32 {
    match r {
        R::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn offer(room: &str, to: &str, kind: &str, sdp: &str) -> Method {
    Method::Offer(proto::OfferRequest {
        room: room.into(),
        to: to.into(),
        description: Some(proto::SessionDescription {
            r#type: kind.into(),
            sdp: sdp.into(),
        }),
    })
}

fn pushes(s: &Session) -> Vec<Arc<switchboard_hub::SharedPush>> {
    std::iter::from_fn(|| s.try_recv()).collect()
}

fn signal(push: &proto::Push) -> &proto::Signal {
    match &push.push {
        Some(Push::Signal(sig)) => sig,
        other => panic!("expected a signal push, got {other:?}"),
    }
}

#[tokio::test]
async fn two_peers_join_and_relay_offer_answer_candidate_bye() {
    let t = rooms_hub();
    let a = t.connect("ann");
    let b = t.connect("bob");

    let ja = join(&a, "call:1", "alice").await;
    assert!(ja.members.is_empty() && !ja.polite);
    let jb = join(&b, "call:1", "bob").await;
    assert!(jb.polite);
    assert_eq!(jb.members.len(), 1);
    assert_eq!(jb.members[0].peer_id, "alice");
    assert_eq!(jb.members[0].data, br#"{"name":"x"}"#);
    assert_eq!(jb.members[0].info.as_ref().unwrap().user, "ann");
    assert_eq!(t.hub.room_count(), 1);

    // alice is told about bob.
    let p = pushes(&a);
    assert!(
        matches!(&p[..], [p] if matches!(&p.push, Some(Push::RoomJoin(j)) if j.room == "call:1" && j.peer.as_ref().unwrap().peer_id == "bob")),
        "{p:?}"
    );
    assert!(pushes(&b).is_empty());

    // bob (the newcomer) offers to alice: normalized SDP arrives as a signal push.
    let r = call(
        &b,
        offer("call:1", "alice", "offer", &OFFER.replace("\r\n", "\n")),
    )
    .await;
    assert!(
        matches!(r, R::Offer(proto::SignalResult { delivered: 1 })),
        "{r:?}"
    );
    let p = pushes(&a);
    assert_eq!(p.len(), 1);
    let sig = signal(&p[0]);
    assert_eq!((sig.room.as_str(), sig.from.as_str()), ("call:1", "bob"));
    assert!(
        matches!(&sig.message, Some(proto::signal::Message::Offer(d)) if d.r#type == "offer" && d.sdp == OFFER)
    );

    // alice answers to everyone else (empty `to`).
    let r = call(
        &a,
        Method::Answer(proto::AnswerRequest {
            room: "call:1".into(),
            to: String::new(),
            description: Some(proto::SessionDescription {
                r#type: "answer".into(),
                sdp: answer_sdp(),
            }),
        }),
    )
    .await;
    assert!(
        matches!(r, R::Answer(proto::SignalResult { delivered: 1 })),
        "{r:?}"
    );
    let p = pushes(&b);
    assert!(
        matches!(&signal(&p[0]).message, Some(proto::signal::Message::Answer(d)) if d.sdp == answer_sdp())
    );

    // A candidate is relayed in its normalized form; an empty one is end-of-candidates.
    let cand = |c: &str| {
        Method::Candidate(proto::CandidateRequest {
            room: "call:1".into(),
            to: "bob".into(),
            candidate: Some(proto::IceCandidate {
                candidate: c.into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            }),
        })
    };
    let r = call(
        &a,
        cand("a=candidate:1 1 UDP 2122260223 192.0.2.7 54400 typ host"),
    )
    .await;
    assert!(
        matches!(r, R::Candidate(proto::SignalResult { delivered: 1 })),
        "{r:?}"
    );
    let r = call(&a, cand("")).await;
    assert!(matches!(r, R::Candidate(_)), "{r:?}");
    let p = pushes(&b);
    assert_eq!(p.len(), 2);
    let Some(proto::signal::Message::Candidate(c)) = &signal(&p[0]).message else {
        panic!("{p:?}")
    };
    assert_eq!(
        c.candidate,
        "candidate:1 1 udp 2122260223 192.0.2.7 54400 typ host"
    );
    assert_eq!(c.sdp_mid.as_deref(), Some("0"));
    let Some(proto::signal::Message::Candidate(end)) = &signal(&p[1]).message else {
        panic!("{p:?}")
    };
    assert!(end.candidate.is_empty());

    // bye
    let r = call(
        &b,
        Method::Bye(proto::ByeRequest {
            room: "call:1".into(),
            to: "alice".into(),
            reason: "hangup".into(),
        }),
    )
    .await;
    assert!(matches!(r, R::Bye(_)), "{r:?}");
    let p = pushes(&a);
    assert!(
        matches!(&signal(&p[0]).message, Some(proto::signal::Message::Bye(r)) if r == "hangup")
    );

    // leave: alice is told, the room survives with alice.
    let r = call(
        &b,
        Method::RoomLeave(proto::RoomLeaveRequest {
            room: "call:1".into(),
        }),
    )
    .await;
    assert!(matches!(r, R::RoomLeave(_)), "{r:?}");
    let p = pushes(&a);
    assert!(
        matches!(&p[..], [p] if matches!(&p.push, Some(Push::RoomLeave(l)) if l.peer_id == "bob" && !l.timed_out)),
        "{p:?}"
    );
    assert_eq!(t.hub.room_count(), 1);
}

#[tokio::test]
async fn rooms_are_isolated() {
    let t = rooms_hub();
    let a = t.connect("ann");
    let b = t.connect("bob");
    let c = t.connect("cat");
    join(&a, "call:1", "alice").await;
    join(&b, "call:1", "bob").await;
    join(&c, "call:2", "carol").await;
    pushes(&a);

    // carol cannot reach alice (another room), nor send into a room she is not in.
    let r = call(&c, offer("call:2", "alice", "offer", OFFER)).await;
    assert_eq!(error_code(&r), codes::error::UNKNOWN_CHANNEL);
    let r = call(&c, offer("call:1", "", "offer", OFFER)).await;
    assert_eq!(error_code(&r), codes::error::UNKNOWN_CHANNEL);
    // A broadcast in call:1 reaches bob only.
    let r = call(&a, offer("call:1", "", "offer", OFFER)).await;
    assert!(
        matches!(r, R::Offer(proto::SignalResult { delivered: 1 })),
        "{r:?}"
    );
    assert_eq!(pushes(&b).len(), 1);
    assert!(pushes(&c).is_empty());
    // The same peer id in another room is another peer.
    join(&c, "call:3", "alice").await;
    assert!(pushes(&a).is_empty());
}

#[tokio::test]
async fn refusals_carry_their_codes() {
    let t = rooms_hub();
    let a = t.connect("ann");
    let b = t.connect("bob");
    join(&a, "call:1", "alice").await;
    join(&b, "call:1", "bob").await;
    pushes(&a);

    // Bad SDP: 107 with the parser's text; wrong type: 107; too large: 113.
    let r = call(&b, offer("call:1", "alice", "offer", "v=0\r\nnonsense\r\n")).await;
    assert_eq!(error_code(&r), codes::error::BAD_REQUEST);
    let R::Error(e) = &r else { unreachable!() };
    assert!(!e.message.is_empty());
    let r = call(&b, offer("call:1", "alice", "answer", OFFER)).await;
    assert_eq!(error_code(&r), codes::error::BAD_REQUEST);
    let big = format!("{OFFER}{}", "a=x-pad:0\r\n".repeat(8000));
    let r = call(&b, offer("call:1", "alice", "offer", &big)).await;
    assert_eq!(error_code(&r), codes::error::MESSAGE_TOO_LARGE);
    // An answer offering actpass is refused.
    let r = call(
        &a,
        Method::Answer(proto::AnswerRequest {
            room: "call:1".into(),
            to: "bob".into(),
            description: Some(proto::SessionDescription {
                r#type: "answer".into(),
                sdp: OFFER.into(),
            }),
        }),
    )
    .await;
    assert_eq!(error_code(&r), codes::error::BAD_REQUEST);
    // Bad candidate.
    let r = call(
        &b,
        Method::Candidate(proto::CandidateRequest {
            room: "call:1".into(),
            to: "alice".into(),
            candidate: Some(proto::IceCandidate {
                candidate: "candidate:1 1 UDP 0 example.com 1 typ host".into(),
                sdp_mid: Some("0".into()),
                ..Default::default()
            }),
        }),
    )
    .await;
    assert_eq!(error_code(&r), codes::error::BAD_REQUEST);
    // Nothing refused reached alice.
    assert!(pushes(&a).is_empty());

    // Self-addressed, unknown recipient, duplicate peer, bad names.
    let r = call(&b, offer("call:1", "bob", "offer", OFFER)).await;
    assert_eq!(error_code(&r), codes::error::BAD_REQUEST);
    let r = call(&b, offer("call:1", "zed", "offer", OFFER)).await;
    assert_eq!(error_code(&r), codes::error::UNKNOWN_CHANNEL);
    let c = t.connect("cat");
    let dup = |room: &str, peer: &str| {
        Method::RoomJoin(proto::RoomJoinRequest {
            room: room.into(),
            peer_id: peer.into(),
            data: Vec::new(),
        })
    };
    assert_eq!(
        error_code(&call(&c, dup("call:1", "alice")).await),
        codes::error::ALREADY_SUBSCRIBED
    );
    assert_eq!(
        error_code(&call(&a, dup("call:1", "alice2")).await),
        codes::error::ALREADY_SUBSCRIBED
    );
    assert_eq!(
        error_code(&call(&c, dup("bad room", "x")).await),
        codes::error::BAD_REQUEST
    );
    assert_eq!(
        error_code(&call(&c, dup("call:9", "bad id")).await),
        codes::error::BAD_REQUEST
    );
    // Leaving a room one is not in.
    let r = call(
        &c,
        Method::RoomLeave(proto::RoomLeaveRequest {
            room: "call:1".into(),
        }),
    )
    .await;
    assert_eq!(error_code(&r), codes::error::UNKNOWN_CHANNEL);
}

#[tokio::test]
async fn room_full_is_limit_exceeded() {
    let t = rooms_hub();
    let sessions: Vec<Session> = (0..9).map(|i| t.connect(&format!("u{i}"))).collect();
    for (i, s) in sessions.iter().take(8).enumerate() {
        join(s, "call:full", &format!("p{i}")).await;
    }
    let r = call(
        &sessions[8],
        Method::RoomJoin(proto::RoomJoinRequest {
            room: "call:full".into(),
            peer_id: "p8".into(),
            data: Vec::new(),
        }),
    )
    .await;
    assert_eq!(error_code(&r), codes::error::LIMIT_EXCEEDED);
}

#[tokio::test]
async fn closing_a_session_leaves_its_rooms() {
    let t = rooms_hub();
    let a = t.connect("ann");
    let b = t.connect("bob");
    join(&a, "call:1", "alice").await;
    join(&b, "call:1", "bob").await;
    join(&b, "call:2", "bob").await;
    pushes(&a);
    b.close().await;
    let p = pushes(&a);
    assert!(
        matches!(&p[..], [p] if matches!(&p.push, Some(Push::RoomLeave(l)) if l.room == "call:1" && l.peer_id == "bob" && !l.timed_out)),
        "{p:?}"
    );
    // call:2 vanished with its last peer.
    assert_eq!(t.hub.room_count(), 1);
    // Dropping works too.
    drop(a);
    assert_eq!(t.hub.room_count(), 0);
}

#[tokio::test]
async fn silent_peers_time_out_at_maintain_and_commands_keep_them_alive() {
    let t = rooms_hub();
    let a = t.connect("ann");
    let b = t.connect("bob");
    join(&a, "call:1", "alice").await;
    join(&b, "call:1", "bob").await;
    pushes(&a);
    t.clock.advance(Duration::from_secs(20));
    // Any command is a sign of life.
    let r = call(&a, Method::Ping(proto::PingRequest {})).await;
    assert!(matches!(r, R::Ping(_)));
    t.clock.advance(Duration::from_secs(20));
    t.hub.maintain().await;
    // bob was silent 40 s: gone, and both are told.
    let p = pushes(&a);
    assert!(
        matches!(&p[..], [p] if matches!(&p.push, Some(Push::RoomLeave(l)) if l.peer_id == "bob" && l.timed_out)),
        "{p:?}"
    );
    let p = pushes(&b);
    assert!(
        matches!(&p[..], [p] if matches!(&p.push, Some(Push::RoomLeave(l)) if l.peer_id == "bob" && l.timed_out)),
        "{p:?}"
    );
    // bob may join again (as a newcomer: polite).
    assert!(join(&b, "call:1", "bob").await.polite);
}

fn join_method(room: &str, peer: &str) -> Method {
    Method::RoomJoin(proto::RoomJoinRequest {
        room: room.into(),
        peer_id: peer.into(),
        data: Vec::new(),
    })
}

fn candidate(room: &str, to: &str) -> Method {
    Method::Candidate(proto::CandidateRequest {
        room: room.into(),
        to: to.into(),
        candidate: Some(proto::IceCandidate {
            candidate: "candidate:1 1 UDP 2122260223 192.0.2.7 54400 typ host".into(),
            sdp_mid: Some("0".into()),
            ..Default::default()
        }),
    })
}

#[tokio::test]
async fn joining_a_room_needs_subscribe_permission_on_its_channel() {
    let t = rooms_hub();
    let a = t.connect("ann");
    // Unknown namespace: 102; namespace without subscribe permission: 103.
    let r = call(&a, join_method("nowhere:1", "alice")).await;
    assert_eq!(error_code(&r), codes::error::UNKNOWN_CHANNEL);
    let r = call(&a, join_method("locked:1", "alice")).await;
    assert_eq!(error_code(&r), codes::error::PERMISSION_DENIED);
    // The default namespace allows subscribing in this config: plain names are rooms too.
    join(&a, "lobby", "alice").await;
    // A token `channels` claim governs rooms as it governs channels.
    let claims = serde_json::json!({
        "sub": "tia", "exp": T0 / 1000 + 3600, "channels": ["call:mine*"]
    });
    let req = proto::ConnectRequest {
        token: hs256(claims),
        ..Default::default()
    };
    let limited = t.hub.connect(&req, "test").expect("connect");
    join(&limited, "call:mine-1", "tia").await;
    let r = call(&limited, join_method("call:other", "tia")).await;
    assert_eq!(error_code(&r), codes::error::PERMISSION_DENIED);
    assert_eq!(t.hub.room_count(), 2);
}

#[tokio::test]
async fn room_limits_come_from_the_config() {
    let mut c = room_config();
    c.rooms.max_peers_per_room = 2;
    c.rooms.max_rooms = 2;
    c.rooms.max_sdp_bytes = 256;
    c.rooms.max_metadata_bytes = 16;
    let t = hub_with(c);
    let s: Vec<Session> = (0..4).map(|i| t.connect(&format!("u{i}"))).collect();
    join(&s[0], "call:a", "p0").await;
    join(&s[1], "call:a", "p1").await;
    let r = call(&s[2], join_method("call:a", "p2")).await;
    assert_eq!(
        error_code(&r),
        codes::error::LIMIT_EXCEEDED,
        "room full at 2"
    );
    join(&s[2], "call:b", "p2").await;
    let r = call(&s[3], join_method("call:c", "p3")).await;
    assert_eq!(
        error_code(&r),
        codes::error::LIMIT_EXCEEDED,
        "2 rooms at most"
    );
    let r = call(
        &s[3],
        Method::RoomJoin(proto::RoomJoinRequest {
            room: "call:b".into(),
            peer_id: "p3".into(),
            data: b"0123456789abcdefghij".to_vec(),
        }),
    )
    .await;
    assert_eq!(error_code(&r), codes::error::MESSAGE_TOO_LARGE);
    // The offer fixture is over 256 bytes.
    assert!(OFFER.len() > 256);
    let r = call(&s[1], offer("call:a", "p0", "offer", OFFER)).await;
    assert_eq!(error_code(&r), codes::error::MESSAGE_TOO_LARGE);
    // A config with a zero limit is refused at start-up.
    let mut bad = room_config();
    bad.rooms.max_commands_per_second = 0;
    let Err(e) = switchboard_hub::Hub::new(bad, t.broker.clone(), t.clock.clone()) else {
        panic!("a zero rate limit was accepted");
    };
    assert!(e.to_string().contains("max_commands_per_second"), "{e}");
}

#[tokio::test]
async fn a_flooding_connection_is_rate_limited_without_disturbing_other_rooms() {
    let mut c = room_config();
    c.rooms.max_commands_per_second = 10;
    c.rooms.command_burst = 20;
    let t = hub_with(c);
    let (a, b, x, y) = (
        t.connect("ann"),
        t.connect("bob"),
        t.connect("xav"),
        t.connect("yan"),
    );
    join(&a, "call:flood", "alice").await;
    join(&b, "call:flood", "bob").await;
    join(&x, "call:calm", "xav").await;
    join(&y, "call:calm", "yan").await;
    pushes(&a);
    pushes(&x);
    // bob has 19 tokens left after joining: 19 candidates pass, then 111.
    let mut passed = 0;
    let mut limited = 0;
    for _ in 0..40 {
        match call(&b, candidate("call:flood", "alice")).await {
            R::Candidate(_) => passed += 1,
            r => {
                assert_eq!(error_code(&r), codes::error::TOO_MANY_REQUESTS);
                let R::Error(e) = &r else { unreachable!() };
                assert!(e.temporary, "111 is temporary");
                limited += 1;
            }
        }
    }
    assert_eq!((passed, limited), (19, 21));
    assert_eq!(pushes(&a).len(), 19, "nothing refused was relayed");
    // Other connections and rooms are not affected.
    let r = call(&y, candidate("call:calm", "xav")).await;
    assert!(
        matches!(r, R::Candidate(proto::SignalResult { delivered: 1 })),
        "{r:?}"
    );
    assert_eq!(pushes(&x).len(), 1);
    // Non-signaling commands are not counted; the budget refills with time.
    assert!(matches!(
        call(&b, Method::Ping(proto::PingRequest {})).await,
        R::Ping(_)
    ));
    t.advance(Duration::from_millis(500));
    let mut again = 0;
    for _ in 0..10 {
        if matches!(
            call(&b, candidate("call:flood", "alice")).await,
            R::Candidate(_)
        ) {
            again += 1;
        }
    }
    assert_eq!(again, 5, "10/s for 0.5 s");
}

/// A member on another node (simulated through the broker: a presence entry and a join
/// announcement on the room's internal channel) whose node dies: no leave is ever published, but
/// once its presence entry expires the local peers are told it timed out.
#[tokio::test]
async fn a_remote_member_whose_node_died_times_out_when_its_presence_expires() {
    use switchboard_hub::Broker;
    use switchboard_proto::prost::Message as _;
    let t = rooms_hub();
    let a = t.connect("ann");
    join(&a, "call:far", "alice").await;
    let remote = proto::RoomMember {
        peer_id: "zed".into(),
        joined_at: T0 + 1,
        info: Some(proto::ClientInfo {
            user: "zed".into(),
            client_id: "c-zed".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let announce = proto::RoomAnnounce {
        member: Some(remote.clone()),
        saw: vec!["alice".into()],
    };
    let channel = "$room:call:far";
    let ttl = Duration::from_secs(60);
    let entry = |conn_info: Vec<u8>| proto::ClientInfo {
        user: "zed".into(),
        client_id: "zed".into(),
        conn_info,
    };
    t.broker
        .add_presence(channel, entry(remote.encode_to_vec()), ttl)
        .await
        .unwrap();
    t.broker
        .publish_join(channel, entry(announce.encode_to_vec()))
        .await
        .unwrap();
    let p = pushes(&a);
    assert!(
        matches!(&p[..], [p] if matches!(&p.push, Some(Push::RoomJoin(j)) if j.peer.as_ref().unwrap().peer_id == "zed" && !j.polite)),
        "{p:?}"
    );
    // Within the TTL nothing happens (alice stays alive by pinging)...
    t.advance(Duration::from_secs(25));
    call(&a, Method::Ping(proto::PingRequest {})).await;
    t.hub.maintain().await;
    assert!(pushes(&a).is_empty());
    // ...then zed's entry expires, unrefreshed: alice is told it timed out, once.
    t.advance(Duration::from_secs(25));
    call(&a, Method::Ping(proto::PingRequest {})).await;
    t.advance(Duration::from_secs(15));
    call(&a, Method::Ping(proto::PingRequest {})).await;
    t.hub.maintain().await;
    let p = pushes(&a);
    assert!(
        matches!(&p[..], [p] if matches!(&p.push, Some(Push::RoomLeave(l)) if l.peer_id == "zed" && l.timed_out)),
        "{p:?}"
    );
    t.hub.maintain().await;
    assert!(pushes(&a).is_empty(), "told once");
}
