//! switchboard's binary-level integration tests, in one test binary (one module per area; the
//! shared helpers in `common`, the NAT lab's namespaces in `lab`). Each test starts the real
//! `switchboard` binary and talks to it with clients nobody here wrote (coturn's `turnutils_*`,
//! Debian's `stun`, Python `aioice`/`aiortc`/`aioquic`/`websockets`/`httpx`/`grpcio`, Chromium),
//! or with raw sockets where a test plays an attacker.
//!
//! Run one area with `cargo test -p switchboard-cli --test it AREA::` (for example
//! `--test it hardening::`).

mod common;
mod lab;

mod browser;
mod cli;
mod cluster;
mod compat;
mod compat_browser;
mod hardening;
mod http3_peers;
mod http3_tls;
mod hub_cli;
mod hub_peers;
mod hub_write_delay;
mod ice_servers;
mod nat_lab;
mod one_port;
mod ops;
mod probe;
mod pusher_browser;
mod readme;
mod sdk;
mod sdk_browser;
mod sdk_webtransport;
mod send;
mod send_browser;
mod send_nat;
mod stun_peers;
mod stun_robustness;
mod tls_reload;
mod turn_ipv6;
mod turn_peers;
mod turn_redirect;
mod webtransport;
