//! Centrifugo's client protocol (v2, as centrifuge-js 5, centrifuge-python and the other
//! Centrifugal SDKs speak it) translated to and from switchboard's `Command`/`ServerFrame`, so
//! the server's WebSocket at `/connection/websocket` is one more thin adapter onto the same hub
//! session. Pure functions of bytes and messages (no I/O), fuzzed (`fuzz/`, target
//! `centrifugo_frames`).
//!
//! JSON: a frame carries one or more commands, one JSON object per line; replies and pushes go
//! out one object per frame. `data` fields are embedded JSON. An empty object is a ping (server
//! → client, every ping interval) or a pong (client → server). Protobuf (subprotocol
//! `centrifuge-protobuf`): a frame carries varint-length-delimited `Command`s / `Reply`s.
//!
//! What Centrifugo has and switchboard does not answers as Centrifugo does when the feature is
//! off: RPC, `refresh` and `sub_refresh` get 108 "not available"; a subscription token gets 108
//! too (connection tokens carry channel permissions here); `send` is dropped (it has no reply);
//! delta compression is never negotiated (publications are always whole).

use crate::v1 as proto;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The hub error codes this module answers with itself (the same numbers as Centrifugo's).
mod code {
    /// 104: a method this protocol does not know.
    pub const METHOD_NOT_FOUND: u32 = 104;
    /// 108: a feature switchboard does not have.
    pub const NOT_AVAILABLE: u32 = 108;
}

/// The subprotocol of the protobuf variant.
pub const PROTOBUF: &str = "centrifuge-protobuf";

/// A Centrifugo command, decoded and judged.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// For the hub.
    Command(proto::Command),
    /// Answered here (an unsupported method): the reply to send.
    Answer(proto::Reply),
    /// A pong, or a command without a reply (`send`).
    Nothing,
    /// A history call asking for the stream position only (Centrifugo's `limit: 0`): its
    /// reply must drop the publications the hub returns.
    PositionOnly(proto::Command),
}

// ---- JSON wire types -------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonCommand<'a> {
    id: u32,
    #[serde(borrow)]
    connect: Option<JsonConnect<'a>>,
    #[serde(borrow)]
    subscribe: Option<JsonSubscribe<'a>>,
    unsubscribe: Option<JsonChannel>,
    #[serde(borrow)]
    publish: Option<JsonPublish<'a>>,
    presence: Option<JsonChannel>,
    presence_stats: Option<JsonChannel>,
    history: Option<JsonHistory>,
    #[serde(borrow)]
    ping: Option<&'a RawValue>,
    #[serde(borrow)]
    send: Option<&'a RawValue>,
    #[serde(borrow)]
    rpc: Option<&'a RawValue>,
    #[serde(borrow)]
    refresh: Option<&'a RawValue>,
    #[serde(borrow)]
    sub_refresh: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonConnect<'a> {
    token: String,
    name: String,
    version: String,
    #[serde(borrow)]
    #[allow(dead_code)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonSubscribe<'a> {
    channel: String,
    token: String,
    recover: bool,
    epoch: String,
    offset: u64,
    #[serde(borrow)]
    #[allow(dead_code)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonChannel {
    channel: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonPublish<'a> {
    channel: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonPosition {
    offset: u64,
    epoch: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonHistory {
    channel: String,
    limit: i32,
    since: Option<JsonPosition>,
    reverse: bool,
}

/// Decodes one JSON frame: one command per line.
pub fn decode_json(text: &str) -> Result<Vec<Decoded>, String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let c: JsonCommand<'_> =
            serde_json::from_str(line).map_err(|e| format!("invalid JSON command: {e}"))?;
        out.push(judge_json(c)?);
    }
    Ok(out)
}

/// A JSON command as the protobuf one it stands for: both are judged by [`judge_proto`].
fn judge_json(c: JsonCommand<'_>) -> Result<Decoded, String> {
    let channel = |x: JsonChannel| pb::Channel { channel: x.channel };
    let empty = |x: Option<&RawValue>| x.map(|_| pb::Empty {});
    judge_proto(pb::Command {
        id: c.id,
        connect: c.connect.map(|x| pb::ConnectRequest {
            token: x.token,
            name: x.name,
            version: x.version,
        }),
        subscribe: c.subscribe.map(|x| pb::SubscribeRequest {
            channel: x.channel,
            token: x.token,
            recover: x.recover,
            epoch: x.epoch,
            offset: x.offset,
        }),
        unsubscribe: c.unsubscribe.map(channel),
        publish: c.publish.map(|x| pb::PublishRequest {
            channel: x.channel,
            data: x
                .data
                .map(|d| d.get().as_bytes().to_vec())
                .unwrap_or_default(),
        }),
        presence: c.presence.map(channel),
        presence_stats: c.presence_stats.map(channel),
        history: c.history.map(|x| pb::HistoryRequest {
            channel: x.channel,
            limit: x.limit,
            since: x.since.map(|p| pb::StreamPosition {
                offset: p.offset,
                epoch: p.epoch,
            }),
            reverse: x.reverse,
        }),
        ping: empty(c.ping),
        send: empty(c.send),
        rpc: empty(c.rpc),
        refresh: empty(c.refresh),
        sub_refresh: empty(c.sub_refresh),
    })
}

fn subscribe(
    channel: String,
    recover: bool,
    offset: u64,
    epoch: String,
) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        channel,
        recover: recover.then_some(proto::StreamPosition { offset, epoch }),
    }
}

/// Centrifugo's history `limit`: 0 asks for the stream position only, a negative value for
/// everything kept, a positive one for at most that many.
fn history(
    id: u32,
    channel: String,
    limit: i32,
    since: Option<(u64, String)>,
    reverse: bool,
) -> Result<Decoded, String> {
    let position_only = limit == 0;
    let request = proto::HistoryRequest {
        channel,
        // The hub's 0 means "as many as kept"; a position-only call reads one and drops it.
        limit: if position_only {
            1
        } else if limit < 0 {
            0
        } else {
            limit as u32
        },
        since: since.map(|(offset, epoch)| proto::StreamPosition { offset, epoch }),
        reverse,
    };
    let command = proto::Command {
        id,
        method: Some(proto::command::Method::History(request)),
    };
    Ok(if position_only {
        Decoded::PositionOnly(command)
    } else {
        Decoded::Command(command)
    })
}

fn method_not_found(id: u32) -> Decoded {
    Decoded::Answer(proto::Reply {
        id,
        result: Some(proto::reply::Result::Error(proto::Error {
            code: code::METHOD_NOT_FOUND,
            message: "method not found".to_owned(),
            temporary: false,
        })),
    })
}

fn not_available(id: u32, message: &str) -> Decoded {
    Decoded::Answer(proto::Reply {
        id,
        result: Some(proto::reply::Result::Error(proto::Error {
            code: code::NOT_AVAILABLE,
            message: message.to_owned(),
            temporary: false,
        })),
    })
}

// ---- JSON out ------------------------------------------------------------------------------

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A payload as embedded JSON: the bytes themselves when they are JSON, else a JSON string of
/// their base64 (a binary publication from a protobuf client).
fn raw(data: &[u8]) -> Box<RawValue> {
    if let Ok(text) = std::str::from_utf8(data) {
        if !text.trim().is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            if let Ok(r) = RawValue::from_string(text.to_owned()) {
                return r;
            }
        }
    }
    use base64::Engine as _;
    let s = serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(data));
    RawValue::from_string(s.to_string()).unwrap_or_else(|_| null())
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).unwrap_or_default()
}

#[derive(Serialize)]
struct OutClientInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    user: String,
    client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn_info: Option<Box<RawValue>>,
}

fn client_info(i: &proto::ClientInfo) -> OutClientInfo {
    OutClientInfo {
        user: i.user.clone(),
        client: i.client_id.clone(),
        conn_info: (!i.conn_info.is_empty()).then(|| raw(&i.conn_info)),
    }
}

#[derive(Serialize)]
struct OutPublication {
    data: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<OutClientInfo>,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    tags: std::collections::HashMap<String, String>,
}

fn publication(p: &proto::Publication) -> OutPublication {
    OutPublication {
        data: raw(&p.data),
        info: p.info.as_ref().map(client_info),
        offset: p.offset,
        tags: p.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

#[derive(Serialize, Default)]
struct OutSubscribe {
    #[serde(skip_serializing_if = "is_false")]
    recoverable: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    epoch: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    publications: Vec<OutPublication>,
    #[serde(skip_serializing_if = "is_false")]
    recovered: bool,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(skip_serializing_if = "is_false")]
    positioned: bool,
    #[serde(skip_serializing_if = "is_false")]
    was_recovering: bool,
}

#[derive(Serialize)]
struct OutError<'a> {
    code: u32,
    message: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    temporary: bool,
}

/// What the connect reply adds for Centrifugo clients: the ping interval and that pongs are
/// expected.
#[derive(Clone, Copy, Debug)]
pub struct ConnectExtras {
    /// Seconds between the server's pings.
    pub ping_secs: u32,
}

/// One reply as a JSON frame.
pub fn reply_json(r: &proto::Reply, extras: ConnectExtras, position_only: bool) -> String {
    use proto::reply::Result as R;
    let id = r.id;
    let body = match &r.result {
        None => return format!("{{\"id\":{id}}}"),
        Some(R::Error(e)) => {
            let err = OutError {
                code: e.code,
                message: &e.message,
                temporary: e.temporary,
            };
            return format!("{{\"id\":{id},\"error\":{}}}", to_json(&err));
        }
        Some(R::Connect(c)) => (
            "connect",
            serde_json::json!({
                "client": c.client_id,
                "version": format!("switchboard {}", c.version),
                "ping": extras.ping_secs,
                "pong": true,
            })
            .to_string(),
        ),
        Some(R::Subscribe(s)) => ("subscribe", to_json(&subscribe_result(s))),
        Some(R::Unsubscribe(_)) => ("unsubscribe", "{}".to_owned()),
        Some(R::Publish(_)) => ("publish", "{}".to_owned()),
        Some(R::Presence(p)) => {
            let map: std::collections::BTreeMap<&str, OutClientInfo> = p
                .presence
                .iter()
                .map(|(k, v)| (k.as_str(), client_info(v)))
                .collect();
            ("presence", format!("{{\"presence\":{}}}", to_json(&map)))
        }
        Some(R::PresenceStats(s)) => (
            "presence_stats",
            serde_json::json!({"num_clients": s.num_clients, "num_users": s.num_users}).to_string(),
        ),
        Some(R::History(h)) => {
            let pubs: Vec<OutPublication> = if position_only {
                Vec::new()
            } else {
                h.publications.iter().map(publication).collect()
            };
            let mut v = serde_json::Map::new();
            if !pubs.is_empty() {
                v.insert(
                    "publications".into(),
                    serde_json::to_value(&pubs).unwrap_or_default(),
                );
            }
            if !h.epoch.is_empty() {
                v.insert("epoch".into(), h.epoch.clone().into());
            }
            if h.offset > 0 {
                v.insert("offset".into(), h.offset.into());
            }
            ("history", serde_json::Value::Object(v).to_string())
        }
        Some(R::Ping(_)) => ("ping", "{}".to_owned()),
        // Room results never answer a Centrifugo command.
        Some(_) => ("ping", "{}".to_owned()),
    };
    format!("{{\"id\":{id},\"{}\":{}}}", body.0, body.1)
}

fn subscribe_result(s: &proto::SubscribeResult) -> OutSubscribe {
    OutSubscribe {
        recoverable: s.recoverable,
        epoch: s.epoch.clone(),
        publications: s.publications.iter().map(publication).collect(),
        recovered: s.recovered,
        offset: s.offset,
        positioned: s.recoverable,
        was_recovering: s.was_recovering,
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

/// One push as a JSON frame; `None` for what Centrifugo clients do not get (room signaling,
/// and `Disconnect`, which travels as the close frame).
pub fn push_json(p: &proto::Push) -> Option<String> {
    use proto::push::Push as P;
    let (channel, kind, body) = match p.push.as_ref()? {
        P::Publication(x) => (&x.channel, "pub", to_json(&publication(x))),
        P::Join(x) => (
            &x.channel,
            "join",
            format!(
                "{{\"info\":{}}}",
                to_json(&client_info(&x.info.clone().unwrap_or_default()))
            ),
        ),
        P::Leave(x) => (
            &x.channel,
            "leave",
            format!(
                "{{\"info\":{}}}",
                to_json(&client_info(&x.info.clone().unwrap_or_default()))
            ),
        ),
        P::Unsubscribe(x) => (
            &x.channel,
            "unsubscribe",
            serde_json::json!({"code": x.code, "reason": x.reason}).to_string(),
        ),
        P::Disconnect(_) | P::RoomJoin(_) | P::RoomLeave(_) | P::Signal(_) => return None,
    };
    Some(format!(
        "{{\"push\":{{\"channel\":{},\"{kind}\":{body}}}}}",
        serde_json::Value::from(channel.as_str())
    ))
}

/// The server's ping (JSON): an empty object.
pub const PING_JSON: &str = "{}";

// ---- protobuf ------------------------------------------------------------------------------

/// Centrifugo's protobuf messages (package `centrifugal.centrifuge.protocol`), the fields
/// switchboard reads or writes; names and tags as in Centrifugo's `client.proto`.
#[allow(missing_docs)]
pub mod pb {

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Error {
        #[prost(uint32, tag = "1")]
        pub code: u32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(bool, tag = "3")]
        pub temporary: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Command {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "4")]
        pub connect: Option<ConnectRequest>,
        #[prost(message, optional, tag = "5")]
        pub subscribe: Option<SubscribeRequest>,
        #[prost(message, optional, tag = "6")]
        pub unsubscribe: Option<Channel>,
        #[prost(message, optional, tag = "7")]
        pub publish: Option<PublishRequest>,
        #[prost(message, optional, tag = "8")]
        pub presence: Option<Channel>,
        #[prost(message, optional, tag = "9")]
        pub presence_stats: Option<Channel>,
        #[prost(message, optional, tag = "10")]
        pub history: Option<HistoryRequest>,
        #[prost(message, optional, tag = "11")]
        pub ping: Option<Empty>,
        #[prost(message, optional, tag = "12")]
        pub send: Option<Empty>,
        #[prost(message, optional, tag = "13")]
        pub rpc: Option<Empty>,
        #[prost(message, optional, tag = "14")]
        pub refresh: Option<Empty>,
        #[prost(message, optional, tag = "15")]
        pub sub_refresh: Option<Empty>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Channel {
        #[prost(string, tag = "1")]
        pub channel: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectRequest {
        #[prost(string, tag = "1")]
        pub token: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "5")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubscribeRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(string, tag = "2")]
        pub token: String,
        #[prost(bool, tag = "3")]
        pub recover: bool,
        #[prost(string, tag = "6")]
        pub epoch: String,
        #[prost(uint64, tag = "7")]
        pub offset: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PublishRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamPosition {
        #[prost(uint64, tag = "1")]
        pub offset: u64,
        #[prost(string, tag = "2")]
        pub epoch: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistoryRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(int32, tag = "7")]
        pub limit: i32,
        #[prost(message, optional, tag = "8")]
        pub since: Option<StreamPosition>,
        #[prost(bool, tag = "9")]
        pub reverse: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reply {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "2")]
        pub error: Option<Error>,
        #[prost(message, optional, tag = "4")]
        pub push: Option<Push>,
        #[prost(message, optional, tag = "5")]
        pub connect: Option<ConnectResult>,
        #[prost(message, optional, tag = "6")]
        pub subscribe: Option<SubscribeResult>,
        #[prost(message, optional, tag = "7")]
        pub unsubscribe: Option<Empty>,
        #[prost(message, optional, tag = "8")]
        pub publish: Option<Empty>,
        #[prost(message, optional, tag = "9")]
        pub presence: Option<PresenceResult>,
        #[prost(message, optional, tag = "10")]
        pub presence_stats: Option<PresenceStatsResult>,
        #[prost(message, optional, tag = "11")]
        pub history: Option<HistoryResult>,
        #[prost(message, optional, tag = "12")]
        pub ping: Option<Empty>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Push {
        #[prost(string, tag = "2")]
        pub channel: String,
        #[prost(message, optional, tag = "4")]
        pub publication: Option<Publication>,
        #[prost(message, optional, tag = "5")]
        pub join: Option<JoinLeave>,
        #[prost(message, optional, tag = "6")]
        pub leave: Option<JoinLeave>,
        #[prost(message, optional, tag = "7")]
        pub unsubscribe: Option<Unsubscribe>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClientInfo {
        #[prost(string, tag = "1")]
        pub user: String,
        #[prost(string, tag = "2")]
        pub client: String,
        #[prost(bytes = "vec", tag = "3")]
        pub conn_info: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Publication {
        #[prost(bytes = "vec", tag = "4")]
        pub data: Vec<u8>,
        #[prost(message, optional, tag = "5")]
        pub info: Option<ClientInfo>,
        #[prost(uint64, tag = "6")]
        pub offset: u64,
        #[prost(map = "string, string", tag = "7")]
        pub tags: std::collections::HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JoinLeave {
        #[prost(message, optional, tag = "1")]
        pub info: Option<ClientInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Unsubscribe {
        #[prost(uint32, tag = "2")]
        pub code: u32,
        #[prost(string, tag = "3")]
        pub reason: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectResult {
        #[prost(string, tag = "1")]
        pub client: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(uint32, tag = "7")]
        pub ping: u32,
        #[prost(bool, tag = "8")]
        pub pong: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubscribeResult {
        #[prost(bool, tag = "3")]
        pub recoverable: bool,
        #[prost(string, tag = "6")]
        pub epoch: String,
        #[prost(message, repeated, tag = "7")]
        pub publications: Vec<Publication>,
        #[prost(bool, tag = "8")]
        pub recovered: bool,
        #[prost(uint64, tag = "9")]
        pub offset: u64,
        #[prost(bool, tag = "10")]
        pub positioned: bool,
        #[prost(bool, tag = "12")]
        pub was_recovering: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PresenceResult {
        #[prost(map = "string, message", tag = "1")]
        pub presence: std::collections::HashMap<String, ClientInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PresenceStatsResult {
        #[prost(uint32, tag = "1")]
        pub num_clients: u32,
        #[prost(uint32, tag = "2")]
        pub num_users: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistoryResult {
        #[prost(message, repeated, tag = "1")]
        pub publications: Vec<Publication>,
        #[prost(string, tag = "2")]
        pub epoch: String,
        #[prost(uint64, tag = "3")]
        pub offset: u64,
    }
}

/// Decodes one protobuf frame: varint-length-delimited commands.
pub fn decode_proto(mut bytes: &[u8]) -> Result<Vec<Decoded>, String> {
    use prost::Message as _;
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let c = pb::Command::decode_length_delimited(&mut bytes)
            .map_err(|e| format!("invalid protobuf command: {e}"))?;
        out.push(judge_proto(c)?);
    }
    Ok(out)
}

fn judge_proto(c: pb::Command) -> Result<Decoded, String> {
    use proto::command::Method as M;
    let id = c.id;
    let method = if let Some(x) = c.connect {
        M::Connect(proto::ConnectRequest {
            token: x.token,
            name: x.name,
            version: x.version,
        })
    } else if let Some(x) = c.subscribe {
        if !x.token.is_empty() {
            return Ok(not_available(id, "subscription tokens are not supported"));
        }
        M::Subscribe(subscribe(x.channel, x.recover, x.offset, x.epoch))
    } else if let Some(x) = c.unsubscribe {
        M::Unsubscribe(proto::UnsubscribeRequest { channel: x.channel })
    } else if let Some(x) = c.publish {
        M::Publish(proto::PublishRequest {
            channel: x.channel,
            data: x.data,
            idempotency_key: String::new(),
        })
    } else if let Some(x) = c.presence {
        M::Presence(proto::PresenceRequest { channel: x.channel })
    } else if let Some(x) = c.presence_stats {
        M::PresenceStats(proto::PresenceStatsRequest { channel: x.channel })
    } else if let Some(x) = c.history {
        return history(
            id,
            x.channel,
            x.limit,
            x.since.map(|p| (p.offset, p.epoch)),
            x.reverse,
        );
    } else if c.ping.is_some() {
        M::Ping(proto::PingRequest {})
    } else if c.rpc.is_some() || c.refresh.is_some() || c.sub_refresh.is_some() {
        return Ok(not_available(id, "not available"));
    } else if c.send.is_some() || id == 0 {
        return Ok(Decoded::Nothing);
    } else {
        // A method this protocol version does not know: Centrifugo's "method not found".
        return Ok(method_not_found(id));
    };
    Ok(Decoded::Command(proto::Command {
        id,
        method: Some(method),
    }))
}

fn pb_info(i: &proto::ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: i.user.clone(),
        client: i.client_id.clone(),
        conn_info: i.conn_info.clone(),
    }
}

fn pb_publication(p: &proto::Publication) -> pb::Publication {
    pb::Publication {
        data: p.data.clone(),
        info: p.info.as_ref().map(pb_info),
        offset: p.offset,
        tags: p.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// One reply as a protobuf frame (length-delimited `Reply`).
pub fn reply_proto(r: &proto::Reply, extras: ConnectExtras, position_only: bool) -> Vec<u8> {
    use prost::Message as _;
    use proto::reply::Result as R;
    let mut out = pb::Reply {
        id: r.id,
        ..Default::default()
    };
    match &r.result {
        None => {}
        Some(R::Error(e)) => {
            out.error = Some(pb::Error {
                code: e.code,
                message: e.message.clone(),
                temporary: e.temporary,
            })
        }
        Some(R::Connect(c)) => {
            out.connect = Some(pb::ConnectResult {
                client: c.client_id.clone(),
                version: format!("switchboard {}", c.version),
                ping: extras.ping_secs,
                pong: true,
            })
        }
        Some(R::Subscribe(s)) => {
            out.subscribe = Some(pb::SubscribeResult {
                recoverable: s.recoverable,
                epoch: s.epoch.clone(),
                publications: s.publications.iter().map(pb_publication).collect(),
                recovered: s.recovered,
                offset: s.offset,
                positioned: s.recoverable,
                was_recovering: s.was_recovering,
            })
        }
        Some(R::Unsubscribe(_)) => out.unsubscribe = Some(pb::Empty {}),
        Some(R::Publish(_)) => out.publish = Some(pb::Empty {}),
        Some(R::Presence(p)) => {
            out.presence = Some(pb::PresenceResult {
                presence: p
                    .presence
                    .iter()
                    .map(|(k, v)| (k.clone(), pb_info(v)))
                    .collect(),
            })
        }
        Some(R::PresenceStats(s)) => {
            out.presence_stats = Some(pb::PresenceStatsResult {
                num_clients: s.num_clients,
                num_users: s.num_users,
            })
        }
        Some(R::History(h)) => {
            out.history = Some(pb::HistoryResult {
                publications: if position_only {
                    Vec::new()
                } else {
                    h.publications.iter().map(pb_publication).collect()
                },
                epoch: h.epoch.clone(),
                offset: h.offset,
            })
        }
        Some(_) => out.ping = Some(pb::Empty {}),
    }
    out.encode_length_delimited_to_vec()
}

/// One push as a protobuf frame; `None` as for [`push_json`].
pub fn push_proto(p: &proto::Push) -> Option<Vec<u8>> {
    use prost::Message as _;
    use proto::push::Push as P;
    let mut push = pb::Push::default();
    match p.push.as_ref()? {
        P::Publication(x) => {
            push.channel.clone_from(&x.channel);
            push.publication = Some(pb_publication(x));
        }
        P::Join(x) => {
            push.channel.clone_from(&x.channel);
            push.join = Some(pb::JoinLeave {
                info: x.info.as_ref().map(pb_info),
            });
        }
        P::Leave(x) => {
            push.channel.clone_from(&x.channel);
            push.leave = Some(pb::JoinLeave {
                info: x.info.as_ref().map(pb_info),
            });
        }
        P::Unsubscribe(x) => {
            push.channel.clone_from(&x.channel);
            push.unsubscribe = Some(pb::Unsubscribe {
                code: x.code,
                reason: x.reason.clone(),
            });
        }
        P::Disconnect(_) | P::RoomJoin(_) | P::RoomLeave(_) | P::Signal(_) => return None,
    }
    let reply = pb::Reply {
        push: Some(push),
        ..Default::default()
    };
    Some(reply.encode_length_delimited_to_vec())
}

/// The server's ping (protobuf): an empty `Reply`.
pub fn ping_proto() -> Vec<u8> {
    use prost::Message as _;
    pb::Reply::default().encode_length_delimited_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extras() -> ConnectExtras {
        ConnectExtras { ping_secs: 25 }
    }

    #[test]
    fn several_json_commands_in_one_frame() {
        let frame = "{\"id\":1,\"connect\":{\"token\":\"t\",\"name\":\"js\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"news\",\"recover\":true,\"epoch\":\"e\",\"offset\":4}}\n\n{}";
        let d = decode_json(frame).unwrap();
        assert_eq!(d.len(), 3);
        let Decoded::Command(c) = &d[1] else {
            panic!("{d:?}")
        };
        assert_eq!(
            c.method,
            Some(proto::command::Method::Subscribe(proto::SubscribeRequest {
                channel: "news".into(),
                recover: Some(proto::StreamPosition {
                    offset: 4,
                    epoch: "e".into()
                }),
            }))
        );
        assert_eq!(d[2], Decoded::Nothing, "an empty object is a pong");
    }

    #[test]
    fn unsupported_features_answer_not_available() {
        for frame in [
            r#"{"id":5,"rpc":{"method":"x","data":{}}}"#,
            r#"{"id":5,"refresh":{"token":"x"}}"#,
            r#"{"id":5,"sub_refresh":{"channel":"c","token":"x"}}"#,
            r#"{"id":5,"subscribe":{"channel":"c","token":"sub-token"}}"#,
        ] {
            let d = decode_json(frame).unwrap();
            let Decoded::Answer(r) = &d[0] else {
                panic!("{frame}: {d:?}")
            };
            assert_eq!(r.id, 5);
            assert!(
                matches!(&r.result, Some(proto::reply::Result::Error(e)) if e.code == 108),
                "{frame}"
            );
            assert!(reply_json(r, extras(), false).contains("\"code\":108"));
        }
        assert_eq!(
            decode_json(r#"{"send":{"data":{}}}"#).unwrap(),
            vec![Decoded::Nothing]
        );
        let d = decode_json(r#"{"id":3,"teleport":{}}"#).unwrap();
        assert!(
            matches!(&d[0], Decoded::Answer(r) if reply_json(r, extras(), false).contains("\"code\":104")),
            "{d:?}"
        );
        assert!(decode_json("not json").is_err());
        assert!(decode_json(r#"{"id":"x"}"#).is_err());
    }

    #[test]
    fn publications_keep_their_json_and_binary_becomes_base64() {
        let p = proto::Push {
            push: Some(proto::push::Push::Publication(proto::Publication {
                channel: "news".into(),
                offset: 7,
                epoch: "e".into(),
                data: br#"{"text":"hi"}"#.to_vec(),
                info: Some(proto::ClientInfo {
                    user: "u".into(),
                    client_id: "c1".into(),
                    conn_info: br#"{"name":"A"}"#.to_vec(),
                }),
                tags: Default::default(),
            })),
        };
        let j = push_json(&p).unwrap();
        assert_eq!(
            j,
            r#"{"push":{"channel":"news","pub":{"data":{"text":"hi"},"info":{"user":"u","client":"c1","conn_info":{"name":"A"}},"offset":7}}}"#
        );
        assert_eq!(raw(&[0, 1, 2]).get(), "\"AAEC\"");
        assert_eq!(raw(b"").get(), "\"\"");
        let d = proto::Push {
            push: Some(proto::push::Push::Disconnect(proto::Disconnect::default())),
        };
        assert!(push_json(&d).is_none());
        assert!(push_proto(&d).is_none());
    }

    #[test]
    fn replies_in_centrifugo_shape() {
        let connect = proto::Reply {
            id: 1,
            result: Some(proto::reply::Result::Connect(proto::ConnectResult {
                client_id: "abc".into(),
                version: "0.1.0".into(),
                ..Default::default()
            })),
        };
        let j: serde_json::Value =
            serde_json::from_str(&reply_json(&connect, extras(), false)).unwrap();
        assert_eq!(j["connect"]["client"], "abc");
        assert_eq!(j["connect"]["ping"], 25);
        assert_eq!(j["connect"]["pong"], true);
        let sub = proto::Reply {
            id: 2,
            result: Some(proto::reply::Result::Subscribe(proto::SubscribeResult {
                recoverable: true,
                offset: 3,
                epoch: "e".into(),
                was_recovering: true,
                recovered: true,
                publications: vec![proto::Publication {
                    offset: 3,
                    data: b"1".to_vec(),
                    ..Default::default()
                }],
            })),
        };
        let j: serde_json::Value =
            serde_json::from_str(&reply_json(&sub, extras(), false)).unwrap();
        assert_eq!(j["subscribe"]["was_recovering"], true);
        assert_eq!(j["subscribe"]["positioned"], true);
        assert_eq!(j["subscribe"]["publications"][0]["offset"], 3);
        // The same through protobuf.
        use prost::Message as _;
        let bytes = reply_proto(&sub, extras(), false);
        let r = pb::Reply::decode_length_delimited(bytes.as_slice()).unwrap();
        let s = r.subscribe.unwrap();
        assert!(s.was_recovering && s.recoverable && s.positioned);
        assert_eq!(s.publications[0].data, b"1");
    }

    #[test]
    fn protobuf_frames_carry_several_commands() {
        use prost::Message as _;
        let mut frame = Vec::new();
        for (id, channel) in [(1, "a"), (2, "b")] {
            pb::Command {
                id,
                subscribe: Some(pb::SubscribeRequest {
                    channel: channel.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_length_delimited(&mut frame)
            .unwrap();
        }
        let d = decode_proto(&frame).unwrap();
        assert_eq!(d.len(), 2);
        assert!(decode_proto(&[0x05, 0x01]).is_err(), "truncated");
        assert_eq!(ping_proto(), vec![0]);
    }

    #[test]
    fn history_limits_as_centrifugo_means_them() {
        let d = decode_json(r#"{"id":1,"history":{"channel":"c","limit":-1}}"#).unwrap();
        let Decoded::Command(c) = &d[0] else { panic!() };
        let Some(proto::command::Method::History(h)) = &c.method else {
            panic!()
        };
        assert_eq!(h.limit, 0, "everything");
        let d = decode_json(r#"{"id":1,"history":{"channel":"c","limit":0}}"#).unwrap();
        let Decoded::PositionOnly(c) = &d[0] else {
            panic!()
        };
        let Some(proto::command::Method::History(h)) = &c.method else {
            panic!()
        };
        assert_eq!(
            h.limit, 1,
            "position only reads one, dropped on the way out"
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, decoding answers (an error at worst) and never panics;
        /// every reply it makes encodes.
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            for d in decode_proto(&bytes).unwrap_or_default() {
                if let Decoded::Answer(r) = d {
                    let _ = reply_proto(&r, extras(), false);
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            for d in decode_json(&text).unwrap_or_default() {
                if let Decoded::Answer(r) = d {
                    let _ = reply_json(&r, extras(), false);
                }
            }
        }

        #[test]
        fn json_commands_with_arbitrary_fields_never_panic(
            id in proptest::num::u32::ANY,
            key in "[a-z_]{1,14}",
            value in "[ -~]{0,40}",
        ) {
            let frame = format!("{{\"id\":{id},\"{key}\":{{\"channel\":{value:?},\"data\":{value:?}}}}}");
            let _ = decode_json(&frame);
        }
    }
}
