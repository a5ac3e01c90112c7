use std::net::SocketAddr;

use switchboard_stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};

use super::*;

const TID: TransactionId = TransactionId([9; 12]);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn arrival(other: Option<&str>, transport: Transport) -> Arrival {
    Arrival {
        peer: addr("198.51.100.7:40000"),
        local: addr("203.0.113.1:3478"),
        other: other.map(addr),
        transport,
    }
}

/// Builds a request with `f` adding attributes, then FINGERPRINT.
fn request(method: Method, f: impl FnOnce(&mut MessageBuilder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = {
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, TID).unwrap();
        f(&mut b);
        b.fingerprint().unwrap();
        b.finish()
    };
    buf.truncate(n);
    buf
}

fn handle(arrival: &Arrival, input: &[u8]) -> (Output<'static>, Vec<u8>) {
    let mut out = vec![0u8; MAX_REPLY];
    let action = BindingService::new("test sw").handle(arrival, input, &mut out);
    if let Output::Reply { len, .. } = action {
        out.truncate(len);
    } else {
        out.clear();
    }
    (action, out)
}

#[test]
fn plain_binding_ipv4() {
    let a = arrival(None, Transport::Udp);
    let (action, out) = handle(&a, &request(Method::BINDING, |_| {}));
    assert!(matches!(
        action,
        Output::Reply {
            via: Via::Same,
            error: false,
            ..
        }
    ));
    let Output::Reply { to, .. } = action else {
        unreachable!()
    };
    assert_eq!(to, a.peer);
    let m = Message::parse(&out).unwrap();
    assert_eq!(
        (m.class(), m.method(), m.transaction_id()),
        (Class::Success, Method::BINDING, TID)
    );
    assert_eq!(m.xor_mapped_address().unwrap(), Some(a.peer));
    assert_eq!(m.software().unwrap(), Some("test sw"));
    assert_eq!(m.check_fingerprint(), Some(true));
    assert!(m.get(attr::OTHER_ADDRESS).is_none());
    assert!(m.get(attr::RESPONSE_ORIGIN).is_none());
}

#[test]
fn plain_binding_ipv6() {
    let a = Arrival {
        peer: addr("[2001:db8::7]:40000"),
        local: addr("[2001:db8::1]:3478"),
        other: None,
        transport: Transport::Tcp,
    };
    let (_, out) = handle(&a, &request(Method::BINDING, |_| {}));
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.xor_mapped_address().unwrap(), Some(a.peer));
}

#[test]
fn rfc5780_other_address_and_origin() {
    let a = arrival(Some("203.0.113.2:3479"), Transport::Udp);
    let (_, out) = handle(&a, &request(Method::BINDING, |_| {}));
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.other_address().unwrap(), Some(addr("203.0.113.2:3479")));
    assert_eq!(m.response_origin().unwrap(), Some(a.local));
}

#[test]
fn change_request_picks_the_socket_and_origin() {
    let a = arrival(Some("203.0.113.2:3479"), Transport::Udp);
    let cases = [
        (false, false, Via::Same, "203.0.113.1:3478"),
        (true, false, Via::ChangeIp, "203.0.113.2:3478"),
        (false, true, Via::ChangePort, "203.0.113.1:3479"),
        (true, true, Via::ChangeBoth, "203.0.113.2:3479"),
    ];
    for (ip, port, want_via, want_origin) in cases {
        let (action, out) = handle(
            &a,
            &request(Method::BINDING, |b| {
                b.change_request(ip, port).unwrap();
            }),
        );
        let Output::Reply { via, to, error, .. } = action else {
            panic!("{action:?}")
        };
        assert_eq!((via, to, error), (want_via, a.peer, false));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.response_origin().unwrap(), Some(addr(want_origin)));
    }
}

#[test]
fn change_request_without_alternate_is_420() {
    let a = arrival(None, Transport::Udp);
    let (action, out) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.change_request(true, true).unwrap();
        }),
    );
    assert!(matches!(
        action,
        Output::Reply {
            via: Via::Same,
            error: true,
            ..
        }
    ));
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.class(), Class::Error);
    assert_eq!(m.error_code().unwrap().map(|e| e.0), Some(420));
    let unknown: Vec<u16> = m.unknown_attributes().unwrap().unwrap().collect();
    assert_eq!(unknown, vec![attr::CHANGE_REQUEST]);
    // A CHANGE-REQUEST asking for no change is fine without an alternate address.
    let (action, _) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.change_request(false, false).unwrap();
        }),
    );
    assert!(matches!(action, Output::Reply { error: false, .. }));
}

#[test]
fn change_request_over_tcp_is_400() {
    let a = arrival(Some("203.0.113.2:3479"), Transport::Tcp);
    let (_, out) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.change_request(true, false).unwrap();
        }),
    );
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.error_code().unwrap().map(|e| e.0), Some(400));
}

#[test]
fn response_port_redirects_on_udp_only() {
    let a = arrival(None, Transport::Udp);
    let (action, _) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.response_port(5555).unwrap();
        }),
    );
    let Output::Reply { to, .. } = action else {
        panic!()
    };
    assert_eq!(to, addr("198.51.100.7:5555"));
    let a = arrival(None, Transport::Tls);
    let (_, out) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.response_port(5555).unwrap();
        }),
    );
    assert_eq!(
        Message::parse(&out)
            .unwrap()
            .error_code()
            .unwrap()
            .map(|e| e.0),
        Some(400)
    );
}

#[test]
fn padding_is_echoed_and_bounded() {
    let a = arrival(None, Transport::Udp);
    let (_, out) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.padding(400).unwrap();
        }),
    );
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.padding().unwrap().map(|p| p.len()), Some(400));
    assert_eq!(m.check_fingerprint(), Some(true));
    let (_, out) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.padding(MAX_REPLY).unwrap();
        }),
    );
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.error_code().unwrap().map(|e| e.0), Some(400));
}

#[test]
fn unknown_comprehension_required_is_420_optional_is_ignored() {
    let a = arrival(None, Transport::Udp);
    let (_, out) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.add(0x0031, b"abcd").unwrap();
            b.add(0x7f00, b"x").unwrap();
            b.add(0x8fff, b"ignored").unwrap();
        }),
    );
    let m = Message::parse(&out).unwrap();
    assert_eq!(m.error_code().unwrap().map(|e| e.0), Some(420));
    let unknown: Vec<u16> = m.unknown_attributes().unwrap().unwrap().collect();
    assert_eq!(unknown, vec![0x0031, 0x7f00]);
    assert_eq!(m.check_fingerprint(), Some(true));
    assert_eq!(m.transaction_id(), TID);

    let (action, _) = handle(
        &a,
        &request(Method::BINDING, |b| {
            b.add(0x8fff, b"ignored").unwrap();
        }),
    );
    assert!(matches!(action, Output::Reply { error: false, .. }));
}

#[test]
fn other_methods_get_400() {
    let a = arrival(None, Transport::Udp);
    let (action, out) = handle(
        &a,
        &request(Method::ALLOCATE, |b| {
            b.requested_transport(17).unwrap();
        }),
    );
    assert!(matches!(action, Output::Reply { error: true, .. }));
    let m = Message::parse(&out).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Error, Method::ALLOCATE));
    assert_eq!(m.error_code().unwrap().map(|e| e.0), Some(400));
}

#[test]
fn drops_are_classified() {
    let a = arrival(None, Transport::Udp);
    let good = request(Method::BINDING, |_| {});

    let mut bad_fp = good.clone();
    let last = bad_fp.len() - 1;
    bad_fp[last] ^= 0xff;
    assert_eq!(
        handle(&a, &bad_fp).0,
        Output::Drop(DropReason::BadFingerprint)
    );

    assert_eq!(
        handle(&a, &good[..good.len() - 4]).0,
        Output::Drop(DropReason::Malformed)
    );
    assert_eq!(handle(&a, &[]).0, Output::Drop(DropReason::NotStun));
    assert_eq!(
        handle(&a, b"\x16\x03\x01\x00").0,
        Output::Drop(DropReason::NotStun)
    );
    assert_eq!(
        handle(&a, &[0x40, 0x00, 0x00, 0x00]).0,
        Output::Drop(DropReason::ChannelData)
    );

    let mut buf = [0u8; 64];
    let n = {
        let b = MessageBuilder::new(&mut buf, Class::Indication, Method::BINDING, TID).unwrap();
        b.finish()
    };
    assert_eq!(
        handle(&a, &buf[..n]).0,
        Output::Drop(DropReason::Indication)
    );
    let n = {
        let b = MessageBuilder::new(&mut buf, Class::Success, Method::BINDING, TID).unwrap();
        b.finish()
    };
    assert_eq!(handle(&a, &buf[..n]).0, Output::Drop(DropReason::Response));
    assert!(DropReason::BadFingerprint.is_fault() && !DropReason::Indication.is_fault());
}

#[test]
fn rfc3489_request_gets_classic_attributes() {
    // A classic request: no magic cookie, a 128-bit transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00];
    req.extend_from_slice(&[0xAB; 16]);
    let a = arrival(Some("203.0.113.2:3479"), Transport::Udp);
    let (action, out) = handle(&a, &req);
    assert!(matches!(action, Output::Reply { error: false, .. }));
    let m = Message::parse(&out).unwrap();
    assert!(m.is_rfc3489());
    assert_eq!(&out[4..20], &[0xAB; 16], "the 128-bit id is echoed");
    assert_eq!(m.mapped_address().unwrap(), Some(a.peer));
    assert_eq!(m.source_address().unwrap(), Some(a.local));
    assert_eq!(m.changed_address().unwrap(), Some(addr("203.0.113.2:3479")));
    assert!(m.get(attr::XOR_MAPPED_ADDRESS).is_none());
    assert!(m.get(attr::SOFTWARE).is_none());
    assert!(m.get(attr::FINGERPRINT).is_none());
}

#[test]
fn tiny_output_buffer_is_not_a_panic() {
    let a = arrival(None, Transport::Udp);
    let mut out = [0u8; 24];
    let action = BindingService::new("x").handle(&a, &request(Method::BINDING, |_| {}), &mut out);
    assert_eq!(action, Output::Drop(DropReason::OutputTooSmall));
}

#[test]
fn any_bytes_never_panic() {
    // A cheap deterministic sweep; the codec itself is property-tested and fuzzed.
    let a = arrival(Some("203.0.113.2:3479"), Transport::Udp);
    let good = request(Method::BINDING, |b| {
        b.change_request(true, true).unwrap();
        b.padding(8).unwrap();
    });
    let mut out = vec![0u8; MAX_REPLY];
    let service = BindingService::new("x");
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut m = good.clone();
            m[i] ^= 1 << bit;
            let _ = service.handle(&a, &m, &mut out);
        }
        let _ = service.handle(&a, &good[..i], &mut out);
    }
}
