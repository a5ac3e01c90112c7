//! Feeds arbitrary bytes to the Centrifugo client-protocol decoders (`/connection/websocket`:
//! JSON lines and varint-delimited protobuf commands, switchboard_proto::centrifugo). Nothing may
//! panic; every reply the decoder makes itself (108 not available, 104 method not found) must
//! encode in both forms, and every command it hands on must be valid switchboard protobuf (a
//! round trip gives it back unchanged).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::centrifugo::{self as cf, ConnectExtras, Decoded};
use switchboard_proto::prost::Message as _;
use switchboard_proto::v1 as proto;

fn check(decoded: Vec<Decoded>) {
    let extras = ConnectExtras { ping_secs: 25 };
    for d in decoded {
        match d {
            Decoded::Command(c) | Decoded::PositionOnly(c) => {
                let again = proto::Command::decode(c.encode_to_vec().as_slice()).expect("round trip");
                assert_eq!(again, c);
            }
            Decoded::Answer(r) => {
                let json = cf::reply_json(&r, extras, false);
                serde_json::from_str::<serde_json::Value>(&json).expect("reply JSON parses");
                let _ = cf::reply_proto(&r, extras, false);
            }
            Decoded::Nothing => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = cf::decode_proto(data) {
        check(d);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = cf::decode_json(text) {
            check(d);
        }
    }
});
