//! The file protocol on the data channel: binary messages, the first byte says which.
//!
//! ```text
//! sender -> receiver   'M' manifest (JSON)             what is coming
//! receiver -> sender   'G' (file u32, offset u64)*      go: where each file starts
//! sender -> receiver   'C' file u32, offset u64, sha256(data) [32], data
//!                      'E' file u32, size u64, sha256(file) [32]
//!                      'D'                              nothing more
//! receiver -> sender   'A' file u32                     verified and kept
//!                      'K'                              everything kept: done
//! either way           'X' message (UTF-8)              abort, with why
//! ```
//!
//! Chunks carry their own SHA-256 and are checked on arrival; a file is renamed into place only
//! when its whole-file SHA-256 matches `E`.
//!
//! After `M` the sender sends nothing until `G`. Each of its records (12 bytes, big-endian) names
//! a file the receiver already holds verified data of, and how much: the offset is a multiple of
//! [`CHUNK`], at most the entry's size, the entry a file of known size, each file at most once
//! (the sender answers anything else with `X`). The sender then hashes that much of the file
//! without sending it and sends chunks from there; `E` still carries the SHA-256 of the whole
//! file. An empty `G` starts every file from zero.

use serde::{Deserialize, Serialize};

/// Bytes of file data per chunk message.
pub const CHUNK: usize = 64 * 1024;

/// Bytes per record of a `G` message: file index (u32) and offset (u64).
const GO_RECORD: usize = 12;

/// One entry of a transfer: a file or a directory, with a relative `/`-separated path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path (`dir/sub/file.txt`), never absolute, never `..`.
    pub path: String,
    /// True for a directory (no data follows for it).
    #[serde(default)]
    pub dir: bool,
    /// The size; `None` for a stream of unknown length (stdin).
    pub size: Option<u64>,
    /// Unix permission bits.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Modification time, seconds since the epoch.
    #[serde(default)]
    pub mtime: Option<i64>,
}

/// What the sender announces first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Protocol version (1).
    pub v: u32,
    /// The entries, directories before what they contain.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Total bytes of known size.
    pub fn total(&self) -> u64 {
        self.entries.iter().filter_map(|e| e.size).sum()
    }
    /// Number of files (not directories).
    pub fn files(&self) -> usize {
        self.entries.iter().filter(|e| !e.dir).count()
    }
}

/// One message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// What is coming.
    Manifest(Manifest),
    /// File data.
    Chunk {
        /// Index into the manifest's entries.
        file: u32,
        /// Where the data goes.
        offset: u64,
        /// SHA-256 of `data`.
        sha256: [u8; 32],
        /// The bytes.
        data: Vec<u8>,
    },
    /// The end of a file.
    End {
        /// Index into the manifest's entries.
        file: u32,
        /// Its size.
        size: u64,
        /// SHA-256 of the whole file.
        sha256: [u8; 32],
    },
    /// Nothing more to send.
    Done,
    /// Go (receiver to sender, after the manifest): `(file index, offset)` for each file the
    /// receiver holds the first `offset` bytes of already; the others start from zero.
    Go(Vec<(u32, u64)>),
    /// A file was verified and kept.
    Ack(u32),
    /// Everything was kept.
    Kept,
    /// Abort.
    Abort(String),
}

/// A message that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed transfer message ({0})")]
pub struct WireError(pub &'static str);

impl Frame {
    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Manifest(m) => {
                let mut v = vec![b'M'];
                v.extend(serde_json::to_vec(m).expect("a manifest serializes"));
                v
            }
            Frame::Chunk {
                file,
                offset,
                sha256,
                data,
            } => {
                let mut v = Vec::with_capacity(45 + data.len());
                v.push(b'C');
                v.extend_from_slice(&file.to_be_bytes());
                v.extend_from_slice(&offset.to_be_bytes());
                v.extend_from_slice(sha256);
                v.extend_from_slice(data);
                v
            }
            Frame::End { file, size, sha256 } => {
                let mut v = vec![b'E'];
                v.extend_from_slice(&file.to_be_bytes());
                v.extend_from_slice(&size.to_be_bytes());
                v.extend_from_slice(sha256);
                v
            }
            Frame::Done => vec![b'D'],
            Frame::Go(records) => {
                let mut v = Vec::with_capacity(1 + 12 * records.len());
                v.push(b'G');
                for (file, offset) in records {
                    v.extend_from_slice(&file.to_be_bytes());
                    v.extend_from_slice(&offset.to_be_bytes());
                }
                v
            }
            Frame::Ack(f) => {
                let mut v = vec![b'A'];
                v.extend_from_slice(&f.to_be_bytes());
                v
            }
            Frame::Kept => vec![b'K'],
            Frame::Abort(why) => {
                let mut v = vec![b'X'];
                v.extend_from_slice(why.as_bytes());
                v
            }
        }
    }

    /// Decodes one message.
    pub fn decode(b: &[u8]) -> Result<Frame, WireError> {
        let (&kind, rest) = b.split_first().ok_or(WireError("empty"))?;
        let u32_at = |r: &[u8], at: usize| -> Result<u32, WireError> {
            r.get(at..at + 4)
                .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
                .ok_or(WireError("short"))
        };
        let u64_at = |r: &[u8], at: usize| -> Result<u64, WireError> {
            r.get(at..at + 8)
                .map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
                .ok_or(WireError("short"))
        };
        let hash_at = |r: &[u8], at: usize| -> Result<[u8; 32], WireError> {
            r.get(at..at + 32)
                .map(|s| s.try_into().expect("32 bytes"))
                .ok_or(WireError("short"))
        };
        Ok(match kind {
            b'M' => {
                Frame::Manifest(serde_json::from_slice(rest).map_err(|_| WireError("manifest"))?)
            }
            b'C' => Frame::Chunk {
                file: u32_at(rest, 0)?,
                offset: u64_at(rest, 4)?,
                sha256: hash_at(rest, 12)?,
                data: rest.get(44..).ok_or(WireError("short"))?.to_vec(),
            },
            b'E' => Frame::End {
                file: u32_at(rest, 0)?,
                size: u64_at(rest, 4)?,
                sha256: hash_at(rest, 12)?,
            },
            b'D' => Frame::Done,
            b'G' => {
                if rest.len() % GO_RECORD != 0 {
                    return Err(WireError("go records"));
                }
                let mut records = Vec::with_capacity(rest.len() / GO_RECORD);
                for r in rest.chunks_exact(GO_RECORD) {
                    records.push((u32_at(r, 0)?, u64_at(r, 4)?));
                }
                Frame::Go(records)
            }
            b'A' => Frame::Ack(u32_at(rest, 0)?),
            b'K' => Frame::Kept,
            b'X' => Frame::Abort(String::from_utf8_lossy(rest).into_owned()),
            _ => return Err(WireError("unknown kind")),
        })
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("32 bytes")
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A manifest path made safe to join under the output directory: relative, normal components
/// only, no `..`, no empty or dot components, no NUL or backslash.
pub fn safe_path(p: &str) -> Option<std::path::PathBuf> {
    if p.is_empty() || p.starts_with('/') || p.contains('\0') || p.contains('\\') {
        return None;
    }
    let mut out = std::path::PathBuf::new();
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Manifest(Manifest {
                v: 1,
                entries: vec![Entry {
                    path: "a/b.txt".into(),
                    dir: false,
                    size: Some(3),
                    mode: Some(0o644),
                    mtime: Some(1_700_000_000),
                }],
            }),
            Frame::Chunk {
                file: 3,
                offset: 1 << 40,
                sha256: sha256(b"abc"),
                data: b"abc".to_vec(),
            },
            Frame::End {
                file: 3,
                size: 3,
                sha256: [7; 32],
            },
            Frame::Done,
            Frame::Go(Vec::new()),
            Frame::Go(vec![(0, 0), (7, 3 * CHUNK as u64), (u32::MAX, u64::MAX)]),
            Frame::Ack(9),
            Frame::Kept,
            Frame::Abort("disk full".into()),
        ];
        for f in frames {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
        assert!(Frame::decode(b"").is_err());
        assert!(Frame::decode(b"C\0\0").is_err());
        assert!(Frame::decode(b"Z").is_err());
    }

    #[test]
    fn go_is_twelve_bytes_a_record() {
        assert_eq!(Frame::Go(Vec::new()).encode(), b"G");
        let g = Frame::Go(vec![(1, 0x0102_0304_0506_0708)]).encode();
        assert_eq!(g, b"G\0\0\0\x01\x01\x02\x03\x04\x05\x06\x07\x08");
        // Anything but whole records is refused.
        for n in 1..GO_RECORD * 2 + 5 {
            if n % GO_RECORD == 0 {
                continue;
            }
            let mut b = vec![b'G'];
            b.extend(std::iter::repeat_n(0xab, n));
            assert_eq!(Frame::decode(&b), Err(WireError("go records")), "{n} bytes");
        }
    }

    /// Every frame cut short at every length decodes to an error or to some frame, never a
    /// panic; whatever decodes encodes back to the same bytes.
    #[test]
    fn truncated_frames_never_panic() {
        let frames = [
            Frame::Chunk {
                file: 1,
                offset: 2,
                sha256: [3; 32],
                data: vec![4; 10],
            },
            Frame::End {
                file: 1,
                size: 2,
                sha256: [5; 32],
            },
            Frame::Go(vec![(1, 2), (3, 4)]),
            Frame::Ack(6),
        ];
        for f in frames {
            let b = f.encode();
            for n in 0..b.len() {
                if let Ok(g) = Frame::decode(&b[..n]) {
                    assert_eq!(g.encode(), &b[..n]);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)
        ) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn arbitrary_go_records_round_trip(
            records in proptest::collection::vec(
                (proptest::num::u32::ANY, proptest::num::u64::ANY), 0..64)
        ) {
            let f = Frame::Go(records);
            proptest::prop_assert_eq!(Frame::decode(&f.encode()), Ok(f));
        }

        #[test]
        fn arbitrary_go_bodies_decode_or_fail_cleanly(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..100)
        ) {
            let mut b = vec![b'G'];
            b.extend_from_slice(&body);
            match Frame::decode(&b) {
                Ok(Frame::Go(r)) => {
                    proptest::prop_assert_eq!(body.len(), r.len() * GO_RECORD);
                    proptest::prop_assert_eq!(Frame::Go(r).encode(), b);
                }
                Ok(other) => proptest::prop_assert!(false, "{:?}", other),
                Err(e) => proptest::prop_assert_eq!(e, WireError("go records")),
            }
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            assert!(safe_path(bad).is_none(), "{bad}");
        }
        assert_eq!(
            safe_path("dir/sub/f.txt").unwrap(),
            std::path::Path::new("dir/sub/f.txt")
        );
    }
}
