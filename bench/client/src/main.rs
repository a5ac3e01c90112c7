//! `switchboard-bench`: load clients used by the scripts in `bench/`.
//!
//! `switchboard-bench stun --server 127.0.0.1:3478` sends STUN Binding requests from several UDP
//! sockets, keeping a window of requests in flight on each, and reports answered requests per
//! second. It stops at `--requests` answers or after `--duration` seconds, whichever comes first,
//! and refuses non-loopback targets unless `--allow-remote` is given.
//!
//! `switchboard-bench hub --server 127.0.0.1:8080 --api-key KEY` loads the real-time hub: many
//! WebSocket subscribers, a paced publish load through the server API, delivered messages per
//! second and publish-to-receive latency (see `hub.rs`); `--protocol centrifugo` subscribes
//! through Centrifugo's client protocol at `/connection/websocket` instead.
//!
//! `switchboard-bench h3 --server 127.0.0.1:8443` loads an HTTP/3 endpoint with small GETs over
//! quinn + h3 and reports requests per second (see `h3.rs`).

mod batch;
mod h3;
mod hub;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use switchboard_stun::{Class, Message, MessageBuilder, Method, TransactionId};

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    about = "Bounded load clients for switchboard benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP/3 small-response load (GET PATH) over QUIC.
    H3 {
        /// The server's HTTPS (UDP) address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        server: SocketAddr,
        /// Path to GET.
        #[arg(long, default_value = "/healthz")]
        path: String,
        /// QUIC connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Stop after this many responses.
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Allow a non-loopback server.
        #[arg(long)]
        allow_remote: bool,
    },
    /// STUN Binding request load over UDP.
    Stun {
        /// Server address.
        #[arg(long, default_value = "127.0.0.1:3478")]
        server: SocketAddr,
        /// Client sockets (one thread each).
        #[arg(long, default_value_t = 4)]
        sockets: usize,
        /// Requests in flight per socket.
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Stop after this many answered requests.
        #[arg(long, default_value_t = 2_000_000)]
        requests: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Allow a non-loopback server.
        #[arg(long)]
        allow_remote: bool,
        /// One `sendmmsg` per window refill and one `recvmmsg` per batch of replies instead of a
        /// system call per request and per reply: a lighter client, but a burstier load (see
        /// BENCHMARKS.md, "STUN Binding").
        #[arg(long)]
        batch: bool,
    },
    /// Real-time hub fan-out: WebSocket subscribers, publishes through the server API.
    Hub {
        /// The server's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        server: SocketAddr,
        /// More nodes of the same cluster: subscribers are spread round-robin over --server
        /// and these (publishes go to --server). Repeatable.
        #[arg(long = "also", value_name = "ADDR")]
        also: Vec<SocketAddr>,
        /// Server API key.
        #[arg(long)]
        api_key: String,
        /// The subscribers' protocol: native (/v1/ws, switchboard.proto), native-json (/v1/ws,
        /// switchboard.json) or centrifugo (Centrifugo's JSON client protocol at
        /// /connection/websocket). Publishing is the same for all.
        #[arg(long, value_enum, default_value = "native")]
        protocol: hub::Protocol,
        /// WebSocket subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Channels; subscriber i listens to channel i % channels.
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// Publications in total.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Publications per second, at most.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Padding bytes in each publication.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Concurrent publishing HTTP connections.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Stop publishing after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Allow a non-loopback server.
        #[arg(long)]
        allow_remote: bool,
    },
}

/// Refuses to load anything but loopback unless `--allow-remote`.
fn loopback_only(targets: &[SocketAddr], allow_remote: bool) -> anyhow::Result<()> {
    if let Some(t) = targets.iter().find(|t| !t.ip().is_loopback()) {
        if !allow_remote {
            bail!("refusing to load {t}: not loopback (pass --allow-remote if you own it)");
        }
    }
    Ok(())
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    answered: AtomicU64,
    bad: AtomicU64,
}

fn request(buf: &mut [u8], id: u64, sock: u32) -> anyhow::Result<usize> {
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&id.to_be_bytes());
    tid[8..].copy_from_slice(&sock.to_be_bytes());
    let mut b = MessageBuilder::new(buf, Class::Request, Method::BINDING, TransactionId(tid))?;
    b.fingerprint()?;
    Ok(b.finish())
}

/// One load thread's parameters.
#[derive(Clone, Copy)]
struct Load {
    server: SocketAddr,
    index: u32,
    window: usize,
    limit: u64,
    deadline: Instant,
}

/// A client socket connected to the server, with a 100 ms read timeout.
fn connect(server: SocketAddr) -> anyhow::Result<UdpSocket> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(sock)
}

/// Counts one reply.
fn count_reply(reply: &[u8], limit: u64, stop: &AtomicBool, totals: &Totals) {
    match Message::parse(reply) {
        Ok(m) if m.class() == Class::Success && m.check_fingerprint() != Some(false) => {
            if totals.answered.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
                stop.store(true, Ordering::Relaxed);
            }
        }
        _ => {
            totals.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps `window` requests in flight: refills with one `sendmmsg`, takes the replies that have
/// arrived with one `recvmmsg`.
fn stun_worker_batched(load: &Load, stop: &AtomicBool, totals: &Totals) -> anyhow::Result<()> {
    let sock = connect(load.server)?;
    let window = load.window;
    let mut out = vec![[0u8; 64]; window];
    let mut lens = vec![0usize; window];
    let mut slots = vec![0u8; batch::SLOT * window];
    let mut got = vec![0usize; window];
    let mut next_id = 0u64;
    let mut in_flight = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < load.deadline {
        let refill = window - in_flight;
        for (buf, len) in out.iter_mut().zip(lens.iter_mut()).take(refill) {
            *len = request(buf, next_id, load.index)?;
            next_id += 1;
        }
        if let Ok(n) = batch::send_batch(&sock, &mut out[..refill], &lens[..refill]) {
            in_flight += n;
            totals.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        match batch::recv_batch(&sock, &mut slots, &mut got) {
            Ok(n) => {
                in_flight = in_flight.saturating_sub(n);
                for (i, len) in got.iter().enumerate().take(n) {
                    let at = i * batch::SLOT;
                    count_reply(&slots[at..at + len], load.limit, stop, totals);
                }
            }
            // Timeout: the window's requests are presumed lost; refill it.
            Err(_) => in_flight = 0,
        }
    }
    Ok(())
}

/// One `send` per request, one blocking `recv` per reply.
fn stun_worker(load: &Load, stop: &AtomicBool, totals: &Totals) -> anyhow::Result<()> {
    let Load {
        server,
        index,
        window,
        limit,
        deadline,
    } = *load;
    let sock = connect(server)?;
    let mut out = [0u8; 64];
    let mut inb = [0u8; 1500];
    let mut next_id = 0u64;
    let mut in_flight = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        while in_flight < window {
            let n = request(&mut out, next_id, index)?;
            next_id += 1;
            if sock.send(&out[..n]).is_ok() {
                in_flight += 1;
                totals.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                break;
            }
        }
        match sock.recv(&mut inb) {
            Ok(n) => {
                in_flight = in_flight.saturating_sub(1);
                count_reply(&inb[..n], limit, stop, totals);
            }
            // Timeout: the window's requests are presumed lost; refill it.
            Err(_) => in_flight = 0,
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::H3 {
            server,
            path,
            connections,
            streams,
            requests,
            duration,
            allow_remote,
        } => {
            loopback_only(&[server], allow_remote)?;
            let sane = (1..=256).contains(&connections)
                && (1..=100).contains(&streams)
                && (1..=10_000_000).contains(&requests)
                && (0.1..=600.0).contains(&duration)
                && path.starts_with('/');
            if !sane {
                bail!("out of bounds: connections 1..256, streams 1..100, requests 1..1e7, duration 0.1..600 s, path /...");
            }
            h3::run(h3::H3Options {
                server,
                path,
                connections,
                streams,
                requests,
                duration,
            })
        }
        Cmd::Hub {
            server,
            api_key,
            protocol,
            subscribers,
            channels,
            messages,
            rate,
            payload,
            publishers,
            duration,
            allow_remote,
            also,
        } => {
            let targets: Vec<SocketAddr> = std::iter::once(server).chain(also.clone()).collect();
            loopback_only(&targets, allow_remote)?;
            let sane = (1..=20_000).contains(&subscribers)
                && (1..=subscribers).contains(&channels)
                && (1..=10_000_000).contains(&messages)
                && (0.1..=1_000_000.0).contains(&rate)
                && payload <= 60_000
                && (1..=64).contains(&publishers)
                && (0.1..=600.0).contains(&duration);
            if !sane {
                bail!("out of bounds: subscribers 1..20000, channels 1..subscribers, messages 1..1e7, rate 0.1..1e6, payload <= 60000, publishers 1..64, duration 0.1..600 s");
            }
            hub::run(hub::HubOptions {
                protocol,
                server,
                also,
                api_key,
                subscribers,
                channels,
                messages,
                rate,
                payload,
                publishers,
                duration,
            })
        }
        Cmd::Stun {
            server,
            sockets,
            window,
            requests,
            duration,
            allow_remote,
            batch,
        } => {
            loopback_only(&[server], allow_remote)?;
            if !(0.1..=600.0).contains(&duration) || sockets == 0 || window == 0 {
                bail!("--duration must be 0.1..600 s, --sockets and --window at least 1");
            }
            let totals = Arc::new(Totals::default());
            let stop = Arc::new(AtomicBool::new(false));
            let start = Instant::now();
            let deadline = start + Duration::from_secs_f64(duration);
            let handles: Vec<_> = (0..sockets)
                .map(|i| {
                    let totals = totals.clone();
                    let stop = stop.clone();
                    let load = Load {
                        server,
                        index: i as u32,
                        window,
                        limit: requests,
                        deadline,
                    };
                    std::thread::spawn(move || {
                        if batch {
                            stun_worker_batched(&load, &stop, &totals)
                        } else {
                            stun_worker(&load, &stop, &totals)
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("worker panicked"))?
                    .context("worker")?;
            }
            let secs = start.elapsed().as_secs_f64();
            let answered = totals.answered.load(Ordering::Relaxed);
            let sent = totals.sent.load(Ordering::Relaxed);
            println!(
                "target={server} sockets={sockets} window={window} seconds={secs:.2} sent={sent} answered={answered} bad={} rate={:.0}",
                totals.bad.load(Ordering::Relaxed),
                answered as f64 / secs
            );
            if answered == 0 {
                bail!("no answers from {server}");
            }
            Ok(())
        }
    }
}
