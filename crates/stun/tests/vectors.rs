//! RFC 5769 test vectors and RFC 8489 Appendix B.1 (as corrected by its errata).
//!
//! The sample messages of RFC 5769 §2.1–2.3 pad attribute values with spaces (0x20) instead of
//! zeros; the rebuild tests reproduce them byte for byte with
//! [`MessageBuilder::set_padding_byte`]. §2.4 and RFC 8489 B.1 pad with zeros.

use std::net::SocketAddr;

use switchboard_stun::{
    attr, long_term_key_md5, long_term_key_sha256, password_algorithm, userhash, Class,
    IntegrityError, Message, MessageBuilder, Method, TransactionId,
};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const TID_1: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];
const TID_2: [u8; 12] = [
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
];
const USERNAME_LT: &str = "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}";

/// RFC 5769 §2.1 Sample Request.
fn sample_request() -> Vec<u8> {
    hex("
        00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
        80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
        00 24 00 04  6e 00 01 ff
        80 29 00 08  93 2f f9 b1  51 26 3b 36
        00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
        00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
        80 28 00 04  e5 7a 3b cf")
}

/// RFC 5769 §2.2 Sample IPv4 Response.
fn sample_ipv4_response() -> Vec<u8> {
    hex("
        01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
        80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
        00 20 00 08  00 01 a1 47  e1 12 a6 43
        00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
        80 28 00 04  c0 7d 4c 96")
}

/// RFC 5769 §2.3 Sample IPv6 Response.
fn sample_ipv6_response() -> Vec<u8> {
    hex("
        01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
        80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
        00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
        00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
        80 28 00 04  c8 fb 0b 4c")
}

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication.
fn sample_long_term_request() -> Vec<u8> {
    hex("
        00 01 00 60  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
        00 06 00 12  e3 83 9e e3  83 88 e3 83  aa e3 83 83  e3 82 af e3  82 b9 00 00
        00 15 00 1c  66 2f 2f 34  39 39 6b 39  35 34 64 36  4f 4c 33 34  6f 4c 39 46
                     53 54 76 79  36 34 73 41
        00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
        00 08 00 14  f6 70 24 65  6d d6 4a 3e  02 b8 e0 71  2e 85 c9 a2  8c a8 96 66")
}

/// RFC 8489 Appendix B.1, as corrected by the RFC's errata (the published figure has wrong
/// NONCE and message lengths). MESSAGE-INTEGRITY-SHA256 verifies, so the bytes are exact.
fn rfc8489_b1() -> Vec<u8> {
    hex("
        00 01 00 90  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
        00 1e 00 20  4a 3c f3 8f  ef 69 92 bd  a9 52 c6 78  04 17 da 0f
                     24 81 94 15  56 9e 60 b2  05 c4 6e 41  40 7f 17 04
        00 15 00 29  6f 62 4d 61  74 4a 6f 73  32 41 41 41  43 66 2f 2f  34 39 39 6b
                     39 35 34 64  36 4f 4c 33  34 6f 4c 39  46 53 54 76  79 36 34 73
                     41 00 00 00
        00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
        00 1d 00 04  00 02 00 00
        00 1c 00 20  b5 c7 bf 00  5b 6c 52 a2  1c 51 c5 e8  92 f8 19 24  13 62 96 cb
                     92 7c 43 14  93 09 27 8c  c6 51 8e 65")
}

#[test]
fn rfc5769_2_1_sample_request_parse() {
    let buf = sample_request();
    let m = Message::parse(&buf).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.transaction_id(), TransactionId(TID_1));
    assert!(!m.is_rfc3489());
    assert_eq!(m.software().unwrap(), Some("STUN test client"));
    assert_eq!(m.priority().unwrap(), Some(0x6e00_01ff));
    assert_eq!(m.ice_controlled().unwrap(), Some(0x932f_f9b1_5126_3b36));
    assert_eq!(m.ice_controlling().unwrap(), None);
    assert_eq!(m.username().unwrap(), Some("evtj:h6vY"));
    assert!(!m.use_candidate());
    assert_eq!(m.check_fingerprint(), Some(true));
    m.verify_integrity(SHORT_TERM_PASSWORD).unwrap();
    assert_eq!(m.verify_integrity(b"wrong"), Err(IntegrityError::Mismatch));
    assert_eq!(
        m.verify_integrity_sha256(SHORT_TERM_PASSWORD),
        Err(IntegrityError::Missing)
    );
    let types: Vec<u16> = m.attributes().map(|a| a.typ).collect();
    assert_eq!(
        types,
        [
            attr::SOFTWARE,
            attr::PRIORITY,
            attr::ICE_CONTROLLED,
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY,
            attr::FINGERPRINT
        ]
    );
    let offsets: Vec<usize> = m.attributes().map(|a| a.offset).collect();
    assert_eq!(offsets, [20, 40, 48, 60, 76, 100]);
    assert!(m.unknown_comprehension_required(attr::is_known).is_empty());
}

#[test]
fn rfc5769_2_1_sample_request_rebuild() {
    let want = sample_request();
    let mut buf = [0u8; 256];
    let mut b = MessageBuilder::new(
        &mut buf,
        Class::Request,
        Method::BINDING,
        TransactionId(TID_1),
    )
    .unwrap();
    b.set_padding_byte(0x20)
        .software("STUN test client")
        .unwrap()
        .priority(0x6e00_01ff)
        .unwrap()
        .ice_controlled(0x932f_f9b1_5126_3b36)
        .unwrap()
        .username("evtj:h6vY")
        .unwrap()
        .message_integrity(SHORT_TERM_PASSWORD)
        .unwrap()
        .fingerprint()
        .unwrap();
    let n = b.finish();
    assert_eq!(&buf[..n], &want[..]);
}

#[test]
fn rfc5769_2_2_ipv4_response() {
    let buf = sample_ipv4_response();
    let m = Message::parse(&buf).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Success, Method::BINDING));
    assert_eq!(m.transaction_id(), TransactionId(TID_1));
    assert_eq!(m.software().unwrap(), Some("test vector"));
    let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(m.xor_mapped_address().unwrap(), Some(addr));
    assert_eq!(m.mapped_address().unwrap(), None);
    assert_eq!(m.check_fingerprint(), Some(true));
    m.verify_integrity(SHORT_TERM_PASSWORD).unwrap();
    assert_eq!(
        m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"),
        Err(IntegrityError::Mismatch)
    );

    let mut out = [0u8; 256];
    let mut b = MessageBuilder::new(
        &mut out,
        Class::Success,
        Method::BINDING,
        TransactionId(TID_1),
    )
    .unwrap();
    b.set_padding_byte(0x20);
    b.software("test vector").unwrap();
    b.xor_mapped_address(addr).unwrap();
    b.message_integrity(SHORT_TERM_PASSWORD).unwrap();
    b.fingerprint().unwrap();
    let n = b.finish();
    assert_eq!(&out[..n], &buf[..]);
}

#[test]
fn rfc5769_2_3_ipv6_response() {
    let buf = sample_ipv6_response();
    let m = Message::parse(&buf).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Success, Method::BINDING));
    assert_eq!(m.software().unwrap(), Some("test vector"));
    let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(m.xor_mapped_address().unwrap(), Some(addr));
    assert_eq!(m.check_fingerprint(), Some(true));
    m.verify_integrity(SHORT_TERM_PASSWORD).unwrap();

    let mut out = [0u8; 256];
    // Also exercise response_to: a request with the same transaction id.
    let mut req_buf = [0u8; 20];
    let req_len = MessageBuilder::new(
        &mut req_buf,
        Class::Request,
        Method::BINDING,
        TransactionId(TID_1),
    )
    .unwrap()
    .finish();
    let req = Message::parse(&req_buf[..req_len]).unwrap();
    let mut b = MessageBuilder::response_to(&mut out, &req, Class::Success).unwrap();
    b.set_padding_byte(0x20);
    b.software("test vector")
        .unwrap()
        .xor_mapped_address(addr)
        .unwrap();
    b.message_integrity(SHORT_TERM_PASSWORD)
        .unwrap()
        .fingerprint()
        .unwrap();
    let n = b.finish();
    assert_eq!(&out[..n], &buf[..]);
}

#[test]
fn rfc5769_2_4_long_term_request() {
    let buf = sample_long_term_request();
    let m = Message::parse(&buf).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Request, Method::BINDING));
    assert_eq!(m.transaction_id(), TransactionId(TID_2));
    assert_eq!(m.username().unwrap(), Some(USERNAME_LT));
    assert_eq!(m.nonce().unwrap(), Some("f//499k954d6OL34oL9FSTvy64sA"));
    assert_eq!(m.realm().unwrap(), Some("example.org"));
    assert_eq!(m.check_fingerprint(), None);
    let key = long_term_key_md5(USERNAME_LT, "example.org", "TheMatrIX");
    m.verify_integrity(&key).unwrap();
    let wrong = long_term_key_md5(USERNAME_LT, "example.org", "TheMatrix");
    assert_eq!(m.verify_integrity(&wrong), Err(IntegrityError::Mismatch));

    let mut out = [0u8; 256];
    let mut b = MessageBuilder::new(
        &mut out,
        Class::Request,
        Method::BINDING,
        TransactionId(TID_2),
    )
    .unwrap();
    b.username(USERNAME_LT).unwrap();
    b.nonce("f//499k954d6OL34oL9FSTvy64sA").unwrap();
    b.realm("example.org").unwrap();
    b.message_integrity(&key).unwrap();
    let n = b.finish();
    assert_eq!(&out[..n], &buf[..]);
}

#[test]
fn rfc8489_b1_sha256_userhash() {
    let buf = rfc8489_b1();
    let m = Message::parse(&buf).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Request, Method::BINDING));
    assert_eq!(m.transaction_id(), TransactionId(TID_2));
    let uh = userhash(USERNAME_LT, "example.org");
    assert_eq!(m.userhash().unwrap(), Some(&uh));
    assert_eq!(m.username().unwrap(), None);
    assert_eq!(
        m.nonce().unwrap(),
        Some("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
    );
    assert_eq!(m.realm().unwrap(), Some("example.org"));
    assert_eq!(
        m.password_algorithm().unwrap(),
        Some((password_algorithm::SHA256, &[][..]))
    );
    let key = long_term_key_sha256(USERNAME_LT, "example.org", "TheMatrIX");
    m.verify_integrity_sha256(&key).unwrap();
    assert_eq!(m.verify_integrity(&key), Err(IntegrityError::Missing));
    assert_eq!(
        m.verify_integrity_sha256(&key[1..]),
        Err(IntegrityError::Mismatch)
    );

    let mut out = [0u8; 256];
    let mut b = MessageBuilder::new(
        &mut out,
        Class::Request,
        Method::BINDING,
        TransactionId(TID_2),
    )
    .unwrap();
    b.userhash(&uh).unwrap();
    b.nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
        .unwrap();
    b.realm("example.org").unwrap();
    b.password_algorithm(password_algorithm::SHA256, &[])
        .unwrap();
    b.message_integrity_sha256(&key).unwrap();
    let n = b.finish();
    assert_eq!(&out[..n], &buf[..]);
}

#[test]
fn corrupting_any_byte_breaks_fingerprint_or_parse() {
    let buf = sample_ipv4_response();
    for i in 0..buf.len() {
        let mut b = buf.clone();
        b[i] ^= 0x01;
        if let Ok(m) = Message::parse(&b) {
            // The fingerprint or the integrity (or both) must catch the change.
            let fp_ok = m.check_fingerprint() == Some(true);
            let mi_ok = m.verify_integrity(SHORT_TERM_PASSWORD).is_ok();
            assert!(!(fp_ok && mi_ok), "flip at {i} undetected");
        }
    }
}
