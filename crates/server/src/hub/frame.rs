//! `ServerFrame` encoders shared by the transports, without cloning a shared push.
use bytes::Bytes;
use switchboard_hub::proto;
use switchboard_hub::{Codec, SharedPush};
use switchboard_proto::json;
use switchboard_proto::prost::Message;

/// The protobuf `ServerFrame { push }` bytes.
pub(crate) fn push_proto(push: &proto::Push) -> Vec<u8> {
    let len = push.encoded_len();
    let mut buf = Vec::with_capacity(len + 6);
    switchboard_proto::prost::encoding::message::encode(2, push, &mut buf);
    buf
}

/// The protobuf `ServerFrame { reply }` bytes.
pub(crate) fn reply_proto(reply: &proto::Reply) -> Vec<u8> {
    let mut buf = Vec::with_capacity(reply.encoded_len() + 6);
    switchboard_proto::prost::encoding::message::encode(1, reply, &mut buf);
    buf
}

/// The JSON `ServerFrame { push }`.
pub(crate) fn push_json(push: &proto::Push) -> String {
    wrap("push", json::to_string(push))
}

/// The JSON `ServerFrame { reply }`.
pub(crate) fn reply_json(reply: &proto::Reply) -> String {
    wrap("reply", json::to_string(reply))
}

fn wrap(key: &str, inner: Result<String, json::JsonError>) -> String {
    match inner {
        Ok(inner) => format!("{{\"{key}\":{inner}}}"),
        // Our own messages always serialize; keep the stream well-formed regardless.
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a frame");
            "{}".to_owned()
        }
    }
}

/// A publication push.
pub(crate) fn publication(p: proto::Publication) -> proto::Push {
    proto::Push {
        push: Some(proto::push::Push::Publication(p)),
    }
}

/// The JSON `ServerFrame { push }` of a shared push, encoded once for all its subscribers.
pub(crate) fn shared_json(push: &SharedPush) -> Bytes {
    push.encoded(Codec::Json, |p| Bytes::from(push_json(p)))
}

/// The protobuf `ServerFrame { push }` of a shared push, encoded once for all its subscribers.
pub(crate) fn shared_proto(push: &SharedPush) -> Bytes {
    push.encoded(Codec::Proto, |p| Bytes::from(push_proto(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_frames_decode_as_server_frames() {
        let push = publication(proto::Publication {
            channel: "a".into(),
            offset: 3,
            data: br#"{"x":1}"#.to_vec(),
            ..Default::default()
        });
        let f = proto::ServerFrame::decode(push_proto(&push).as_slice()).unwrap();
        assert_eq!(
            f.frame,
            Some(proto::server_frame::Frame::Push(push.clone()))
        );
        let j: proto::ServerFrame = json::from_str(&push_json(&push)).unwrap();
        assert_eq!(j, f);
        let reply = proto::Reply {
            id: 4,
            result: Some(proto::reply::Result::Ping(proto::PingResult {})),
        };
        let f = proto::ServerFrame::decode(reply_proto(&reply).as_slice()).unwrap();
        assert_eq!(
            f.frame,
            Some(proto::server_frame::Frame::Reply(reply.clone()))
        );
        let j: proto::ServerFrame = json::from_str(&reply_json(&reply)).unwrap();
        assert_eq!(j, f);
    }
}
