//! The NAT lab: `switchboard nat-check` behind emulated full-cone, address-restricted,
//! port-restricted and symmetric NATs (network namespaces + nftables), checked against coturn's
//! `turnutils_natdiscovery` and Debian's classic `stun` client; the exit codes for a silent
//! server and one without RFC 5780. Needs root (network namespaces). See docs/nat.md.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{need, repo_root, run, text, venv_python, BIN};
use crate::lab::{Lab, NatKind, Site, SERVER_IP};
use serde_json::Value;

/// `switchboard nat-check --json` in the site's namespace.
fn nat_check(site: &Site) -> (Value, Duration) {
    let started = Instant::now();
    let out = run(
        site.command(BIN)
            .args(["nat-check", "--json", "--server", &SERVER_IP.to_string()]),
        Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert!(out.status.success(), "nat-check failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("nat-check --json printed no JSON object ({e}): {stdout}"));
    (v, took)
}

/// What we expect nat-check to say: (nat_type, mapping, filtering, hairpinning).
fn expected(kind: Option<NatKind>) -> (&'static str, &'static str, &'static str, Value) {
    match kind {
        None => (
            "open-internet",
            "no-nat",
            "endpoint-independent",
            Value::Null,
        ),
        Some(NatKind::FullCone) => (
            "full-cone",
            "endpoint-independent",
            "endpoint-independent",
            Value::Bool(true),
        ),
        Some(NatKind::AddressRestrictedCone) => (
            "address-restricted-cone",
            "endpoint-independent",
            "address-dependent",
            Value::Bool(true),
        ),
        Some(NatKind::PortRestrictedCone) => (
            "port-restricted-cone",
            "endpoint-independent",
            "address-and-port-dependent",
            Value::Bool(false),
        ),
        Some(NatKind::Symmetric) => (
            "symmetric",
            "address-and-port-dependent",
            "address-and-port-dependent",
            Value::Bool(false),
        ),
    }
}

/// coturn's `turnutils_natdiscovery` with one of -m, -f, -H (separate calls: together only the
/// first test would use the local port), bound to the client's address so it can tell "no NAT".
fn coturn(site: &Site, flag: &str) -> String {
    let out = run(
        site.command("turnutils_natdiscovery").args([
            flag,
            "-L",
            &site.ip.to_string(),
            &SERVER_IP.to_string(),
        ]),
        Duration::from_secs(30),
    );
    text(&out)
}

/// coturn's verdict line mapped to nat-check's names.
fn coturn_behaviour(out: &str, what: &str) -> &'static str {
    if out.contains("No NAT!") && what == "Mapping" {
        return "no-nat";
    }
    for (phrase, name) in [
        ("Endpoint Independent", "endpoint-independent"),
        ("Address and Port Dependent", "address-and-port-dependent"),
        ("Address Dependent", "address-dependent"),
    ] {
        if out.contains(&format!("NAT with {phrase} {what}!")) {
            return name;
        }
    }
    panic!("no {what} verdict from turnutils_natdiscovery:\n{out}")
}

/// Debian's classic RFC 3489 `stun` client: its "Primary:" line, mapped to nat-check's type
/// names (its own words: "Open", "Independent Mapping, Independent Filter" = full cone,
/// "... Address Dependent Filter" = restricted cone, "... Port Dependent Filter" =
/// port-restricted cone, "Dependent Mapping" = symmetric), and its hairpin verdict.
fn classic_stun(site: &Site) -> (String, &'static str, Option<bool>) {
    let out = run(
        site.command("stun").arg(SERVER_IP.to_string()),
        Duration::from_secs(30),
    );
    let all = text(&out);
    let primary = all
        .lines()
        .find(|l| l.starts_with("Primary:"))
        .unwrap_or_else(|| panic!("no Primary: line from stun:\n{all}"))
        .trim()
        .to_string();
    let name = if primary.contains("Open") {
        "open-internet"
    } else if primary.contains("Independent Mapping, Independent Filter") {
        "full-cone"
    } else if primary.contains("Independent Mapping, Address Dependent Filter") {
        "address-restricted-cone"
    } else if primary.contains("Independent Mapping, Port Dependent Filter") {
        "port-restricted-cone"
    } else if primary.contains("Dependent Mapping") {
        "symmetric"
    } else if primary.contains("Firewall") {
        "firewall"
    } else {
        "unknown"
    };
    let hairpin = if primary.contains("will hairpin") {
        Some(true)
    } else if primary.contains("no hairpin") {
        Some(false)
    } else {
        None
    };
    (primary, name, hairpin)
}

/// One site behind `kind` (or none): nat-check names it, coturn and the classic client agree.
fn classify(kind: Option<NatKind>) {
    for tool in ["ip", "nft", "turnutils_natdiscovery", "stun"] {
        need(tool);
    }
    let started = Instant::now();
    let mut lab = Lab::new();
    let site = match kind {
        Some(k) => lab.add_nat(k),
        None => lab.add_open(),
    };
    let _server = lab.start_switchboard(&["--http", "off"]);
    let (nat_type, mapping, filtering, hairpin) = expected(kind);

    let (v, took) = nat_check(&site);
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["nat_type"], nat_type, "{v}");
    assert_eq!(v["mapping"], mapping, "{v}");
    assert_eq!(v["filtering"], filtering, "{v}");
    assert_eq!(v["hairpinning"], hairpin, "{v}");
    assert_eq!(v["nat"], kind.is_some(), "{v}");
    let public: std::net::SocketAddr = v["public_address"].as_str().unwrap().parse().unwrap();
    assert_eq!(public.ip(), site.public_ip, "{v}");
    let local: std::net::SocketAddr = v["local_address"].as_str().unwrap().parse().unwrap();
    assert_eq!(local.ip(), site.ip, "{v}");
    assert_eq!(v["other_address"], "203.0.113.2:3479", "{v}");
    assert!(took < Duration::from_secs(10), "nat-check took {took:?}");
    let verdict = v["verdict"].as_str().unwrap();
    match kind {
        Some(NatKind::Symmetric) => {
            assert!(verdict.contains("TURN relay for peers behind symmetric or port-restricted"))
        }
        Some(NatKind::PortRestrictedCone) => {
            assert!(
                verdict.contains("cone NATs")
                    && verdict.contains("relay for peers behind symmetric")
            )
        }
        _ => assert!(verdict.contains("every NAT type"), "{verdict}"),
    }

    let m = coturn(&site, "-m");
    assert_eq!(coturn_behaviour(&m, "Mapping"), mapping, "coturn -m:\n{m}");
    let f = coturn(&site, "-f");
    assert_eq!(
        coturn_behaviour(&f, "Filtering"),
        filtering,
        "coturn -f:\n{f}"
    );
    if let Value::Bool(h) = hairpin {
        let out = coturn(&site, "-H");
        assert_eq!(
            out.contains("successful hairpinning"),
            h,
            "coturn -H disagrees on hairpinning:\n{out}"
        );
    }
    let (line, classic, classic_hairpin) = classic_stun(&site);
    assert_eq!(classic, nat_type, "stun client said {line:?}");
    if let (Value::Bool(h), Some(ch)) = (&hairpin, classic_hairpin) {
        assert_eq!(*h, ch, "stun client said {line:?}");
    }
    println!(
        "{:<24} nat-check {nat_type} ({mapping} mapping, {filtering} filtering, hairpin {hairpin}) in \
         {:.1} s; coturn agrees; stun: {line:?}; whole test {:.1} s",
        site.label(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn nat_check_full_cone() {
    classify(Some(NatKind::FullCone));
}

#[test]
fn nat_check_address_restricted_cone() {
    classify(Some(NatKind::AddressRestrictedCone));
}

#[test]
fn nat_check_port_restricted_cone() {
    classify(Some(NatKind::PortRestrictedCone));
}

#[test]
fn nat_check_symmetric() {
    classify(Some(NatKind::Symmetric));
}

#[test]
fn nat_check_no_nat_is_open_internet() {
    classify(None);
}

/// A port nothing listens on: exit 3 and a JSON error, within the configured retransmissions.
#[test]
fn nat_check_no_answer_exits_3() {
    let port = crate::common::free_port_pair();
    let started = Instant::now();
    let out = run(
        Command::new(BIN).args([
            "nat-check",
            "--json",
            "--server",
            &format!("127.0.0.1:{port}"),
            "--rto-ms",
            "50",
            "--retries",
            "2",
        ]),
        Duration::from_secs(10),
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["status"], "no-answer");
    assert_eq!(v["server"], format!("127.0.0.1:{port}"));
    // 3 requests at 0, 50, 150 ms, then 8 × 50 ms: 550 ms.
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    let out = run(
        Command::new(BIN).args([
            "nat-check",
            "--server",
            &format!("localhost:{port}"),
            "--rto-ms",
            "20",
            "--retries",
            "1",
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out).contains("no answer from 127.0.0.1"),
        "{}",
        text(&out)
    );
}

/// A switchboard without --alt-address sends no OTHER-ADDRESS: exit 4, public address shown.
#[test]
fn nat_check_without_rfc5780_exits_4() {
    let port = crate::common::free_port_pair();
    let server = crate::common::TestServer::new()
        .listen("--stun-udp", &format!("127.0.0.1:{port}"))
        .start();
    let out = run(
        Command::new(BIN).args([
            "nat-check",
            "--json",
            "--server",
            &format!("127.0.0.1:{port}"),
        ]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["status"], "no-rfc5780");
    assert_eq!(v["nat"], false);
    assert!(v["public_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let out = run(
        Command::new(BIN).args(["nat-check", "--server", &format!("127.0.0.1:{port}")]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out).contains("does not support RFC 5780"),
        "{}",
        text(&out)
    );
    drop(server);

    let out = run(
        Command::new(BIN).args(["nat-check", "--server", "no-such-host.invalid"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot resolve"), "{}", text(&out));
}

/// Agents of the traversal matrix; killed on drop (the lab also kills whatever runs in its
/// namespaces before deleting them).
struct Agents(Vec<std::process::Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sans-IO crate's NAT type of a lab router kind.
pub(crate) fn nat_type_of(kind: NatKind) -> switchboard_nat::NatType {
    use switchboard_nat::NatType;
    match kind {
        NatKind::FullCone => NatType::FullCone,
        NatKind::AddressRestrictedCone => NatType::AddressRestrictedCone,
        NatKind::PortRestrictedCone => NatType::PortRestrictedCone,
        NatKind::Symmetric => NatType::Symmetric,
    }
}

/// Two aioice ICE agents, one behind each router, for all 16 ordered pairs of the four NAT
/// types (the controlling agent behind the row's type, the controlled one behind the column's): candidates from switchboard (host, STUN server-reflexive, TURN relayed), descriptions
/// exchanged through switchboard's hub (WebSocket /v1/ws) when the server has it — through this
/// harness otherwise — then ICE, and one datagram each way. The selected pair must be direct
/// (host/srflx/prflx on both ends) where a hole can be punched and relayed only for
/// symmetric↔symmetric and symmetric↔port-restricted.
#[test]
fn traversal_matrix() {
    let _heavy = crate::common::heavy();
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use switchboard_nat::Path;

    for tool in ["ip", "nft"] {
        need(tool);
    }
    let python = venv_python();
    let agent = repo_root().join("tests/lab/ice_agent.py");
    let started = Instant::now();
    let mut lab = Lab::new();
    // Two routers of each type: the controlling agents behind the first four, the controlled
    // ones behind the second four.
    let a: Vec<Site> = NatKind::ALL.iter().map(|k| lab.add_nat(*k)).collect();
    let b: Vec<Site> = NatKind::ALL.iter().map(|k| lab.add_nat(*k)).collect();

    // The hub's flags exist only in builds with the hub; fall back to harness signaling.
    let help = run(
        Command::new(BIN).args(["serve", "--help"]),
        Duration::from_secs(10),
    );
    let hub_flags = text(&help).contains("--allow-anonymous");
    let http = format!("{SERVER_IP}:8080");
    let mut flags = vec![
        "--http",
        http.as_str(),
        "--turn-realm",
        "natlab",
        "--turn-user",
        "lab:secret",
        // Relays may reach the routers' public addresses (and each other on the server).
        "--allow-peer",
        "203.0.113.0/24",
    ];
    if hub_flags {
        flags.extend(["--allow-anonymous", "true"]);
    }
    let server = lab.start_switchboard(&flags);
    // SB_NATLAB_SIGNAL=harness forces the fallback (to test it).
    let forced = std::env::var("SB_NATLAB_SIGNAL").is_ok_and(|v| v == "harness");
    let hub = hub_flags
        && !forced
        && server
            .line("http", "tcp")
            .is_some_and(|l| l.contains("/v1/ws"));

    let mut pairs: Vec<(usize, usize, String)> = Vec::new();
    for i in 0..4 {
        for j in 0..4 {
            let id = format!("{}-{}", NatKind::ALL[i].short(), NatKind::ALL[j].short());
            pairs.push((i, j, id));
        }
    }
    // Agent k < 4 is a[k], agent 4 + k is b[k].
    let sites: Vec<&Site> = a.iter().chain(b.iter()).collect();
    let mut agents = Agents(Vec::new());
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    let mut stdins = Vec::new();
    let hub_url = format!("ws://{http}/v1/ws");
    for (k, site) in sites.iter().enumerate() {
        let mut cmd = site.command(python.to_str().unwrap());
        cmd.arg(&agent)
            .args(["--site", &site.ns, "--server", &SERVER_IP.to_string()])
            .args(["--turn-user", "lab:secret", "--channel-prefix", &lab.prefix]);
        if hub {
            cmd.args(["--hub", &hub_url]);
        }
        for (i, j, id) in &pairs {
            if k < 4 && *i == k {
                cmd.args(["--pair", &format!("{id}:controlling")]);
            }
            if k >= 4 && *j == k - 4 {
                cmd.args(["--pair", &format!("{id}:controlled")]);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ice_agent.py");
        stdins.push(child.stdin.take().expect("stdin"));
        let stdout = child.stdout.take().expect("stdout");
        agents.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((k, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    // Route offers (harness signaling) and collect one result per agent per pair.
    let mut results: HashMap<(String, String), Value> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while results.len() < 2 * pairs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((k, line)) = rx.recv_timeout(left) else {
            panic!(
                "traversal matrix: only {} of {} results within 90 s: {results:?}",
                results.len(),
                2 * pairs.len()
            );
        };
        let msg: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("agent {} printed {line:?}: {e}", sites[k].ns));
        match msg["type"].as_str() {
            Some("offer") => {
                let id = msg["pair"].as_str().unwrap();
                let (i, j, _) = pairs.iter().find(|p| p.2 == id).unwrap();
                let peer = if k < 4 { 4 + *j } else { *i };
                let fwd = serde_json::json!({"type": "remote", "pair": id, "desc": msg["desc"]});
                writeln!(stdins[peer], "{fwd}").expect("write to agent");
                stdins[peer].flush().expect("flush");
            }
            Some("result") => {
                let key = (
                    msg["pair"].as_str().unwrap().to_string(),
                    msg["role"].as_str().unwrap().to_string(),
                );
                results.insert(key, msg);
            }
            _ => {}
        }
    }
    drop(agents);
    drop(server);

    // Evaluate and print the matrix.
    let signaling = if hub {
        "switchboard hub (/v1/ws)"
    } else {
        "test harness"
    };
    let mut failures = Vec::new();
    let mut cells: HashMap<(usize, usize), String> = HashMap::new();
    for (i, j, id) in &pairs {
        let expected = nat_type_of(NatKind::ALL[*i]).path_with(nat_type_of(NatKind::ALL[*j]));
        let ctl = &results[&(id.clone(), "controlling".to_string())];
        let ced = &results[&(id.clone(), "controlled".to_string())];
        for r in [ctl, ced] {
            if let Some(e) = r.get("error") {
                failures.push(format!("{id} {}: {e}", r["role"]));
            } else if r["data"] != true {
                failures.push(format!(
                    "{id} {}: no data over the selected pair",
                    r["role"]
                ));
            }
        }
        if ctl.get("error").is_some() || ced.get("error").is_some() {
            cells.insert((*i, *j), "FAILED".into());
            continue;
        }
        let relayed = |r: &Value| r["local_type"] == "relay" || r["remote_type"] == "relay";
        if relayed(ctl) != relayed(ced) {
            failures.push(format!("{id}: the two agents disagree: {ctl} / {ced}"));
        }
        let observed = if relayed(ctl) {
            Path::Relay
        } else {
            Path::Direct
        };
        if observed != expected {
            failures.push(format!(
                "{id}: expected {expected}, ICE selected {} -> {} ({} -> {})",
                ctl["local_type"], ctl["remote_type"], ctl["local"], ctl["remote"]
            ));
        }
        cells.insert(
            (*i, *j),
            format!(
                "{} {}/{}",
                observed,
                ctl["local_type"].as_str().unwrap_or("?"),
                ctl["remote_type"].as_str().unwrap_or("?")
            ),
        );
    }
    println!(
        "\ntraversal matrix (rows: controlling agent's NAT, columns: controlled agent's NAT; \
         cell: path, then the controlling agent's selected local/remote candidate types; \
         signaling via {signaling})"
    );
    print!("{:<24}", "");
    for k in NatKind::ALL {
        print!("{:<24}", k.nat_type());
    }
    println!();
    for (i, ki) in NatKind::ALL.iter().enumerate() {
        print!("{:<24}", ki.nat_type());
        for j in 0..4 {
            let cell = cells.get(&(i, j)).map(String::as_str).unwrap_or("");
            print!("{cell:<24}");
        }
        println!();
    }
    println!("whole test {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "traversal matrix:\n{}",
        failures.join("\n")
    );
}
