//! Sending and receiving files over a running [`Link`]: the manifest, chunks with their hashes,
//! whole-file hashes checked before a file is renamed into place, acknowledgements.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Sends `sources` and waits until the receiver says it kept everything.
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
    put(link, Frame::Manifest(manifest)).await?;
    let mut done = 0u64;
    let mut acked = 0usize;
    for (i, (entry, path)) in sources.iter().enumerate() {
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
        loop {
            // Fill a whole chunk (stdin returns short reads).
            let mut n = 0;
            while n < CHUNK {
                match reader.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let why = format!("cannot read {}: {e}", entry.path);
                        let _ = put(link, Frame::Abort(format!("the sender {why}"))).await;
                        return Err(TransferError::Io(why));
                    }
                }
            }
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
            done += n as u64;
            status(Status::Progress {
                done,
                total: total.max(done),
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
    Ok(done)
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
    },
    /// Standard output (one file only).
    Stdout,
}

struct Current {
    index: u32,
    file: Box<dyn Write + Send>,
    part: Option<PathBuf>,
    offset: u64,
    hash: Context,
}

fn part_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.switchboard-part"))
}

/// Receives into `out`; the bytes received.
pub async fn receive(
    link: &mut Link,
    out: &Output,
    status: &mut dyn FnMut(Status),
) -> Result<u64, TransferError> {
    let r = receive_inner(link, out, status).await;
    if let Err(e) = &r {
        if !matches!(e, TransferError::Peer(_)) {
            let _ = put(link, Frame::Abort(e.to_string())).await;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = link.tx.send(Cmd::Flush(tx)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
    r
}

async fn receive_inner(
    link: &mut Link,
    out: &Output,
    status: &mut dyn FnMut(Status),
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
            Output::Dir { dir, overwrite } => {
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
    let io = |what: &str, p: &Path, e: std::io::Error| {
        let hint = if e.raw_os_error() == Some(28) {
            " (disk full)"
        } else {
            ""
        };
        TransferError::Io(format!("cannot {what} {}: {e}{hint}", p.display()))
    };
    if let Output::Dir { .. } = out {
        for (e, t) in manifest.entries.iter().zip(&targets) {
            let dir = if e.dir { Some(t.as_path()) } else { t.parent() };
            if let Some(d) = dir {
                std::fs::create_dir_all(d).map_err(|x| io("create", d, x))?;
            }
        }
    }
    let mut done = 0u64;
    let mut current: Option<Current> = None;
    loop {
        match peer_frame(link.rx.recv().await)? {
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
                    let (file_w, part): (Box<dyn Write + Send>, _) = match out {
                        Output::Stdout => (Box::new(std::io::stdout()), None),
                        Output::Dir { .. } => {
                            let part = part_path(&targets[file as usize]);
                            let f =
                                std::fs::File::create(&part).map_err(|e| io("create", &part, e))?;
                            (
                                Box::new(std::io::BufWriter::with_capacity(1 << 20, f)),
                                Some(part),
                            )
                        }
                    };
                    current = Some(Current {
                        index: file,
                        file: file_w,
                        part,
                        offset: 0,
                        hash: Context::new(&SHA256),
                    });
                }
                let c = current.as_mut().expect("current file");
                if offset != c.offset {
                    return Err(TransferError::Protocol(format!(
                        "{}: data at {offset}, expected {}",
                        entry.path, c.offset
                    )));
                }
                if sha256(&data) != h {
                    if let Some(p) = &c.part {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(TransferError::Integrity(format!(
                        "{}: the chunk at {offset} does not match its SHA-256",
                        entry.path
                    )));
                }
                c.hash.update(&data);
                c.file
                    .write_all(&data)
                    .map_err(|e| io("write", &targets[file as usize], e))?;
                c.offset += data.len() as u64;
                done += data.len() as u64;
                status(Status::Progress {
                    done,
                    total: total.max(done),
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
                // An empty file has no chunks.
                let c = match current.take() {
                    Some(c) if c.index == file => c,
                    Some(_) => return Err(TransferError::Protocol("hash of another file".into())),
                    None => {
                        let (w, part): (Box<dyn Write + Send>, _) = match out {
                            Output::Stdout => (Box::new(std::io::stdout()), None),
                            Output::Dir { .. } => {
                                let part = part_path(target);
                                let f = std::fs::File::create(&part)
                                    .map_err(|e| io("create", &part, e))?;
                                (Box::new(f), Some(part))
                            }
                        };
                        Current {
                            index: file,
                            file: w,
                            part,
                            offset: 0,
                            hash: Context::new(&SHA256),
                        }
                    }
                };
                let Current {
                    file: mut writer,
                    part,
                    offset,
                    hash,
                    ..
                } = c;
                writer.flush().map_err(|e| io("write", target, e))?;
                drop(writer);
                let digest: [u8; 32] = hash.finish().as_ref().try_into().expect("32 bytes");
                if offset != size || entry.size.is_some_and(|s| s != size) || digest != h {
                    if let Some(p) = &part {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(TransferError::Integrity(format!(
                        "{}: {} bytes with SHA-256 {}, the sender says {size} bytes with {} \
                         (not kept)",
                        entry.path,
                        offset,
                        hex(&digest),
                        hex(&h)
                    )));
                }
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
                return Ok(done);
            }
            Frame::Abort(why) => {
                if let Some(p) = current.and_then(|c| c.part) {
                    let _ = std::fs::remove_file(p);
                }
                return Err(TransferError::Peer(format!("the sender stopped: {why}")));
            }
            other => return Err(TransferError::Protocol(format!("unexpected {other:?}"))),
        }
    }
}
