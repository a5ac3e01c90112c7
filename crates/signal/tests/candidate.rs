//! The RFC 8839 candidate parser: real browser candidates, every error, and property tests.

use std::net::IpAddr;

use proptest::prelude::*;
use switchboard_signal::{Address, Candidate, CandidateError, CandidateType, TcpType, Transport};

fn parse(s: &str) -> Result<Candidate, CandidateError> {
    Candidate::parse(s)
}

#[test]
fn chrome_host_udp() {
    let c = parse("candidate:842163049 1 udp 1677729535 192.0.2.7 54400 typ host generation 0 ufrag EsAw network-id 1 network-cost 10").unwrap();
    assert_eq!(c.foundation, "842163049");
    assert_eq!(c.component, 1);
    assert_eq!(c.transport, Transport::Udp);
    assert_eq!(c.priority, 1677729535);
    assert_eq!(c.address, Address::Ip("192.0.2.7".parse().unwrap()));
    assert_eq!(c.port, 54400);
    assert_eq!(c.kind, CandidateType::Host);
    assert_eq!(c.related, None);
    assert_eq!(c.extensions.len(), 4);
    assert_eq!(
        c.to_string(),
        "candidate:842163049 1 udp 1677729535 192.0.2.7 54400 typ host generation 0 ufrag EsAw network-id 1 network-cost 10"
    );
}

#[test]
fn firefox_srflx_with_a_prefix_and_uppercase_udp() {
    let c = parse(
        "a=candidate:1 1 UDP 1686052607 203.0.113.9 61000 typ srflx raddr 10.0.0.2 rport 61000",
    )
    .unwrap();
    assert_eq!(c.kind, CandidateType::Srflx);
    assert_eq!(
        c.related,
        Some((Address::Ip("10.0.0.2".parse().unwrap()), 61000))
    );
    assert_eq!(
        c.to_string(),
        "candidate:1 1 udp 1686052607 203.0.113.9 61000 typ srflx raddr 10.0.0.2 rport 61000"
    );
}

#[test]
fn mdns_host_and_srflx_with_zero_raddr() {
    let c = parse(
        "candidate:3 1 udp 2122260223 1F4712DB-ea17-4bcf-a596-105139dfd8bf.local 50001 typ host",
    )
    .unwrap();
    assert_eq!(
        c.address,
        Address::Mdns("1f4712db-ea17-4bcf-a596-105139dfd8bf.local".into())
    );
    let s =
        parse("candidate:4 1 udp 1686052607 198.51.100.1 50001 typ srflx raddr 0.0.0.0 rport 0")
            .unwrap();
    assert_eq!(
        s.related,
        Some((Address::Ip("0.0.0.0".parse().unwrap()), 0))
    );
}

#[test]
fn ipv6_is_canonicalized() {
    let c = parse("candidate:5 2 udp 2122262783 2001:DB8:0:0:0:0:0:1 9 typ host").unwrap();
    assert_eq!(c.component, 2);
    assert_eq!(
        c.address,
        Address::Ip("2001:db8::1".parse::<IpAddr>().unwrap())
    );
    assert!(c.to_string().contains(" 2001:db8::1 9 "));
}

#[test]
fn tcp_types_and_relay() {
    let c = parse("candidate:6 1 TCP 1518280447 192.0.2.7 9 typ host tcptype active").unwrap();
    assert_eq!(c.transport, Transport::Tcp(TcpType::Active));
    assert_eq!(
        c.to_string(),
        "candidate:6 1 tcp 1518280447 192.0.2.7 9 typ host tcptype active"
    );
    let p = parse("candidate:7 1 tcp 1518280447 192.0.2.7 443 typ host tcptype passive").unwrap();
    assert_eq!(p.transport, Transport::Tcp(TcpType::Passive));
    let s = parse("candidate:8 1 tcp 1 192.0.2.7 443 typ prflx raddr 10.0.0.1 rport 5 tcptype so")
        .unwrap();
    assert_eq!(s.transport, Transport::Tcp(TcpType::So));
    let r = parse("candidate:9 1 udp 41885439 203.0.113.1 49152 typ relay raddr 198.51.100.3 rport 3478 generation 0").unwrap();
    assert_eq!(r.kind, CandidateType::Relay);
}

#[test]
fn boundaries_accepted() {
    assert!(parse(
        "candidate:abcdefghijklmnopqrstuvwxyz+/0123 256 udp 2147483647 ::1 65535 typ host"
    )
    .is_ok());
    assert!(parse("candidate:a 1 udp 1 ::1 0 typ host").is_ok());
}

#[test]
fn every_error() {
    use CandidateError::*;
    let cases: &[(&str, CandidateError)] = &[
        ("", MissingPrefix),
        ("candidat:1 1 udp 1 ::1 1 typ host", MissingPrefix),
        ("a=x", MissingPrefix),
        ("candidate:", Foundation),
        ("candidate:1", Missing("component")),
        ("candidate:1 1", Missing("transport")),
        ("candidate:1 1 udp", Missing("priority")),
        ("candidate:1 1 udp 1", Missing("address")),
        ("candidate:1 1 udp 1 ::1", Missing("port")),
        ("candidate:1 1 udp 1 ::1 1", Missing("typ")),
        ("candidate:1 1 udp 1 ::1 1 typ", Missing("candidate type")),
        ("candidate:1  1 udp 1 ::1 1 typ host", BadSeparator),
        ("candidate:1 1 udp 1 ::1 1 typ host ", BadSeparator),
        (" candidate:1 1 udp 1 ::1 1 typ host", MissingPrefix),
        ("candidate:1 1 udp 1 ::1 1 typ host\r\n", BadSeparator),
        ("candidate:1 1 udp 1 ::1 1\ttyp host", BadSeparator),
        (
            "candidate:abcdefghijklmnopqrstuvwxyz+/01234 1 udp 1 ::1 1 typ host",
            Foundation,
        ),
        ("candidate:a-b 1 udp 1 ::1 1 typ host", Foundation),
        ("candidate:1 0 udp 1 ::1 1 typ host", Component),
        ("candidate:1 257 udp 1 ::1 1 typ host", Component),
        ("candidate:1 0001 udp 1 ::1 1 typ host", Component),
        ("candidate:1 +1 udp 1 ::1 1 typ host", Component),
        ("candidate:1 1 sctp 1 ::1 1 typ host", Transport),
        ("candidate:1 1 udp 0 ::1 1 typ host", Priority),
        ("candidate:1 1 udp 2147483648 ::1 1 typ host", Priority),
        ("candidate:1 1 udp 99999999999 ::1 1 typ host", Priority),
        ("candidate:1 1 udp -1 ::1 1 typ host", Priority),
        ("candidate:1 1 udp 1 example.com 1 typ host", Address),
        ("candidate:1 1 udp 1 .local 1 typ host", Address),
        ("candidate:1 1 udp 1 a_b.local 1 typ host", Address),
        ("candidate:1 1 udp 1 -a.local 1 typ host", Address),
        ("candidate:1 1 udp 1 256.1.1.1 1 typ host", Address),
        ("candidate:1 1 udp 1 [::1] 1 typ host", Address),
        ("candidate:1 1 udp 1 ::1 65536 typ host", Port),
        ("candidate:1 1 udp 1 ::1 x typ host", Port),
        ("candidate:1 1 udp 1 ::1 1 type host", Typ),
        ("candidate:1 1 udp 1 ::1 1 typ foo", CandidateType),
        ("candidate:1 1 udp 1 ::1 1 typ HOST", CandidateType),
        (
            "candidate:1 1 udp 1 ::1 1 typ srflx raddr ::1",
            RelatedAddress,
        ),
        (
            "candidate:1 1 udp 1 ::1 1 typ srflx raddr ::1 port 1",
            RelatedAddress,
        ),
        (
            "candidate:1 1 udp 1 ::1 1 typ srflx rport 1 raddr ::1",
            RelatedAddress,
        ),
        (
            "candidate:1 1 udp 1 ::1 1 typ srflx raddr nope rport 1",
            Address,
        ),
        (
            "candidate:1 1 udp 1 ::1 1 typ srflx raddr ::1 rport 70000",
            Port,
        ),
        (
            "candidate:1 1 udp 1 ::1 1 typ host generation 0 raddr ::1 rport 1",
            RelatedAddress,
        ),
        ("candidate:1 1 udp 1 ::1 1 typ host typ host", Typ),
        ("candidate:1 1 tcp 1 ::1 1 typ host", TcpType),
        ("candidate:1 1 tcp 1 ::1 1 typ host tcptype both", TcpType),
        (
            "candidate:1 1 tcp 1 ::1 1 typ host tcptype so tcptype so",
            TcpType,
        ),
        ("candidate:1 1 udp 1 ::1 1 typ host tcptype active", TcpType),
        ("candidate:1 1 udp 1 ::1 1 typ host generation", Extension),
        (
            "candidate:1 1 udp 1 ::1 1 typ host generation 0 generation 1",
            Extension,
        ),
        ("candidate:1 1 udp 1 ::1 1 typ host n\u{e9} 1", Extension),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input).as_ref(), Err(want), "{input:?}");
    }
    let mut many = String::from("candidate:1 1 udp 1 ::1 1 typ host");
    for i in 0..17 {
        many.push_str(&format!(" x{i} {i}"));
    }
    assert_eq!(parse(&many), Err(Extension));
    let long = format!("candidate:1 1 udp 1 ::1 1 typ host x {}", "a".repeat(1024));
    assert_eq!(parse(&long), Err(TooLong));
}

#[test]
fn errors_have_clear_messages() {
    assert_eq!(
        CandidateError::Component.to_string(),
        "invalid component id (1..=256)"
    );
    assert_eq!(
        CandidateError::Missing("port").to_string(),
        "candidate field missing: port"
    );
}

fn arb_address() -> impl Strategy<Value = Address> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|a| Address::Ip(a.into())),
        any::<std::net::Ipv6Addr>().prop_map(|a| Address::Ip(a.into())),
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,2}"
            .prop_map(|h| Address::Mdns(format!("{h}.local"))),
    ]
}

fn arb_candidate() -> impl Strategy<Value = Candidate> {
    let transport = prop_oneof![
        Just(Transport::Udp),
        Just(Transport::Tcp(TcpType::Active)),
        Just(Transport::Tcp(TcpType::Passive)),
        Just(Transport::Tcp(TcpType::So)),
    ];
    let kind = prop_oneof![
        Just(CandidateType::Host),
        Just(CandidateType::Srflx),
        Just(CandidateType::Prflx),
        Just(CandidateType::Relay),
    ];
    let extensions = proptest::collection::btree_map("x[a-z-]{0,10}", "[!-~]{1,12}", 0..6)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    (
        "[A-Za-z0-9+/]{1,32}",
        1u16..=256,
        transport,
        1u32..=0x7fff_ffff,
        arb_address(),
        any::<u16>(),
        kind,
        proptest::option::of((arb_address(), any::<u16>())),
        extensions,
    )
        .prop_map(
            |(
                foundation,
                component,
                transport,
                priority,
                address,
                port,
                kind,
                related,
                extensions,
            )| {
                Candidate {
                    foundation,
                    component,
                    transport,
                    priority,
                    address,
                    port,
                    kind,
                    related,
                    extensions,
                }
            },
        )
}

proptest! {
    #[test]
    fn any_string_never_panics(s in "\\PC{0,200}") {
        let _ = Candidate::parse(&s);
    }

    #[test]
    fn any_prefixed_string_never_panics(s in "[ -~]{0,120}") {
        let _ = Candidate::parse(&format!("candidate:{s}"));
    }

    #[test]
    fn token_soup_never_panics(words in proptest::collection::vec(
        prop_oneof![
            Just("typ".to_string()), Just("raddr".to_string()), Just("rport".to_string()),
            Just("tcptype".to_string()), Just("udp".to_string()), Just("tcp".to_string()),
            Just("host".to_string()), Just("1".to_string()), Just("::1".to_string()),
            "[a-z0-9.:]{1,6}",
        ], 0..16)) {
        let _ = Candidate::parse(&format!("candidate:{}", words.join(" ")));
    }

    #[test]
    fn round_trip(c in arb_candidate()) {
        let text = c.to_string();
        let parsed = Candidate::parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&c), "{}", text);
        let again = Candidate::parse(&format!("a={text}"));
        prop_assert_eq!(again, Ok(c));
    }
}
