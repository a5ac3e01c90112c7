//! Property tests: no panics on arbitrary or mutated input; build → parse round trips.
#![allow(clippy::type_complexity)] // the generated message spec is a plain bag of tuples

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use switchboard_stun::{
    attr, classify, header_transaction_id, stream_frame_len, ChannelData, Class, Message,
    MessageBuilder, Method, PacketKind, TransactionId,
};

/// Calls every getter; the results are ignored, only panics matter.
use switchboard_stun::testing::exercise;

fn exercise_bytes(b: &[u8]) {
    if let Ok(m) = Message::parse(b) {
        exercise(&m);
    }
    let _ = ChannelData::parse(b);
    let _ = stream_frame_len(b);
    let _ = header_transaction_id(b);
}

/// A STUN-looking buffer: valid header, a body of TLVs with arbitrary (possibly lying) lengths.
fn stunish() -> impl Strategy<Value = Vec<u8>> {
    let tlv = (
        prop_oneof![
            Just(attr::FINGERPRINT),
            Just(attr::MESSAGE_INTEGRITY),
            Just(attr::MESSAGE_INTEGRITY_SHA256),
            prop::sample::select(attr::ALL),
            any::<u16>()
        ],
        // Usually the true value length; sometimes a lie.
        prop_oneof![3 => Just(None), 1 => (0u16..48).prop_map(Some)],
        vec(any::<u8>(), 0..48),
    );
    (
        0u16..0x4000,
        any::<bool>(),
        any::<[u8; 12]>(),
        vec(tlv, 0..8),
    )
        .prop_map(|(t, cookie, tid, tlvs)| {
            let mut body = Vec::new();
            for (typ, len, value) in tlvs {
                let len = len.unwrap_or(value.len() as u16);
                body.extend_from_slice(&typ.to_be_bytes());
                body.extend_from_slice(&len.to_be_bytes());
                body.extend_from_slice(&value);
                while body.len() % 4 != 0 {
                    body.push(0);
                }
            }
            let mut m = Vec::new();
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&(body.len() as u16).to_be_bytes());
            m.extend_from_slice(&if cookie { 0x2112_A442u32 } else { 0x0102_0304 }.to_be_bytes());
            m.extend_from_slice(&tid);
            m.extend_from_slice(&body);
            m
        })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error)
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{0,60}", "\\PC{0,40}"]
}

#[derive(Debug, Clone)]
struct Spec {
    class: Class,
    method: u16,
    tid: [u8; 12],
    pad: u8,
    addrs: (
        Option<SocketAddr>,
        Option<SocketAddr>,
        Vec<SocketAddr>,
        Option<SocketAddr>,
    ),
    strings: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    error: Option<(u16, String)>,
    turn: (
        Option<u32>,
        Option<u8>,
        Option<u16>,
        Option<Vec<u8>>,
        Option<bool>,
        Option<[u8; 8]>,
        bool,
    ),
    ice: (
        Option<u32>,
        Option<u64>,
        Option<u64>,
        bool,
        Option<(bool, bool)>,
    ),
    unknown: Option<Vec<u16>>,
    integrity: (Option<Vec<u8>>, Option<(Vec<u8>, usize)>, bool),
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (class(), 0u16..0x1000, any::<[u8; 12]>(), any::<u8>()),
        (
            option::of(socket_addr()),
            option::of(socket_addr()),
            vec(socket_addr(), 0..3),
            option::of(socket_addr()),
        ),
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
        ),
        option::of((300u16..700, text())),
        (
            option::of(any::<u32>()),
            option::of(any::<u8>()),
            option::of(0x4000u16..=0x7FFF),
            option::of(vec(any::<u8>(), 0..100)),
            option::of(any::<bool>()),
            option::of(any::<[u8; 8]>()),
            any::<bool>(),
        ),
        (
            option::of(any::<u32>()),
            option::of(any::<u64>()),
            option::of(any::<u64>()),
            any::<bool>(),
            option::of((any::<bool>(), any::<bool>())),
        ),
        option::of(vec(any::<u16>(), 0..6)),
        (
            option::of(vec(any::<u8>(), 0..40)),
            option::of((vec(any::<u8>(), 0..40), (4usize..=8).prop_map(|n| n * 4))),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((class, method, tid, pad), addrs, strings, error, turn, ice, unknown, integrity)| {
                Spec {
                    class,
                    method,
                    tid,
                    pad,
                    addrs,
                    strings,
                    error,
                    turn,
                    ice,
                    unknown,
                    integrity,
                }
            },
        )
}

fn build(s: &Spec, buf: &mut [u8]) -> usize {
    let mut b = MessageBuilder::new(buf, s.class, Method(s.method), TransactionId(s.tid)).unwrap();
    b.set_padding_byte(s.pad);
    let (xm, m, peers, relayed) = &s.addrs;
    if let Some(a) = xm {
        b.xor_mapped_address(*a).unwrap();
    }
    if let Some(a) = m {
        b.mapped_address(*a).unwrap();
    }
    for p in peers {
        b.xor_peer_address(*p).unwrap();
    }
    if let Some(a) = relayed {
        b.xor_relayed_address(*a).unwrap();
    }
    let (u, r, n, sw) = &s.strings;
    if let Some(v) = u {
        b.username(v).unwrap();
    }
    if let Some(v) = r {
        b.realm(v).unwrap();
    }
    if let Some(v) = n {
        b.nonce(v).unwrap();
    }
    if let Some(v) = sw {
        b.software(v).unwrap();
    }
    if let Some((c, r)) = &s.error {
        b.error_code(*c, r).unwrap();
    }
    let (lt, tr, ch, data, ep, tok, df) = &s.turn;
    if let Some(v) = lt {
        b.lifetime(*v).unwrap();
    }
    if let Some(v) = tr {
        b.requested_transport(*v).unwrap();
    }
    if let Some(v) = ch {
        b.channel_number(*v).unwrap();
    }
    if let Some(v) = data {
        b.data(v).unwrap();
    }
    if let Some(v) = ep {
        b.even_port(*v).unwrap();
    }
    if let Some(v) = tok {
        b.reservation_token(*v).unwrap();
    }
    if *df {
        b.dont_fragment().unwrap();
    }
    let (pr, ctd, ctg, uc, chg) = &s.ice;
    if let Some(v) = pr {
        b.priority(*v).unwrap();
    }
    if let Some(v) = ctd {
        b.ice_controlled(*v).unwrap();
    }
    if let Some(v) = ctg {
        b.ice_controlling(*v).unwrap();
    }
    if *uc {
        b.use_candidate().unwrap();
    }
    if let Some((ip, port)) = chg {
        b.change_request(*ip, *port).unwrap();
    }
    if let Some(u) = &s.unknown {
        b.unknown_attributes(u).unwrap();
    }
    let (mi, mi256, fp) = &s.integrity;
    if let Some(k) = mi {
        b.message_integrity(k).unwrap();
    }
    if let Some((k, len)) = mi256 {
        b.message_integrity_sha256_truncated(k, *len).unwrap();
    }
    if *fp {
        b.fingerprint().unwrap();
    }
    b.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..600)) {
        exercise_bytes(&b);
    }

    #[test]
    fn stunish_bytes_never_panic(b in stunish()) {
        exercise_bytes(&b);
        // Every accepted message is consistent with its framing.
        if let Ok(m) = Message::parse(&b) {
            if classify(b[0]) == PacketKind::Stun {
                prop_assert_eq!(stream_frame_len(&b), Ok(Some(b.len())));
            }
            for a in m.attributes() {
                prop_assert!(a.offset + 4 + a.value.len() <= b.len());
            }
        }
    }

    #[test]
    fn build_parse_roundtrip(s in spec()) {
        let mut buf = vec![0u8; 4096];
        let n = build(&s, &mut buf);
        let m = Message::parse(&buf[..n]).unwrap();
        exercise(&m);
        prop_assert_eq!(m.class(), s.class);
        prop_assert_eq!(m.method(), Method(s.method));
        prop_assert_eq!(m.transaction_id(), TransactionId(s.tid));
        prop_assert!(!m.is_rfc3489());
        // RFC 7983 demultiplexing only recognises first bytes 0..=3 (methods below 0x100).
        if s.method < 0x100 {
            prop_assert_eq!(stream_frame_len(&buf[..n]), Ok(Some(n)));
        }

        let (xm, mapped, peers, relayed) = &s.addrs;
        prop_assert_eq!(m.xor_mapped_address().unwrap(), *xm);
        prop_assert_eq!(m.mapped_address().unwrap(), *mapped);
        prop_assert_eq!(&m.xor_peer_addresses().collect::<Result<Vec<_>, _>>().unwrap(), peers);
        prop_assert_eq!(m.xor_relayed_address().unwrap(), *relayed);
        let (u, r, no, sw) = &s.strings;
        prop_assert_eq!(m.username().unwrap(), u.as_deref());
        prop_assert_eq!(m.realm().unwrap(), r.as_deref());
        prop_assert_eq!(m.nonce().unwrap(), no.as_deref());
        prop_assert_eq!(m.software().unwrap(), sw.as_deref());
        prop_assert_eq!(m.error_code().unwrap(), s.error.as_ref().map(|(c, r)| (*c, r.as_str())));
        let (lt, tr, ch, data, ep, tok, df) = &s.turn;
        prop_assert_eq!(m.lifetime().unwrap(), *lt);
        prop_assert_eq!(m.requested_transport().unwrap(), *tr);
        prop_assert_eq!(m.channel_number().unwrap(), *ch);
        prop_assert_eq!(m.data().unwrap(), data.as_deref());
        prop_assert_eq!(m.even_port().unwrap(), *ep);
        prop_assert_eq!(m.reservation_token().unwrap(), *tok);
        prop_assert_eq!(m.dont_fragment(), *df);
        let (pr, ctd, ctg, uc, chg) = &s.ice;
        prop_assert_eq!(m.priority().unwrap(), *pr);
        prop_assert_eq!(m.ice_controlled().unwrap(), *ctd);
        prop_assert_eq!(m.ice_controlling().unwrap(), *ctg);
        prop_assert_eq!(m.use_candidate(), *uc);
        prop_assert_eq!(m.change_request().unwrap(), *chg);
        prop_assert_eq!(m.unknown_attributes().unwrap().map(|i| i.collect::<Vec<_>>()), s.unknown.clone());
        prop_assert!(m.unknown_comprehension_required(attr::is_known).is_empty());

        let (mi, mi256, fp) = &s.integrity;
        match mi {
            Some(k) => {
                prop_assert_eq!(m.verify_integrity(k), Ok(()));
                let mut wrong = k.clone();
                wrong.push(1);
                prop_assert!(m.verify_integrity(&wrong).is_err());
            }
            None => prop_assert!(m.verify_integrity(b"k").is_err()),
        }
        match mi256 {
            Some((k, _)) => prop_assert_eq!(m.verify_integrity_sha256(k), Ok(())),
            None => prop_assert!(m.verify_integrity_sha256(b"k").is_err()),
        }
        prop_assert_eq!(m.check_fingerprint(), if *fp { Some(true) } else { None });
    }

    #[test]
    fn mutated_messages_never_panic(
        s in spec(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in option::of(any::<prop::sample::Index>()),
        insert in option::of((any::<prop::sample::Index>(), vec(any::<u8>(), 1..8))),
    ) {
        let mut s = s;
        s.integrity.2 = true;
        let mut buf = vec![0u8; 4096];
        let n = build(&s, &mut buf);
        let mut b = buf[..n].to_vec();
        for (i, x) in &flips {
            let i = i.index(b.len());
            b[i] ^= x | 1;
        }
        exercise_bytes(&b);
        if let Some((at, bytes)) = &insert {
            let at = at.index(b.len());
            b.splice(at..at, bytes.iter().copied());
            exercise_bytes(&b);
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len()));
            exercise_bytes(&b);
        }
    }

    #[test]
    fn channel_data_roundtrip(channel in 0x4000u16..=0x7FFF, data in vec(any::<u8>(), 0..300), pad in any::<bool>()) {
        let mut out = vec![0u8; 320];
        let n = ChannelData::encode(channel, &data, &mut out, pad).unwrap();
        let cd = ChannelData::parse(&out[..n]).unwrap();
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &data[..]);
        if pad {
            prop_assert_eq!(n % 4, 0);
            prop_assert_eq!(stream_frame_len(&out[..n]), Ok(Some(n)));
        }
    }
}
