//! The NAT lab: network namespaces with nftables routers emulating the four classic NAT types.
//!
//! ```text
//!   client ns (10.0.N.2) ── lan | router ns, nftables NAT | wan (203.0.113.10+N) ──┐
//!                                                                                 br0 (public ns:
//!   open client ns (203.0.113.100+N) ── eth0 ───────────────────────────────────────┘ 203.0.113.1 and .2,
//!                                                                                      switchboard)
//! ```
//!
//! Every name starts with `sbnat-<pid>-<n>-` (unique per test process and lab); everything is
//! torn down in `Drop` — processes started in the lab's namespaces first, then the namespaces
//! (their veths and bridge go with them) — also when a test panics. A lab sweeps namespaces left
//! behind by dead test processes (same `sbnat-` prefix, pid no longer running) when it starts.
//! Only addresses inside the lab's own namespaces are configured; the host's interfaces and
//! routes are never touched.
#![allow(dead_code)]

use crate::common::Server;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const PREFIX: &str = "sbnat-";
/// The server's primary and alternate addresses on the public segment.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const SERVER_ALT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

static LABS: AtomicU32 = AtomicU32::new(0);

/// The four classic NAT types, as nftables rule sets (see /work/shared/peers.md and docs/nat.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    FullCone,
    AddressRestrictedCone,
    PortRestrictedCone,
    Symmetric,
}

impl NatKind {
    pub const ALL: [NatKind; 4] = [
        NatKind::FullCone,
        NatKind::AddressRestrictedCone,
        NatKind::PortRestrictedCone,
        NatKind::Symmetric,
    ];

    /// The `nat_type` name `switchboard nat-check --json` uses.
    pub fn nat_type(self) -> &'static str {
        match self {
            NatKind::FullCone => "full-cone",
            NatKind::AddressRestrictedCone => "address-restricted-cone",
            NatKind::PortRestrictedCone => "port-restricted-cone",
            NatKind::Symmetric => "symmetric",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            NatKind::FullCone => "full",
            NatKind::AddressRestrictedCone => "addr",
            NatKind::PortRestrictedCone => "port",
            NatKind::Symmetric => "sym",
        }
    }

    /// The router's rule set. Full and address-restricted cone are built from `snat` plus a
    /// `dnat` of every port on the WAN address back to the one client (endpoint-independent
    /// filtering); address-restricted adds a dynamic set of (remote IP, client port) the client
    /// has sent to and drops new inbound flows not in it. Both hairpin (the `dnat` also applies
    /// to packets from the LAN, which are then masqueraded back). Port-restricted is plain
    /// `masquerade` (conntrack's reply filter is address-and-port-dependent); symmetric is
    /// `masquerade random,fully-random` (a new random port per destination). Both drop
    /// unsolicited packets to the router itself before conntrack confirms them: otherwise the
    /// peer's first hole-punching packet, arriving before the client has sent anything, leaves
    /// an unreplied conntrack entry (peer → WAN:port) that makes `masquerade` pick a *different*
    /// port when the client then sends to that peer — and two port-restricted NATs never meet.
    /// nft syntax traps: never two closing braces on one line; `fwd` is a reserved word.
    fn ruleset(self, wan: Ipv4Addr, lan_net: &str, client: Ipv4Addr) -> String {
        match self {
            NatKind::PortRestrictedCone | NatKind::Symmetric => {
                let flags = if self == NatKind::Symmetric {
                    " random,fully-random"
                } else {
                    ""
                };
                format!(
                    "table ip sbnat {{\n\
                     \x20 chain postrouting {{\n\
                     \x20   type nat hook postrouting priority srcnat; policy accept;\n\
                     \x20   oifname \"wan\" masquerade{flags}\n\
                     \x20 }}\n\
                     \x20 chain input {{\n\
                     \x20   type filter hook input priority filter; policy accept;\n\
                     \x20   iifname \"wan\" ct state new drop\n\
                     \x20 }}\n\
                     }}\n"
                )
            }
            NatKind::FullCone | NatKind::AddressRestrictedCone => {
                let filter = if self == NatKind::AddressRestrictedCone {
                    "    iifname \"wan\" ct state new ip saddr . udp dport != @contacted drop\n"
                } else {
                    ""
                };
                format!(
                    "table ip sbnat {{\n\
                     \x20 set contacted {{\n\
                     \x20   type ipv4_addr . inet_service\n\
                     \x20   flags dynamic,timeout\n\
                     \x20   timeout 5m\n\
                     \x20 }}\n\
                     \x20 chain prerouting {{\n\
                     \x20   type nat hook prerouting priority dstnat; policy accept;\n\
                     \x20   ip daddr {wan} udp dport 1024-65535 dnat to {client}\n\
                     \x20 }}\n\
                     \x20 chain postrouting {{\n\
                     \x20   type nat hook postrouting priority srcnat; policy accept;\n\
                     \x20   oifname \"wan\" ip saddr {lan_net} snat to {wan}\n\
                     \x20   oifname \"lan\" ip saddr {lan_net} ct status dnat masquerade\n\
                     \x20 }}\n\
                     \x20 chain forward {{\n\
                     \x20   type filter hook forward priority filter; policy accept;\n\
                     \x20   iifname \"lan\" oifname \"wan\" ip protocol udp update @contacted {{ ip daddr . udp sport }}\n\
                     {filter}\
                     \x20 }}\n\
                     }}\n"
                )
            }
        }
    }
}

/// A host in the lab: a client namespace behind a NAT router, or directly on the public segment.
#[derive(Clone, Debug)]
pub struct Site {
    /// Namespace of the client.
    pub ns: String,
    /// The client's address.
    pub ip: Ipv4Addr,
    /// The NAT in front of it (None: on the public segment).
    pub kind: Option<NatKind>,
    /// The router's public (WAN) address, or the client's own when there is no NAT.
    pub public_ip: Ipv4Addr,
    /// Namespace of the router.
    pub router: Option<String>,
}

impl Site {
    /// A command run inside the client's namespace.
    pub fn command(&self, program: &str) -> Command {
        ns_command(&self.ns, program)
    }

    pub fn label(&self) -> String {
        match self.kind {
            Some(k) => k.nat_type().to_string(),
            None => "no-nat".to_string(),
        }
    }
}

pub fn ns_command(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

pub struct Lab {
    pub prefix: String,
    pub public_ns: String,
    namespaces: Vec<String>,
    routers: u8,
    opens: u8,
}

fn ip(args: &[&str]) {
    sh("ip", args, None);
}

fn sh(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("{program} {args:?}: {e} (the NAT lab needs root, iproute2 and nftables)")
    });
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Namespaces named `sbnat-<pid>-...` whose test process is gone: kill what still runs in them
/// (only processes a dead test of ours started there) and delete them.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // Alive unless gone or a zombie waiting to be reaped.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false);
        if alive {
            continue;
        }
        kill_inside(name);
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

/// Kills, by pid, every process running in the namespace `ns` (only ever one of ours).
fn kill_inside(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

impl Lab {
    /// A public segment (bridge with the server's two addresses) in its own namespace.
    pub fn new() -> Lab {
        crate::common::need("ip");
        crate::common::need("nft");
        sweep_stale();
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{PREFIX}{}-{n}", std::process::id());
        let mut lab = Lab {
            public_ns: format!("{prefix}-pub"),
            prefix,
            namespaces: Vec::new(),
            routers: 0,
            opens: 0,
        };
        let public = lab.public_ns.clone();
        lab.add_ns(&public);
        ip(&["-n", &public, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &public, "link", "set", "br0", "up"]);
        for a in [SERVER_IP, SERVER_ALT_IP] {
            ip(&[
                "-n",
                &public,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "br0",
            ]);
        }
        lab
    }

    fn add_ns(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// A router of `kind` on the public segment with one client behind it.
    pub fn add_nat(&mut self, kind: NatKind) -> Site {
        let i = self.routers;
        assert!(i < 80, "too many routers");
        self.routers += 1;
        let router = format!("{}-r{i}", self.prefix);
        let client = format!("{}-c{i}", self.prefix);
        self.add_ns(&router);
        self.add_ns(&client);
        let public = self.public_ns.clone();
        let wan = Ipv4Addr::new(203, 0, 113, 10 + i);
        let lan_gw = Ipv4Addr::new(10, 0, i + 1, 1);
        let client_ip = Ipv4Addr::new(10, 0, i + 1, 2);
        let lan_net = format!("10.0.{}.0/24", i + 1);
        let port = format!("r{i}");
        // Each veth pair is created directly between two lab namespaces (never on the host).
        ip(&[
            "-n", &public, "link", "add", &port, "type", "veth", "peer", "name", "wan", "netns",
            &router,
        ]);
        ip(&["-n", &public, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{wan}/24"),
            "dev",
            "wan",
        ]);
        ip(&["-n", &router, "link", "set", "wan", "up"]);
        ip(&[
            "-n", &router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
            &client,
        ]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{lan_gw}/24"),
            "dev",
            "lan",
        ]);
        ip(&["-n", &router, "link", "set", "lan", "up"]);
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{client_ip}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &client, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &client,
            "route",
            "add",
            "default",
            "via",
            &lan_gw.to_string(),
        ]);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &router,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            None,
        );
        let rules = kind.ruleset(wan, &lan_net, client_ip);
        sh(
            "ip",
            &["netns", "exec", &router, "nft", "-f", "-"],
            Some(&rules),
        );
        Site {
            ns: client,
            ip: client_ip,
            kind: Some(kind),
            public_ip: wan,
            router: Some(router),
        }
    }

    /// A client directly on the public segment (no NAT, no filtering).
    pub fn add_open(&mut self) -> Site {
        let i = self.opens;
        self.opens += 1;
        let client = format!("{}-o{i}", self.prefix);
        self.add_ns(&client);
        let public = self.public_ns.clone();
        let addr = Ipv4Addr::new(203, 0, 113, 100 + i);
        let port = format!("o{i}");
        ip(&[
            "-n", &public, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &client,
        ]);
        ip(&["-n", &public, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &client, "link", "set", "eth0", "up"]);
        Site {
            ns: client,
            ip: addr,
            kind: None,
            public_ip: addr,
            router: None,
        }
    }

    /// `switchboard serve` in the public namespace on 203.0.113.1:3478 with the RFC 5780
    /// alternate address 203.0.113.2, plus `extra` flags.
    pub fn start_switchboard(&self, extra: &[&str]) -> LabServer {
        let mut cmd = ns_command(&self.public_ns, crate::common::BIN);
        cmd.arg("serve")
            .args(["--stun-udp", &format!("{SERVER_IP}:3478")])
            .args(["--alt-address", &SERVER_ALT_IP.to_string()])
            .args(["--stun-tcp", "off", "--stun-tls", "off"])
            .args(extra);
        LabServer::start(cmd)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_inside(ns);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `switchboard serve` running in the lab; killed on drop (by the wrapped [`Server`]).
pub struct LabServer(pub Server);

impl LabServer {
    fn start(cmd: Command) -> LabServer {
        LabServer(Server::start_command(cmd))
    }

    /// The first listener line for `protocol transport`.
    pub fn line(&self, protocol: &str, transport: &str) -> Option<&str> {
        self.0.lines.iter().map(String::as_str).find(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(protocol) && f.next() == Some(transport)
        })
    }

    pub fn addr(&self, protocol: &str, transport: &str) -> Option<SocketAddr> {
        self.line(protocol, transport)
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|a| a.parse().ok())
    }
}
