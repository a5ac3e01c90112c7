//! Binding requests (RFC 8489 §7.3), RFC 5780 behaviour discovery and RFC 3489 compatibility.

use std::net::SocketAddr;

use switchboard_stun::{attr, Class, Message, MessageBuilder, Method, PacketKind};

use crate::seam::{Arrival, DropReason, Output, Transport, Via, MAX_REPLY};

/// Comprehension-required attributes a Binding request may carry that this server understands
/// (RFC 8489, RFC 5780 and the ICE attributes that ride on Binding).
fn known_in_binding(typ: u16) -> bool {
    matches!(
        typ,
        attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::USERHASH
            | attr::REALM
            | attr::NONCE
            | attr::PASSWORD_ALGORITHM
            | attr::CHANGE_REQUEST
            | attr::RESPONSE_PORT
            | attr::PADDING
            | attr::PRIORITY
            | attr::USE_CANDIDATE
            | attr::XOR_MAPPED_ADDRESS
            | attr::MAPPED_ADDRESS
    )
}

/// Answers Binding requests. Immutable after construction; share it between workers.
///
/// [`TurnService::handle`](crate::TurnService::handle) answers a Binding request exactly as
/// [`BindingService::handle`] does, so an I/O layer may send every input for which
/// [`switchboard_stun::is_binding_request`] holds here instead, without the TURN state.
#[derive(Clone, Debug)]
pub struct BindingService {
    software: String,
}

/// Room kept for the other attributes of a reply when PADDING is echoed.
const PADDING_HEADROOM: usize = 256;

impl BindingService {
    /// A service that names itself `software` in the SOFTWARE attribute (empty: no SOFTWARE).
    pub fn new(software: &str) -> Self {
        // SOFTWARE is limited to 128 characters (RFC 8489 §14.14).
        let software: String = software.chars().take(128).collect();
        BindingService { software }
    }

    /// Handles one STUN datagram or stream frame, writing any reply into `out`
    /// (at least [`MAX_REPLY`] bytes).
    pub fn handle(&self, arrival: &Arrival, input: &[u8], out: &mut [u8]) -> Output<'static> {
        match PacketKind::of(input) {
            PacketKind::Stun => {}
            PacketKind::ChannelData => return Output::Drop(DropReason::ChannelData),
            _ => return Output::Drop(DropReason::NotStun),
        }
        let msg = match Message::parse(input) {
            Ok(m) => m,
            Err(_) => return Output::Drop(DropReason::Malformed),
        };
        if msg.check_fingerprint() == Some(false) {
            return Output::Drop(DropReason::BadFingerprint);
        }
        match msg.class() {
            Class::Request => self.answer(arrival, &msg, out),
            Class::Indication => Output::Drop(DropReason::Indication),
            Class::Success | Class::Error => Output::Drop(DropReason::Response),
        }
    }

    /// Answers an already parsed request: Binding, or 400 for any other method.
    pub fn answer(&self, arrival: &Arrival, msg: &Message<'_>, out: &mut [u8]) -> Output<'static> {
        let result = if msg.method() != Method::BINDING {
            self.error(msg, out, 400, "Bad Request: method not supported here", &[])
                .map(|len| (Via::Same, arrival.peer, len, true))
        } else {
            self.binding(arrival, msg, out)
        };
        match result {
            Some((via, to, len, error)) => Output::Reply {
                via,
                to,
                len,
                error,
            },
            None => Output::Drop(DropReason::OutputTooSmall),
        }
    }

    fn binding(
        &self,
        arrival: &Arrival,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Option<(Via, SocketAddr, usize, bool)> {
        let unknown = msg.unknown_comprehension_required(known_in_binding);
        if !unknown.as_slice().is_empty() {
            return self
                .error(msg, out, 420, "Unknown Attribute", unknown.as_slice())
                .map(|len| (Via::Same, arrival.peer, len, true));
        }
        let stream = arrival.transport != Transport::Udp;

        let via = match msg.change_request().transpose() {
            None => Via::Same,
            Some(Ok((false, false))) => Via::Same,
            Some(Ok((true, false))) => Via::ChangeIp,
            Some(Ok((false, true))) => Via::ChangePort,
            Some(Ok((true, true))) => Via::ChangeBoth,
            Some(Err(_)) => {
                return self
                    .error(msg, out, 400, "Bad Request: malformed CHANGE-REQUEST", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
        };
        if via != Via::Same {
            if stream {
                return self
                    .error(
                        msg,
                        out,
                        400,
                        "Bad Request: CHANGE-REQUEST is UDP only",
                        &[],
                    )
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            if arrival.other.is_none() {
                // RFC 5780 §6.1: a server without an alternate address answers CHANGE-REQUEST
                // with 420, so the client learns it cannot test filtering here.
                return self
                    .error(msg, out, 420, "Unknown Attribute", &[attr::CHANGE_REQUEST])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
        }

        let mut to = arrival.peer;
        match msg.response_port().transpose() {
            Some(Ok(port)) if !stream => to.set_port(port),
            Some(Ok(_)) => {
                return self
                    .error(msg, out, 400, "Bad Request: RESPONSE-PORT is UDP only", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            Some(Err(_)) => {
                return self
                    .error(msg, out, 400, "Bad Request: malformed RESPONSE-PORT", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            None => {}
        }

        // RFC 5780 §7.6: PADDING in a request is echoed with the same length, so the client can
        // test fragmentation; the reply is then no larger than the request (no amplification).
        let padding = match msg.padding() {
            Ok(None) => 0,
            Ok(Some(_)) if stream => {
                return self
                    .error(msg, out, 400, "Bad Request: PADDING is UDP only", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
            Ok(Some(p)) if p.len() + PADDING_HEADROOM <= MAX_REPLY.min(out.len()) => {
                (p.len() + 3) & !3
            }
            Ok(Some(_)) | Err(_) => {
                return self
                    .error(msg, out, 400, "Bad Request: PADDING too large", &[])
                    .map(|len| (Via::Same, arrival.peer, len, true));
            }
        };

        let origin = via.origin(arrival.local, arrival.other)?;
        let mut b = MessageBuilder::response_to(out, msg, Class::Success).ok()?;
        if msg.is_rfc3489() {
            // RFC 3489 clients read MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS. They have
            // no magic cookie, so no XOR attributes and no FINGERPRINT; and no SOFTWARE, which
            // they know as SERVER-NAME and reject unless its length is a multiple of 4.
            b.mapped_address(arrival.peer).ok()?;
            b.source_address(origin).ok()?;
            if let Some(other) = arrival.other {
                b.changed_address(other).ok()?;
            }
        } else {
            b.xor_mapped_address(arrival.peer).ok()?;
            if let Some(other) = arrival.other {
                b.other_address(other).ok()?;
                b.response_origin(origin).ok()?;
            }
            if !self.software.is_empty() {
                b.software(&self.software).ok()?;
            }
        }
        if padding > 0 {
            b.padding(padding).ok()?;
        }
        if !msg.is_rfc3489() {
            b.fingerprint().ok()?;
        }
        Some((via, to, b.finish(), false))
    }

    fn error(
        &self,
        msg: &Message<'_>,
        out: &mut [u8],
        code: u16,
        reason: &str,
        unknown: &[u16],
    ) -> Option<usize> {
        let mut b = MessageBuilder::response_to(out, msg, Class::Error).ok()?;
        b.error_code(code, reason).ok()?;
        if !unknown.is_empty() {
            b.unknown_attributes(unknown).ok()?;
        }
        if !msg.is_rfc3489() {
            if !self.software.is_empty() {
                b.software(&self.software).ok()?;
            }
            b.fingerprint().ok()?;
        }
        Some(b.finish())
    }
}

#[cfg(test)]
mod tests;
