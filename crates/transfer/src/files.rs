//! Sending and receiving files over a running [`Link`]: the manifest, chunks with their hashes,
//! whole-file hashes checked before a file is renamed into place, acknowledgements.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{Context, SHA256};

use crate::peer::{Cmd, Link, LinkEvent, Route};
use crate::wire::{hex, safe_path, sha256, Entry, Frame, Manifest, CHUNK};

/// What went wrong moving the files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The connection ended or the peer aborted.
    #[error("{0}")]
    Peer(String),
    /// A hash did not match: nothing of that file was kept.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// A file to receive exists already.
    #[error("{0} exists already (use --overwrite, or another --output directory)")]
    Exists(String),
    /// The peer sent something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// What happens, for progress bars and `--json` lines.
#[derive(Clone, Debug)]
pub enum Status {
    /// The data channel is open.
    Connected(Route),
    /// What is being transferred.
    Manifest {
        /// Files.
        files: usize,
        /// Bytes (of the files of known size).
        bytes: u64,
    },
    /// Bytes moved so far.
    Progress {
        /// Done.
        done: u64,
        /// Known total.
        total: u64,
    },
    /// A file resumes: the receiver holds its first `offset` bytes already (counted as done).
    Resume {
        /// Its path in the transfer.
        path: String,
        /// Where it resumes.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// A file was verified (and, receiving, kept).
    File {
        /// Its path in the transfer.
        path: String,
        /// Its size.
        size: u64,
        /// Its SHA-256 (hex).
        sha256: String,
    },
}

/// A local source: an entry and where to read it (`None`: standard input).
pub type Source = (Entry, Option<PathBuf>);

fn mtime(meta: &std::fs::Metadata) -> Option<i64> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

fn mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode() & 0o7777)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<Source>) -> std::io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    out.push((
        Entry {
            path: rel.to_string(),
            dir: true,
            size: None,
            mode: mode(&meta),
            mtime: mtime(&meta),
        },
        Some(dir.to_path_buf()),
    ));
    let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for c in children {
        let Some(name) = c.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %c.path().display(), "skipping a name that is not UTF-8");
            continue;
        };
        let path = c.path();
        let ft = c.file_type()?;
        let child = format!("{rel}/{name}");
        if ft.is_dir() {
            walk(&path, &child, out)?;
        } else if ft.is_file() {
            let meta = c.metadata()?;
            out.push((
                Entry {
                    path: child,
                    dir: false,
                    size: Some(meta.len()),
                    mode: mode(&meta),
                    mtime: mtime(&meta),
                },
                Some(path),
            ));
        } else {
            tracing::warn!(path = %path.display(), "skipping (not a file or directory)");
        }
    }
    Ok(())
}

/// The entries for `paths` (`-` is standard input, named `stdin_name`).
pub fn collect(paths: &[PathBuf], stdin_name: &str) -> Result<Vec<Source>, TransferError> {
    let mut out: Vec<Source> = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push((
                Entry {
                    path: stdin_name.to_string(),
                    dir: false,
                    size: None,
                    mode: None,
                    mtime: None,
                },
                None,
            ));
            continue;
        }
        let meta = std::fs::metadata(p)
            .map_err(|e| TransferError::Io(format!("cannot read {}: {e}", p.display())))?;
        let name = p
            .canonicalize()
            .ok()
            .and_then(|c| c.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .ok_or_else(|| TransferError::Io(format!("{}: no usable file name", p.display())))?;
        if meta.is_dir() {
            walk(p, &name, &mut out)
                .map_err(|e| TransferError::Io(format!("cannot read {}: {e}", p.display())))?;
        } else {
            out.push((
                Entry {
                    path: name,
                    dir: false,
                    size: Some(meta.len()),
                    mode: mode(&meta),
                    mtime: mtime(&meta),
                },
                Some(p.clone()),
            ));
        }
    }
    let mut names: Vec<&str> = out.iter().map(|(e, _)| e.path.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(TransferError::Io(format!(
            "two sources are named {:?}; rename one",
            w[0]
        )));
    }
    Ok(out)
}

/// Waits for the data channel.
pub async fn opened(link: &mut Link) -> Result<Route, TransferError> {
    match link.rx.recv().await {
        Some(LinkEvent::Open(r)) => Ok(r),
        Some(LinkEvent::Closed(why)) => Err(TransferError::Peer(why)),
        Some(LinkEvent::Data(_)) => Err(TransferError::Protocol("data before open".into())),
        None => Err(TransferError::Peer("the connection ended".into())),
    }
}

async fn put(link: &Link, f: Frame) -> Result<(), TransferError> {
    link.tx
        .send(Cmd::Send(f.encode()))
        .await
        .map_err(|_| TransferError::Peer("the connection ended".into()))
}

/// A frame the peer sent us, or why the link ended.
fn peer_frame(ev: Option<LinkEvent>) -> Result<Frame, TransferError> {
    match ev {
        Some(LinkEvent::Data(d)) => {
            Frame::decode(&d).map_err(|e| TransferError::Protocol(e.to_string()))
        }
        Some(LinkEvent::Closed(why)) => Err(TransferError::Peer(why)),
        Some(LinkEvent::Open(_)) => Err(TransferError::Protocol("opened twice".into())),
        None => Err(TransferError::Peer("the connection ended".into())),
    }
}

/// Anything the receiver said while we send: an abort stops us.
fn check_incoming(link: &mut Link, acked: &mut usize) -> Result<(), TransferError> {
    while let Ok(ev) = link.rx.try_recv() {
        match peer_frame(Some(ev))? {
            Frame::Ack(_) => *acked += 1,
            Frame::Abort(why) => {
                return Err(TransferError::Peer(format!("the receiver stopped: {why}")))
            }
            other => return Err(TransferError::Protocol(format!("unexpected {other:?}"))),
        }
    }
    Ok(())
}

/// How long the sender waits for the receiver's `G` after the manifest.
pub const GO_TIMEOUT: Duration = Duration::from_secs(60);

/// Where each entry starts, from the receiver's `G` records: `Err` with why when a record is
/// not acceptable (not a file of known size, an offset beyond it or not a multiple of
/// [`CHUNK`], a file named twice).
pub fn check_go(entries: &[Entry], records: &[(u32, u64)]) -> Result<Vec<u64>, String> {
    let mut starts = vec![0u64; entries.len()];
    let mut seen = vec![false; entries.len()];
    for &(file, offset) in records {
        let i = file as usize;
        let Some(e) = entries.get(i) else {
            return Err(format!("go: no file #{file}"));
        };
        if e.dir {
            return Err(format!("go: {} is a directory", e.path));
        }
        let Some(size) = e.size else {
            return Err(format!(
                "go: {} has no known size, it cannot resume",
                e.path
            ));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(format!("go: {} named twice", e.path));
        }
        if !offset.is_multiple_of(CHUNK as u64) {
            return Err(format!(
                "go: {} at {offset}, not a multiple of {CHUNK}",
                e.path
            ));
        }
        if offset > size {
            return Err(format!(
                "go: {} at {offset}, beyond its {size} bytes",
                e.path
            ));
        }
        starts[i] = offset;
    }
    Ok(starts)
}

/// Waits for the receiver's `G`: where each entry starts.
async fn wait_go(link: &mut Link, entries: &[Entry]) -> Result<Vec<u64>, TransferError> {
    let ev = tokio::time::timeout(GO_TIMEOUT, link.rx.recv())
        .await
        .map_err(|_| {
            TransferError::Protocol(format!(
                "the receiver did not answer the manifest within {} s (an older switchboard? \
                 both sides need one that resumes)",
                GO_TIMEOUT.as_secs()
            ))
        })?;
    let records = match peer_frame(ev)? {
        Frame::Go(r) => r,
        Frame::Abort(why) => {
            return Err(TransferError::Peer(format!("the receiver stopped: {why}")))
        }
        other => {
            return Err(TransferError::Protocol(format!(
                "expected go, got {other:?}"
            )))
        }
    };
    match check_go(entries, &records) {
        Ok(starts) => Ok(starts),
        Err(why) => {
            let _ = put(link, Frame::Abort(why.clone())).await;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = link.tx.send(Cmd::Flush(tx)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
            Err(TransferError::Protocol(why))
        }
    }
}

/// Fills `buf` from `reader` as far as it goes (stdin returns short reads): the bytes read.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Sends `sources` and waits until the receiver says it kept everything: the bytes sent (not
/// counting what the receiver had already).
pub async fn send(
    link: &mut Link,
    sources: Vec<Source>,
    status: &mut dyn FnMut(Status),
) -> Result<u64, TransferError> {
    let manifest = Manifest {
        v: 1,
        entries: sources.iter().map(|(e, _)| e.clone()).collect(),
    };
    let total = manifest.total();
    status(Status::Manifest {
        files: manifest.files(),
        bytes: total,
    });
    put(link, Frame::Manifest(manifest.clone())).await?;
    let starts = wait_go(link, &manifest.entries).await?;
    let resumed: u64 = starts.iter().sum();
    for ((entry, _), &offset) in sources.iter().zip(&starts) {
        if offset > 0 {
            status(Status::Resume {
                path: entry.path.clone(),
                offset,
                size: entry.size.unwrap_or(offset),
            });
        }
    }
    let mut moved = 0u64;
    let mut acked = 0usize;
    for (i, ((entry, path), &start)) in sources.iter().zip(&starts).enumerate() {
        if entry.dir {
            continue;
        }
        let mut reader: Box<dyn Read + Send> = match path {
            Some(p) => Box::new(
                std::fs::File::open(p)
                    .map_err(|e| TransferError::Io(format!("cannot read {}: {e}", p.display())))?,
            ),
            None => Box::new(std::io::stdin()),
        };
        let mut whole = Context::new(&SHA256);
        let mut offset = 0u64;
        let mut buf = vec![0u8; CHUNK];
        // What the receiver holds already: hashed, not sent.
        while offset < start {
            let want = (start - offset).min(CHUNK as u64) as usize;
            let n = match fill(&mut reader, &mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    let why = format!("cannot read {}: {e}", entry.path);
                    let _ = put(link, Frame::Abort(format!("the sender {why}"))).await;
                    return Err(TransferError::Io(why));
                }
            };
            if n < want {
                let why = format!("{} changed size while being sent", entry.path);
                let _ = put(link, Frame::Abort(why.clone())).await;
                return Err(TransferError::Io(why));
            }
            whole.update(&buf[..n]);
            offset += n as u64;
        }
        loop {
            let n = match fill(&mut reader, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let why = format!("cannot read {}: {e}", entry.path);
                    let _ = put(link, Frame::Abort(format!("the sender {why}"))).await;
                    return Err(TransferError::Io(why));
                }
            };
            if n == 0 {
                break;
            }
            let data = buf[..n].to_vec();
            whole.update(&data);
            let f = Frame::Chunk {
                file: i as u32,
                offset,
                sha256: sha256(&data),
                data,
            };
            put(link, f).await?;
            offset += n as u64;
            moved += n as u64;
            status(Status::Progress {
                done: resumed + moved,
                total: total.max(resumed + moved),
            });
            check_incoming(link, &mut acked)?;
            if n < CHUNK && path.is_some() {
                break;
            }
        }
        let digest: [u8; 32] = whole.finish().as_ref().try_into().expect("32 bytes");
        if let Some(size) = entry.size {
            if size != offset {
                let why = format!("{} changed size while being sent", entry.path);
                let _ = put(link, Frame::Abort(why.clone())).await;
                return Err(TransferError::Io(why));
            }
        }
        put(
            link,
            Frame::End {
                file: i as u32,
                size: offset,
                sha256: digest,
            },
        )
        .await?;
        status(Status::File {
            path: entry.path.clone(),
            size: offset,
            sha256: hex(&digest),
        });
    }
    put(link, Frame::Done).await?;
    // The receiver acknowledges each file and then everything.
    loop {
        match peer_frame(link.rx.recv().await)? {
            Frame::Ack(_) => acked += 1,
            Frame::Kept => break,
            Frame::Abort(why) => {
                return Err(TransferError::Peer(format!("the receiver stopped: {why}")))
            }
            other => return Err(TransferError::Protocol(format!("unexpected {other:?}"))),
        }
    }
    tracing::debug!(acked, "receiver kept everything");
    Ok(moved)
}

/// Where received files go.
#[derive(Clone, Debug)]
pub enum Output {
    /// Under this directory.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Replace files that exist.
        overwrite: bool,
        /// Resume files from parts an interrupted transfer kept (else discard them).
        resume: bool,
    },
    /// Standard output (one file only; never resumes).
    Stdout,
}

/// The receiver gives up on a sender that sends nothing for this long in the middle of a file
/// (the transfer is then interrupted: the part is kept), or for [`STALL_FACTOR`] times the
/// longest gap between two chunks of a file so far if that is longer. A peer that vanishes
/// (killed, unplugged) is otherwise noticed only when ICE gives up on it, after about 40 s.
pub const STALL: Duration = Duration::from_secs(10);
/// See [`STALL`].
pub const STALL_FACTOR: u32 = 8;
/// How often the record of a part being written is brought up to date (after a sync).
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// Kept next to a part (`.NAME.switchboard-part.json`): what the part is the start of, and how
/// much of it is verified and on disk.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PartRecord {
    /// Format (1).
    v: u32,
    /// The entry's path in the manifest.
    path: String,
    /// The entry's size.
    size: u64,
    /// The entry's mtime.
    mtime: i64,
    /// Bytes at the start of the part whose chunks were verified and synced: whole chunks.
    verified: u64,
}

fn part_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.switchboard-part"))
}

/// The record next to `part`.
fn record_path(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Writes the record whole (a temporary name, then a rename).
fn write_record(part: &Path, r: &PartRecord) -> std::io::Result<()> {
    let path = record_path(part);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let json = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &path)
}

/// Removes `p`; that it is not there is fine.
fn remove(p: &Path) -> Result<(), TransferError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TransferError::Io(format!(
            "cannot remove {}: {e}",
            p.display()
        ))),
    }
}

/// Removes a part and its record, as far as it can.
fn discard(part: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(record_path(part));
}

/// How much of `entry` the part at `part` holds verified, when its record matches the entry
/// (path, size and mtime, whole chunks within the size) and the part is at least that long;
/// the part is cut to that length.
fn kept_part(entry: &Entry, part: &Path) -> Option<u64> {
    let (false, Some(size), Some(mtime)) = (entry.dir, entry.size, entry.mtime) else {
        return None;
    };
    let r: PartRecord = serde_json::from_slice(&std::fs::read(record_path(part)).ok()?).ok()?;
    let fits = r.v == 1
        && r.path == entry.path
        && r.size == size
        && r.mtime == mtime
        && r.verified > 0
        && r.verified.is_multiple_of(CHUNK as u64)
        && r.verified <= size;
    if !fits {
        return None;
    }
    let f = std::fs::OpenOptions::new().write(true).open(part).ok()?;
    if f.metadata().ok()?.len() < r.verified {
        return None;
    }
    f.set_len(r.verified).ok()?;
    Some(r.verified)
}

/// Where `entry` starts when it is received to `target`: what a kept part holds (see
/// [`kept_part`]) when `resume`, else 0, and then any part or record there is removed.
fn plan_resume(entry: &Entry, target: &Path, resume: bool) -> Result<u64, TransferError> {
    let part = part_path(target);
    if let Some(n) = resume.then(|| kept_part(entry, &part)).flatten() {
        return Ok(n);
    }
    remove(&part)?;
    remove(&record_path(&part))?;
    Ok(0)
}

/// SHA-256 state over the first `n` bytes of `part` (what a resumed file holds already).
fn hash_prefix(part: &Path, n: u64) -> std::io::Result<Context> {
    let f = std::fs::File::open(part)?;
    let mut r = f.take(n);
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..k]);
        got += k as u64;
    }
    if got < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the part holds {got} bytes, not the {n} kept"),
        ));
    }
    Ok(ctx)
}

/// A part being written.
struct Part {
    path: PathBuf,
    w: std::io::BufWriter<std::fs::File>,
    /// What the record next to it says; `None` for an entry that cannot resume (no size or
    /// mtime): no record is kept.
    record: Option<PartRecord>,
    /// A sync running: once it is done, the record may claim this much.
    syncing: Option<(tokio::task::JoinHandle<std::io::Result<()>>, u64)>,
    /// When the last sync started.
    last: Instant,
}

impl Part {
    /// After data up to `offset` was written: brings the record up to date now and then —
    /// the data is flushed, synced (in the background), and only then claimed.
    async fn written(&mut self, offset: u64) -> std::io::Result<()> {
        if self.syncing.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            if let Some((h, n)) = self.syncing.take() {
                h.await.map_err(std::io::Error::other)??;
                self.claim(n)?;
            }
        }
        let Some(r) = &self.record else { return Ok(()) };
        let whole = offset - offset % CHUNK as u64;
        if self.syncing.is_none() && whole > r.verified && self.last.elapsed() >= RECORD_EVERY {
            self.w.flush()?;
            let f = self.w.get_ref().try_clone()?;
            self.syncing = Some((tokio::task::spawn_blocking(move || f.sync_data()), whole));
            self.last = Instant::now();
        }
        Ok(())
    }

    /// The record now says `verified` bytes.
    fn claim(&mut self, verified: u64) -> std::io::Result<()> {
        if let Some(r) = &mut self.record {
            if verified > r.verified {
                r.verified = verified;
                write_record(&self.path, r)?;
            }
        }
        Ok(())
    }

    /// The transfer was interrupted with `offset` bytes written: syncs and records the whole
    /// chunks of them; what the record says now.
    async fn keep(&mut self, offset: u64) -> std::io::Result<u64> {
        if let Some((h, _)) = self.syncing.take() {
            let _ = h.await;
        }
        if self.record.is_none() {
            return Ok(0);
        }
        self.w.flush()?;
        self.w.get_ref().sync_data()?;
        self.claim(offset - offset % CHUNK as u64)?;
        Ok(self.record.as_ref().map_or(0, |r| r.verified))
    }
}

enum Sink {
    Stdout(std::io::Stdout),
    Part(Part),
}

/// The file being received.
struct Current {
    index: u32,
    /// Its path in the transfer.
    name: String,
    sink: Sink,
    /// Bytes of it so far (a resumed file starts with those kept).
    offset: u64,
    hash: Context,
}

impl Current {
    /// The transfer ended with `e` in the middle of this file: on a hash mismatch or a peer
    /// that breaks the protocol the part goes; otherwise (the peer left or aborted, a local
    /// error) what was verified is kept with its record, to resume from — and `e` says so.
    async fn interrupted(self, e: TransferError) -> TransferError {
        let Sink::Part(mut part) = self.sink else {
            return e;
        };
        if matches!(e, TransferError::Integrity(_) | TransferError::Protocol(_)) {
            drop(part.w);
            discard(&part.path);
            return e;
        }
        match part.keep(self.offset).await {
            Ok(0) => {
                drop(part.w);
                discard(&part.path);
                e
            }
            Ok(n) => {
                let note = format!(
                    "{} of {} kept: receive from the sender again into the same directory to \
                     resume",
                    mib(n),
                    self.name
                );
                match e {
                    TransferError::Peer(m) => TransferError::Peer(format!("{m} ({note})")),
                    TransferError::Io(m) => TransferError::Io(format!("{m} ({note})")),
                    other => other,
                }
            }
            // The record still says what was synced before (or there is none yet).
            Err(err) => {
                tracing::warn!(part = %part.path.display(), "cannot keep the part: {err}");
                if part.record.as_ref().is_some_and(|r| r.verified == 0) {
                    drop(part.w);
                    discard(&part.path);
                }
                e
            }
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Receives into `out`: the bytes received (not counting what was kept from an interrupted
/// transfer and resumed).
pub async fn receive(
    link: &mut Link,
    out: &Output,
    status: &mut dyn FnMut(Status),
) -> Result<u64, TransferError> {
    let mut current = None;
    let r = receive_inner(link, out, status, &mut current).await;
    match r {
        Ok(n) => Ok(n),
        Err(e) => {
            let e = match current.take() {
                Some(c) => c.interrupted(e).await,
                None => e,
            };
            if !matches!(e, TransferError::Peer(_)) {
                let _ = put(link, Frame::Abort(e.to_string())).await;
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = link.tx.send(Cmd::Flush(tx)).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
            }
            Err(e)
        }
    }
}

/// A prefix being hashed in the background.
type Prefix = tokio::task::JoinHandle<std::io::Result<Context>>;

fn io(what: &str, p: &Path, e: std::io::Error) -> TransferError {
    let hint = if e.raw_os_error() == Some(28) {
        " (disk full)"
    } else {
        ""
    };
    TransferError::Io(format!("cannot {what} {}: {e}{hint}", p.display()))
}

/// Opens the part (or stdout) for file `file`, after the `start` bytes kept of it (whose hash
/// `prefix` computes).
async fn open(
    file: u32,
    entry: &Entry,
    target: &Path,
    start: u64,
    prefix: Option<Prefix>,
    out: &Output,
) -> Result<Current, TransferError> {
    let (sink, hash) = match out {
        Output::Stdout => (Sink::Stdout(std::io::stdout()), Context::new(&SHA256)),
        Output::Dir { .. } => {
            let path = part_path(target);
            let (f, hash) = match (start, prefix) {
                (0, _) => (
                    std::fs::File::create(&path).map_err(|e| io("create", &path, e))?,
                    Context::new(&SHA256),
                ),
                (_, None) => {
                    return Err(TransferError::Protocol(format!(
                        "{} sent a second time",
                        entry.path
                    )))
                }
                (_, Some(h)) => {
                    let hash = h.await.map_err(std::io::Error::other).and_then(|r| r);
                    let hash = hash.map_err(|e| {
                        TransferError::Io(format!(
                            "the part kept of {} cannot be read: {e}",
                            entry.path
                        ))
                    })?;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io("open", &path, e))?;
                    f.set_len(start).map_err(|e| io("write", &path, e))?;
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start))
                        .map_err(|e| io("write", &path, e))?;
                    (f, hash)
                }
            };
            let record = match (entry.size, entry.mtime) {
                (Some(size), Some(mtime)) => Some(PartRecord {
                    v: 1,
                    path: entry.path.clone(),
                    size,
                    mtime,
                    verified: start,
                }),
                _ => None,
            };
            let part = Part {
                path,
                w: std::io::BufWriter::with_capacity(1 << 20, f),
                record,
                syncing: None,
                last: Instant::now(),
            };
            (Sink::Part(part), hash)
        }
    };
    Ok(Current {
        index: file,
        name: entry.path.clone(),
        sink,
        offset: start,
        hash,
    })
}

async fn receive_inner(
    link: &mut Link,
    out: &Output,
    status: &mut dyn FnMut(Status),
    current: &mut Option<Current>,
) -> Result<u64, TransferError> {
    let manifest = match peer_frame(link.rx.recv().await)? {
        Frame::Manifest(m) if m.v == 1 => m,
        Frame::Abort(why) => return Err(TransferError::Peer(format!("the sender stopped: {why}"))),
        other => {
            return Err(TransferError::Protocol(format!(
                "expected a manifest, got {other:?}"
            )))
        }
    };
    let mut targets = Vec::new();
    for e in &manifest.entries {
        let rel = safe_path(&e.path)
            .ok_or_else(|| TransferError::Protocol(format!("unsafe path {:?}", e.path)))?;
        match out {
            Output::Dir { dir, overwrite, .. } => {
                let t = dir.join(rel);
                if !e.dir && !overwrite && t.exists() {
                    return Err(TransferError::Exists(t.display().to_string()));
                }
                targets.push(t);
            }
            Output::Stdout => targets.push(rel),
        }
    }
    if matches!(out, Output::Stdout) && (manifest.files() != 1 || manifest.entries.len() != 1) {
        return Err(TransferError::Io(
            "standard output takes exactly one file (this transfer has more; use --output DIR)"
                .into(),
        ));
    }
    let total = manifest.total();
    status(Status::Manifest {
        files: manifest.files(),
        bytes: total,
    });
    // Where each file starts: after what a kept part holds, or at zero.
    let mut starts = vec![0u64; manifest.entries.len()];
    if let Output::Dir { resume, .. } = out {
        for (e, t) in manifest.entries.iter().zip(&targets) {
            let dir = if e.dir { Some(t.as_path()) } else { t.parent() };
            if let Some(d) = dir {
                std::fs::create_dir_all(d).map_err(|x| io("create", d, x))?;
            }
        }
        for ((e, t), start) in manifest.entries.iter().zip(&targets).zip(&mut starts) {
            if !e.dir {
                *start = plan_resume(e, t, *resume)?;
            }
        }
    }
    let go: Vec<(u32, u64)> = (0u32..)
        .zip(&starts)
        .filter(|(_, s)| **s > 0)
        .map(|(i, s)| (i, *s))
        .collect();
    put(link, Frame::Go(go)).await?;
    // What the kept parts hold is hashed while the sender hashes it too.
    let mut prefixes: Vec<Option<Prefix>> = Vec::with_capacity(starts.len());
    for ((e, t), &start) in manifest.entries.iter().zip(&targets).zip(&starts) {
        if start == 0 {
            prefixes.push(None);
            continue;
        }
        status(Status::Resume {
            path: e.path.clone(),
            offset: start,
            size: e.size.unwrap_or(start),
        });
        let part = part_path(t);
        prefixes.push(Some(tokio::task::spawn_blocking(move || {
            hash_prefix(&part, start)
        })));
    }
    let resumed: u64 = starts.iter().sum();
    if resumed > 0 {
        status(Status::Progress {
            done: resumed,
            total: total.max(resumed),
        });
    }
    let mut moved = 0u64;
    // The longest gap between two chunks of one file, and when the last came.
    let mut gap = Duration::ZERO;
    let mut last_chunk = Instant::now();
    loop {
        let ev = match current.as_ref() {
            Some(c) => {
                let limit = STALL.max(gap.saturating_mul(STALL_FACTOR));
                match tokio::time::timeout(limit, link.rx.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        return Err(TransferError::Peer(format!(
                            "the sender went silent: nothing for {} s in the middle of {}",
                            limit.as_secs(),
                            c.name
                        )))
                    }
                }
            }
            None => link.rx.recv().await,
        };
        match peer_frame(ev)? {
            Frame::Chunk {
                file,
                offset,
                sha256: h,
                data,
            } => {
                let entry = manifest
                    .entries
                    .get(file as usize)
                    .filter(|e| !e.dir)
                    .ok_or_else(|| TransferError::Protocol(format!("no file #{file}")))?;
                if current.as_ref().is_some_and(|c| c.index != file) {
                    return Err(TransferError::Protocol(
                        "a file ended without its hash".into(),
                    ));
                }
                if current.is_none() {
                    let i = file as usize;
                    let prefix = prefixes.get_mut(i).and_then(Option::take);
                    *current = Some(open(file, entry, &targets[i], starts[i], prefix, out).await?);
                } else {
                    gap = gap.max(last_chunk.elapsed());
                }
                last_chunk = Instant::now();
                let c = current.as_mut().expect("current file");
                if offset != c.offset {
                    return Err(TransferError::Protocol(format!(
                        "{}: data at {offset}, expected {}",
                        entry.path, c.offset
                    )));
                }
                if sha256(&data) != h {
                    return Err(TransferError::Integrity(format!(
                        "{}: the chunk at {offset} does not match its SHA-256",
                        entry.path
                    )));
                }
                c.hash.update(&data);
                let target = &targets[file as usize];
                match &mut c.sink {
                    Sink::Stdout(w) => w.write_all(&data),
                    Sink::Part(p) => p.w.write_all(&data),
                }
                .map_err(|e| io("write", target, e))?;
                c.offset += data.len() as u64;
                moved += data.len() as u64;
                if let Sink::Part(p) = &mut c.sink {
                    p.written(c.offset)
                        .await
                        .map_err(|e| io("write", target, e))?;
                }
                status(Status::Progress {
                    done: resumed + moved,
                    total: total.max(resumed + moved),
                });
            }
            Frame::End {
                file,
                size,
                sha256: h,
            } => {
                let entry = manifest
                    .entries
                    .get(file as usize)
                    .filter(|e| !e.dir)
                    .ok_or_else(|| TransferError::Protocol(format!("no file #{file}")))?;
                let target = &targets[file as usize];
                // An empty file, or one kept whole, has no chunks.
                if current.as_ref().is_some_and(|c| c.index != file) {
                    return Err(TransferError::Protocol("hash of another file".into()));
                }
                if current.is_none() {
                    let i = file as usize;
                    let prefix = prefixes.get_mut(i).and_then(Option::take);
                    *current = Some(open(file, entry, &targets[i], starts[i], prefix, out).await?);
                }
                let c = current.as_mut().expect("current file");
                let part = match &mut c.sink {
                    Sink::Stdout(w) => {
                        w.flush().map_err(|e| io("write", target, e))?;
                        None
                    }
                    Sink::Part(p) => {
                        p.w.flush().map_err(|e| io("write", target, e))?;
                        if let Some((h, _)) = p.syncing.take() {
                            let _ = h.await;
                        }
                        Some(p.path.clone())
                    }
                };
                let digest: [u8; 32] = c
                    .hash
                    .clone()
                    .finish()
                    .as_ref()
                    .try_into()
                    .expect("32 bytes");
                let offset = c.offset;
                if offset != size || entry.size.is_some_and(|s| s != size) || digest != h {
                    let resumed = if starts[file as usize] > 0 {
                        "; it resumed a part kept from an earlier transfer, which is discarded \
                         too"
                    } else {
                        ""
                    };
                    return Err(TransferError::Integrity(format!(
                        "{}: {} bytes with SHA-256 {}, the sender says {size} bytes with {} \
                         (not kept{resumed})",
                        entry.path,
                        offset,
                        hex(&digest),
                        hex(&h)
                    )));
                }
                // Verified: it is no longer the current file, whatever happens next.
                let c = current.take().expect("current file");
                drop(c.sink);
                if let Some(p) = part {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(|e| io("open", &p, e))?;
                    f.sync_all().map_err(|e| io("write", &p, e))?;
                    if let Some(m) = entry.mtime.filter(|m| *m >= 0) {
                        let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(m as u64));
                    }
                    if let Some(mode) = entry.mode {
                        use std::os::unix::fs::PermissionsExt;
                        let _ = std::fs::set_permissions(
                            &p,
                            std::fs::Permissions::from_mode(mode & 0o777),
                        );
                    }
                    std::fs::rename(&p, target).map_err(|e| io("rename", &p, e))?;
                    remove(&record_path(&p))?;
                }
                status(Status::File {
                    path: entry.path.clone(),
                    size,
                    sha256: hex(&digest),
                });
                put(link, Frame::Ack(file)).await?;
            }
            Frame::Done => {
                if current.is_some() {
                    return Err(TransferError::Protocol(
                        "done in the middle of a file".into(),
                    ));
                }
                // Directories last, deepest first, so their files do not touch their times.
                if let Output::Dir { .. } = out {
                    for (e, t) in manifest.entries.iter().zip(&targets).rev() {
                        if !e.dir {
                            continue;
                        }
                        if let Some(mode) = e.mode {
                            use std::os::unix::fs::PermissionsExt;
                            let _ = std::fs::set_permissions(
                                t,
                                std::fs::Permissions::from_mode(mode & 0o777),
                            );
                        }
                        if let Some(m) = e.mtime.filter(|m| *m >= 0) {
                            if let Ok(d) = std::fs::File::open(t) {
                                let _ = d.set_modified(
                                    SystemTime::UNIX_EPOCH + Duration::from_secs(m as u64),
                                );
                            }
                        }
                    }
                }
                put(link, Frame::Kept).await?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = link.tx.send(Cmd::Flush(tx)).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
                return Ok(moved);
            }
            Frame::Abort(why) => {
                return Err(TransferError::Peer(format!("the sender stopped: {why}")));
            }
            other => return Err(TransferError::Protocol(format!("unexpected {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A link whose other end is the test: (the link, events to it, what it sends).
    fn fake() -> (Link, mpsc::Sender<LinkEvent>, mpsc::Receiver<Cmd>) {
        let (tx, cmds) = mpsc::channel(1024);
        let (events, rx) = mpsc::channel(1024);
        (Link { tx, rx }, events, cmds)
    }

    /// The next frame sent over the fake link (flushes are answered on the way).
    async fn next(cmds: &mut mpsc::Receiver<Cmd>) -> Frame {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), cmds.recv()).await {
                Ok(Some(Cmd::Send(b))) => return Frame::decode(&b).expect("a frame"),
                Ok(Some(Cmd::Flush(tx))) => {
                    let _ = tx.send(());
                }
                Ok(Some(Cmd::Close)) => panic!("closed"),
                Ok(None) => panic!("the link was dropped"),
                Err(_) => panic!("nothing sent within 10 s"),
            }
        }
    }

    async fn give(events: &mpsc::Sender<LinkEvent>, f: Frame) {
        events.send(LinkEvent::Data(f.encode())).await.unwrap();
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sb-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
            .collect()
    }

    const MTIME: i64 = 1_700_000_000;

    fn file_entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            dir: false,
            size: Some(size),
            mode: Some(0o644),
            mtime: Some(MTIME),
        }
    }

    fn chunk(file: u32, offset: usize, all: &[u8]) -> Frame {
        let d = all[offset..(offset + CHUNK).min(all.len())].to_vec();
        Frame::Chunk {
            file,
            offset: offset as u64,
            sha256: sha256(&d),
            data: d,
        }
    }

    #[test]
    fn go_records_that_cannot_resume_are_refused() {
        let c = CHUNK as u64;
        let entries = vec![
            Entry {
                path: "d".into(),
                dir: true,
                size: None,
                mode: None,
                mtime: None,
            },
            file_entry("d/a", 3 * c),
            file_entry("d/b", 3 * c + 10),
            Entry {
                path: "stdin".into(),
                dir: false,
                size: None,
                mode: None,
                mtime: None,
            },
        ];
        assert_eq!(check_go(&entries, &[]).unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(
            check_go(&entries, &[(2, 3 * c), (1, 3 * c)]).unwrap(),
            vec![0, 3 * c, 3 * c, 0]
        );
        assert_eq!(check_go(&entries, &[(1, 0)]).unwrap(), vec![0, 0, 0, 0]);
        for (records, why) in [
            (vec![(9, 0)], "no file #9"),
            (vec![(0, 0)], "is a directory"),
            (vec![(3, c)], "no known size"),
            (vec![(1, 100)], "not a multiple of 65536"),
            (vec![(1, 4 * c)], "beyond its"),
            (vec![(2, 4 * c)], "beyond its"),
            (vec![(1, c), (1, c)], "named twice"),
        ] {
            let e = check_go(&entries, &records).unwrap_err();
            assert!(e.contains(why), "{records:?}: {e}");
        }
    }

    /// The sender hashes what the receiver has, sends the rest from there, and `E` carries
    /// the whole file's hash.
    #[tokio::test]
    async fn the_sender_resumes_where_go_says() {
        let d = dir("send-resume");
        let all = data(5 * CHUNK + 100, 1);
        std::fs::write(d.join("f.bin"), &all).unwrap();
        let sources = collect(&[d.join("f.bin")], "stdin").unwrap();
        let (mut link, events, mut cmds) = fake();
        let peer = async {
            let Frame::Manifest(m) = next(&mut cmds).await else {
                panic!("no manifest")
            };
            assert_eq!(m.entries[0].size, Some(all.len() as u64));
            give(&events, Frame::Go(vec![(0, 2 * CHUNK as u64)])).await;
            let mut got = Vec::new();
            let mut first = None;
            loop {
                match next(&mut cmds).await {
                    Frame::Chunk {
                        offset,
                        data,
                        sha256: h,
                        ..
                    } => {
                        assert_eq!(sha256(&data), h);
                        first.get_or_insert(offset);
                        assert_eq!(offset as usize, 2 * CHUNK + got.len());
                        got.extend(data);
                    }
                    Frame::End {
                        size, sha256: h, ..
                    } => {
                        assert_eq!(size, all.len() as u64);
                        assert_eq!(h, sha256(&all));
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(first, Some(2 * CHUNK as u64));
            assert!(got == all[2 * CHUNK..]);
            assert_eq!(next(&mut cmds).await, Frame::Done);
            give(&events, Frame::Ack(0)).await;
            give(&events, Frame::Kept).await;
        };
        let mut seen = Vec::new();
        let (sent, ()) = {
            let mut st = |s| seen.push(s);
            tokio::join!(send(&mut link, sources, &mut st), peer)
        };
        assert_eq!(sent.unwrap(), (3 * CHUNK + 100) as u64);
        assert!(
            seen.iter().any(|s| matches!(s,
            Status::Resume { path, offset, .. } if path == "f.bin" && *offset == 2 * CHUNK as u64))
        );
        let last = seen.iter().rev().find_map(|s| match s {
            Status::Progress { done, total } => Some((*done, *total)),
            _ => None,
        });
        assert_eq!(last, Some((all.len() as u64, all.len() as u64)));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn the_sender_aborts_on_a_go_it_cannot_honour() {
        let d = dir("send-bad-go");
        std::fs::write(d.join("f.bin"), data(3 * CHUNK, 2)).unwrap();
        let sources = collect(&[d.join("f.bin")], "stdin").unwrap();
        let (mut link, events, mut cmds) = fake();
        let peer = async {
            assert!(matches!(next(&mut cmds).await, Frame::Manifest(_)));
            give(&events, Frame::Go(vec![(0, 100)])).await;
            next(&mut cmds).await
        };
        let (r, abort) = {
            let mut st = |_| {};
            tokio::join!(send(&mut link, sources, &mut st), peer)
        };
        let Frame::Abort(why) = abort else {
            panic!("{abort:?}")
        };
        assert!(why.contains("not a multiple of 65536"), "{why}");
        assert!(matches!(r, Err(TransferError::Protocol(_))), "{r:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The sender vanishes after three chunks and a half: the receiver keeps the three whole
    /// chunks with a record; the next transfer of the same file resumes from there and the
    /// file is whole, its hash checked over what was kept and what came.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_receiver_keeps_a_part_and_resumes_it() {
        let d = dir("recv-resume");
        let all = data(10 * CHUNK + 7, 3);
        let manifest = Manifest {
            v: 1,
            entries: vec![file_entry("f.bin", all.len() as u64)],
        };
        let out = Output::Dir {
            dir: d.clone(),
            overwrite: false,
            resume: true,
        };
        let part = d.join(".f.bin.switchboard-part");
        let record = d.join(".f.bin.switchboard-part.json");

        // First: three chunks, and half of one (not whole: not claimed), then the link ends.
        let (mut link, events, mut cmds) = fake();
        let peer = async move {
            give(&events, Frame::Manifest(manifest.clone())).await;
            assert_eq!(next(&mut cmds).await, Frame::Go(Vec::new()));
            for k in 0..3 {
                give(&events, chunk(0, k * CHUNK, &all)).await;
            }
            let half = all[3 * CHUNK..3 * CHUNK + CHUNK / 2].to_vec();
            give(
                &events,
                Frame::Chunk {
                    file: 0,
                    offset: 3 * CHUNK as u64,
                    sha256: sha256(&half),
                    data: half,
                },
            )
            .await;
            drop(events);
            (all, manifest)
        };
        let (r, (all, manifest)) = {
            let mut st = |_| {};
            tokio::join!(receive(&mut link, &out, &mut st), peer)
        };
        let e = r.unwrap_err();
        assert!(matches!(e, TransferError::Peer(_)), "{e:?}");
        assert!(e.to_string().contains("0.2 MiB of f.bin kept"), "{e}");
        let rec: PartRecord = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(
            rec,
            PartRecord {
                v: 1,
                path: "f.bin".into(),
                size: all.len() as u64,
                mtime: MTIME,
                verified: 3 * CHUNK as u64,
            }
        );
        assert!(std::fs::metadata(&part).unwrap().len() >= 3 * CHUNK as u64);

        // Again: G says where, and only the rest comes.
        let (mut link, events, mut cmds) = fake();
        let peer = async move {
            give(&events, Frame::Manifest(manifest)).await;
            assert_eq!(
                next(&mut cmds).await,
                Frame::Go(vec![(0, 3 * CHUNK as u64)])
            );
            for k in 3..11 {
                give(&events, chunk(0, k * CHUNK, &all)).await;
            }
            give(
                &events,
                Frame::End {
                    file: 0,
                    size: all.len() as u64,
                    sha256: sha256(&all),
                },
            )
            .await;
            assert_eq!(next(&mut cmds).await, Frame::Ack(0));
            give(&events, Frame::Done).await;
            assert_eq!(next(&mut cmds).await, Frame::Kept);
            all
        };
        let mut seen = Vec::new();
        let (r, all) = {
            let mut st = |s| seen.push(s);
            tokio::join!(receive(&mut link, &out, &mut st), peer)
        };
        assert_eq!(r.unwrap(), (7 * CHUNK + 7) as u64);
        assert!(std::fs::read(d.join("f.bin")).unwrap() == all);
        assert!(!part.exists() && !record.exists());
        assert!(seen.iter().any(|s| matches!(s,
            Status::Resume { offset, .. } if *offset == 3 * CHUNK as u64)));
        // Progress counts what was kept as done.
        let first = seen.iter().find_map(|s| match s {
            Status::Progress { done, .. } => Some(*done),
            _ => None,
        });
        assert_eq!(first, Some(3 * CHUNK as u64));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A part whose record matches but whose bytes are not the file's: the whole-file hash
    /// fails, and the part and its record go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resumed_part_with_other_bytes_fails_the_hash_and_goes() {
        let d = dir("recv-bad-part");
        let all = data(4 * CHUNK, 4);
        let part = d.join(".f.bin.switchboard-part");
        let record = d.join(".f.bin.switchboard-part.json");
        std::fs::write(&part, data(2 * CHUNK, 99)).unwrap();
        let rec = PartRecord {
            v: 1,
            path: "f.bin".into(),
            size: all.len() as u64,
            mtime: MTIME,
            verified: 2 * CHUNK as u64,
        };
        write_record(&part, &rec).unwrap();
        let out = Output::Dir {
            dir: d.clone(),
            overwrite: false,
            resume: true,
        };
        let (mut link, events, mut cmds) = fake();
        let peer = async move {
            let m = Manifest {
                v: 1,
                entries: vec![file_entry("f.bin", all.len() as u64)],
            };
            give(&events, Frame::Manifest(m)).await;
            assert_eq!(
                next(&mut cmds).await,
                Frame::Go(vec![(0, 2 * CHUNK as u64)])
            );
            for k in 2..4 {
                give(&events, chunk(0, k * CHUNK, &all)).await;
            }
            let end = Frame::End {
                file: 0,
                size: all.len() as u64,
                sha256: sha256(&all),
            };
            give(&events, end).await;
            next(&mut cmds).await
        };
        let (r, abort) = {
            let mut st = |_| {};
            tokio::join!(receive(&mut link, &out, &mut st), peer)
        };
        let e = r.unwrap_err();
        assert!(matches!(e, TransferError::Integrity(_)), "{e:?}");
        assert!(e.to_string().contains("resumed a part"), "{e}");
        assert!(matches!(abort, Frame::Abort(_)), "{abort:?}");
        assert!(!part.exists() && !record.exists());
        assert!(!d.join("f.bin").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Only a record that matches the entry's path, size and mtime, claims whole chunks within
    /// the size, and a part that holds them resumes (the part cut to the claim); otherwise, and
    /// always without `resume`, the part and record are removed and the file starts at zero.
    #[test]
    fn only_a_matching_part_resumes() {
        let d = dir("plan");
        let c = CHUNK as u64;
        let entry = file_entry("sub/f.bin", 5 * c + 3);
        let target = d.join("f.bin");
        let part = part_path(&target);
        let record = record_path(&part);
        let good = PartRecord {
            v: 1,
            path: "sub/f.bin".into(),
            size: 5 * c + 3,
            mtime: MTIME,
            verified: 2 * c,
        };
        let setup = |r: &PartRecord, part_len: usize| {
            std::fs::write(&part, data(part_len, 5)).unwrap();
            write_record(&part, r).unwrap();
        };
        // Matching, with more on disk than claimed: resumes at the claim, cut to it.
        setup(&good, 3 * CHUNK + 10);
        assert_eq!(plan_resume(&entry, &target, true).unwrap(), 2 * c);
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 2 * c);
        assert!(record.exists());
        assert!(std::fs::read(&part).unwrap() == data(3 * CHUNK + 10, 5)[..2 * CHUNK]);
        let mismatches = [
            PartRecord {
                size: 5 * c + 4,
                ..good.clone()
            },
            PartRecord {
                mtime: MTIME + 1,
                ..good.clone()
            },
            PartRecord {
                path: "other/f.bin".into(),
                ..good.clone()
            },
            PartRecord {
                verified: 2 * c + 1,
                ..good.clone()
            },
            PartRecord {
                verified: 6 * c,
                ..good.clone()
            },
            PartRecord {
                verified: 0,
                ..good.clone()
            },
            PartRecord {
                v: 2,
                ..good.clone()
            },
        ];
        for r in &mismatches {
            setup(r, 3 * CHUNK);
            assert_eq!(plan_resume(&entry, &target, true).unwrap(), 0, "{r:?}");
            assert!(!part.exists() && !record.exists(), "{r:?}");
        }
        // The part holds less than its record claims.
        setup(&good, CHUNK);
        assert_eq!(plan_resume(&entry, &target, true).unwrap(), 0);
        assert!(!part.exists() && !record.exists());
        // A record that is not JSON; a part without a record.
        setup(&good, 3 * CHUNK);
        std::fs::write(&record, b"{nope").unwrap();
        assert_eq!(plan_resume(&entry, &target, true).unwrap(), 0);
        assert!(!part.exists() && !record.exists());
        std::fs::write(&part, b"old").unwrap();
        assert_eq!(plan_resume(&entry, &target, true).unwrap(), 0);
        assert!(!part.exists());
        // The entry changed: no mtime (it cannot be matched).
        setup(&good, 3 * CHUNK);
        let no_mtime = Entry {
            mtime: None,
            ..entry.clone()
        };
        assert_eq!(plan_resume(&no_mtime, &target, true).unwrap(), 0);
        assert!(!part.exists() && !record.exists());
        // --no-resume: a matching part is discarded too.
        setup(&good, 3 * CHUNK);
        assert_eq!(plan_resume(&entry, &target, false).unwrap(), 0);
        assert!(!part.exists() && !record.exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
