//! [`SharedPush`]: one push, shared by every subscriber it goes to, with its wire encodings made
//! once per codec. A publication to N subscribers used to be encoded N times (once per
//! subscriber, by its transport); now the first transport of each codec encodes it and the
//! others send the same bytes (as Centrifuge's prepared replies do).

use std::ops::Deref;
use std::sync::OnceLock;

use bytes::Bytes;
use switchboard_proto::v1 as proto;

/// The wire encodings a transport may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// The JSON mapping (WebSocket `switchboard.json`).
    Json,
    /// Protobuf (WebSocket `switchboard.proto`, WebTransport).
    Proto,
    /// Centrifugo's JSON client protocol (`/connection/websocket`).
    CentrifugoJson,
    /// Centrifugo's protobuf client protocol (`centrifuge-protobuf`).
    CentrifugoProto,
}

/// A push with its encodings cached; dereferences to the [`proto::Push`].
#[derive(Debug)]
pub struct SharedPush {
    inner: proto::Push,
    /// The protobuf encoding's length, computed once: every subscriber's queue accounts for it.
    len: usize,
    json: OnceLock<Bytes>,
    proto: OnceLock<Bytes>,
    centrifugo_json: OnceLock<Bytes>,
    centrifugo_proto: OnceLock<Bytes>,
}

impl SharedPush {
    /// Wraps `push`; nothing is encoded yet.
    pub fn new(push: proto::Push) -> Self {
        use switchboard_proto::prost::Message;
        SharedPush {
            len: push.encoded_len(),
            inner: push,
            json: OnceLock::new(),
            proto: OnceLock::new(),
            centrifugo_json: OnceLock::new(),
            centrifugo_proto: OnceLock::new(),
        }
    }

    /// The length of the push's protobuf encoding (computed once, when it was wrapped; the
    /// trait method of the same name would walk the message for every subscriber).
    pub fn encoded_len(&self) -> usize {
        self.len
    }

    /// The push.
    pub fn push(&self) -> &proto::Push {
        &self.inner
    }

    /// The push's frame in `codec`: made by `encode` the first time any transport asks for
    /// this codec, the same bytes (a reference count, no copy) every later time. Every
    /// transport of one codec must pass the same encoder.
    pub fn encoded(&self, codec: Codec, encode: impl FnOnce(&proto::Push) -> Bytes) -> Bytes {
        let cell = match codec {
            Codec::Json => &self.json,
            Codec::Proto => &self.proto,
            Codec::CentrifugoJson => &self.centrifugo_json,
            Codec::CentrifugoProto => &self.centrifugo_proto,
        };
        cell.get_or_init(|| encode(&self.inner)).clone()
    }
}

impl Deref for SharedPush {
    type Target = proto::Push;

    fn deref(&self) -> &proto::Push {
        &self.inner
    }
}

impl From<proto::Push> for SharedPush {
    fn from(push: proto::Push) -> Self {
        SharedPush::new(push)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_codec_is_encoded_once_and_the_bytes_are_shared() {
        let p = SharedPush::new(proto::Push::default());
        let calls = AtomicUsize::new(0);
        let enc = |_: &proto::Push| {
            calls.fetch_add(1, Ordering::SeqCst);
            Bytes::from_static(b"frame")
        };
        let a = p.encoded(Codec::Json, enc);
        let b = p.encoded(Codec::Json, enc);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, not a copy");
        p.encoded(Codec::Proto, enc);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one encoding per codec");
    }
}
