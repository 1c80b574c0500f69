//! Container logs in the Kubernetes CRI format, one record per line:
//!
//! ```text
//! 2026-12-02T15:36:02.123456789Z stdout F a full line
//! 2026-12-02T15:36:02.123456789Z stderr P a chunk whose newline has not come yet
//! ```
//!
//! `F` ends a line; `P` is a piece of a longer line (split at
//! [`MAX_RECORD`] bytes) or output that ended without a newline. Readers
//! join `P` pieces with the following records of the same stream
//! ([`join_partials`]).
//!
//! [`LogWriter`] is the monitor's side (append, rotate to `FILE.1` past a
//! size); [`read_log`] is the engine's (`hako logs [-f] [--since] [--tail]`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::time::Timestamp;

/// The longest content of one record; longer lines become `P` records.
pub const MAX_RECORD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("opening the log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("reading the log {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing the log {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("rotating the log {path} to {path}.1: {source}")]
    Rotate { path: PathBuf, source: io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// The content, without the record's newline.
    pub content: Vec<u8>,
    /// A `P` record: the line continues in the next record of this stream.
    pub partial: bool,
}

/// Parses one record line (without its newline); None if malformed.
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    let partial = match tag.first()? {
        b'P' => true,
        b'F' => false,
        _ => return None,
    };
    Some(LogRecord {
        timestamp: Timestamp::parse_rfc3339(ts)?,
        stream,
        content: parts.next().unwrap_or_default().to_vec(),
        partial,
    })
}

fn encode_record(ts: &str, stream: Stream, partial: bool, content: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// The monitor's log writer: line-buffers each stream, writes each batch
/// of records with one `write(2)` (O_APPEND), and rotates past `max_size`.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    /// Per stream: bytes of a line whose newline has not come yet.
    pending: [Vec<u8>; 2],
    out: Vec<u8>,
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl LogWriter {
    /// Opens (creating with mode 0600, or appending to) the log at `path`;
    /// `max_size` 0 never rotates.
    pub fn open(path: &Path, max_size: u64) -> Result<LogWriter, LogError> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            pending: [Vec::new(), Vec::new()],
            out: Vec::new(),
        })
    }

    /// Logs output of `stream` read at `ts`: complete lines as `F`
    /// records, chunks of [`MAX_RECORD`] without a newline as `P` records;
    /// the rest waits for more output or [`LogWriter::flush_partial`].
    pub fn write(
        &mut self,
        stream: Stream,
        mut data: &[u8],
        ts: Timestamp,
    ) -> Result<(), LogError> {
        let stamp = ts.to_rfc3339();
        let pending = &mut self.pending[stream.index()];
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&data[..nl]);
            data = &data[nl + 1..];
            let mut line = pending.as_slice();
            while line.len() > MAX_RECORD {
                encode_record(&stamp, stream, true, &line[..MAX_RECORD], &mut self.out);
                line = &line[MAX_RECORD..];
            }
            encode_record(&stamp, stream, false, line, &mut self.out);
            pending.clear();
        }
        pending.extend_from_slice(data);
        if pending.len() >= MAX_RECORD {
            let mut rest = pending.as_slice();
            while rest.len() >= MAX_RECORD {
                encode_record(&stamp, stream, true, &rest[..MAX_RECORD], &mut self.out);
                rest = &rest[MAX_RECORD..];
            }
            let keep = rest.len();
            let start = pending.len() - keep;
            pending.drain(..start);
        }
        self.flush_out()
    }

    /// Writes what waits in the line buffers as `P` records (at exit).
    pub fn flush_partial(&mut self, ts: Timestamp) -> Result<(), LogError> {
        let stamp = ts.to_rfc3339();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let pending = std::mem::take(&mut self.pending[stream.index()]);
            if !pending.is_empty() {
                encode_record(&stamp, stream, true, &pending, &mut self.out);
            }
        }
        self.flush_out()
    }

    fn flush_out(&mut self) -> Result<(), LogError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let res = self.file.write_all(&self.out);
        self.size += self.out.len() as u64;
        self.out.clear();
        res.map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })?;
        if self.max_size > 0 && self.size > self.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        std::fs::rename(&self.path, rotated_path(&self.path)).map_err(|source| {
            LogError::Rotate {
                path: self.path.clone(),
                source,
            }
        })?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `FILE.1`, where a rotated log goes.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".1");
    PathBuf::from(s)
}

/// How [`read_log`] ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// At the end of what is written now.
    No,
    /// Wait for more output until `RUN/exit` exists (the monitor writes it
    /// after draining the container's output), then end.
    UntilExit { run_dir: PathBuf },
    /// Wait for more output forever (the caller stops iterating).
    Forever,
}

/// Reads the log at `path` (after its rotated `path.1`, if any): records
/// at or after `since`, only those of the last `tail` lines (a line is
/// `P`* `F`), then, when following, new records as they are written,
/// across rotations. Poll interval while following: 100 ms.
pub fn read_log(
    path: &Path,
    follow: Follow,
    since: Option<SystemTime>,
    tail: Option<usize>,
) -> Result<LogReader, LogError> {
    let since = since.map(Timestamp::from_system_time);
    let mut initial = Vec::new();
    let old = rotated_path(path);
    match File::open(&old) {
        Ok(mut f) => {
            let mut rest = Vec::new();
            read_records(&mut f, &old, &mut rest, &mut initial, true)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(LogError::Open { path: old, source }),
    }
    let mut current = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound && follow != Follow::No => None,
        Err(source) => {
            return Err(LogError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut rest = Vec::new();
    if let Some(f) = current.as_mut() {
        read_records(f, path, &mut rest, &mut initial, follow == Follow::No)?;
    }
    if let Some(since) = since {
        initial.retain(|r| r.timestamp >= since);
    }
    if let Some(n) = tail {
        let start = tail_start(&initial, n);
        initial.drain(..start);
    }
    Ok(LogReader {
        path: path.to_path_buf(),
        queue: initial.into(),
        current,
        rest,
        follow,
        since,
        done: false,
    })
}

/// Index of the first record of the last `n` lines. A line starts at a
/// record whose stream's previous record was not partial; a trailing run
/// of `P` records (output that ended without a newline) is a line too.
fn tail_start(records: &[LogRecord], n: usize) -> usize {
    if n == 0 {
        return records.len();
    }
    let mut after_partial = [false; 2];
    let mut starts = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let idx = r.stream.index();
        if !after_partial[idx] {
            starts.push(i);
        }
        after_partial[idx] = r.partial;
    }
    if n >= starts.len() {
        return 0;
    }
    starts[starts.len() - n]
}

/// Reads what `f` holds from its offset; complete lines become records,
/// an incomplete last line stays in `rest` (or, with `final_eof`, becomes
/// a record too).
fn read_records(
    f: &mut File,
    path: &Path,
    rest: &mut Vec<u8>,
    out: &mut Vec<LogRecord>,
    final_eof: bool,
) -> Result<bool, LogError> {
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|source| LogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let got = !buf.is_empty();
    rest.extend_from_slice(&buf);
    let mut start = 0;
    while let Some(nl) = rest[start..].iter().position(|&b| b == b'\n') {
        if let Some(r) = parse_record(&rest[start..start + nl]) {
            out.push(r);
        }
        start += nl + 1;
    }
    rest.drain(..start);
    if final_eof && !rest.is_empty() {
        if let Some(r) = parse_record(rest) {
            out.push(r);
        }
        rest.clear();
    }
    Ok(got)
}

/// The iterator of [`read_log`].
pub struct LogReader {
    path: PathBuf,
    queue: VecDeque<LogRecord>,
    current: Option<File>,
    rest: Vec<u8>,
    follow: Follow,
    since: Option<Timestamp>,
    done: bool,
}

impl LogReader {
    /// One polling step while following: reads new records, switches to
    /// a new file after a rotation; Ok(false) when following is over.
    fn poll_more(&mut self) -> Result<bool, LogError> {
        let exited = match &self.follow {
            Follow::No => return Ok(false),
            Follow::UntilExit { run_dir } => run_dir.join(crate::protocol::EXIT_FILE).exists(),
            Follow::Forever => false,
        };
        let mut new = Vec::new();
        let mut got = false;
        if let Some(f) = self.current.as_mut() {
            got |= read_records(f, &self.path, &mut self.rest, &mut new, false)?;
        }
        // Rotated (or created): the path names another file than ours.
        let ours = self
            .current
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        let theirs = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if theirs.is_some() && ours != theirs {
            if let Some(f) = self.current.as_mut() {
                // Our file was renamed to FILE.1: read its last records.
                got |= read_records(f, &self.path, &mut self.rest, &mut new, true)?;
            }
            self.rest.clear();
            let mut f = File::open(&self.path).map_err(|source| LogError::Open {
                path: self.path.clone(),
                source,
            })?;
            let _ = f.seek(SeekFrom::Start(0));
            got |= read_records(&mut f, &self.path, &mut self.rest, &mut new, false)?;
            self.current = Some(f);
        }
        if let Some(since) = self.since {
            new.retain(|r| r.timestamp >= since);
        }
        self.queue.extend(new);
        if exited && !got {
            return Ok(false);
        }
        if !got {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(true)
    }
}

impl Iterator for LogReader {
    type Item = Result<LogRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.poll_more() {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A logical line: `P` records joined with the record that ends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The time of the line's first record.
    pub timestamp: Timestamp,
    pub stream: Stream,
    /// The line without its newline.
    pub content: Vec<u8>,
    /// False for output that ended without a newline.
    pub complete: bool,
}

/// Joins the `P` records of each stream with the records that follow them,
/// for printing (`hako logs`). What is still partial at the end of the
/// records is yielded with `complete: false`.
pub fn join_partials<I>(records: I) -> JoinPartials<I::IntoIter>
where
    I: IntoIterator<Item = Result<LogRecord, LogError>>,
{
    JoinPartials {
        inner: records.into_iter(),
        pending: [None, None],
        flush: VecDeque::new(),
    }
}

pub struct JoinPartials<I> {
    inner: I,
    pending: [Option<LogLine>; 2],
    flush: VecDeque<LogLine>,
}

impl<I: Iterator<Item = Result<LogRecord, LogError>>> Iterator for JoinPartials<I> {
    type Item = Result<LogLine, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(l) = self.flush.pop_front() {
                return Some(Ok(l));
            }
            let Some(item) = self.inner.next() else {
                for p in &mut self.pending {
                    if let Some(l) = p.take() {
                        self.flush.push_back(l);
                    }
                }
                return self.flush.pop_front().map(Ok);
            };
            let r = match item {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            let slot = &mut self.pending[r.stream.index()];
            let line = slot.get_or_insert_with(|| LogLine {
                timestamp: r.timestamp,
                stream: r.stream,
                content: Vec::new(),
                complete: false,
            });
            line.content.extend_from_slice(&r.content);
            if !r.partial {
                line.complete = true;
                return slot.take().map(Ok);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    fn rec(secs: i64, content: &str, partial: bool) -> LogRecord {
        LogRecord {
            timestamp: ts(secs),
            stream: Stream::Stdout,
            content: content.as_bytes().to_vec(),
            partial,
        }
    }

    #[test]
    fn writer_splits_long_lines_and_rotates() {
        let dir = std::env::temp_dir().join(format!("hako-logs-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("l");
        let mut w = LogWriter::open(&path, 0).expect("open");
        w.write(Stream::Stdout, b"ab", ts(1)).expect("write");
        w.write(Stream::Stderr, b"E\n", ts(2)).expect("write");
        w.write(Stream::Stdout, b"c\nd", ts(3)).expect("write");
        w.write(Stream::Stdout, &vec![b'x'; MAX_RECORD + 5], ts(4))
            .expect("write");
        w.flush_partial(ts(5)).expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let got: Vec<(String, char, usize)> = text
            .lines()
            .map(|l| parse_record(l.as_bytes()).expect("record"))
            .map(|r| {
                (
                    r.stream.as_str().to_string(),
                    if r.partial { 'P' } else { 'F' },
                    r.content.len(),
                )
            })
            .collect();
        let want = [
            ("stderr", 'F', 1),
            ("stdout", 'F', 3),
            ("stdout", 'P', MAX_RECORD),
            ("stdout", 'P', 6),
        ];
        let want: Vec<(String, char, usize)> = want
            .iter()
            .map(|(s, k, n)| (s.to_string(), *k, *n))
            .collect();
        assert_eq!(got, want);
        let mut w = LogWriter::open(&path, 10).expect("reopen appends");
        w.write(Stream::Stdout, b"rotate me\n", ts(6))
            .expect("write");
        assert!(rotated_path(&path).exists());
        assert_eq!(std::fs::metadata(&path).expect("new file").len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_records() {
        let r = parse_record(b"2026-12-02T15:36:02.123456789Z stderr P a b ").expect("record");
        assert_eq!(r.stream, Stream::Stderr);
        assert!(r.partial);
        assert_eq!(r.content, b"a b ");
        let r = parse_record(b"2026-12-02T15:36:02.123456789Z stdout F ").expect("empty line");
        assert!(r.content.is_empty() && !r.partial);
        assert!(parse_record(b"garbage").is_none());
    }

    #[test]
    fn tail_counts_lines_not_records() {
        let recs = vec![
            rec(1, "a", false),
            rec(2, "b1", true),
            rec(3, "b2", false),
            rec(4, "c", true),
        ];
        assert_eq!(tail_start(&recs, 1), 3);
        assert_eq!(tail_start(&recs, 2), 1);
        assert_eq!(tail_start(&recs, 3), 0);
        assert_eq!(tail_start(&recs, 9), 0);
        assert_eq!(tail_start(&recs, 0), 4);
    }

    #[test]
    fn joins_partials_per_stream() {
        let mut err = rec(2, "E", false);
        err.stream = Stream::Stderr;
        let recs = vec![
            rec(1, "ab", true),
            err,
            rec(3, "cd", false),
            rec(4, "x", true),
        ];
        let lines: Vec<LogLine> = join_partials(recs.into_iter().map(Ok))
            .map(|l| l.expect("line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].content, b"E");
        assert_eq!(lines[1].content, b"abcd");
        assert_eq!(lines[1].timestamp, ts(1));
        assert!(!lines[2].complete);
    }
}
