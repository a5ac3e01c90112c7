//! `switchboard send` / `receive` across the NAT lab: the 4x4 matrix of NAT types.
//!
//! For each of the 16 ordered pairs, `switchboard send FILE --json` runs behind a router of the
//! row's type and `switchboard receive CODE --json` behind one of the column's, both talking to
//! one `switchboard serve` on the public segment (hub on HTTP, `GET /v1/ice-servers` with TURN
//! REST credentials, STUN/TURN on UDP). The file must arrive byte for byte, and the route both
//! sides report must be direct where a hole can be punched and relayed only for
//! symmetric↔symmetric and symmetric↔port-restricted (the theory `traversal_matrix` checks
//! with aioice agents). All 16 run at once; the matrix is printed on stderr.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{bytes, heavy, need, sha256_hex, BIN};
use crate::lab::{Lab, NatKind, Site, SERVER_IP};
use crate::nat_lab::nat_type_of;
use serde_json::Value;
use switchboard_nat::Path as Route;

/// Bytes per transfer: enough for many data-channel messages, small enough for 16 at once.
const SIZE: usize = 200 * 1024;
/// The whole matrix, start to last exit (a transfer takes a few seconds, the CLIs give ICE and
/// DTLS 30 s).
const DEADLINE: Duration = Duration::from_secs(60);

/// The CLIs started; killed on drop (a failed test leaves none running; the lab would also
/// kill what runs in its namespaces).
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What came out of one CLI process.
#[derive(Default)]
struct Side {
    /// Index into [`Kids`], once started.
    kid: Option<usize>,
    lines: Vec<Value>,
    status: Option<ExitStatus>,
    ended: Option<Instant>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Side {
    fn event(&self, name: &str) -> Option<&Value> {
        self.lines.iter().find(|v| v["event"] == name)
    }

    /// The route the data ended on (the last `route` event, else `connected`), and whether
    /// `connected` named the other one (direct vs relay: ICE moved to a better pair).
    fn route(&self) -> Option<((String, String), bool)> {
        let first = route_of(self.event("connected")?);
        let last = self
            .lines
            .iter()
            .rev()
            .find(|v| v["event"] == "route")
            .map_or_else(|| first.clone(), route_of);
        let moved = first.0 != last.0;
        Some((last, moved))
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// Which process a stdout line came from: (pair, receiver?).
type Tag = (usize, bool);

/// Starts `switchboard ARGS --json` in `site`'s namespace; its stdout lines go to `tx`, its
/// stderr is collected.
fn spawn(
    site: &Site,
    args: &[&str],
    tag: Tag,
    tx: &mpsc::Sender<(Tag, String)>,
    kids: &mut Kids,
    side: &mut Side,
) {
    let mut child = site
        .command(BIN)
        .args(args)
        .arg("--json")
        .env_remove("SWITCHBOARD_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard in the lab");
    let out = child.stdout.take().expect("stdout");
    let tx = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((tag, l)).is_err() {
                break;
            }
        }
    });
    let mut err = child.stderr.take().expect("stderr");
    side.stderr = Some(std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    }));
    side.kid = Some(kids.0.len());
    kids.0.push(child);
}

/// `direct`/`relay` and the candidate types (`local/remote`) one side reported.
fn route_of(connected: &Value) -> (String, String) {
    (
        connected["route"].as_str().unwrap_or("?").to_string(),
        format!(
            "{}/{}",
            connected["local_type"].as_str().unwrap_or("?"),
            connected["remote_type"].as_str().unwrap_or("?")
        ),
    )
}

fn file_in(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join("payload.bin")).ok()
}

/// Sender behind the row's NAT type, receiver behind the column's, all 16 pairs at once.
#[test]
fn send_receive_matrix() {
    let _heavy = heavy();
    need("ip");
    need("nft");
    let started = Instant::now();
    let mut lab = Lab::new();
    // Two routers of each type: the senders behind the first four, the receivers behind the
    // second four (each router's client runs four CLIs, each with its own sockets).
    let tx_sites: Vec<Site> = NatKind::ALL.iter().map(|k| lab.add_nat(*k)).collect();
    let rx_sites: Vec<Site> = NatKind::ALL.iter().map(|k| lab.add_nat(*k)).collect();
    let http = format!("{SERVER_IP}:8080");
    let server = lab.start_switchboard(&[
        "--http",
        &http,
        "--allow-anonymous",
        "true",
        // TURN REST credentials from GET /v1/ice-servers.
        "--turn-realm",
        "natlab",
        "--turn-secret",
        "natlab-secret",
        // Relays may reach the routers' public addresses (and each other on the server).
        "--allow-peer",
        "203.0.113.0/24",
    ]);
    let url = format!("http://{http}");
    let lab_ready = started.elapsed();

    let tmp = TempDir(std::env::temp_dir().join(format!("sb-send-nat-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    for i in 0..4 {
        for j in 0..4 {
            let p = pairs.len();
            let dir = tmp.0.join(format!("{p}"));
            std::fs::create_dir_all(dir.join("in")).unwrap();
            std::fs::create_dir_all(dir.join("out")).unwrap();
            let d = bytes(SIZE, p as u32 + 1);
            std::fs::write(dir.join("in/payload.bin"), &d).unwrap();
            pairs.push((i, j));
            data.push(d);
        }
    }

    // All senders at once; each receiver as soon as its sender printed the code.
    let (tx, rx) = mpsc::channel::<(Tag, String)>();
    let mut kids = Kids(Vec::new());
    let mut sides: HashMap<Tag, Side> = HashMap::new();
    let mut started_at: Vec<Instant> = Vec::new();
    for (p, (i, _)) in pairs.iter().enumerate() {
        let file = tmp.0.join(format!("{p}/in/payload.bin"));
        let mut side = Side::default();
        spawn(
            &tx_sites[*i],
            &["send", file.to_str().unwrap(), "--server", &url],
            (p, false),
            &tx,
            &mut kids,
            &mut side,
        );
        sides.insert((p, false), side);
        started_at.push(Instant::now());
    }
    let deadline = Instant::now() + DEADLINE;
    let mut timed_out = false;
    loop {
        while let Ok(((p, recv), line)) = rx.recv_timeout(Duration::from_millis(50)) {
            let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            // When it came, from the pair's start (for the failure report).
            v["t"] = (started_at[p].elapsed().as_millis() as f64 / 1000.0).into();
            if !recv && v["event"] == "code" && !sides.contains_key(&(p, true)) {
                let code = v["code"].as_str().unwrap_or("").to_string();
                let out = tmp.0.join(format!("{p}/out"));
                let mut side = Side::default();
                spawn(
                    &rx_sites[pairs[p].1],
                    &[
                        "receive",
                        &code,
                        "--server",
                        &url,
                        "--output",
                        out.to_str().unwrap(),
                    ],
                    (p, true),
                    &tx,
                    &mut kids,
                    &mut side,
                );
                sides.insert((p, true), side);
            }
            sides.get_mut(&(p, recv)).unwrap().lines.push(v);
        }
        // Exits.
        for side in sides.values_mut() {
            if side.status.is_none() {
                let k = side.kid.unwrap();
                if let Some(s) = kids.0[k].try_wait().unwrap() {
                    side.status = Some(s);
                    side.ended = Some(Instant::now());
                }
            }
        }
        let running = sides.values().filter(|s| s.status.is_none()).count();
        let senders_waiting = (0..pairs.len())
            .filter(|p| !sides.contains_key(&(*p, true)) && sides[&(*p, false)].status.is_none())
            .count();
        if running == 0 && senders_waiting == 0 {
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
    }
    // Kill what still runs (none unless the deadline passed), then read the last lines (a
    // process may exit before its reader has passed its last line on; the readers end, and
    // the channel with them, when the pipes close).
    drop(kids);
    drop(tx);
    while let Ok(((p, recv), line)) = rx.recv_timeout(Duration::from_secs(2)) {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            sides.get_mut(&(p, recv)).unwrap().lines.push(v);
        }
    }
    drop(server);
    let transfers = started.elapsed() - lab_ready;
    // Per pair: from the sender's start to the later exit.
    let took: Vec<Option<Duration>> = (0..pairs.len())
        .map(|p| {
            let a = sides.get(&(p, false))?.ended?;
            let b = sides.get(&(p, true))?.ended?;
            Some(a.max(b) - started_at[p])
        })
        .collect();
    let slowest = took.iter().flatten().max().copied().unwrap_or_default();

    // Evaluate (SB_TEST_LOGS=1: every pair's events, also when all is well).
    let verbose = std::env::var_os("SB_TEST_LOGS").is_some();
    let mut failures: Vec<String> = Vec::new();
    let mut cells: HashMap<(usize, usize), String> = HashMap::new();
    for (p, (i, j)) in pairs.iter().enumerate() {
        let id = format!(
            "{} -> {}",
            NatKind::ALL[*i].nat_type(),
            NatKind::ALL[*j].nat_type()
        );
        let expected = nat_type_of(NatKind::ALL[*i]).path_with(nat_type_of(NatKind::ALL[*j]));
        let mut problems: Vec<String> = Vec::new();
        let mut send = sides.remove(&(p, false)).unwrap();
        let mut recv = sides.remove(&(p, true));
        match send.status {
            Some(s) if s.success() => {}
            s => problems.push(format!("send exited {s:?}")),
        }
        match recv.as_ref().map(|r| r.status) {
            None => problems.push("the sender printed no code".into()),
            Some(Some(s)) if s.success() => {}
            Some(s) => problems.push(format!("receive exited {s:?}")),
        }
        let out = tmp.0.join(format!("{p}/out"));
        match file_in(&out) {
            Some(got) if got == data[p] => {}
            Some(got) => problems.push(format!(
                "the file arrived different: {} bytes, sha256 {}",
                got.len(),
                sha256_hex(&got)
            )),
            None => problems.push("no file arrived".into()),
        }
        if let Some(r) = &recv {
            let want = sha256_hex(&data[p]);
            match r.event("file") {
                Some(f) if f["sha256"] == want.as_str() && f["size"] == SIZE => {}
                f => problems.push(format!("receive reported {f:?}, want sha256 {want}")),
            }
        }
        let s_route = send.route();
        let r_route = recv.as_ref().and_then(Side::route);
        let cell = match (s_route, r_route) {
            (Some((s, s_moved)), Some((r, r_moved))) => {
                if s.0 != r.0 {
                    problems.push(format!(
                        "the two sides disagree: send says {} ({}), receive {} ({})",
                        s.0, s.1, r.0, r.1
                    ));
                }
                let observed = if s.0 == "relay" || r.0 == "relay" {
                    Route::Relay
                } else {
                    Route::Direct
                };
                let mark = if observed == expected {
                    ""
                } else {
                    problems.push(format!(
                        "expected {expected}, the CLIs took {observed}: send {} {}, receive {} {}",
                        s.0, s.1, r.0, r.1
                    ));
                    " !"
                };
                let secs = took[p].map_or(0.0, |d| d.as_secs_f64());
                let moved = if s_moved || r_moved { " *" } else { "" };
                format!("{observed} {} {secs:.1}s{moved}{mark}", s.1)
            }
            _ => {
                problems.push("no connected event from both sides".into());
                "-".into()
            }
        };
        let failed = problems
            .iter()
            .any(|p| !p.starts_with("expected ") && !p.starts_with("the two sides"));
        cells.insert((*i, *j), if failed { "FAILED !".to_string() } else { cell });
        if !problems.is_empty() || verbose {
            let r_err = recv.as_mut().map(Side::stderr).unwrap_or_default();
            let s_err = send.stderr();
            let what =
                format!(
                "{id}: {}\n  send: {:?}\n  send stderr: {}\n  receive: {:?}\n  receive stderr: {}",
                if problems.is_empty() { "ok".to_string() } else { problems.join("; ") },
                send.lines,
                s_err.trim(),
                recv.as_ref().map(|r| &r.lines),
                r_err.trim()
            );
            if problems.is_empty() {
                eprintln!("{what}");
            } else {
                failures.push(what);
            }
        }
    }

    let mut table = format!(
        "\nswitchboard send -> receive across the NAT lab (rows: sender's NAT, columns: \
         receiver's NAT; cell: the route the data ended on, the sender's local/remote candidate types on it, \
         seconds from the sender's start to both exits; * = connected on the other route first \
         and ICE moved; ! = not what the theory says; {SIZE} bytes each, 16 at once)\n{:<26}",
        ""
    );
    for k in NatKind::ALL {
        table.push_str(&format!("{:<26}", k.nat_type()));
    }
    table.push('\n');
    for (i, ki) in NatKind::ALL.iter().enumerate() {
        table.push_str(&format!("{:<26}", ki.nat_type()));
        for j in 0..4 {
            table.push_str(&format!("{:<26}", cells[&(i, j)]));
        }
        table.push('\n');
    }
    table.push_str(&format!(
        "lab {:.1} s, transfers {:.1} s (slowest pair {:.1} s), whole test {:.1} s{}\n",
        lab_ready.as_secs_f64(),
        transfers.as_secs_f64(),
        slowest.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        if timed_out {
            format!(" (stopped at the {DEADLINE:?} deadline)")
        } else {
            String::new()
        }
    ));
    eprintln!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n\n"));
}
