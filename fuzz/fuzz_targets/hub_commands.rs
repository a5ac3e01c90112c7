//! Feeds arbitrary bytes to the two decoders that turn a client's frame into a hub `Command` —
//! protobuf (`switchboard.proto` WebSocket frames, WebTransport and gRPC messages) and the
//! switchboard JSON mapping (`switchboard.json` WebSocket frames) — then runs every command
//! that decodes through a session of a fresh in-memory hub (anonymous, everything allowed; a new
//! hub per input, so every crash reproduces from its input alone).
//!
//! Nothing may panic. A decoded command must survive a protobuf round trip unchanged; its JSON
//! form must parse back, and serializing that again must give the same text (payloads are
//! normalized once: `" 1"` is the JSON value `1`). Every reply and push the hub produces must
//! serialize in both encodings.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchboard_hub::{proto, Hub, HubConfig, ManualClock, MemoryBroker, MemoryLimits};
use switchboard_proto::json;
use switchboard_proto::prost::Message as _;

use proto::command::Method;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn config() -> &'static HubConfig {
    static CONFIG: OnceLock<HubConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut config = HubConfig {
            allow_anonymous: true,
            history_memory_mib: 8,
            ..HubConfig::default()
        };
        config.jwt.hmac_secret = Some("fuzz".into());
        config.limits.max_channels = 4096;
        // Publish budgets would refuse nearly every publish of a long run.
        config.limits.max_publications_per_second = 0;
        config.limits.max_publish_bytes_per_second = 0;
        let ns = &mut config.default_namespace;
        ns.history_size = 16;
        ns.history_ttl_secs = 60;
        ns.presence = true;
        ns.join_leave = true;
        ns.allow_subscribe_for_client = true;
        ns.allow_subscribe_for_anonymous = true;
        ns.allow_publish_for_client = true;
        ns.allow_publish_for_anonymous = true;
        ns.allow_presence_for_client = true;
        ns.allow_history_for_client = true;
        config
            .namespaces
            .insert("chat".into(), config.default_namespace.clone());
        config
    })
}

/// Protobuf: decode(encode(c)) == c.
fn proto_round_trip(command: &proto::Command) {
    let bytes = command.encode_to_vec();
    let again = proto::Command::decode(bytes.as_slice()).expect("an encoded command decodes");
    assert_eq!(&again, command, "protobuf round trip");
}

/// JSON mapping: the text parses back and is a fixpoint from there.
fn json_round_trip(command: &proto::Command) {
    let text = json::to_string(command).expect("every command has a JSON form");
    let back: proto::Command =
        json::from_str(&text).unwrap_or_else(|e| panic!("the JSON form parses back: {e}\n{text}"));
    let again = json::to_string(&back).expect("serializes again");
    assert_eq!(again, text, "JSON form is stable");
    proto_round_trip(&back);
}

fn serializes<T: switchboard_proto::prost::Message + serde::Serialize>(message: &T) {
    let _ = message.encode_to_vec();
    json::to_string(message).expect("every frame has a JSON form");
}

/// Runs `command` on a fresh hub: as a connect (its token is verified), then through a
/// session's `handle`; then lets time pass and maintenance run.
fn run(command: proto::Command) {
    let config = config().clone();
    let clock = Arc::new(ManualClock::new(1_767_225_600_000));
    let limits = MemoryLimits::from_config(&config);
    let broker = Arc::new(MemoryBroker::with_limits(clock.clone(), limits));
    let hub = Hub::new(config, broker, clock.clone()).expect("valid fuzz config");
    runtime().block_on(async {
        // A connect command parses its token (JWT) in `Hub::connect`.
        if let Some(Method::Connect(request)) = &command.method {
            if let Ok(session) = hub.connect(request, "fuzz") {
                serializes(&session.connect_result());
                session.close().await;
            }
        }
        let session = hub
            .connect(&proto::ConnectRequest::default(), "fuzz")
            .expect("anonymous connect");
        let id = command.id;
        let reply = session.handle(command).await;
        assert_eq!(reply.id, id);
        assert!(reply.result.is_some(), "every command is answered");
        serializes(&reply);
        while let Some(push) = session.try_recv() {
            serializes(push.push());
        }
        session.close().await;
        clock.advance(Duration::from_secs(61));
        hub.maintain().await;
    });
}

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = proto::Command::decode(data) {
        proto_round_trip(&command);
        json_round_trip(&command);
        run(command);
    }
    if let Ok(command) = json::from_slice::<proto::Command>(data) {
        proto_round_trip(&command);
        json_round_trip(&command);
        run(command);
    }
});
