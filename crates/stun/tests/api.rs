//! Behaviour tests of the public API: framing errors, ordering rules, RFC 3489, typed attributes.

use std::net::SocketAddr;

use switchboard_stun::{
    attr, header_transaction_id, AddressError, AttrError, BuildError, Class, Icmp, IntegrityError,
    Message, MessageBuilder, Method, ParseError, TransactionId, UnknownList, MAGIC_COOKIE,
};

const TID: TransactionId = TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

/// Assembles a message by hand (no validation, zero padding), for malformed-input tests.
fn raw(t: u16, cookie: u32, tid: [u8; 12], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (typ, v) in attrs {
        body.extend_from_slice(&typ.to_be_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    }
    let mut m = Vec::new();
    m.extend_from_slice(&t.to_be_bytes());
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&cookie.to_be_bytes());
    m.extend_from_slice(&tid);
    m.extend_from_slice(&body);
    m
}

fn build(f: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::ALLOCATE, TID).unwrap();
    f(&mut b);
    let n = b.finish();
    buf.truncate(n);
    buf
}

#[test]
fn malformed_headers() {
    assert_eq!(Message::parse(&[]), Err(ParseError::TooShort { len: 0 }));
    assert_eq!(
        Message::parse(&[0u8; 19]),
        Err(ParseError::TooShort { len: 19 })
    );
    let ok = raw(0x0001, MAGIC_COOKIE, TID.0, &[]);
    assert!(Message::parse(&ok).is_ok());

    let mut b = ok.clone();
    b[0] = 0x80;
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::NotStun { first_byte: 0x80 })
    );
    b[0] = 0x40;
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::NotStun { first_byte: 0x40 })
    );

    let mut b = ok.clone();
    b[3] = 2;
    b.extend_from_slice(&[0, 0]);
    let e = Message::parse(&b).unwrap_err();
    assert_eq!(
        e,
        ParseError::BadLength {
            length: 2,
            tid: TID
        }
    );
    assert_eq!(e.transaction_id(), Some(TID));

    let mut b = ok.clone();
    b[3] = 8;
    b.extend_from_slice(&[0, 0, 0, 0]);
    let e = Message::parse(&b).unwrap_err();
    assert_eq!(
        e,
        ParseError::Truncated {
            expected: 28,
            actual: 24,
            tid: TID
        }
    );
    assert_eq!(e.transaction_id(), Some(TID));

    let mut b = ok.clone();
    b.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::TrailingBytes {
            expected: 20,
            actual: 24,
            tid: TID
        })
    );

    // Attribute whose value runs past the end.
    let mut b = raw(0x0001, MAGIC_COOKIE, TID.0, &[(attr::SOFTWARE, b"abcd")]);
    b[23] = 5; // length 5 -> padded 8, but only 4 bytes of value present
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::AttributeOverrun {
            offset: 20,
            tid: TID
        })
    );
    // Second attribute overruns.
    let mut b = raw(
        0x0001,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::SOFTWARE, b"abcd"), (attr::PRIORITY, &[0; 4])],
    );
    b[31] = 8;
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::AttributeOverrun {
            offset: 28,
            tid: TID
        })
    );

    assert_eq!(ParseError::TooShort { len: 3 }.transaction_id(), None);
    assert_eq!(
        header_transaction_id(&b),
        Some((Class::Request, Method::BINDING, TID))
    );
}

#[test]
fn fingerprint_must_be_last() {
    let b = raw(
        0x0001,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::FINGERPRINT, &[0; 4]), (attr::SOFTWARE, b"x")],
    );
    assert_eq!(
        Message::parse(&b),
        Err(ParseError::FingerprintNotLast {
            offset: 20,
            tid: TID
        })
    );
    // A bogus fingerprint value parses but does not check.
    let b = raw(
        0x0001,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::SOFTWARE, b"x"), (attr::FINGERPRINT, &[0; 4])],
    );
    assert_eq!(Message::parse(&b).unwrap().check_fingerprint(), Some(false));
    let b = raw(0x0001, MAGIC_COOKIE, TID.0, &[(attr::FINGERPRINT, &[0; 2])]);
    assert_eq!(Message::parse(&b).unwrap().check_fingerprint(), Some(false));
}

#[test]
fn attributes_after_integrity_are_ignored() {
    let key = b"secret";
    let mut b = build(|b| {
        b.username("u").unwrap().message_integrity(key).unwrap();
    });
    // Append an unknown comprehension-required attribute and a SOFTWARE after MESSAGE-INTEGRITY.
    let extra = [
        0x00, 0x7F, 0x00, 0x04, 1, 2, 3, 4, 0x80, 0x22, 0x00, 0x01, b'z', 0, 0, 0,
    ];
    b.extend_from_slice(&extra);
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::parse(&b).unwrap();
    let types: Vec<u16> = m.attributes().map(|a| a.typ).collect();
    assert_eq!(types, [attr::USERNAME, attr::MESSAGE_INTEGRITY]);
    assert_eq!(m.get(0x007F), None);
    assert_eq!(m.software().unwrap(), None);
    assert!(m.unknown_comprehension_required(attr::is_known).is_empty());
    // The integrity still verifies: it covers only what precedes it.
    m.verify_integrity(key).unwrap();
}

#[test]
fn integrity_sha256_and_fingerprint_may_follow_integrity() {
    let key = b"k";
    let b = build(|b| {
        b.software("s")
            .unwrap()
            .message_integrity(key)
            .unwrap()
            .message_integrity_sha256(key)
            .unwrap()
            .fingerprint()
            .unwrap();
    });
    let m = Message::parse(&b).unwrap();
    let types: Vec<u16> = m.attributes().map(|a| a.typ).collect();
    assert_eq!(
        types,
        [
            attr::SOFTWARE,
            attr::MESSAGE_INTEGRITY,
            attr::MESSAGE_INTEGRITY_SHA256,
            attr::FINGERPRINT
        ]
    );
    m.verify_integrity(key).unwrap();
    m.verify_integrity_sha256(key).unwrap();
    assert_eq!(m.check_fingerprint(), Some(true));
    assert_eq!(
        m.verify_integrity_sha256(b"x"),
        Err(IntegrityError::Mismatch)
    );

    // MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256 is ignored.
    let mut b = build(|b| {
        b.message_integrity_sha256(key).unwrap();
    });
    b.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    b.extend_from_slice(&[0; 20]);
    let len = (b.len() - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::parse(&b).unwrap();
    assert!(!m.has_integrity());
    assert_eq!(m.verify_integrity(key), Err(IntegrityError::Missing));
    // The SHA-256 one still verifies: its HMAC uses a length adjusted to end right after it.
    m.verify_integrity_sha256(key).unwrap();
}

#[test]
fn truncated_integrity_sha256() {
    for len in [16, 20, 24, 28, 32] {
        let b = build(|b| {
            b.username("u")
                .unwrap()
                .message_integrity_sha256_truncated(b"key", len)
                .unwrap();
        });
        let m = Message::parse(&b).unwrap();
        assert_eq!(
            m.get(attr::MESSAGE_INTEGRITY_SHA256).unwrap().value.len(),
            len
        );
        m.verify_integrity_sha256(b"key").unwrap();
    }
    let mut buf = [0u8; 100];
    let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
    assert!(matches!(
        b.message_integrity_sha256_truncated(b"k", 12),
        Err(BuildError::InvalidValue(_))
    ));
    assert!(matches!(
        b.message_integrity_sha256_truncated(b"k", 18),
        Err(BuildError::InvalidValue(_))
    ));
    // Bad lengths on the wire.
    let raw12 = raw(
        0x0001,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::MESSAGE_INTEGRITY_SHA256, &[0; 12])],
    );
    let m = Message::parse(&raw12).unwrap();
    assert_eq!(
        m.verify_integrity_sha256(b"k"),
        Err(IntegrityError::BadLength { len: 12 })
    );
    let raw16 = raw(
        0x0001,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::MESSAGE_INTEGRITY, &[0; 16])],
    );
    let m = Message::parse(&raw16).unwrap();
    assert_eq!(
        m.verify_integrity(b"k"),
        Err(IntegrityError::BadLength { len: 16 })
    );
}

#[test]
fn rfc3489_message_and_response() {
    // A classic request: 128-bit transaction id, no magic cookie.
    let b = raw(
        0x0001,
        0xDEAD_BEEF,
        TID.0,
        &[(attr::RESPONSE_ADDRESS, &[0, 1, 0x12, 0x34, 10, 0, 0, 1])],
    );
    let m = Message::parse(&b).unwrap();
    assert!(m.is_rfc3489());
    assert_eq!(m.cookie(), 0xDEAD_BEEFu32.to_be_bytes());
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(
        m.response_address().unwrap(),
        Some("10.0.0.1:4660".parse().unwrap())
    );

    let mut out = [0u8; 128];
    let client: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    let mut r = MessageBuilder::response_to(&mut out, &m, Class::Success).unwrap();
    r.mapped_address(client).unwrap();
    r.source_address("192.0.2.10:3478".parse().unwrap())
        .unwrap();
    r.changed_address("192.0.2.11:3479".parse().unwrap())
        .unwrap();
    let n = r.finish();
    assert_eq!(&out[4..20], &b[4..20], "the 128-bit id is echoed");
    let resp = Message::parse(&out[..n]).unwrap();
    assert!(resp.is_rfc3489());
    assert_eq!(resp.class(), Class::Success);
    assert_eq!(resp.method(), Method::BINDING);
    assert_eq!(resp.mapped_address().unwrap(), Some(client));
    assert_eq!(
        resp.source_address().unwrap(),
        Some("192.0.2.10:3478".parse().unwrap())
    );
    assert_eq!(
        resp.changed_address().unwrap(),
        Some("192.0.2.11:3479".parse().unwrap())
    );

    // An RFC 5389+ request gets the magic cookie back.
    let b = raw(0x0001, MAGIC_COOKIE, TID.0, &[]);
    let m = Message::parse(&b).unwrap();
    assert!(!m.is_rfc3489());
    let mut r = MessageBuilder::response_to(&mut out, &m, Class::Error).unwrap();
    r.error_code(400, "Bad Request").unwrap();
    let n = r.finish();
    let resp = Message::parse(&out[..n]).unwrap();
    assert_eq!(resp.cookie(), MAGIC_COOKIE.to_be_bytes());
    assert_eq!(resp.raw_type(), 0x0111);
}

#[test]
fn error_codes() {
    for (code, reason) in [
        (300, "Try Alternate"),
        (401, "Unauthorized"),
        (420, ""),
        (438, "Stale Nonce"),
        (699, "x"),
    ] {
        let b = build(|b| {
            b.error_code(code, reason).unwrap();
        });
        let v = Message::parse(&b)
            .unwrap()
            .get(attr::ERROR_CODE)
            .unwrap()
            .value;
        assert_eq!(v[2], (code / 100) as u8);
        assert_eq!(v[3], (code % 100) as u8);
        assert_eq!(
            Message::parse(&b).unwrap().error_code().unwrap(),
            Some((code, reason))
        );
    }
    let mut buf = [0u8; 64];
    let mut b = MessageBuilder::new(&mut buf, Class::Error, Method::BINDING, TID).unwrap();
    assert!(matches!(
        b.error_code(299, ""),
        Err(BuildError::InvalidValue(_))
    ));
    assert!(matches!(
        b.error_code(700, ""),
        Err(BuildError::InvalidValue(_))
    ));
    let long: String = "a".repeat(128);
    assert_eq!(
        b.error_code(400, &long).unwrap_err(),
        BuildError::ValueTooLong { len: 128, max: 127 }
    );
    // Wire values out of range.
    for v in [[0, 0, 2, 99], [0, 0, 4, 100], [0, 0, 7, 0]] {
        let m = raw(0x0111, MAGIC_COOKIE, TID.0, &[(attr::ERROR_CODE, &v)]);
        assert!(matches!(
            Message::parse(&m).unwrap().error_code(),
            Err(AttrError::BadValue(_))
        ));
    }
    // Upper class bits (reserved) are ignored.
    let m = raw(
        0x0111,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::ERROR_CODE, &[0xFF, 0xFF, 0xFC, 1, b'h', b'i'])],
    );
    assert_eq!(
        Message::parse(&m).unwrap().error_code().unwrap(),
        Some((401, "hi"))
    );
    let m = raw(
        0x0111,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::ERROR_CODE, &[0, 0, 4])],
    );
    assert_eq!(
        Message::parse(&m).unwrap().error_code(),
        Err(AttrError::BadLength { len: 3 })
    );
}

#[test]
fn unknown_comprehension_required() {
    let b = raw(
        0x0003,
        MAGIC_COOKIE,
        TID.0,
        &[
            (attr::USERNAME, b"u"),
            (0x0030, b""),
            (0x9000, b"optional"),
            (0x0031, b"x"),
            (0x0030, b"again"),
            (attr::LIFETIME, &[0, 0, 0, 1]),
        ],
    );
    let m = Message::parse(&b).unwrap();
    let u = m.unknown_comprehension_required(attr::is_known);
    assert_eq!(u.as_slice(), &[0x0030, 0x0031]);
    assert_eq!(u.len(), 2);
    assert!(!u.overflowed());
    // A narrower predicate: LIFETIME not understood either.
    let u = m.unknown_comprehension_required(|t| t == attr::USERNAME);
    assert_eq!(
        u.iter().collect::<Vec<_>>(),
        [0x0030, 0x0031, attr::LIFETIME]
    );

    // The list saturates at its capacity.
    let mut list = UnknownList::new();
    for t in 0..20u16 {
        list.push(0x0100 + t);
    }
    assert_eq!(list.len(), UnknownList::CAPACITY);
    assert!(list.overflowed());

    // And the 420 answer carries them.
    let mut out = [0u8; 64];
    let mut r = MessageBuilder::response_to(&mut out, &m, Class::Error).unwrap();
    let u = m.unknown_comprehension_required(attr::is_known);
    r.error_code(420, "Unknown Attribute")
        .unwrap()
        .unknown_attributes(u.as_slice())
        .unwrap();
    let n = r.finish();
    let resp = Message::parse(&out[..n]).unwrap();
    assert_eq!(
        resp.unknown_attributes()
            .unwrap()
            .unwrap()
            .collect::<Vec<_>>(),
        [0x0030, 0x0031]
    );
    // Odd count: the value is padded.
    let b = build(|b| {
        b.unknown_attributes(&[0x0001, 0x0002, 0x0003]).unwrap();
    });
    let m = Message::parse(&b).unwrap();
    assert_eq!(
        m.unknown_attributes().unwrap().unwrap().collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let b = raw(
        0x0111,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::UNKNOWN_ATTRIBUTES, &[0, 1, 0])],
    );
    assert!(Message::parse(&b).unwrap().unknown_attributes().is_err());
}

#[test]
fn turn_attributes_roundtrip() {
    let peers: [SocketAddr; 3] = [
        "192.0.2.15:8000".parse().unwrap(),
        "[2001:db8::1]:9".parse().unwrap(),
        "203.0.113.4:1".parse().unwrap(),
    ];
    let b = build(|b| {
        b.requested_transport(17).unwrap();
        b.lifetime(600).unwrap();
        b.even_port(true).unwrap();
        b.reservation_token([1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        b.dont_fragment().unwrap();
        b.requested_address_family(2).unwrap();
        b.additional_address_family(2).unwrap();
        b.channel_number(0x4abc).unwrap();
        for p in peers {
            b.xor_peer_address(p).unwrap();
        }
        b.xor_relayed_address(peers[0]).unwrap();
        b.xor_relayed_address(peers[1]).unwrap();
        b.data(b"payload").unwrap();
        b.address_error_code(2, 440, "Address Family not Supported")
            .unwrap();
        b.icmp(3, 4, 1400).unwrap();
        b.connection_id(0xdead_beef).unwrap();
    });
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.method(), Method::ALLOCATE);
    assert_eq!(m.requested_transport().unwrap(), Some(17));
    assert_eq!(m.lifetime().unwrap(), Some(600));
    assert_eq!(m.even_port().unwrap(), Some(true));
    assert_eq!(
        m.reservation_token().unwrap(),
        Some([1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert!(m.dont_fragment());
    assert_eq!(m.requested_address_family().unwrap(), Some(2));
    assert_eq!(m.additional_address_family().unwrap(), Some(2));
    assert_eq!(m.channel_number().unwrap(), Some(0x4abc));
    assert_eq!(m.xor_peer_address().unwrap(), Some(peers[0]));
    assert_eq!(
        m.xor_peer_addresses()
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        peers
    );
    assert_eq!(
        m.xor_relayed_addresses()
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        &peers[..2]
    );
    assert_eq!(m.data().unwrap(), Some(&b"payload"[..]));
    assert_eq!(
        m.address_error_code().unwrap(),
        Some(AddressError {
            family: 2,
            code: 440,
            reason: "Address Family not Supported"
        })
    );
    assert_eq!(
        m.icmp().unwrap(),
        Some(Icmp {
            typ: 3,
            code: 4,
            error_data: 1400
        })
    );
    assert_eq!(m.connection_id().unwrap(), Some(0xdead_beef));
    assert_eq!(m.get_all(attr::XOR_PEER_ADDRESS).count(), 3);

    let mut buf = [0u8; 64];
    let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::CHANNEL_BIND, TID).unwrap();
    assert_eq!(
        b.channel_number(0x3fff).unwrap_err(),
        BuildError::InvalidChannel(0x3fff)
    );
    assert_eq!(
        b.channel_number(0x8000).unwrap_err(),
        BuildError::InvalidChannel(0x8000)
    );
    b.even_port(false).unwrap();
    let n = b.finish();
    assert_eq!(
        Message::parse(&buf[..n]).unwrap().even_port().unwrap(),
        Some(false)
    );
}

#[test]
fn stun_ice_5780_attributes_roundtrip() {
    let b = build(|b| {
        b.change_request(true, false).unwrap();
        b.response_port(4242).unwrap();
        b.padding(8).unwrap();
        b.response_origin("192.0.2.1:3478".parse().unwrap())
            .unwrap();
        b.other_address("192.0.2.2:3479".parse().unwrap()).unwrap();
        b.alternate_server("[2001:db8::9]:3478".parse().unwrap())
            .unwrap();
        b.alternate_domain("turn.example.org").unwrap();
        b.reflected_from("10.1.1.1:1".parse().unwrap()).unwrap();
        b.priority(0x6e00_01ff).unwrap();
        b.use_candidate().unwrap();
        b.ice_controlling(u64::MAX).unwrap();
        b.password_algorithms(&[(2, b""), (1, b""), (0x1234, b"abc")])
            .unwrap();
        b.password_algorithm(0x1234, b"abc").unwrap();
        b.userhash(&[7; 32]).unwrap();
        b.realm("example.org").unwrap();
        b.nonce("abc").unwrap();
    });
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.change_request().unwrap(), Some((true, false)));
    assert_eq!(m.response_port().unwrap(), Some(4242));
    assert_eq!(m.padding().unwrap(), Some(&[0u8; 8][..]));
    assert_eq!(
        m.response_origin().unwrap(),
        Some("192.0.2.1:3478".parse().unwrap())
    );
    assert_eq!(
        m.other_address().unwrap(),
        Some("192.0.2.2:3479".parse().unwrap())
    );
    assert_eq!(
        m.alternate_server().unwrap(),
        Some("[2001:db8::9]:3478".parse().unwrap())
    );
    assert_eq!(m.alternate_domain().unwrap(), Some("turn.example.org"));
    assert_eq!(
        m.reflected_from().unwrap(),
        Some("10.1.1.1:1".parse().unwrap())
    );
    assert_eq!(m.priority().unwrap(), Some(0x6e00_01ff));
    assert!(m.use_candidate());
    assert_eq!(m.ice_controlling().unwrap(), Some(u64::MAX));
    assert_eq!(
        m.password_algorithms()
            .unwrap()
            .unwrap()
            .collect::<Vec<_>>(),
        [(2, &b""[..]), (1, &b""[..]), (0x1234, &b"abc"[..])]
    );
    assert_eq!(m.password_algorithm().unwrap(), Some((0x1234, &b"abc"[..])));
    assert_eq!(m.userhash().unwrap(), Some(&[7; 32]));
    assert_eq!(m.realm().unwrap(), Some("example.org"));
    assert_eq!(m.nonce().unwrap(), Some("abc"));
    // Bad PASSWORD-ALGORITHMS: parameter length beyond the value.
    let r = raw(
        0x0111,
        MAGIC_COOKIE,
        TID.0,
        &[(attr::PASSWORD_ALGORITHMS, &[0, 1, 0, 9, 1, 2])],
    );
    assert!(Message::parse(&r).unwrap().password_algorithms().is_err());
}

#[test]
fn getter_errors() {
    let r = raw(
        0x0101,
        MAGIC_COOKIE,
        TID.0,
        &[
            (attr::XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]),
            (attr::MAPPED_ADDRESS, &[0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
            (attr::OTHER_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4]),
            (attr::USERNAME, &[0xff, 0xfe]),
            (attr::LIFETIME, &[0, 0, 1]),
            (attr::ICE_CONTROLLED, &[0; 4]),
            (attr::USERHASH, &[0; 31]),
            (attr::EVEN_PORT, &[0x80, 0]),
            (attr::CHANNEL_NUMBER, &[0x40, 0]),
            (attr::REALM, &[b'a'; 764]),
            (attr::RESPONSE_ORIGIN, &[0]),
        ],
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.xor_mapped_address(), Err(AttrError::BadFamily(3)));
    assert_eq!(m.mapped_address(), Err(AttrError::BadLength { len: 12 }));
    assert_eq!(m.other_address(), Err(AttrError::BadLength { len: 8 }));
    assert_eq!(m.username(), Err(AttrError::BadUtf8));
    assert_eq!(m.lifetime(), Err(AttrError::BadLength { len: 3 }));
    assert_eq!(m.ice_controlled(), Err(AttrError::BadLength { len: 4 }));
    assert_eq!(m.userhash(), Err(AttrError::BadLength { len: 31 }));
    assert_eq!(m.even_port(), Err(AttrError::BadLength { len: 2 }));
    assert_eq!(m.channel_number(), Err(AttrError::BadLength { len: 2 }));
    assert_eq!(m.realm(), Err(AttrError::TooLong { len: 764, max: 763 }));
    assert_eq!(m.response_origin(), Err(AttrError::BadLength { len: 1 }));
    assert_eq!(m.nonce(), Ok(None));
}

#[test]
fn builder_errors_leave_message_intact() {
    let mut buf = [0u8; 19];
    assert_eq!(
        MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap_err(),
        BuildError::BufferTooSmall {
            needed: 20,
            available: 19
        }
    );
    let mut buf = [0u8; 40];
    assert_eq!(
        MessageBuilder::new(&mut buf, Class::Request, Method(0x1000), TID).unwrap_err(),
        BuildError::InvalidMethod(0x1000)
    );
    let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
    assert!(b.is_empty());
    b.software("abc").unwrap();
    let before = b.as_bytes().to_vec();
    assert_eq!(
        b.data(&[0; 13]).unwrap_err(),
        BuildError::BufferTooSmall {
            needed: 48,
            available: 40
        }
    );
    assert_eq!(b.as_bytes(), &before[..]);
    assert_eq!(
        b.realm(&"é".repeat(128)).unwrap_err(),
        BuildError::ValueTooLong { len: 128, max: 127 }
    );
    assert_eq!(
        b.username(&"a".repeat(764)).unwrap_err(),
        BuildError::ValueTooLong { len: 764, max: 763 }
    );
    assert!(matches!(b.padding(3), Err(BuildError::InvalidValue(_))));
    b.fingerprint().unwrap();
    assert_eq!(
        b.software("x").unwrap_err(),
        BuildError::AttributeOrder(attr::SOFTWARE)
    );
    assert_eq!(
        b.fingerprint().unwrap_err(),
        BuildError::AttributeOrder(attr::FINGERPRINT)
    );
    let n = b.finish();
    assert_eq!(
        Message::parse(&buf[..n]).unwrap().check_fingerprint(),
        Some(true)
    );

    let mut buf = vec![0u8; 70_000];
    let mut b = MessageBuilder::new(&mut buf, Class::Indication, Method::SEND, TID).unwrap();
    assert!(matches!(
        b.data(&[0; 0x10000]),
        Err(BuildError::ValueTooLong { .. })
    ));
    b.data(&[0; 0xFFF0]).unwrap();
    assert_eq!(b.data(&[0; 16]).unwrap_err(), BuildError::MessageTooLong);
    b.data(&[0; 4]).unwrap();
    assert_eq!(b.len(), 20 + 0xFFFC);
    let n = b.finish();
    assert!(Message::parse(&buf[..n]).is_ok());

    let mut buf = [0u8; 100];
    let mut b = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
    b.message_integrity(b"k").unwrap();
    assert_eq!(
        b.username("u").unwrap_err(),
        BuildError::AttributeOrder(attr::USERNAME)
    );
    assert_eq!(
        b.message_integrity(b"k").unwrap_err(),
        BuildError::AttributeOrder(attr::MESSAGE_INTEGRITY)
    );
    b.message_integrity_sha256(b"k").unwrap();
    assert_eq!(
        b.message_integrity_sha256(b"k").unwrap_err(),
        BuildError::AttributeOrder(attr::MESSAGE_INTEGRITY_SHA256)
    );
}

#[test]
fn add_with_writes_in_place() {
    let b = build(|b| {
        b.add_with(attr::DATA, 5, |v| v.copy_from_slice(b"hello"))
            .unwrap();
        b.add(0x8123, b"opt").unwrap();
    });
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.data().unwrap(), Some(&b"hello"[..]));
    assert_eq!(m.get(0x8123).unwrap().value, b"opt");
    assert_eq!(&b[b.len() - 1..], &[0]);
}

#[test]
fn ipv4_mapped_ipv6_stays_ipv6() {
    let a: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
    let b = build(|b| {
        b.xor_mapped_address(a).unwrap().mapped_address(a).unwrap();
    });
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.xor_mapped_address().unwrap(), Some(a));
    assert_eq!(m.mapped_address().unwrap(), Some(a));
}
