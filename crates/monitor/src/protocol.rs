//! The attach wire format and the exit record: what the monitor and its
//! clients (the engine) share.
//!
//! Attach frames go both ways on the `RUN/attach` unix stream socket:
//! `[u8 kind][u32 big-endian payload length][payload]`.
//!
//! | kind | direction        | payload                                   |
//! |------|------------------|-------------------------------------------|
//! | 0    | client → monitor | stdin data                                |
//! | 1    | monitor → client | stdout data (a terminal's output too)     |
//! | 2    | monitor → client | stderr data                               |
//! | 3    | monitor → client | exit: i32 BE exit code (128+n if signal n)|
//! | 4    | monitor → client | error text (UTF-8)                        |
//! | 5    | client → monitor | close the container's stdin (no payload)  |
//! | 6    | client → monitor | resize: u16 BE rows, u16 BE cols          |

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const ERROR: u8 = 4;
pub const CLOSE_STDIN: u8 = 5;
pub const RESIZE: u8 = 6;

/// The largest payload the monitor sends (one read of container output)
/// and the default limit of [`read_frame`] callers in this crate.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// File names inside the run directory.
pub const ATTACH_SOCKET: &str = "attach";
pub const CONSOLE_SOCKET: &str = "console.sock";
pub const EXIT_FILE: &str = "exit";
pub const PID_FILE: &str = "pid";
pub const MONITOR_PID_FILE: &str = "monitor.pid";

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Reading or writing an attach frame failed.
    #[error("attach connection: {0}")]
    Io(#[from] io::Error),
    /// A peer announced a payload above the limit.
    #[error("attach frame of kind {kind} announces {len} bytes, above the limit of {max}")]
    TooLarge { kind: u8, len: usize, max: usize },
    /// A frame whose payload does not fit its kind.
    #[error("attach frame of kind {kind} has a malformed payload of {len} bytes")]
    Malformed { kind: u8, len: usize },
    #[error("reading the exit record {path}: {source}")]
    ReadExit { path: PathBuf, source: io::Error },
    #[error("parsing the exit record {path}: {source}")]
    ParseExit {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing the exit record {path}: {source}")]
    WriteExit { path: PathBuf, source: io::Error },
}

/// A decoded frame, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Error(String),
    CloseStdin,
    Resize {
        rows: u16,
        cols: u16,
    },
    /// A kind this version does not know (ignore it).
    Unknown(u8, Vec<u8>),
}

impl Frame {
    pub fn decode(kind: u8, payload: Vec<u8>) -> Result<Frame, ProtocolError> {
        let bad = |p: &Vec<u8>| ProtocolError::Malformed { kind, len: p.len() };
        Ok(match kind {
            STDIN => Frame::Stdin(payload),
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT => {
                let b: [u8; 4] = payload.as_slice().try_into().map_err(|_| bad(&payload))?;
                Frame::Exit(i32::from_be_bytes(b))
            }
            ERROR => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            CLOSE_STDIN => Frame::CloseStdin,
            RESIZE => {
                if payload.len() != 4 {
                    return Err(bad(&payload));
                }
                Frame::Resize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                }
            }
            k => Frame::Unknown(k, payload),
        })
    }

    /// Kind and payload of this frame.
    pub fn encode(&self) -> (u8, Vec<u8>) {
        match self {
            Frame::Stdin(d) => (STDIN, d.clone()),
            Frame::Stdout(d) => (STDOUT, d.clone()),
            Frame::Stderr(d) => (STDERR, d.clone()),
            Frame::Exit(c) => (EXIT, c.to_be_bytes().to_vec()),
            Frame::Error(t) => (ERROR, t.as_bytes().to_vec()),
            Frame::CloseStdin => (CLOSE_STDIN, Vec::new()),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, p)
            }
            Frame::Unknown(k, d) => (*k, d.clone()),
        }
    }
}

/// Appends one encoded frame to `out` (so a sender can issue one write).
pub fn encode_frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes one frame with a single `write_all`.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    encode_frame(kind, payload, &mut buf);
    w.write_all(&buf)
}

/// Reads one frame: `Ok(None)` on a clean end of stream between frames.
/// A payload longer than `max` is an error (the connection is then out of
/// sync and should be closed).
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Option<(u8, Vec<u8>)>, ProtocolError> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let kind = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > max {
        return Err(ProtocolError::TooLarge { kind, len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// `RUN/exit`: how the container ended. Written once, atomically, by the
/// monitor after the container's output was drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status, or 128+signal for a killed container (as docker).
    pub exit_code: i32,
    /// The signal that killed the container, if one did.
    pub signal: Option<i32>,
    /// RFC 3339 UTC with nanoseconds.
    pub finished_at: String,
}

impl ExitRecord {
    /// The record for a wait status: `Exited(code)` or `Signaled(signal)`.
    pub fn new(code: Option<i32>, signal: Option<i32>, at: Timestamp) -> ExitRecord {
        let exit_code = match (code, signal) {
            (_, Some(s)) => 128 + s,
            (Some(c), None) => c,
            (None, None) => -1,
        };
        ExitRecord {
            exit_code,
            signal,
            finished_at: at.to_rfc3339(),
        }
    }

    /// Reads `RUN/exit`; `Ok(None)` while the container has not exited.
    pub fn read(run_dir: &Path) -> Result<Option<ExitRecord>, ProtocolError> {
        let path = run_dir.join(EXIT_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ProtocolError::ReadExit { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| ProtocolError::ParseExit { path, source })
    }

    /// Writes `RUN/exit` atomically: `RUN/exit.tmp`, then rename. No fsync:
    /// a reader (or a process killed half-way) sees the whole record or
    /// none, and the run dir does not outlive a reboot anyway (the runroot
    /// is /run/hako, a tmpfs, by default).
    pub fn write(&self, run_dir: &Path) -> Result<(), ProtocolError> {
        let path = run_dir.join(EXIT_FILE);
        let tmp = run_dir.join(".exit.tmp");
        let text = serde_json::to_vec(self).map_err(|e| ProtocolError::WriteExit {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| ProtocolError::WriteExit {
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Stdout(b"hello".to_vec()),
            Frame::Exit(-3),
            Frame::Resize { rows: 24, cols: 80 },
            Frame::CloseStdin,
            Frame::Error("boom".into()),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            let (k, p) = f.encode();
            write_frame(&mut buf, k, &p).expect("write");
        }
        let mut r = buf.as_slice();
        for f in &frames {
            let (k, p) = read_frame(&mut r, 100).expect("read").expect("frame");
            assert_eq!(&Frame::decode(k, p).expect("decode"), f);
        }
        assert!(read_frame(&mut r, 100).expect("eof").is_none());
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, &[0; 10]).expect("write");
        assert!(matches!(
            read_frame(&mut buf.as_slice(), 9),
            Err(ProtocolError::TooLarge { len: 10, .. })
        ));
        assert!(read_frame(&mut &buf[..3], 100).is_err());
        assert!(Frame::decode(EXIT, vec![1, 2]).is_err());
    }

    #[test]
    fn signal_exit_code_is_128_plus_n() {
        let r = ExitRecord::new(None, Some(9), Timestamp { secs: 0, nanos: 0 });
        assert_eq!(r.exit_code, 137);
        assert_eq!(r.finished_at, "1970-01-01T00:00:00.000000000Z");
    }
}
