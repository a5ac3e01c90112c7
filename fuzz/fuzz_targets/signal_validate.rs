//! Feeds arbitrary text to every validator of untrusted signaling input: SDP offers and answers
//! (webrtc-sdp underneath), RFC 8839 candidate lines (the normalized form must parse back to
//! the same candidate), candidate messages and bye reasons. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_signal::{Candidate, Validator};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let v = Validator::default();
    let _ = v.offer("offer", text);
    let _ = v.answer("answer", text);
    let _ = v.bye(text);
    if let Ok(c) = Candidate::parse(text) {
        let line = c.to_string();
        let again = Candidate::parse(&line).expect("the normalized line parses");
        assert_eq!(again, c, "normalization is stable");
    }
    // The first line as a candidate, the rest as its media reference.
    let (line, rest) = text.split_once('\n').unwrap_or((text, ""));
    let _ = v.candidate(line, Some(rest), rest.len().try_into().ok(), Some(rest));
});
