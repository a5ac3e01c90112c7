//! What goes over the wire to Redis, and back: tagged protobuf messages on pub/sub, stored
//! publications, control messages, TTLs in ms, and the shape of script replies.

use std::time::Duration;

use switchboard_proto::prost::Message;
use switchboard_proto::v1 as proto;

use crate::broker::Control;
use crate::codes;
use crate::error::BrokerError;
use crate::util::millis;

/// Longest TTL handed to Redis (100 years): larger values would overflow its expiry times.
pub(super) const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// A reply that does not have the shape the scripts return.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
struct Malformed(&'static str);

pub(super) fn malformed(what: &'static str) -> BrokerError {
    BrokerError::Backend(Box::new(Malformed(what)))
}

/// A duration in ms for Redis: at least 1, at most [`MAX_TTL_MS`].
pub(super) fn ttl_ms(d: Duration) -> u64 {
    millis(d).clamp(1, MAX_TTL_MS)
}

/// `tag` followed by the protobuf encoding of `m`.
pub(super) fn tagged(tag: u8, m: &impl Message) -> Result<Vec<u8>, BrokerError> {
    let mut v = Vec::with_capacity(1 + m.encoded_len());
    v.push(tag);
    m.encode(&mut v)
        .map_err(|e| BrokerError::Backend(Box::new(e)))?;
    Ok(v)
}

fn split_at_space(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b' ')?;
    Some((&b[..i], &b[i + 1..]))
}

pub(super) fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A stored or published publication with its channel, offset and epoch put back.
pub(super) fn decode_publication(
    channel: &str,
    offset: u64,
    epoch: &str,
    data: &[u8],
) -> Option<proto::Publication> {
    let mut p = proto::Publication::decode(data).ok()?;
    p.channel = channel.to_owned();
    p.offset = offset;
    p.epoch = epoch.to_owned();
    Some(p)
}

/// `<offset> <epoch> <Publication>` (after the `p` tag).
pub(super) fn parse_publication_message(channel: &str, body: &[u8]) -> Option<proto::Publication> {
    let (offset, rest) = split_at_space(body)?;
    let (epoch, data) = split_at_space(rest)?;
    decode_publication(
        channel,
        parse_u64(offset)?,
        std::str::from_utf8(epoch).ok()?,
        data,
    )
}

pub(super) fn encode_control(control: &Control) -> Result<Vec<u8>, BrokerError> {
    match control {
        Control::DisconnectUser {
            user,
            client_id,
            disconnect,
        } => tagged(
            b'd',
            &proto::DisconnectRequest {
                user: user.clone(),
                client_id: client_id.clone().unwrap_or_default(),
                disconnect: Some(disconnect.clone()),
            },
        ),
        Control::UnsubscribeUser {
            user,
            channel,
            client_id,
        } => tagged(
            b'u',
            &proto::ApiUnsubscribeRequest {
                user: user.clone(),
                channel: channel.clone(),
                client_id: client_id.clone().unwrap_or_default(),
            },
        ),
    }
}

pub(super) fn decode_control(body: &[u8]) -> Option<Control> {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    match body.split_first()? {
        (b'd', rest) => {
            let r = proto::DisconnectRequest::decode(rest).ok()?;
            Some(Control::DisconnectUser {
                user: r.user,
                client_id: non_empty(r.client_id),
                disconnect: r.disconnect.unwrap_or_else(|| {
                    codes::disconnect_message(codes::disconnect::FORCE_DISCONNECT)
                }),
            })
        }
        (b'u', rest) => {
            let r = proto::ApiUnsubscribeRequest::decode(rest).ok()?;
            Some(Control::UnsubscribeUser {
                user: r.user,
                channel: r.channel,
                client_id: non_empty(r.client_id),
            })
        }
        _ => None,
    }
}

/// The offset part of a stream entry id `<offset>-<seq>`.
pub(super) fn split_at_dash(id: &[u8]) -> Option<&[u8]> {
    id.split(|&c| c == b'-').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;

    #[test]
    fn publication_messages_round_trip() {
        let p = proto::Publication {
            data: b"{\"a\": 1} with spaces".to_vec(),
            info: Some(proto::ClientInfo {
                user: "ann".into(),
                client_id: "c 1".into(),
                conn_info: Vec::new(),
            }),
            ..Default::default()
        };
        let mut body = b"17 abcdef ".to_vec();
        body.extend_from_slice(&p.encode_to_vec());
        let back = parse_publication_message("chat:a", &body).expect("parses");
        assert_eq!(back.channel, "chat:a");
        assert_eq!((back.offset, back.epoch.as_str()), (17, "abcdef"));
        assert_eq!((&back.data, &back.info), (&p.data, &p.info));
        // Without history: offset 0, empty epoch.
        let mut body = b"0  ".to_vec();
        body.extend_from_slice(&p.encode_to_vec());
        let back = parse_publication_message("x", &body).expect("parses");
        assert_eq!((back.offset, back.epoch.as_str()), (0, ""));
        assert!(parse_publication_message("x", b"nonsense").is_none());
        assert!(parse_publication_message("x", b"12").is_none());
    }

    #[test]
    fn control_messages_round_trip() {
        let controls = [
            Control::DisconnectUser {
                user: "ann".into(),
                client_id: None,
                disconnect: codes::disconnect_message(codes::disconnect::FORCE_RECONNECT),
            },
            Control::DisconnectUser {
                user: "ann".into(),
                client_id: Some("c1".into()),
                disconnect: codes::disconnect_message(codes::disconnect::FORCE_DISCONNECT),
            },
            Control::UnsubscribeUser {
                user: "bob".into(),
                channel: "chat:a".into(),
                client_id: None,
            },
        ];
        for c in controls {
            let bytes = encode_control(&c).expect("encodes");
            assert_eq!(decode_control(&bytes), Some(c));
        }
        assert_eq!(decode_control(b""), None);
        assert_eq!(decode_control(b"x"), None);
    }
}
