//! The protocol round trips through binary protobuf, canonical JSON and the switchboard JSON
//! mapping.

use prost::Message;
use switchboard_proto::json;
use switchboard_proto::v1::{
    command, push, reply, server_frame, ClientInfo, Command, HistoryRequest, Publication,
    PublishRequest, Push, Reply, ServerFrame, StreamPosition, SubscribeRequest, SubscribeResult,
};

fn publish_command() -> Command {
    Command {
        id: 7,
        method: Some(command::Method::Publish(PublishRequest {
            channel: "chat:lobby".into(),
            data: br#"{"any":"json","n":[1,2.5e3,null]}"#.to_vec(),
            idempotency_key: "k-1".into(),
        })),
    }
}

fn subscribe_command() -> Command {
    Command {
        id: 8,
        method: Some(command::Method::Subscribe(SubscribeRequest {
            channel: "news".into(),
            recover: Some(StreamPosition {
                offset: u64::MAX,
                epoch: "ab12".into(),
            }),
        })),
    }
}

#[test]
fn command_round_trips_through_binary() {
    for cmd in [publish_command(), subscribe_command()] {
        let bytes = cmd.encode_to_vec();
        assert_eq!(Command::decode(bytes.as_slice()).unwrap(), cmd);
    }
}

#[test]
fn command_round_trips_through_canonical_json() {
    for cmd in [publish_command(), subscribe_command()] {
        let text = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
    }
}

#[test]
fn command_round_trips_through_the_mapping() {
    for cmd in [publish_command(), subscribe_command()] {
        let text = json::to_string(&cmd).unwrap();
        assert_eq!(json::from_str::<Command>(&text).unwrap(), cmd, "{text}");
    }
}

#[test]
fn canonical_json_uses_lower_camel_case_and_string_u64() {
    let cmd = Command {
        id: 1,
        method: Some(command::Method::History(HistoryRequest {
            channel: "c".into(),
            limit: 10,
            since: Some(StreamPosition {
                offset: 5,
                epoch: "e".into(),
            }),
            reverse: true,
        })),
    };
    let v: serde_json::Value = serde_json::to_value(&cmd).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id":1,"history":{"channel":"c","limit":10,"since":{"offset":"5","epoch":"e"},"reverse":true}})
    );
    let stats = Command {
        id: 2,
        method: Some(command::Method::PresenceStats(Default::default())),
    };
    assert_eq!(
        serde_json::to_string(&stats).unwrap(),
        r#"{"id":2,"presenceStats":{}}"#
    );
    let info = ClientInfo {
        user: "u".into(),
        client_id: "c1".into(),
        conn_info: vec![1],
    };
    let v: serde_json::Value = serde_json::to_value(&info).unwrap();
    assert!(
        v.get("clientId").is_some() && v.get("connInfo").is_some(),
        "{v}"
    );
    // Readers accept the original proto names too, as canonical JSON requires.
    let back: ClientInfo =
        serde_json::from_str(r#"{"user":"u","client_id":"c1","conn_info":"AQ=="}"#).unwrap();
    assert_eq!(back, info);
}

#[test]
fn mapping_embeds_json_payloads() {
    let cmd: Command =
        json::from_str(r#"{"id":3,"publish":{"channel":"c","data":{"any":"json"}}}"#).unwrap();
    let Some(command::Method::Publish(p)) = &cmd.method else {
        panic!("{cmd:?}")
    };
    assert_eq!(p.data, br#"{"any":"json"}"#);
    // Scalars and strings are payloads too: the bytes are their JSON text.
    let cmd: Command = json::from_str(r#"{"publish":{"channel":"c","data":"hi"}}"#).unwrap();
    let Some(command::Method::Publish(p)) = &cmd.method else {
        panic!()
    };
    assert_eq!(p.data, br#""hi""#);
    assert_eq!(
        json::to_string(&cmd).unwrap(),
        r#"{"publish":{"channel":"c","data":"hi"}}"#
    );
}

#[test]
fn binary_payloads_travel_as_b64data() {
    let frame = ServerFrame {
        frame: Some(server_frame::Frame::Push(Push {
            push: Some(push::Push::Publication(Publication {
                channel: "c".into(),
                offset: 3,
                epoch: "e".into(),
                data: vec![0, 1, 2, 0xff],
                info: Some(ClientInfo {
                    user: "u".into(),
                    client_id: "id".into(),
                    conn_info: br#"{"name":"Ann"}"#.to_vec(),
                }),
                tags: [("data".to_string(), "AAEC".to_string())].into(),
            })),
        })),
    };
    let text = json::to_string(&frame).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = &v["push"]["publication"];
    assert_eq!(p["b64data"], "AAEC/w==");
    assert!(p.get("data").is_none());
    assert_eq!(p["info"]["connInfo"], serde_json::json!({"name":"Ann"}));
    // tags are plain strings, even under the key "data".
    assert_eq!(p["tags"]["data"], "AAEC");
    assert_eq!(p["offset"], "3");
    assert_eq!(json::from_str::<ServerFrame>(&text).unwrap(), frame);
}

#[test]
fn mapping_rejects_conflicting_payload_forms() {
    let err = json::from_str::<Command>(r#"{"publish":{"channel":"c","data":1,"b64data":"AA=="}}"#);
    assert!(
        matches!(err, Err(json::JsonError::DuplicatePayload(_))),
        "{err:?}"
    );
    let err = json::from_str::<Command>(r#"{"publish":{"channel":"c","b64data":5}}"#);
    assert!(matches!(err, Err(json::JsonError::B64NotString)), "{err:?}");
    assert!(json::from_str::<Command>("{").is_err());
    assert!(json::from_str::<Command>(r#"{"id":"x"}"#).is_err());
    // Unknown fields are ignored (forward compatible, like binary protobuf).
    let cmd: Command = json::from_str(r#"{"id":1,"ping":{},"future":{"x":1}}"#).unwrap();
    assert!(matches!(cmd.method, Some(command::Method::Ping(_))));
}

#[test]
fn reply_with_publications_round_trips() {
    let reply = Reply {
        id: 9,
        result: Some(reply::Result::Subscribe(SubscribeResult {
            recoverable: true,
            offset: 2,
            epoch: "e".into(),
            was_recovering: true,
            recovered: true,
            publications: vec![
                Publication {
                    channel: "c".into(),
                    offset: 1,
                    epoch: "e".into(),
                    data: b"[1]".to_vec(),
                    ..Default::default()
                },
                Publication {
                    channel: "c".into(),
                    offset: 2,
                    epoch: "e".into(),
                    data: b"null".to_vec(),
                    ..Default::default()
                },
            ],
        })),
    };
    let text = json::to_string(&reply).unwrap();
    assert!(
        text.contains(r#""data":[1]"#) && text.contains(r#""data":null"#),
        "{text}"
    );
    assert_eq!(json::from_str::<Reply>(&text).unwrap(), reply);
    let bin = reply.encode_to_vec();
    assert_eq!(Reply::decode(bin.as_slice()).unwrap(), reply);
}

#[test]
fn descriptor_set_is_embedded() {
    let fds = prost_types_free_check(switchboard_proto::FILE_DESCRIPTOR_SET);
    assert!(fds > 0);
}

/// Counts the files in the encoded descriptor set without depending on prost-types: field 1 of
/// `FileDescriptorSet` is `repeated FileDescriptorProto file`.
fn prost_types_free_check(mut bytes: &[u8]) -> usize {
    let mut files = 0;
    while !bytes.is_empty() {
        let key = prost::encoding::decode_varint(&mut bytes).unwrap();
        assert_eq!(key, (1 << 3) | 2);
        let len = prost::encoding::decode_varint(&mut bytes).unwrap() as usize;
        bytes = &bytes[len..];
        files += 1;
    }
    files
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_publish_round_trips(id in any::<u32>(), channel in "[a-z:]{0,20}", data in proptest::collection::vec(any::<u8>(), 0..64), key in ".{0,10}") {
            let cmd = Command { id, method: Some(command::Method::Publish(PublishRequest { channel, data, idempotency_key: key })) };
            let text = json::to_string(&cmd).unwrap();
            prop_assert_eq!(json::from_str::<Command>(&text).unwrap(), cmd.clone());
            prop_assert_eq!(Command::decode(cmd.encode_to_vec().as_slice()).unwrap(), cmd);
        }

        #[test]
        fn json_payloads_are_kept_verbatim(n in any::<i64>(), s in "[ -~]{0,16}") {
            let payload = serde_json::to_string(&serde_json::json!({"n": n, "s": s})).unwrap();
            let text = format!(r#"{{"publish":{{"channel":"c","data":{payload}}}}}"#);
            let cmd: Command = json::from_str(&text).unwrap();
            let Some(command::Method::Publish(p)) = &cmd.method else { panic!() };
            prop_assert_eq!(&p.data, payload.as_bytes());
        }
    }
}

#[test]
fn signaling_commands_and_pushes_use_the_mapping() {
    let text = r#"{"id":3,"roomJoin":{"room":"call:1","peerId":"alice","data":{"name":"A"}}}"#;
    let cmd: Command = json::from_str(text).unwrap();
    let Some(command::Method::RoomJoin(j)) = &cmd.method else {
        panic!("{cmd:?}")
    };
    assert_eq!((j.room.as_str(), j.peer_id.as_str()), ("call:1", "alice"));
    assert_eq!(j.data, br#"{"name":"A"}"#);
    let back: Command = json::from_str(&json::to_string(&cmd).unwrap()).unwrap();
    assert_eq!(back, cmd);
    assert!(json::to_string(&cmd)
        .unwrap()
        .contains(r#""data":{"name":"A"}"#));

    let text = r#"{"id":4,"candidate":{"room":"call:1","to":"bob","candidate":{"candidate":"","sdpMid":"0","sdpMLineIndex":0}}}"#;
    let cmd: Command = json::from_str(text).unwrap();
    let Some(command::Method::Candidate(c)) = &cmd.method else {
        panic!("{cmd:?}")
    };
    let ice = c.candidate.as_ref().unwrap();
    assert_eq!(ice.sdp_mid.as_deref(), Some("0"));
    assert_eq!(ice.sdp_m_line_index, Some(0));

    let push = switchboard_proto::v1::Push {
        push: Some(switchboard_proto::v1::push::Push::Signal(
            switchboard_proto::v1::Signal {
                room: "call:1".into(),
                from: "bob".into(),
                message: Some(switchboard_proto::v1::signal::Message::Bye("done".into())),
            },
        )),
    };
    assert_eq!(
        json::to_string(&push).unwrap(),
        r#"{"signal":{"bye":"done","from":"bob","room":"call:1"}}"#
    );
}
