//! `--manual`: no switchboard server. The sender gathers candidates (host, and server-reflexive
//! from `--stun`), prints its offer as `sb1:…` text (and a QR code on a terminal) and reads the
//! answer from standard input or `--answer-file`; the receiver takes the offer as its argument,
//! from standard input or `--offer-file`, and prints its answer the same way. The text carries
//! the DTLS fingerprint, so whoever carries it authenticates the connection
//! ([`switchboard_transfer::manual`], docs/send.md).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchboard_transfer::files::{self, Output, Status};
use switchboard_transfer::manual::{self as text, Kind, PREFIX};
use switchboard_transfer::peer::{gather, IceServer, PeerConfig, PeerError};

use super::{
    emit, output, receive_files, runtime, send_files, Common, Failure, ReceiveArgs, Reporter,
    SendArgs,
};

/// How long a side waits for the other's text (a person carries it).
const WAIT: Duration = Duration::from_secs(600);

/// How long a malformed file may stay unchanged before it is an error (it may be half written).
const SETTLE: Duration = Duration::from_secs(1);

fn usage(message: impl Into<String>) -> Failure {
    Failure::new(2, "usage", message)
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Offer => "offer",
        Kind::Answer => "answer",
    }
}

impl Common {
    /// Without a server: only `--stun` servers, host candidates on `--host-ip`.
    fn manual_peer_config(&self) -> Result<PeerConfig, Failure> {
        if self.relay_only {
            return Err(usage(
                "--relay-only needs the server's TURN relay, and --manual uses no server",
            ));
        }
        let mut ice_servers = Vec::new();
        if !self.stun.is_empty() {
            ice_servers.push(IceServer {
                urls: self.stun.clone(),
                ..IceServer::default()
            });
        }
        Ok(PeerConfig {
            ice_servers,
            host_ips: self.host_ip.clone(),
            ..PeerConfig::default()
        })
    }
}

/// The `sb1:…` text in what was pasted or read: from the prefix (any case) up to the first
/// character that is neither base64url nor white space. Without a prefix, all of it (and the
/// decoder says what is wrong).
fn extract(s: &str) -> &str {
    let Some(at) = s.to_ascii_lowercase().find(PREFIX) else {
        return s.trim();
    };
    let rest = &s[at..];
    let end = rest[PREFIX.len()..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c.is_whitespace()))
        .map_or(rest.len(), |i| i + PREFIX.len());
    rest[..end].trim()
}

/// Writes `text` and a newline to `path` atomically (a temporary file renamed into place), so a
/// side waiting for the file never reads half of it.
fn write_atomic(path: &Path, text: &str) -> Result<(), Failure> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{text}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::new(7, "file", format!("cannot write {}: {e}", path.display()))
        })
}

/// The QR code of `text` in Unicode half blocks (two modules a character), light modules
/// drawn, for a terminal with a dark background.
fn qr(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Shows this side's offer or answer: a JSON event, or a line (`offer sb1:…`) on stdout (on
/// stderr when the data owns stdout) and the QR code on a terminal; also into `file`.
fn show(
    r: &Reporter,
    kind: Kind,
    description: &str,
    candidates: &[String],
    file: Option<&Path>,
    data_on_stdout: bool,
) -> Result<(), Failure> {
    if let Some(f) = file {
        write_atomic(f, description)?;
    }
    let what = name(kind);
    if r.json && !data_on_stdout {
        let mut v = serde_json::json!({"event": what, "candidates": candidates});
        v[what] = description.into();
        emit(v);
        return Ok(());
    }
    if data_on_stdout {
        eprintln!("{what} {description}");
    } else {
        println!("{what} {description}");
        let _ = std::io::stdout().flush();
    }
    if !r.json && std::io::stderr().is_terminal() {
        if let Some(q) = qr(description) {
            eprintln!("{q}");
        }
    }
    Ok(())
}

/// Reads the other side's text from standard input: the first line that is not empty.
async fn from_stdin(kind: Kind, prompt: bool) -> Result<String, Failure> {
    let what = name(kind);
    if prompt && std::io::stdin().is_terminal() {
        eprintln!("paste the {what} here (it starts with {PREFIX}) and press Enter:");
    }
    let read = tokio::task::spawn_blocking(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) => return Err(usage(format!("standard input ended without an {what}"))),
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => return Ok(extract(&line).to_string()),
                Err(e) => {
                    return Err(usage(format!(
                        "cannot read the {what} from standard input: {e}"
                    )))
                }
            }
        }
    });
    match tokio::time::timeout(WAIT, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(usage(format!("reading standard input: {e}"))),
        Err(_) => Err(Failure::new(
            5,
            "connect",
            format!("no {what} within {} minutes", WAIT.as_secs() / 60),
        )),
    }
}

/// Waits until `path` holds an `sb1:` text of this kind that differs from `stale` (what it held
/// before ours was shown: never the answer to this offer), and returns its SDP. A file that
/// stays malformed for [`SETTLE`] is an error.
async fn from_file(path: &Path, kind: Kind, stale: Option<Vec<u8>>) -> Result<String, Failure> {
    let what = name(kind);
    let deadline = Instant::now() + WAIT;
    let mut bad: Option<(Vec<u8>, Instant, String)> = None;
    loop {
        match std::fs::read(path) {
            Ok(b) if stale.as_ref() != Some(&b) && !b.iter().all(u8::is_ascii_whitespace) => {
                let s = String::from_utf8_lossy(&b).into_owned();
                match text::decode(extract(&s), kind) {
                    Ok(sdp) => return Ok(sdp),
                    Err(e) => match &bad {
                        Some((prev, since, _)) if *prev == b => {
                            if since.elapsed() >= SETTLE {
                                return Err(usage(format!(
                                    "the {what} in {} is malformed: {e}",
                                    path.display()
                                )));
                            }
                        }
                        _ => bad = Some((b, Instant::now(), e.0)),
                    },
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::new(
                    7,
                    "file",
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                5,
                "connect",
                format!(
                    "no {what} in {} within {} minutes",
                    path.display(),
                    WAIT.as_secs() / 60
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn decode(s: &str, kind: Kind) -> Result<String, Failure> {
    text::decode(s, kind).map_err(|e| usage(format!("malformed {}: {e}", name(kind))))
}

/// `switchboard send --manual`.
pub(super) async fn send(
    args: &SendArgs,
    sources: Vec<files::Source>,
    r: &mut Reporter,
) -> Result<(), Failure> {
    let c = &args.common;
    let stdin_data = args.paths.iter().any(|p| p.as_os_str() == "-");
    let answer_file = args.answer_file.as_deref().filter(|p| p.as_os_str() != "-");
    if stdin_data && answer_file.is_none() {
        return Err(usage(
            "--manual reads the answer from standard input, which holds the data here: \
             give --answer-file FILE",
        ));
    }
    let cfg = c.manual_peer_config()?;
    // What the answer file holds now is not the answer to the offer about to be made.
    let stale = answer_file.and_then(|p| std::fs::read(p).ok());
    let mut agent = gather(&cfg).await?;
    let offer = agent.offer()?;
    let offer = text::encode(&offer, Kind::Offer)
        .map_err(|e| Failure::new(5, "connect", format!("cannot make a manual offer: {e}")))?;
    show(
        r,
        Kind::Offer,
        &offer,
        &agent.candidates,
        args.offer_file.as_deref(),
        false,
    )?;
    let answer = match answer_file {
        Some(p) => {
            r.note(&format!(
                "on the other machine: switchboard receive --manual OFFER; waiting for its answer in {}",
                p.display()
            ));
            from_file(p, Kind::Answer, stale).await?
        }
        None => {
            r.note("on the other machine: switchboard receive --manual OFFER (the text above)");
            decode(&from_stdin(Kind::Answer, true).await?, Kind::Answer)?
        }
    };
    agent
        .accept_answer(&answer)
        .map_err(|e| usage(format!("the answer does not fit this offer: {e}")))?;
    r.routes = Some(agent.routes());
    let mut link = agent.start();
    let route = files::opened(&mut link)
        .await
        .map_err(|e| Failure::new(5, "connect", e.to_string()))?;
    r.status(Status::Connected(route));
    send_files(link, sources, r).await
}

/// Where the offer comes from.
enum Source {
    Text(String),
    Stdin,
    File(PathBuf),
}

/// `switchboard receive --manual`: `receive --manual [OFFER|-] [-]`, or
/// `receive --manual --offer-file FILE [-]` (the one positional then is the stdout `-`).
pub(super) fn receive(args: &ReceiveArgs, r: &mut Reporter) -> Result<(), Failure> {
    let (source, stdout) = if let Some(f) = &args.offer_file {
        // The offer comes from the file: a lone `-` is the stdout marker.
        let stdout = match (args.code.as_deref(), args.stdout.as_deref()) {
            (None, s) => s,
            (Some("-"), None) => Some("-"),
            _ => {
                return Err(usage(
                    "give the offer either as an argument or with --offer-file, not both",
                ))
            }
        };
        let source = if f.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(f.clone())
        };
        (source, stdout)
    } else {
        let source = match args.code.as_deref() {
            None | Some("-") => Source::Stdin,
            Some(t) => Source::Text(t.to_string()),
        };
        (source, args.stdout.as_deref())
    };
    let out = output(args, stdout)?;
    runtime().block_on(receive_inner(args, source, &out, r))
}

async fn receive_inner(
    args: &ReceiveArgs,
    source: Source,
    out: &Output,
    r: &mut Reporter,
) -> Result<(), Failure> {
    let c = &args.common;
    let cfg = c.manual_peer_config()?;
    let offer = match source {
        Source::Text(t) => decode(extract(&t), Kind::Offer)?,
        Source::Stdin => decode(&from_stdin(Kind::Offer, true).await?, Kind::Offer)?,
        Source::File(p) => from_file(&p, Kind::Offer, None).await?,
    };
    let mut agent = gather(&cfg).await?;
    let answer = agent
        .accept_offer(&offer)
        .map_err(|e: PeerError| usage(format!("the offer was refused: {e}")))?;
    let answer = text::encode(&answer, Kind::Answer)
        .map_err(|e| Failure::new(5, "connect", format!("cannot make a manual answer: {e}")))?;
    let data_on_stdout = matches!(out, Output::Stdout);
    show(
        r,
        Kind::Answer,
        &answer,
        &agent.candidates,
        args.answer_file.as_deref(),
        data_on_stdout,
    )?;
    r.note(
        "give this answer to the sender within 30 s (paste it, or scan the QR code); \
         connecting...",
    );
    r.routes = Some(agent.routes());
    let mut link = agent.start();
    let route = files::opened(&mut link)
        .await
        .map_err(|e| Failure::new(5, "connect", e.to_string()))?;
    r.status(Status::Connected(route));
    receive_files(link, out, r).await
}

#[cfg(test)]
mod tests {
    use super::extract;

    #[test]
    fn the_text_is_found_in_what_was_pasted() {
        assert_eq!(extract("sb1:abc-_9"), "sb1:abc-_9");
        assert_eq!(extract("answer SB1:abc\n"), "SB1:abc");
        assert_eq!(
            extract(r#"{"event":"offer","offer":"sb1:a_b-c","candidates":[]}"#),
            "sb1:a_b-c"
        );
        assert_eq!(extract("  sb1:ab\n  cd  \n"), "sb1:ab\n  cd");
        assert_eq!(extract(" hello "), "hello");
        assert_eq!(extract("é sb1:x"), "sb1:x");
    }
}
