//! The PAKE keyed by the code and the sealing of everything the two sides signal.
//!
//! Both sides run SPAKE2 (Ed25519 group) with the code as the password, the sender as side A
//! and the receiver as side B. From the shared secret, HKDF-SHA256 derives one AES-256-GCM key
//! per direction (AES-GCM rather than ChaCha20-Poly1305 because the `/send` page in a browser
//! speaks the same protocol, and WebCrypto has AES-GCM but no ChaCha20-Poly1305). Every
//! signaling message (offer, answer, candidates, the wrong-code notice) is sealed with the key
//! of its direction and a counter nonce that must be exactly the next one (the 12-byte nonce is
//! four zero bytes and the counter, big-endian), and with the room name in the associated data:
//! the server (or anyone relaying) can neither read, alter, reorder, replay nor reflect them.
//! With a wrong code the two sides derive different keys and the first sealed message fails to
//! open; there is no offline guessing, since nothing sent depends on the password except
//! through SPAKE2.
//!
//! Sealed bytes ride in the room's offer/answer messages (which the server validates as SDP)
//! inside [`envelope`]: a minimal SDP with one `a=x-switchboard-sealed:` attribute.
//!
//! `web/spake2.js` implements all of this for the browser (SPAKE2 with BigInt, WebCrypto for
//! the rest); `seal_vectors.json` beside this file pins a whole exchange with fixed randomness,
//! checked here and by `tests/browser/spake2_vectors.mjs` against the JavaScript.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use base64::Engine;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::code::Code;

const ID_SENDER: &[u8] = b"switchboard-send";
const ID_RECEIVER: &[u8] = b"switchboard-receive";
const ATTR: &str = "a=x-switchboard-sealed:";

/// Which end of a transfer this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `switchboard send` (SPAKE2 side A).
    Sender,
    /// `switchboard receive` (SPAKE2 side B).
    Receiver,
}

/// What can go wrong sealing and opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The peer's PAKE message is malformed.
    #[error("the peer's key exchange message is malformed")]
    Pake,
    /// A sealed message did not open: a wrong code, or tampering.
    #[error("a sealed message did not open (wrong code, or tampered with)")]
    Open,
    /// Not a sealed envelope.
    #[error("not a sealed message")]
    Envelope,
}

/// A started PAKE: send [`Pake::start`]'s message, then [`Pake::finish`] with the peer's.
pub struct Pake {
    state: Spake2<Ed25519Group>,
    side: Side,
    room: String,
}

impl Pake {
    /// Starts the exchange for `code` on `side`; the message goes to the peer.
    pub fn start(code: &Code, side: Side) -> (Pake, Vec<u8>) {
        let password = Password::new(code.password());
        let (a, b) = (Identity::new(ID_SENDER), Identity::new(ID_RECEIVER));
        let (state, msg) = match side {
            Side::Sender => Spake2::<Ed25519Group>::start_a(&password, &a, &b),
            Side::Receiver => Spake2::<Ed25519Group>::start_b(&password, &a, &b),
        };
        Pake::from_state(state, msg, code, side)
    }

    fn from_state(
        state: Spake2<Ed25519Group>,
        msg: Vec<u8>,
        code: &Code,
        side: Side,
    ) -> (Pake, Vec<u8>) {
        (
            Pake {
                state,
                side,
                room: code.room(),
            },
            msg,
        )
    }

    /// Finishes with the peer's message: the keys for both directions.
    pub fn finish(self, peer: &[u8]) -> Result<Sealer, SealError> {
        let secret = self.state.finish(peer).map_err(|_| SealError::Pake)?;
        Ok(Sealer::from_secret(&secret, self.side, &self.room))
    }
}

/// Seals what this side sends and opens what the peer sends.
pub struct Sealer {
    send: LessSafeKey,
    recv: LessSafeKey,
    send_aad: Vec<u8>,
    recv_aad: Vec<u8>,
    sent: u64,
    received: u64,
}

fn key(prk: &aws_lc_rs::hkdf::Prk, info: &[u8]) -> LessSafeKey {
    let info = [info];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .expect("HKDF output of one key length");
    LessSafeKey::new(UnboundKey::from(okm))
}

impl Sealer {
    /// From the SPAKE2 secret.
    pub fn from_secret(secret: &[u8], side: Side, room: &str) -> Sealer {
        let prk = Salt::new(HKDF_SHA256, b"switchboard send v1").extract(secret);
        let to_receiver = key(&prk, b"sender to receiver");
        let to_sender = key(&prk, b"receiver to sender");
        let aad = |dir: &str| format!("switchboard send v1|{room}|{dir}").into_bytes();
        let (send, recv, send_aad, recv_aad) = match side {
            Side::Sender => (to_receiver, to_sender, aad("s2r"), aad("r2s")),
            Side::Receiver => (to_sender, to_receiver, aad("r2s"), aad("s2r")),
        };
        Sealer {
            send,
            recv,
            send_aad,
            recv_aad,
            sent: 0,
            received: 0,
        }
    }

    /// Seals `plain`: the 8-byte counter, then ciphertext and tag.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let n = self.sent;
        self.sent += 1;
        let mut out = n.to_be_bytes().to_vec();
        let mut body = plain.to_vec();
        self.send
            .seal_in_place_append_tag(nonce(n), Aad::from(&self.send_aad), &mut body)
            .expect("AES-256-GCM seals any length we send");
        out.extend_from_slice(&body);
        out
    }

    /// Opens the peer's next message (its counter must be exactly the next one).
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (counter, body) = sealed.split_first_chunk::<8>().ok_or(SealError::Open)?;
        let n = u64::from_be_bytes(*counter);
        if n != self.received {
            return Err(SealError::Open);
        }
        let mut body = body.to_vec();
        let plain = self
            .recv
            .open_in_place(nonce(n), Aad::from(&self.recv_aad), &mut body)
            .map_err(|_| SealError::Open)?;
        let plain = plain.to_vec();
        self.received += 1;
        Ok(plain)
    }
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

/// Sealed bytes as an SDP the server's validator accepts (one application m-line), since the
/// room relays offers and answers only when they parse as SDP.
pub fn envelope(sealed: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(sealed);
    format!(
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
         a=mid:0\r\n{ATTR}{b64}\r\n"
    )
}

/// The sealed bytes of an [`envelope`].
pub fn unenvelope(sdp: &str) -> Result<Vec<u8>, SealError> {
    let line = sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(ATTR))
        .ok_or(SealError::Envelope)?;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(line.trim())
        .map_err(|_| SealError::Envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Randomness" that repeats the given bytes: SPAKE2 draws its scalar from 64 of them.
    struct Fixed(Vec<u8>, usize);

    impl rand_core::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                *d = self.0[self.1 % self.0.len()];
                self.1 += 1;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for Fixed {}

    fn start_fixed(code: &Code, side: Side, random: &[u8]) -> (Pake, Vec<u8>) {
        let password = Password::new(code.password());
        let (a, b) = (Identity::new(ID_SENDER), Identity::new(ID_RECEIVER));
        let rng = Fixed(random.to_vec(), 0);
        let (state, msg) = match side {
            Side::Sender => Spake2::<Ed25519Group>::start_a_with_rng(&password, &a, &b, rng),
            Side::Receiver => Spake2::<Ed25519Group>::start_b_with_rng(&password, &a, &b, rng),
        };
        Pake::from_state(state, msg, code, side)
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// One exchange from fixed randomness, as the vectors file records it.
    fn exchange(code_a: &str, code_b: &str, rng_a: &str, rng_b: &str) -> serde_json::Value {
        let (ca, cb) = (Code::parse(code_a).unwrap(), Code::parse(code_b).unwrap());
        let (pa, ma) = start_fixed(&ca, Side::Sender, &unhex(rng_a));
        let (pb, mb) = start_fixed(&cb, Side::Receiver, &unhex(rng_b));
        let secret_a = pa.state.finish(&mb).unwrap();
        let secret_b = pb.state.finish(&ma).unwrap();
        let mut s = Sealer::from_secret(&secret_a, Side::Sender, &ca.room());
        let mut r = Sealer::from_secret(&secret_b, Side::Receiver, &cb.room());
        let offer = "Ov=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n";
        let answer = "Av=0\r\n";
        let r2s = [r.seal(offer.as_bytes()), r.seal(b"second")];
        let s2r = s.seal(answer.as_bytes());
        serde_json::json!({
            "code_a": code_a,
            "code_b": code_b,
            "room": ca.room(),
            "rng_a": rng_a,
            "rng_b": rng_b,
            "msg_a": crate::wire::hex(&ma),
            "msg_b": crate::wire::hex(&mb),
            "secret_a": crate::wire::hex(&secret_a),
            "secret_b": crate::wire::hex(&secret_b),
            "r2s": [
                {"counter": 0, "plain": offer, "sealed": crate::wire::hex(&r2s[0])},
                {"counter": 1, "plain": "second", "sealed": crate::wire::hex(&r2s[1])},
            ],
            "s2r": [{"counter": 0, "plain": answer, "sealed": crate::wire::hex(&s2r)}],
            "envelope": envelope(&r2s[0]),
        })
    }

    /// The exchanges of `seal_vectors.json`, recomputed: the JavaScript of the `/send` page
    /// (`web/spake2.js`) is tested against the same file (`tests/browser/spake2_vectors.mjs`).
    /// `SWITCHBOARD_BLESS=1` rewrites the file.
    #[test]
    fn fixed_vectors_match_the_file() {
        let ra: String = (0u8..64)
            .map(|i| format!("{:02x}", i.wrapping_mul(37) ^ 0x5a))
            .collect();
        let rb: String = (0u8..64)
            .map(|i| format!("{:02x}", i.wrapping_mul(101) ^ 0xc3))
            .collect();
        let max = "ff".repeat(64);
        let computed = serde_json::json!({
            "note": "crates/transfer/src/seal.rs fixed_vectors_match_the_file; rng_* are the 64 bytes SPAKE2 draws its scalar from (little-endian, mod l)",
            "password_scalar": {
                "password": "password",
                "decimal": "3515301705789368674385125653994241092664323519848410154015274772661223168839",
            },
            "exchanges": [
                exchange("7-amber-crane-otter", "7-amber-crane-otter", &ra, &rb),
                exchange("999-acid-violin", "999-acid-violin", &max, &ra),
                exchange("7-amber-crane-otter", "7-amber-crane-tulip", &ra, &rb),
            ],
        });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/seal_vectors.json");
        if std::env::var_os("SWITCHBOARD_BLESS").is_some() {
            let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
            std::fs::write(path, text).unwrap();
        }
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            stored, computed,
            "{path} differs (SWITCHBOARD_BLESS=1 rewrites it)"
        );
        let ex = &computed["exchanges"];
        assert_eq!(ex[0]["secret_a"], ex[0]["secret_b"]);
        assert_eq!(ex[1]["secret_a"], ex[1]["secret_b"]);
        assert_ne!(ex[2]["secret_a"], ex[2]["secret_b"]);
        // The sealed messages open with the keys of the other side.
        let mut s = Sealer::from_secret(
            &unhex(ex[0]["secret_a"].as_str().unwrap()),
            Side::Sender,
            "send-7",
        );
        let sealed = unhex(ex[0]["r2s"][0]["sealed"].as_str().unwrap());
        assert_eq!(
            s.open(&sealed).unwrap(),
            ex[0]["r2s"][0]["plain"].as_str().unwrap().as_bytes()
        );
    }

    fn pair(a: &Code, b: &Code) -> (Result<Sealer, SealError>, Result<Sealer, SealError>) {
        let (pa, ma) = Pake::start(a, Side::Sender);
        let (pb, mb) = Pake::start(b, Side::Receiver);
        (pa.finish(&mb), pb.finish(&ma))
    }

    #[test]
    fn same_code_opens_both_ways_in_order() {
        let code = Code::parse("7-amber-crane-otter").unwrap();
        let (s, r) = pair(&code, &code);
        let (mut s, mut r) = (s.unwrap(), r.unwrap());
        let m1 = r.seal(b"offer");
        let m2 = r.seal(b"candidate");
        assert_eq!(s.open(&m1).unwrap(), b"offer");
        // A replay, a reflection and a tampered message are refused.
        assert_eq!(s.open(&m1), Err(SealError::Open));
        let back = s.seal(b"answer");
        assert_eq!(s.open(&back), Err(SealError::Open));
        let mut bad = m2.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(s.open(&bad), Err(SealError::Open));
        assert_eq!(s.open(&m2).unwrap(), b"candidate");
        assert_eq!(r.open(&back).unwrap(), b"answer");
    }

    #[test]
    fn wrong_code_does_not_open() {
        let a = Code::parse("7-amber-crane-otter").unwrap();
        let b = Code::parse("7-amber-crane-tulip").unwrap();
        let (s, r) = pair(&a, &b);
        let (mut s, mut r) = (s.unwrap(), r.unwrap());
        assert_eq!(s.open(&r.seal(b"offer")), Err(SealError::Open));
    }

    #[test]
    fn envelope_round_trip_and_passes_the_server_validator() {
        let sealed: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let sdp = envelope(&sealed);
        assert_eq!(unenvelope(&sdp).unwrap(), sealed);
        let v = switchboard_signal::Validator::new(Default::default());
        let offer = v.offer("offer", &sdp).expect("valid offer");
        let answer = v.answer("answer", &sdp).expect("valid answer");
        for m in [offer, answer] {
            let (switchboard_signal::Message::Offer(d) | switchboard_signal::Message::Answer(d)) =
                m
            else {
                panic!("not a description")
            };
            assert_eq!(unenvelope(d.sdp()).unwrap(), sealed);
        }
    }
}
