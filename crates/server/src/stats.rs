//! Counters, registered once with the `metrics` facade so the hot path only does atomic adds.
//! The Prometheus exporter renders them on `/metrics`.

use std::sync::OnceLock;

use metrics::{counter, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchboard_turn::{DropReason, Transport};

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); ours then only renders its own.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

const REASONS: [DropReason; 7] = [
    DropReason::NotStun,
    DropReason::ChannelData,
    DropReason::Malformed,
    DropReason::BadFingerprint,
    DropReason::Indication,
    DropReason::Response,
    DropReason::OutputTooSmall,
];

/// STUN counters for one transport.
pub struct StunStats {
    /// Messages received (datagrams or stream frames).
    pub received: Counter,
    /// Success responses sent.
    pub responses: Counter,
    /// Error responses sent.
    pub error_responses: Counter,
    dropped: [Counter; REASONS.len()],
    /// Connections accepted (stream transports; a no-op counter for UDP).
    pub connections: Counter,
    /// Connections closed for a protocol fault, idle timeout or limit (stream transports).
    pub closed_fault: Counter,
    /// TLS handshakes that failed (TLS only).
    pub handshake_failures: Counter,
}

impl StunStats {
    /// Registers the counters for `transport`.
    pub fn new(transport: Transport) -> Self {
        let t = transport.as_str();
        StunStats {
            received: counter!("switchboard_stun_messages_received_total", "transport" => t),
            responses: counter!("switchboard_stun_responses_total", "transport" => t, "class" => "success"),
            error_responses: counter!("switchboard_stun_responses_total", "transport" => t, "class" => "error"),
            dropped: REASONS.map(|r| counter!("switchboard_stun_dropped_total", "transport" => t, "reason" => r.as_str())),
            connections: match transport {
                Transport::Udp => Counter::noop(),
                _ => counter!("switchboard_stun_connections_total", "transport" => t),
            },
            closed_fault: match transport {
                Transport::Udp => Counter::noop(),
                _ => counter!("switchboard_stun_connections_closed_total", "transport" => t, "reason" => "fault"),
            },
            handshake_failures: match transport {
                Transport::Tls => counter!("switchboard_tls_handshake_failures_total", "listener" => "stun"),
                _ => Counter::noop(),
            },
        }
    }

    /// Counts a reply.
    pub fn count_reply(&self, error: bool) {
        if error {
            self.error_responses.increment(1)
        } else {
            self.responses.increment(1)
        }
    }

    /// Counts a dropped input.
    pub fn count_drop(&self, reason: DropReason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.dropped[i].increment(1);
        }
    }
}
