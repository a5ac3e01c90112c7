//! Serverless signaling (`--manual`): an offer or answer as a short line of text that a person
//! carries from one machine to the other (paste, QR code, a file, a messenger).
//!
//! Only what a data-channel-only session needs is kept of the SDP, packed in binary and written
//! as `sb1:` and base64url (no padding); [`decode`] expands it back to an SDP both str0m and
//! other WebRTC stacks (aiortc) accept. The layout (docs/send.md), big-endian:
//!
//! ```text
//! 0    1   kind: 'O' offer, 'A' answer
//! 1    1   DTLS setup: 0 actpass, 1 active, 2 passive
//! 2   32   SHA-256 fingerprint of the DTLS certificate
//! 34   2   SCTP port
//! 36   4   max-message-size (0: not given)
//! 40       ice-ufrag, ice-pwd, mid: each a length byte and ASCII
//!      1   number of candidates, then each:
//!      1     type: 0 host, 1 srflx, 2 prflx, 3 relay; +0x80 for IPv6
//!      4|16  address
//!      2     port
//! ```
//!
//! Candidates are UDP, component 1, with an IP address (TCP candidates and mDNS `.local` names
//! are left out). Priorities and foundations are not carried: the expansion gives each
//! candidate RFC 8445's type preference, in the order they came. The fingerprint is in the
//! text, so whoever carries it authenticates the DTLS certificate the data channel will use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// What a manual offer or answer starts with (`1`: the layout's version).
pub const PREFIX: &str = "sb1:";

/// An offer or an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The first description (the side that waits for an answer).
    Offer,
    /// The reply to an offer.
    Answer,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Offer => b'O',
            Kind::Answer => b'A',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Answer => "answer",
        }
    }
}

/// Why a description could not be packed or unpacked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ManualError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ManualError> {
    Err(ManualError(msg.into()))
}

/// The candidate types, in the order of their type byte.
const TYPES: [&str; 4] = ["host", "srflx", "prflx", "relay"];
/// RFC 8445 type preferences, same order.
const TYPE_PREF: [u32; 4] = [126, 100, 110, 0];
const SETUPS: [&str; 3] = ["actpass", "active", "passive"];

/// What the text carries.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Desc {
    kind: Kind,
    setup: u8,
    fingerprint: [u8; 32],
    sctp_port: u16,
    max_message_size: u32,
    ufrag: String,
    pwd: String,
    mid: String,
    candidates: Vec<(u8, SocketAddr)>,
}

/// Packs an SDP (an offer or answer with one data channel) as `sb1:…` text.
pub fn encode(sdp: &str, kind: Kind) -> Result<String, ManualError> {
    let d = from_sdp(sdp, kind)?;
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(to_bytes(&d))))
}

/// Unpacks `sb1:…` text (whitespace anywhere is ignored: it may have been wrapped) into an SDP,
/// refusing an answer where an offer is expected and the other way round.
pub fn decode(text: &str, kind: Kind) -> Result<String, ManualError> {
    let s: String = text.split_whitespace().collect();
    let Some(body) = s
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .and_then(|_| s.get(PREFIX.len()..))
    else {
        return err(format!(
            "not a switchboard {} (it starts with {PREFIX})",
            kind.name()
        ));
    };
    // Lenient about the end, so that text cut short says so (below) rather than "not base64".
    let lenient = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let mut body = body.trim_end_matches('=');
    if !body.is_ascii() {
        return err(format!("the {} is not valid base64url", kind.name()));
    }
    if body.len() % 4 == 1 {
        body = &body[..body.len() - 1];
    }
    let bytes = lenient
        .decode(body)
        .map_err(|_| ManualError(format!("the {} is not valid base64url", kind.name())))?;
    let d = from_bytes(&bytes)?;
    if d.kind != kind {
        return err(format!(
            "this is an {}, not an {}",
            d.kind.name(),
            kind.name()
        ));
    }
    Ok(to_sdp(&d))
}

fn from_sdp(sdp: &str, kind: Kind) -> Result<Desc, ManualError> {
    let mut d = Desc {
        kind,
        setup: u8::MAX,
        fingerprint: [0; 32],
        sctp_port: 5000,
        max_message_size: 0,
        ufrag: String::new(),
        pwd: String::new(),
        mid: String::new(),
        candidates: Vec::new(),
    };
    let mut fingerprint = false;
    let mut application = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if application {
                return err("more than one media section (only a data channel can be packed)");
            }
            if !m.starts_with("application ") || !m.contains("webrtc-datachannel") {
                return err(format!("not a data channel media section: m={m}"));
            }
            application = true;
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
        let value = value.trim();
        match name {
            "ice-ufrag" if d.ufrag.is_empty() => d.ufrag = value.to_string(),
            "ice-pwd" if d.pwd.is_empty() => d.pwd = value.to_string(),
            "mid" if d.mid.is_empty() => d.mid = value.to_string(),
            "setup" if d.setup == u8::MAX => {
                d.setup = SETUPS
                    .iter()
                    .position(|s| *s == value)
                    .ok_or_else(|| ManualError(format!("unknown DTLS setup {value:?}")))?
                    as u8;
            }
            "fingerprint" if !fingerprint => {
                let Some((alg, hex)) = value.split_once(' ') else {
                    continue;
                };
                if !alg.eq_ignore_ascii_case("sha-256") {
                    continue;
                }
                let bytes: Vec<u8> = hex
                    .trim()
                    .split(':')
                    .map(|b| u8::from_str_radix(b, 16))
                    .collect::<Result<_, _>>()
                    .map_err(|_| ManualError(format!("bad fingerprint {hex:?}")))?;
                d.fingerprint = bytes
                    .try_into()
                    .map_err(|_| ManualError(format!("bad fingerprint {hex:?}")))?;
                fingerprint = true;
            }
            "sctp-port" => {
                d.sctp_port = value
                    .parse()
                    .map_err(|_| ManualError(format!("bad sctp-port {value:?}")))?;
            }
            "max-message-size" => {
                // Larger than 4 GiB: as good as unlimited.
                d.max_message_size = value
                    .parse::<u64>()
                    .map_err(|_| ManualError(format!("bad max-message-size {value:?}")))?
                    .min(u32::MAX as u64) as u32;
            }
            "candidate" => {
                if let Some(c) = candidate(value) {
                    if !d.candidates.contains(&c) {
                        d.candidates.push(c);
                    }
                }
            }
            _ => {}
        }
    }
    if !application {
        return err("no data channel (m=application) in the session description");
    }
    if !fingerprint {
        return err("no sha-256 DTLS fingerprint in the session description");
    }
    if d.setup == u8::MAX {
        d.setup = if kind == Kind::Offer { 0 } else { 1 };
    }
    for (what, v) in [
        ("ice-ufrag", &d.ufrag),
        ("ice-pwd", &d.pwd),
        ("mid", &d.mid),
    ] {
        if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return err(format!("missing or unusable {what} {v:?}"));
        }
    }
    if d.candidates.is_empty() {
        return err("no UDP candidate with an IP address to offer");
    }
    d.candidates.truncate(255);
    Ok(d)
}

/// `foundation component transport priority address port typ TYPE ...` → (type, address) for
/// UDP component 1 with an IP address.
fn candidate(value: &str) -> Option<(u8, SocketAddr)> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() < 8 || f[1] != "1" || !f[2].eq_ignore_ascii_case("udp") || f[6] != "typ" {
        return None;
    }
    let ip: IpAddr = f[4].parse().ok()?;
    let port: u16 = f[5].parse().ok()?;
    let t = TYPES.iter().position(|t| *t == f[7])? as u8;
    Some((t, SocketAddr::new(ip, port)))
}

fn to_bytes(d: &Desc) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    v.push(d.kind.byte());
    v.push(d.setup);
    v.extend_from_slice(&d.fingerprint);
    v.extend_from_slice(&d.sctp_port.to_be_bytes());
    v.extend_from_slice(&d.max_message_size.to_be_bytes());
    for s in [&d.ufrag, &d.pwd, &d.mid] {
        v.push(s.len() as u8);
        v.extend_from_slice(s.as_bytes());
    }
    v.push(d.candidates.len() as u8);
    for (t, a) in &d.candidates {
        match a.ip() {
            IpAddr::V4(ip) => {
                v.push(*t);
                v.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                v.push(*t | 0x80);
                v.extend_from_slice(&ip.octets());
            }
        }
        v.extend_from_slice(&a.port().to_be_bytes());
    }
    v
}

/// A cursor over the packed bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ManualError> {
        if self.0.len() < n {
            return err("the text is cut short (copy all of it)");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ManualError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ManualError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn text(&mut self, what: &str) -> Result<String, ManualError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        if n == 0 || !b.iter().all(u8::is_ascii_graphic) {
            return err(format!("unusable {what}"));
        }
        Ok(String::from_utf8_lossy(b).into_owned())
    }
}

fn from_bytes(b: &[u8]) -> Result<Desc, ManualError> {
    let mut r = Reader(b);
    let kind = match r.u8()? {
        b'O' => Kind::Offer,
        b'A' => Kind::Answer,
        _ => return err("neither an offer nor an answer"),
    };
    let setup = r.u8()?;
    if setup as usize >= SETUPS.len() {
        return err(format!("unknown DTLS setup {setup}"));
    }
    let mut fingerprint = [0; 32];
    fingerprint.copy_from_slice(r.take(32)?);
    let sctp_port = r.u16()?;
    let m = r.take(4)?;
    let max_message_size = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
    let ufrag = r.text("ice-ufrag")?;
    let pwd = r.text("ice-pwd")?;
    let mid = r.text("mid")?;
    let n = r.u8()?;
    let mut candidates = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = r.u8()?;
        let ty = t & 0x7f;
        if ty as usize >= TYPES.len() {
            return err(format!("unknown candidate type {ty}"));
        }
        let ip: IpAddr = if t & 0x80 != 0 {
            let o: [u8; 16] = r.take(16)?.try_into().map_err(|_| ManualError("".into()))?;
            Ipv6Addr::from(o).into()
        } else {
            let o: [u8; 4] = r.take(4)?.try_into().map_err(|_| ManualError("".into()))?;
            Ipv4Addr::from(o).into()
        };
        candidates.push((ty, SocketAddr::new(ip, r.u16()?)));
    }
    if !r.0.is_empty() {
        return err("unexpected bytes after the candidates");
    }
    if candidates.is_empty() {
        return err("no candidates");
    }
    Ok(Desc {
        kind,
        setup,
        fingerprint,
        sctp_port,
        max_message_size,
        ufrag,
        pwd,
        mid,
        candidates,
    })
}

fn to_sdp(d: &Desc) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(1024);
    let fp: Vec<String> = d.fingerprint.iter().map(|b| format!("{b:02X}")).collect();
    let _ = write!(
        s,
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mid}\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
         a=mid:{mid}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
         a=fingerprint:sha-256 {fp}\r\na=setup:{setup}\r\na=sctp-port:{port}\r\n",
        mid = d.mid,
        ufrag = d.ufrag,
        pwd = d.pwd,
        fp = fp.join(":"),
        setup = SETUPS[d.setup as usize],
        port = d.sctp_port,
    );
    if d.max_message_size > 0 {
        let _ = write!(s, "a=max-message-size:{}\r\n", d.max_message_size);
    }
    for (i, (t, a)) in d.candidates.iter().enumerate() {
        let local_pref = 65535u32.saturating_sub(i as u32);
        let priority = (TYPE_PREF[*t as usize] << 24) | (local_pref << 8) | 255;
        let _ = write!(
            s,
            "a=candidate:{} 1 udp {priority} {} {} typ {}",
            i + 1,
            a.ip(),
            a.port(),
            TYPES[*t as usize]
        );
        if *t != 0 {
            let any = if a.is_ipv4() { "0.0.0.0" } else { "::" };
            let _ = write!(s, " raddr {any} rport 0");
        }
        s.push_str("\r\n");
    }
    s.push_str("a=end-of-candidates\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use str0m::change::{SdpAnswer, SdpOffer};
    use str0m::{Candidate, Rtc};

    fn rtc(addrs: &[&str]) -> Rtc {
        let mut rtc = Rtc::new(Instant::now());
        for a in addrs {
            let a: SocketAddr = a.parse().unwrap();
            rtc.add_local_candidate(Candidate::host(a, "udp").unwrap());
        }
        rtc
    }

    /// str0m's own offer and answer survive packing, and what unpacks is accepted by str0m.
    #[test]
    fn str0m_offer_and_answer_round_trip() {
        let mut a = rtc(&["192.0.2.7:51427", "[2001:db8::7]:51428"]);
        let mut b = rtc(&["198.51.100.9:40000"]);
        let mut change = a.sdp_api();
        change.add_channel("switchboard-send".into());
        let (offer, pending) = change.apply().unwrap();
        let offer_sdp = offer.to_sdp_string();
        let text = encode(&offer_sdp, Kind::Offer).unwrap();
        assert!(text.starts_with(PREFIX), "{text}");
        assert!(text.len() < 200, "{} chars: {text}", text.len());
        let expanded = decode(&text, Kind::Offer).unwrap();
        // What was carried is all there.
        let original = from_sdp(&offer_sdp, Kind::Offer).unwrap();
        assert_eq!(from_sdp(&expanded, Kind::Offer).unwrap(), original);
        assert_eq!(original.candidates.len(), 2);
        let answer = b
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&expanded).unwrap())
            .unwrap();
        let atext = encode(&answer.to_sdp_string(), Kind::Answer).unwrap();
        let aexp = decode(&atext, Kind::Answer).unwrap();
        a.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&aexp).unwrap())
            .unwrap();
    }

    #[test]
    fn an_aiortc_offer_packs() {
        let sdp = "v=0\r\no=- 3953 3953 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
            a=msid-semantic:WMS *\r\nm=application 44165 DTLS/SCTP 5000\r\n";
        assert!(encode(sdp, Kind::Offer).is_err(), "not webrtc-datachannel");
        let sdp = "v=0\r\no=- 3953 3953 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
            m=application 44165 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n\
            a=mid:0\r\na=sctp-port:5000\r\na=max-message-size:65536\r\n\
            a=candidate:0e9 1 udp 2130706431 127.0.0.1 44165 typ host\r\n\
            a=candidate:x 1 tcp 2130706431 127.0.0.1 9 typ host tcptype active\r\n\
            a=candidate:y 1 udp 2130706431 abc.local 9 typ host\r\n\
            a=candidate:z 1 udp 1694498815 203.0.113.5 44165 typ srflx raddr 127.0.0.1 rport 44165\r\n\
            a=end-of-candidates\r\na=ice-ufrag:Xy1a\r\na=ice-pwd:0123456789abcdefghijkl\r\n\
            a=fingerprint:sha-256 2A:7C:08:6B:F9:0E:11:24:D7:84:0C:5D:6C:29:A0:F6:38:A4:6C:26:4E:1B:AF:4A:91:E7:0B:74:0B:B0:C2:58\r\n\
            a=fingerprint:sha-384 00:11\r\na=setup:actpass\r\n";
        let text = encode(sdp, Kind::Offer).unwrap();
        let d = from_sdp(&decode(&text, Kind::Offer).unwrap(), Kind::Offer).unwrap();
        assert_eq!(d.ufrag, "Xy1a");
        assert_eq!(d.mid, "0");
        assert_eq!(d.max_message_size, 65536);
        assert_eq!(d.fingerprint[0], 0x2a);
        assert_eq!(
            d.candidates,
            vec![
                (0, "127.0.0.1:44165".parse().unwrap()),
                (1, "203.0.113.5:44165".parse().unwrap())
            ]
        );
        // The expansion parses in str0m.
        SdpOffer::from_sdp_string(&decode(&text, Kind::Offer).unwrap()).unwrap();
    }

    #[test]
    fn malformed_text_is_refused() {
        let mut a = rtc(&["192.0.2.7:51427"]);
        let mut change = a.sdp_api();
        change.add_channel("x".into());
        let (offer, _) = change.apply().unwrap();
        let text = encode(&offer.to_sdp_string(), Kind::Offer).unwrap();
        // Wrapped and with spaces: fine.
        let wrapped = format!("  {}\n{} ", &text[..40], &text[40..]);
        assert!(decode(&wrapped, Kind::Offer).is_ok());
        let e = decode(&text, Kind::Answer).unwrap_err();
        assert_eq!(e.0, "this is an offer, not an answer");
        assert!(decode("hello", Kind::Offer).unwrap_err().0.contains("sb1:"));
        assert!(decode("sb1:é", Kind::Offer)
            .unwrap_err()
            .0
            .contains("base64url"));
        assert!(decode("é", Kind::Offer).is_err());
        assert!(decode("sb1:!!!", Kind::Offer)
            .unwrap_err()
            .0
            .contains("base64url"));
        for cut in [5, 6, 7, 40, 41, text.len() - 1] {
            let e = decode(&text[..cut], Kind::Offer).unwrap_err();
            assert!(e.0.contains("cut short"), "{cut}: {e}");
        }
        let mut extra = text.clone();
        extra.push_str("AAAA");
        assert!(decode(&extra, Kind::Offer).is_err());
        // Every byte string either decodes or is refused: no panics.
        for n in 0..200usize {
            let b: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let _ = decode(&format!("sb1:{}", URL_SAFE_NO_PAD.encode(&b)), Kind::Offer);
        }
    }
}
