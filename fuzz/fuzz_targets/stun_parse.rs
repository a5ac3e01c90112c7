//! Parses arbitrary bytes as a STUN message (calling every getter and both integrity checks),
//! as ChannelData, and as the start of a stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_stun::testing::exercise;
use switchboard_stun::{header_transaction_id, stream_frame_len, ChannelData, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        exercise(&m);
    }
    let _ = ChannelData::parse(data);
    let _ = header_transaction_id(data);
    // Split the input as a stream would be.
    let mut rest = data;
    while let Ok(Some(n)) = stream_frame_len(rest) {
        let Some(frame) = rest.get(..n) else { break };
        if let Ok(m) = Message::parse(frame) {
            exercise(&m);
        }
        let _ = ChannelData::parse(frame);
        rest = &rest[n..];
    }
});
