//! SDP, candidate-message and bye validation: every refusal and the normalized values.

use switchboard_signal::{
    ByeError, CandidateMessageError, Limits, MediaRef, Message, SdpError, SdpKind, Validator,
};

/// A data-channel-only offer as a browser makes it (shared with the other crate's tests).
const OFFER: &str = include_str!("fixtures/datachannel-offer.sdp");

fn answer_sdp() -> String {
    OFFER.replace("a=setup:actpass", "a=setup:active")
}

fn v() -> Validator {
    Validator::default()
}

#[test]
fn offer_and_answer_are_accepted_and_normalized() {
    let Ok(Message::Offer(d)) = v().offer("offer", OFFER) else {
        panic!("offer refused")
    };
    assert_eq!(d.kind(), SdpKind::Offer);
    assert_eq!(d.sdp(), OFFER);
    // LF-only line endings and trailing blanks come out as CRLF lines.
    let lf = answer_sdp().replace("\r\n", "  \n") + "\n";
    let Ok(Message::Answer(a)) = v().answer("answer", &lf) else {
        panic!("answer refused")
    };
    assert_eq!(a.sdp(), answer_sdp());
}

#[test]
fn wrong_type_is_refused() {
    assert_eq!(
        v().offer("answer", OFFER),
        Err(SdpError::WrongType {
            expected: SdpKind::Offer,
            found: "answer".into()
        })
    );
    for t in ["offer", "pranswer", "rollback", "", "ANSWER"] {
        assert!(
            matches!(
                v().answer(t, &answer_sdp()),
                Err(SdpError::WrongType { .. })
            ),
            "{t}"
        );
    }
    let long = "x".repeat(100);
    let Err(SdpError::WrongType { found, .. }) = v().offer(&long, OFFER) else {
        panic!()
    };
    assert_eq!(found.len(), 16);
}

#[test]
fn answer_with_actpass_is_refused() {
    assert_eq!(v().answer("answer", OFFER), Err(SdpError::ActpassInAnswer));
}

#[test]
fn size_limit() {
    let small = Validator::new(Limits {
        max_sdp_bytes: 100,
        ..Limits::default()
    });
    assert_eq!(
        small.offer("offer", OFFER),
        Err(SdpError::TooLarge {
            size: OFFER.len(),
            limit: 100
        })
    );
    let huge = format!("{OFFER}{}", "a=x-pad:1\r\n".repeat(7000));
    assert!(huge.len() > 64 * 1024);
    assert!(matches!(
        v().offer("offer", &huge),
        Err(SdpError::TooLarge { limit: 65536, .. })
    ));
}

#[test]
fn malformed_sdp_is_refused() {
    for bad in [
        "",
        "hello",
        "v=0\r\n",
        "v=1\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        &OFFER.replace("m=application 9", "m=application x"),
        &OFFER.replace("o=- 4611731400430051336 2 IN IP4 127.0.0.1", "o=broken"),
        &OFFER.replace("s=-", "s=-\u{0}"),
        &OFFER.replace("s=-", "s=\u{1b}-"),
    ] {
        assert!(
            matches!(v().offer("offer", bad), Err(SdpError::Malformed(_))),
            "{bad:?}: {:?}",
            v().offer("offer", bad)
        );
    }
}

#[test]
fn media_count_bounds() {
    let no_media = OFFER.split("m=").next().unwrap_or_default();
    assert_eq!(v().offer("offer", no_media), Err(SdpError::NoMedia));
    let one_m = Validator::new(Limits {
        max_m_lines: 0,
        ..Limits::default()
    });
    assert_eq!(
        one_m.offer("offer", OFFER),
        Err(SdpError::TooManyMedia { count: 1, limit: 0 })
    );
}

#[test]
fn candidate_message() {
    let c = "candidate:1 1 UDP 2122260223 192.0.2.7 54400 typ host";
    let Ok(Message::Candidate(ic)) = v().candidate(c, Some("0"), Some(0), Some("EsAw")) else {
        panic!()
    };
    assert_eq!(
        ic.candidate.to_string(),
        "candidate:1 1 udp 2122260223 192.0.2.7 54400 typ host"
    );
    assert_eq!(
        ic.media,
        MediaRef {
            mid: Some("0".into()),
            m_line_index: Some(0)
        }
    );
    assert_eq!(ic.username_fragment.as_deref(), Some("EsAw"));
    assert!(v().candidate(c, None, Some(63), None).is_ok());
    assert!(v().candidate(c, Some("audio"), None, None).is_ok());
}

#[test]
fn candidate_message_errors() {
    let c = "candidate:1 1 udp 1 ::1 1 typ host";
    assert_eq!(
        v().candidate(c, None, None, None),
        Err(CandidateMessageError::NoMediaReference)
    );
    assert_eq!(
        v().candidate(c, None, Some(64), None),
        Err(CandidateMessageError::MLineIndex {
            index: 64,
            limit: 64
        })
    );
    assert!(matches!(
        v().candidate(c, None, Some(u32::MAX), None),
        Err(CandidateMessageError::MLineIndex { .. })
    ));
    for mid in ["", "a b", "x\"y", &"m".repeat(33)] {
        assert_eq!(
            v().candidate(c, Some(mid), Some(0), None),
            Err(CandidateMessageError::Mid),
            "{mid:?}"
        );
    }
    for ufrag in ["abc", "ab:cd", &"u".repeat(257)] {
        assert_eq!(
            v().candidate(c, Some("0"), None, Some(ufrag)),
            Err(CandidateMessageError::UsernameFragment)
        );
    }
    assert_eq!(
        v().candidate("candidate:1 1 udp 0 ::1 1 typ host", Some("0"), None, None),
        Err(CandidateMessageError::Candidate(
            switchboard_signal::CandidateError::Priority
        ))
    );
}

#[test]
fn end_of_candidates() {
    assert_eq!(
        v().candidate("", Some("0"), Some(0), None),
        Ok(Message::EndOfCandidates(MediaRef {
            mid: Some("0".into()),
            m_line_index: Some(0)
        }))
    );
    assert_eq!(
        v().candidate("", None, None, None),
        Err(CandidateMessageError::NoMediaReference)
    );
}

#[test]
fn bye() {
    assert_eq!(
        v().bye("hang up"),
        Ok(Message::Bye {
            reason: "hang up".into()
        })
    );
    assert_eq!(v().bye(&"r".repeat(257)), Err(ByeError::Reason));
    assert_eq!(v().bye("a\nb"), Err(ByeError::Reason));
}

#[test]
fn top_level_error_wraps_all() {
    let e: switchboard_signal::Error = SdpError::NoMedia.into();
    assert_eq!(e.to_string(), "SDP has no media section");
    let e: switchboard_signal::Error = switchboard_signal::RoomError::RoomFull.into();
    assert_eq!(e.to_string(), "room is full");
}

mod never_panics {
    use proptest::prelude::*;
    use switchboard_signal::Validator;

    proptest! {
        #[test]
        fn any_sdp(s in "\\PC{0,300}") {
            let _ = Validator::default().offer("offer", &s);
        }

        #[test]
        fn mutated_offer(cut in 0usize..800, junk in "[ -~\r\n]{0,40}") {
            let mut s: String = super::OFFER.chars().take(cut).collect();
            s.push_str(&junk);
            s.push_str(&super::OFFER.chars().skip(cut).collect::<String>());
            let _ = Validator::default().offer("offer", &s);
            let _ = Validator::default().answer("answer", &s);
        }

        #[test]
        fn any_candidate_message(c in "\\PC{0,100}", mid in proptest::option::of("\\PC{0,40}"), idx in proptest::option::of(any::<u32>()), u in proptest::option::of("\\PC{0,10}")) {
            let _ = Validator::default().candidate(&c, mid.as_deref(), idx, u.as_deref());
        }
    }
}

const CHROME_AUDIO_OFFER: &str = "v=0\r
o=- 8734505829183927641 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS 5d2e0c6d-8b9c-4a25-9a6c-2f3f6b6d1a11\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 0.0.0.0\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=ice-ufrag:Ao3P\r
a=ice-pwd:1xEuMH7d5d0MaxhBsA1kBbwQ\r
a=ice-options:trickle\r
a=fingerprint:sha-256 9B:0C:2F:37:9E:0E:4D:0B:83:C1:6E:2C:1C:4A:24:0E:7A:9C:6D:5C:4F:0E:1B:2A:3D:6E:5F:7A:8B:9C:0D:1E\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=sendrecv\r
a=msid:5d2e0c6d-8b9c-4a25-9a6c-2f3f6b6d1a11 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=fmtp:63 111/111\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6\r
a=ssrc:3735928559 msid:5d2e0c6d-8b9c-4a25-9a6c-2f3f6b6d1a11 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\r
a=x-google-flag:conference\r
";

#[test]
fn chrome_audio_offer_with_unknown_attribute_is_kept_verbatim() {
    let Ok(Message::Offer(d)) = v().offer("offer", CHROME_AUDIO_OFFER) else {
        panic!("{:?}", v().offer("offer", CHROME_AUDIO_OFFER))
    };
    assert_eq!(d.sdp(), CHROME_AUDIO_OFFER);
    assert!(d.sdp().contains("a=x-google-flag:conference\r\n"));
}
