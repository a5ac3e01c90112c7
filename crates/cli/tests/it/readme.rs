//! The README's tour, run verbatim: every ```console block of its "A quick tour" section is a
//! test step. Each `$ ` line is a command (continued by a trailing `\`; a trailing `&` runs it
//! in the background until the block ends); the lines after it must be printed in that order —
//! by that command or by one of the block's background commands (a subscriber printing what the
//! next command published) — with `…` standing for any text. Shell variables carry from one
//! command to the next, as in a terminal.
//!
//! The tour uses the default ports, so it runs in a network namespace of its own (only loopback,
//! where 127.0.0.2 also answers): nothing else on the machine is in the way, and nothing it
//! starts outlives the block.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{isolate_network, need, repo_root, BIN};

/// One `$ ` command and the lines shown after it.
#[derive(Debug)]
struct Step {
    command: String,
    background: bool,
    expected: Vec<String>,
}

/// The console blocks of the tour section.
fn tour_blocks(readme: &str) -> Vec<Vec<Step>> {
    let start = readme
        .find("\n## A quick tour\n")
        .expect("README has a \"## A quick tour\" section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    let section = &rest[..end];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```console" {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut continuing = false;
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            if continuing {
                let step = steps.last_mut().expect("a command to continue");
                let (text, more) = continuation(line);
                step.command.push(' ');
                step.command.push_str(text.trim());
                continuing = more;
                if !more {
                    finish(step);
                }
            } else if let Some(cmd) = line.strip_prefix("$ ") {
                let (text, more) = continuation(cmd);
                steps.push(Step {
                    command: text.to_owned(),
                    background: false,
                    expected: Vec::new(),
                });
                continuing = more;
                if !more {
                    finish(steps.last_mut().expect("just pushed"));
                }
            } else if !line.trim().is_empty() {
                steps
                    .last_mut()
                    .expect("output after a command")
                    .expected
                    .push(line.trim_end().to_owned());
            }
        }
        blocks.push(steps);
    }
    blocks
}

/// A command line without its trailing `\`, and whether the command continues.
fn continuation(line: &str) -> (&str, bool) {
    match line.trim_end().strip_suffix('\\') {
        Some(text) => (text, true),
        None => (line, false),
    }
}

/// Drops a trailing `# comment` and notes a trailing `&`.
fn finish(step: &mut Step) {
    let mut cmd = step.command.trim_end().to_owned();
    if let Some(i) = cmd.find(" # ").or_else(|| cmd.find("  #")) {
        cmd.truncate(i);
    }
    let cmd = cmd.trim_end();
    match cmd.strip_suffix('&') {
        Some(c) if !c.ends_with('&') => {
            step.background = true;
            step.command = c.trim_end().to_owned();
        }
        _ => step.command = cmd.to_owned(),
    }
}

/// Whether `line` is what `expected` shows (`…` = any text).
fn matches(expected: &str, line: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    let line = line.trim_end();
    if parts.len() == 1 {
        return line == expected;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// A command of the block: its output file and, in the background, its process.
struct Run {
    command: String,
    output: PathBuf,
    child: Option<Child>,
    /// Lines of its output already matched.
    cursor: usize,
}

impl Run {
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Stops the block's background commands (their whole process groups).
struct Cleanup(Vec<u32>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pgid in &self.0 {
            let _ = Command::new("kill")
                .args(["-s", "TERM", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(300));
        for pgid in &self.0 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run_block(n: usize, steps: &[Step], dir: &Path, path: &str) {
    use std::os::unix::process::CommandExt;
    let env = dir.join("env");
    std::fs::write(&env, "").unwrap();
    let mut runs: Vec<Run> = Vec::new();
    let mut cleanup = Cleanup(Vec::new());
    let report = |runs: &[Run]| {
        runs.iter()
            .map(|r| format!("$ {}\n{}", r.command, r.lines().join("\n")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (i, step) in steps.iter().enumerate() {
        let output = dir.join(format!("out-{n}-{i}"));
        let script = if step.background {
            format!("set -a; . '{}'; {}", env.display(), step.command)
        } else {
            format!(
                "set -a; . '{env}'; {cmd}\nrc=$?; export -p > '{env}'; exit $rc",
                env = env.display(),
                cmd = step.command
            )
        };
        let file = std::fs::File::create(&output).unwrap();
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &script])
            .current_dir(dir)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("bash for {:?}: {e}", step.command));
        if step.background {
            cleanup.0.push(child.id());
            runs.push(Run {
                command: step.command.clone(),
                output,
                child: Some(child),
                cursor: 0,
            });
            if step.expected.is_empty() {
                // Nothing to wait for (an echo peer, redis-server): give it a moment.
                std::thread::sleep(Duration::from_millis(800));
            }
        } else {
            let deadline = Instant::now() + Duration::from_secs(90);
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "README tour block {n}: {:?} did not finish in 90 s\n{}",
                        step.command,
                        report(&runs)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            // The exit status is not checked: some tools report what they found in it
            // (Debian's `stun` exits with the NAT type); the lines shown are what count.
            let _ = status;
            runs.push(Run {
                command: step.command.clone(),
                output,
                child: None,
                cursor: 0,
            });
        }
        // Each shown line, from this command first, else from a background one.
        let current = runs.len() - 1;
        for want in &step.expected {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut order: Vec<usize> = vec![current];
                order.extend((0..runs.len()).filter(|&r| r != current && runs[r].child.is_some()));
                let found = order.into_iter().find_map(|r| {
                    let lines = runs[r].lines();
                    (runs[r].cursor..lines.len())
                        .find(|&l| matches(want, &lines[l]))
                        .map(|l| (r, l))
                });
                if let Some((r, l)) = found {
                    runs[r].cursor = l + 1;
                    break;
                }
                let exited = runs
                    .iter_mut()
                    .filter_map(|r| r.child.as_mut())
                    .any(|c| matches!(c.try_wait(), Ok(Some(_))));
                assert!(
                    Instant::now() < deadline,
                    "README tour block {n}: after {:?}, no line like\n  {want}\n(a background command exited: {exited})\n{}",
                    step.command,
                    report(&runs)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    drop(cleanup);
}

#[test]
fn the_tour_parses_into_commands_and_output() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = tour_blocks(&readme);
    assert!(blocks.len() >= 5, "{blocks:?}");
    let all: Vec<&Step> = blocks.iter().flatten().collect();
    assert!(all
        .iter()
        .any(|s| s.background && s.command == "switchboard serve"));
    // Continued lines are joined, comments dropped, `&` noted.
    let redis = all
        .iter()
        .find(|s| s.command.starts_with("redis-server"))
        .unwrap();
    assert!(
        redis.background && !redis.command.contains('#'),
        "{redis:?}"
    );
    let node_b = all
        .iter()
        .find(|s| s.command.contains("--node-name b"))
        .unwrap();
    assert!(node_b.command.ends_with("--stun-tls off"), "{node_b:?}");
    assert!(matches("sha256 …", "sha256 AB:CD"));
    assert!(matches("a…b…c", "a12b34c"));
    assert!(!matches("a…b…c", "a12c34b"));
    assert!(!matches("offset 1", "offset 10"));
}

#[test]
fn the_readme_tour_runs_verbatim() {
    for tool in [
        "curl",
        "stun",
        "turnutils_natdiscovery",
        "turnutils_uclient",
        "turnutils_peer",
        "redis-server",
        "ip",
    ] {
        need(tool);
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = tour_blocks(&readme);
    isolate_network();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = std::env::temp_dir().join(format!("sb-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, steps) in blocks.iter().enumerate() {
        run_block(n + 1, steps, &dir, &path);
    }
    std::fs::remove_dir_all(&dir).ok();
}
