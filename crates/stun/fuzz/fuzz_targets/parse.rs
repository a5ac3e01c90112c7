//! Parses arbitrary bytes as a STUN message (calling every getter and both integrity checks),
//! as ChannelData, and as the start of a stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_stun::{attr, header_transaction_id, stream_frame_len, ChannelData, Message};

fn exercise(m: &Message<'_>) {
    let _ = (
        m.class(),
        m.method(),
        m.transaction_id(),
        m.cookie(),
        m.is_rfc3489(),
        m.raw_type(),
    );
    for a in m.attributes() {
        let _ = (a.typ, a.value, a.offset, attr::name(a.typ), m.get(a.typ));
    }
    let _ = m.unknown_comprehension_required(attr::is_known);
    let _ = m.check_fingerprint();
    let _ = m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt");
    let _ = m.verify_integrity_sha256(b"VOkJxbRl1RmTxUk/WvJxBt");
    let _ = (
        m.xor_mapped_address(),
        m.mapped_address(),
        m.xor_peer_address(),
        m.xor_relayed_address(),
    );
    let _ = m.xor_peer_addresses().count() + m.xor_relayed_addresses().count();
    let _ = (
        m.username(),
        m.realm(),
        m.nonce(),
        m.software(),
        m.alternate_domain(),
    );
    let _ = (
        m.error_code(),
        m.lifetime(),
        m.requested_transport(),
        m.channel_number(),
        m.data(),
    );
    let _ = (
        m.even_port(),
        m.reservation_token(),
        m.dont_fragment(),
        m.requested_address_family(),
    );
    let _ = (
        m.additional_address_family(),
        m.address_error_code(),
        m.icmp(),
        m.change_request(),
    );
    let _ = (
        m.response_port(),
        m.padding(),
        m.response_origin(),
        m.other_address(),
    );
    let _ = (
        m.changed_address(),
        m.source_address(),
        m.response_address(),
        m.reflected_from(),
    );
    let _ = (
        m.priority(),
        m.use_candidate(),
        m.ice_controlled(),
        m.ice_controlling(),
    );
    let _ = (
        m.password_algorithm(),
        m.userhash(),
        m.alternate_server(),
        m.connection_id(),
    );
    if let Ok(Some(it)) = m.password_algorithms() {
        let _ = it.count();
    }
    if let Ok(Some(it)) = m.unknown_attributes() {
        let _ = it.count();
    }
}

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
