//! Pairing over a switchboard room: the room is named by the code's number, the join metadata
//! carries each side's SPAKE2 message, and the offer and answer are sealed ([`crate::seal`]).
//!
//! ```text
//! sender                         server (room send-N)                  receiver
//! join {role:send, pake:A}  ->
//!   (prints the code, waits)                           <- join {role:receive, pake:B}
//!                                                         (members: the sender, with A)
//! <- RoomJoin push (B)           both derive the keys
//!                                                      <- offer: envelope(seal(SDP))
//! open: fails? -> bye "wrong code", leave, exit        (bye -> "wrong code", exit)
//! answer: envelope(seal(SDP)) ->
//! leave once the data channel is open (one pairing per code)
//! ```

use std::time::Duration;

use base64::Engine;
use switchboard_client::{proto, Client, ClientError, Config, Event, Events};

use crate::code::Code;
use crate::seal::{envelope, unenvelope, Pake, SealError, Sealer, Side};

/// The Bye reason that tells the other side the code was wrong.
pub const WRONG_CODE: &str = "wrong code";
/// The Bye reason of a sender that is already paired.
pub const BUSY: &str = "busy";

/// What can go wrong pairing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The server could not be reached, or refused.
    #[error("{0}")]
    Server(#[from] ClientError),
    /// Nobody is waiting under this number.
    #[error("no sender is waiting under code {0} (check the code; it works once)")]
    NoSender(u16),
    /// The PAKE did not agree.
    #[error("wrong code: the other side's key did not match (nothing was sent; run send again for a new code)")]
    WrongCode,
    /// The other side went away.
    #[error("the other side left: {0}")]
    PeerLeft(String),
    /// Nothing happened in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// Could not find a free room number.
    #[error("could not find a free code number (the server has many transfers waiting)")]
    NoRoom,
    /// The other side sent something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    role: String,
    v: u32,
    pake: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

fn meta(role: &str, msg: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&Meta {
        role: role.into(),
        v: 1,
        pake: b64().encode(msg),
    })
    .expect("metadata serializes")
}

fn parse_meta(data: &[u8], role: &str) -> Option<Vec<u8>> {
    let m: Meta = serde_json::from_slice(data).ok()?;
    (m.role == role && m.v == 1)
        .then(|| b64().decode(m.pake.as_bytes()).ok())
        .flatten()
}

fn peer_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A paired signaling session: the room, the peer and the keys.
pub struct Session {
    client: Client,
    events: Events,
    room: String,
    peer: String,
    sealer: Sealer,
    ping: tokio::task::JoinHandle<()>,
}

/// Pings every 10 s so the server keeps this client's room peer alive while waiting.
fn keepalive(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let _ = client
                .request(
                    proto::command::Method::Ping(proto::PingRequest::default()),
                    "ping",
                )
                .await;
        }
    })
}

async fn join(
    client: &Client,
    room: &str,
    me: &str,
    data: Vec<u8>,
) -> Result<proto::RoomJoinResult, SignalError> {
    let r = client
        .request(
            proto::command::Method::RoomJoin(proto::RoomJoinRequest {
                room: room.into(),
                peer_id: me.into(),
                data,
            }),
            "room join",
        )
        .await?;
    match r {
        proto::reply::Result::RoomJoin(j) => Ok(j),
        other => Err(SignalError::Protocol(format!("unexpected reply {other:?}"))),
    }
}

async fn leave(client: &Client, room: &str) {
    let _ = client
        .request(
            proto::command::Method::RoomLeave(proto::RoomLeaveRequest { room: room.into() }),
            "room leave",
        )
        .await;
}

async fn bye(client: &Client, room: &str, to: &str, reason: &str) {
    let _ = client
        .request(
            proto::command::Method::Bye(proto::ByeRequest {
                room: room.into(),
                to: to.into(),
                reason: reason.into(),
            }),
            "bye",
        )
        .await;
}

/// The sender's side: join a free room, call `on_code`, wait for a receiver and its sealed
/// offer. The session and the offer's SDP.
pub async fn sender(
    config: Config,
    words: usize,
    on_code: impl FnOnce(&Code),
) -> Result<(Session, String), SignalError> {
    let (client, mut events) = Client::connect(config).await?;
    let me = peer_id();
    let mut chosen = None;
    for _ in 0..20 {
        let mut code = Code::random(Code::random_number());
        code.words.truncate(words.clamp(2, crate::code::WORD_COUNT));
        let (pake, msg) = Pake::start(&code, Side::Sender);
        let room = code.room();
        let joined = join(&client, &room, &me, meta("send", &msg)).await?;
        if joined.members.is_empty() {
            chosen = Some((code, pake, room));
            break;
        }
        // Someone else is using this number.
        leave(&client, &room).await;
    }
    let Some((code, pake, room)) = chosen else {
        client.close();
        return Err(SignalError::NoRoom);
    };
    let ping = keepalive(client.clone());
    on_code(&code);
    let mut pake = Some(pake);
    let mut session: Option<(String, Sealer)> = None;
    let result = loop {
        let Some(ev) = events.recv().await else {
            break Err(SignalError::Server(ClientError::Closed));
        };
        match ev {
            Event::RoomJoin(j) if j.room == room => {
                let Some(peer) = j.peer else { continue };
                if session.is_some() {
                    bye(&client, &room, &peer.peer_id, BUSY).await;
                    continue;
                }
                let Some(msg) = parse_meta(&peer.data, "receive") else {
                    continue;
                };
                let Some(p) = pake.take() else { continue };
                match p.finish(&msg) {
                    Ok(sealer) => session = Some((peer.peer_id, sealer)),
                    Err(_) => {
                        bye(&client, &room, &peer.peer_id, WRONG_CODE).await;
                        break Err(SignalError::WrongCode);
                    }
                }
            }
            Event::Signal(s) if s.room == room => {
                let Some((peer, sealer)) = session.as_mut() else {
                    continue;
                };
                if s.from != *peer {
                    continue;
                }
                match s.message {
                    Some(proto::signal::Message::Offer(d)) => {
                        match unenvelope(&d.sdp).and_then(|b| sealer.open(&b)) {
                            Ok(plain) => match plain.split_first() {
                                Some((b'O', sdp)) => {
                                    break Ok(String::from_utf8_lossy(sdp).into_owned())
                                }
                                _ => break Err(SignalError::Protocol("not an offer".into())),
                            },
                            Err(_) => {
                                bye(&client, &room, peer, WRONG_CODE).await;
                                break Err(SignalError::WrongCode);
                            }
                        }
                    }
                    Some(proto::signal::Message::Bye(reason)) => {
                        break Err(SignalError::PeerLeft(reason))
                    }
                    _ => {}
                }
            }
            Event::RoomLeave(l)
                if l.room == room && session.as_ref().is_some_and(|(p, _)| *p == l.peer_id) =>
            {
                break Err(SignalError::PeerLeft(
                    "the receiver left before connecting".into(),
                ));
            }
            Event::Disconnected {
                reconnect: false,
                reason,
                ..
            } => break Err(SignalError::Protocol(format!("disconnected: {reason}"))),
            _ => {}
        }
    };
    match result {
        Ok(offer) => {
            let (peer, sealer) = session.expect("paired");
            Ok((
                Session {
                    client,
                    events,
                    room,
                    peer,
                    sealer,
                    ping,
                },
                offer,
            ))
        }
        Err(e) => {
            ping.abort();
            leave(&client, &room).await;
            client.close();
            Err(e)
        }
    }
}

/// The receiver's side: join the code's room, find the sender and derive the keys.
pub async fn receiver(config: Config, code: &Code) -> Result<Session, SignalError> {
    let (client, events) = Client::connect(config).await?;
    let me = peer_id();
    let room = code.room();
    let (pake, msg) = Pake::start(code, Side::Receiver);
    let joined = join(&client, &room, &me, meta("receive", &msg)).await?;
    let sender = joined
        .members
        .iter()
        .find_map(|m| parse_meta(&m.data, "send").map(|msg| (m.peer_id.clone(), msg)));
    let Some((peer, their)) = sender else {
        leave(&client, &room).await;
        client.close();
        return Err(SignalError::NoSender(code.number));
    };
    let sealer = match pake.finish(&their) {
        Ok(s) => s,
        Err(_) => {
            leave(&client, &room).await;
            client.close();
            return Err(SignalError::WrongCode);
        }
    };
    let ping = keepalive(client.clone());
    Ok(Session {
        client,
        events,
        room,
        peer,
        sealer,
        ping,
    })
}

impl Session {
    /// Seals and sends the offer (receiver).
    pub async fn send_offer(&mut self, sdp: &str) -> Result<(), SignalError> {
        let sealed = self
            .sealer
            .seal(&[b"O".as_slice(), sdp.as_bytes()].concat());
        self.client
            .request(
                proto::command::Method::Offer(proto::OfferRequest {
                    room: self.room.clone(),
                    to: self.peer.clone(),
                    description: Some(proto::SessionDescription {
                        r#type: "offer".into(),
                        sdp: envelope(&sealed),
                    }),
                }),
                "offer",
            )
            .await?;
        Ok(())
    }

    /// Seals and sends the answer (sender).
    pub async fn send_answer(&mut self, sdp: &str) -> Result<(), SignalError> {
        let sealed = self
            .sealer
            .seal(&[b"A".as_slice(), sdp.as_bytes()].concat());
        self.client
            .request(
                proto::command::Method::Answer(proto::AnswerRequest {
                    room: self.room.clone(),
                    to: self.peer.clone(),
                    description: Some(proto::SessionDescription {
                        r#type: "answer".into(),
                        sdp: envelope(&sealed),
                    }),
                }),
                "answer",
            )
            .await?;
        Ok(())
    }

    /// Waits for the sender's sealed answer (receiver).
    pub async fn answer(&mut self, limit: Duration) -> Result<String, SignalError> {
        let wait = async {
            loop {
                let Some(ev) = self.events.recv().await else {
                    return Err(SignalError::Server(ClientError::Closed));
                };
                match ev {
                    Event::Signal(s) if s.room == self.room && s.from == self.peer => {
                        match s.message {
                            Some(proto::signal::Message::Answer(d)) => {
                                return match unenvelope(&d.sdp).and_then(|b| self.sealer.open(&b)) {
                                    Ok(plain) => match plain.split_first() {
                                        Some((b'A', sdp)) => {
                                            Ok(String::from_utf8_lossy(sdp).into_owned())
                                        }
                                        _ => Err(SignalError::Protocol("not an answer".into())),
                                    },
                                    Err(SealError::Open) => Err(SignalError::WrongCode),
                                    Err(e) => Err(SignalError::Protocol(e.to_string())),
                                };
                            }
                            Some(proto::signal::Message::Bye(reason)) => {
                                return Err(if reason == WRONG_CODE {
                                    SignalError::WrongCode
                                } else if reason == BUSY {
                                    SignalError::PeerLeft(
                                        "the sender is already sending to someone else".into(),
                                    )
                                } else {
                                    SignalError::PeerLeft(reason)
                                });
                            }
                            _ => {}
                        }
                    }
                    Event::RoomLeave(l) if l.room == self.room && l.peer_id == self.peer => {
                        return Err(SignalError::PeerLeft("the sender left".into()));
                    }
                    Event::Disconnected {
                        reconnect: false,
                        reason,
                        ..
                    } => return Err(SignalError::Protocol(format!("disconnected: {reason}"))),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| SignalError::Timeout("waiting for the sender's answer"))?
    }

    /// Leaves the room and closes the connection (the code is used up).
    pub async fn close(self) {
        self.ping.abort();
        leave(&self.client, &self.room).await;
        self.client.close();
    }
}
