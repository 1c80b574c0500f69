//! Attaching to a container through its monitor's `RUN/attach` socket.
//!
//! [`Attach`] is the connection (frames of [`crate::protocol`]);
//! [`attach_stdio`] pumps the caller's stdin/stdout/stderr through one
//! until the container exits. With `tty: true` it also puts the caller's
//! terminal (fd 0) in raw mode for the session and restores it, and
//! forwards the terminal size at start and on SIGWINCH: the engine need
//! not do any of that itself. What it does not do: detach keys.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::protocol::{self, ExitRecord, Frame, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("connecting to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("writing attach output to fd {fd}: {source}")]
    Output { fd: i32, source: io::Error },
    #[error("{what}: {errno}")]
    Sys {
        what: &'static str,
        errno: nix::errno::Errno,
    },
    /// The monitor closed the connection without an exit status and left
    /// no exit record.
    #[error("the monitor closed the attach connection of {run_dir} before the container exited")]
    Closed { run_dir: PathBuf },
    /// The detach keys were typed: the session ended, the container runs
    /// on (docker ends it the same way, with an error of its own).
    #[error("detached from the container (it keeps running)")]
    Detached,
    #[error("--detach-keys {spec:?}: {reason}")]
    DetachKeys { spec: String, reason: String },
}

/// One attach connection.
#[derive(Debug)]
pub struct Attach {
    sock: UnixStream,
}

impl Attach {
    /// Connects to `RUN/attach` (through `/proc/self/fd` when the path is
    /// longer than a socket address holds).
    pub fn connect(run_dir: &Path) -> Result<Attach, AttachError> {
        let path = run_dir.join(protocol::ATTACH_SOCKET);
        let err = |source| AttachError::Connect {
            path: path.clone(),
            source,
        };
        let sock = if path.as_os_str().len() < 100 {
            UnixStream::connect(&path).map_err(err)?
        } else {
            let dir = std::fs::File::open(run_dir).map_err(err)?;
            UnixStream::connect(format!(
                "/proc/self/fd/{}/{}",
                dir.as_raw_fd(),
                protocol::ATTACH_SOCKET
            ))
            .map_err(err)?
        };
        Ok(Attach { sock })
    }

    /// A second handle on the same connection (e.g. a stdin thread).
    pub fn try_clone(&self) -> io::Result<Attach> {
        Ok(Attach {
            sock: self.sock.try_clone()?,
        })
    }

    pub fn send_stdin(&self, data: &[u8]) -> Result<(), AttachError> {
        self.send(protocol::STDIN, data)
    }

    /// Asks the monitor to close the container's stdin pipe once the stdin
    /// sent before is written (no effect with a terminal).
    pub fn close_stdin(&self) -> Result<(), AttachError> {
        self.send(protocol::CLOSE_STDIN, &[])
    }

    /// Sets the container's terminal size (TIOCSWINSZ on the pty master).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), AttachError> {
        let (k, p) = Frame::Resize { rows, cols }.encode();
        self.send(k, &p)
    }

    fn send(&self, kind: u8, payload: &[u8]) -> Result<(), AttachError> {
        protocol::write_frame(&mut &self.sock, kind, payload)
            .map_err(|e| ProtocolError::Io(e).into())
    }

    /// The next frame from the monitor; None when it closed the connection.
    pub fn read_frame(&self) -> Result<Option<Frame>, AttachError> {
        match protocol::read_frame(&mut &self.sock, protocol::MAX_PAYLOAD)? {
            Some((k, p)) => Ok(Some(Frame::decode(k, p)?)),
            None => Ok(None),
        }
    }

    /// Half-closes the sending side (the monitor sees end of stream).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.sock.shutdown(std::net::Shutdown::Write)
    }

    /// Ends the connection both ways: a reader of it sees end of stream.
    fn shutdown(&self) -> io::Result<()> {
        self.sock.shutdown(std::net::Shutdown::Both)
    }
}

/// What [`attach_stdio`] forwards.
#[derive(Debug, Clone, Default)]
pub struct AttachStdio {
    /// Forward fd 0 to the container; at its end, close the container's
    /// stdin (`echo hi | hako run -i img cat` ends).
    pub stdin: bool,
    /// The container has a terminal: raw mode on fd 0 (if it is a tty) for
    /// the session, size forwarded at start and on SIGWINCH.
    pub tty: bool,
    /// With a terminal and stdin: typing this sequence ends the session
    /// ([`AttachError::Detached`]) and leaves the container running;
    /// empty: never. See [`parse_detach_keys`] and [`DEFAULT_DETACH_KEYS`].
    pub detach_keys: Vec<u8>,
}

/// docker's and podman's default detach sequence.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parses docker's `--detach-keys` format: comma-separated keys, each a
/// single character or `ctrl-X` with X one of `a`-`z`, `@`, `[`, `\`,
/// `]`, `^`, `_`. An empty string disables detaching.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, AttachError> {
    let bad = |reason: &str| AttachError::DetachKeys {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|key| {
            if let Some(c) = key.strip_prefix("ctrl-") {
                let [c] = c.as_bytes() else {
                    return Err(bad("ctrl- takes one character"));
                };
                match c.to_ascii_lowercase() {
                    c @ b'a'..=b'z' => Ok(c - b'a' + 1),
                    b'@' => Ok(0),
                    c @ (b'[' | b'\\' | b']' | b'^' | b'_') => Ok(c - b'@'),
                    _ => Err(bad("ctrl- takes a-z, @, [, \\, ], ^ or _")),
                }
            } else {
                match key.as_bytes() {
                    [c] if c.is_ascii() && !c.is_ascii_control() => Ok(*c),
                    _ => Err(bad("a key is one character or ctrl-X")),
                }
            }
        })
        .collect()
}

/// Finds a detach sequence in a stream of input: bytes that may begin it
/// are held back until they do not (then they are passed on) or it is
/// complete.
#[derive(Debug, Default)]
struct DetachMatcher {
    keys: Vec<u8>,
    held: usize,
}

impl DetachMatcher {
    /// Appends to `out` what of `input` goes to the container; true when
    /// the sequence completed (what followed it is dropped).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return false;
        }
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return true;
                }
                continue;
            }
            // Not the sequence after all: what was held goes on, and this
            // byte may start it afresh.
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// Pumps the caller's stdio through the monitor of `run_dir` until the
/// container exits; returns its exit code. If the monitor is already gone,
/// the exit record answers.
pub fn attach_stdio(run_dir: &Path, how: AttachStdio) -> Result<i32, AttachError> {
    let attach = match Attach::connect(run_dir) {
        Ok(a) => a,
        Err(e) => {
            return match ExitRecord::read(run_dir) {
                Ok(Some(r)) => Ok(r.exit_code),
                _ => Err(e),
            }
        }
    };
    attach_stdio_with(attach, run_dir, how)
}

/// [`attach_stdio`] over a connection made earlier: the engine connects
/// before it starts the container, so none of its output is missed.
pub fn attach_stdio_with(
    attach: Attach,
    run_dir: &Path,
    how: AttachStdio,
) -> Result<i32, AttachError> {
    let stdin_fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| AttachError::Output { fd: 0, source: e })?;
    let _raw = if how.tty {
        RawMode::enter(stdin_fd.as_fd())
    } else {
        None
    };
    let winch = if how.tty {
        Some(WinchPipe::install()?)
    } else {
        None
    };
    if how.tty {
        if let Some((rows, cols)) = term_size() {
            attach.resize(rows, cols)?;
        }
    }
    let (stop_r, stop_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| AttachError::Sys {
            what: "pipe2",
            errno,
        })?;
    let pump = if how.stdin || how.tty {
        let sender = attach.try_clone().map_err(ProtocolError::Io)?;
        let winch_r = winch
            .as_ref()
            .map(|w| w.read.try_clone())
            .transpose()
            .map_err(ProtocolError::Io)?;
        let with_stdin = how.stdin;
        let matcher = DetachMatcher {
            keys: if how.tty && how.stdin {
                how.detach_keys.clone()
            } else {
                Vec::new()
            },
            held: 0,
        };
        Some(std::thread::spawn(move || {
            pump_input(sender, stdin_fd, with_stdin, winch_r, stop_r, matcher)
        }))
    } else {
        None
    };
    let result = pump_output(&attach, run_dir);
    let _ = nix::unistd::write(&stop_w, b"x");
    let detached = pump.map(|t| t.join().unwrap_or(false)).unwrap_or(false);
    drop(winch);
    match result {
        // The session ended because the detach keys closed it; an exit that
        // raced them still counts.
        Err(AttachError::Closed { .. }) | Err(AttachError::Protocol(_)) if detached => {
            Err(AttachError::Detached)
        }
        other => other,
    }
}

fn pump_output(attach: &Attach, run_dir: &Path) -> Result<i32, AttachError> {
    let out = io::stdout();
    let err = io::stderr();
    loop {
        match attach.read_frame()? {
            Some(Frame::Stdout(d)) => {
                let mut o = out.lock();
                o.write_all(&d)
                    .and_then(|()| o.flush())
                    .map_err(|source| AttachError::Output { fd: 1, source })?;
            }
            Some(Frame::Stderr(d)) => {
                let mut e = err.lock();
                e.write_all(&d)
                    .and_then(|()| e.flush())
                    .map_err(|source| AttachError::Output { fd: 2, source })?;
            }
            Some(Frame::Error(t)) => {
                let _ = writeln!(err.lock(), "hako: {t}");
            }
            Some(Frame::Exit(code)) => return Ok(code),
            Some(_) => {}
            None => {
                return match ExitRecord::read(run_dir)? {
                    Some(r) => Ok(r.exit_code),
                    None => Err(AttachError::Closed {
                        run_dir: run_dir.to_path_buf(),
                    }),
                }
            }
        }
    }
}

/// The input side: stdin data, stdin end → close, SIGWINCH → resize,
/// until `stop` is readable.
/// Forwards stdin and window sizes until `stop`; true when it ended the
/// session because the detach keys were typed.
fn pump_input(
    sender: Attach,
    stdin: OwnedFd,
    with_stdin: bool,
    winch: Option<OwnedFd>,
    stop: OwnedFd,
    mut matcher: DetachMatcher,
) -> bool {
    let mut stdin_open = with_stdin;
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let mut fds = vec![libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(w) = &winch {
            fds.push(libc::pollfd {
                fd: w.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if stdin_open {
            fds.push(libc::pollfd {
                fd: stdin.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a live, exclusively borrowed vector of pollfd
        // and its length is passed with it.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return false;
        }
        if fds[0].revents != 0 {
            return false;
        }
        if let Some(w) = &winch {
            if fds[1].revents != 0 {
                let mut b = [0u8; 64];
                let _ = nix::unistd::read(w.as_fd(), &mut b);
                if let Some((rows, cols)) = term_size() {
                    if sender.resize(rows, cols).is_err() {
                        return false;
                    }
                }
            }
        }
        if stdin_open && fds[fds.len() - 1].revents != 0 {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    if sender.close_stdin().is_err() {
                        return false;
                    }
                }
                Ok(n) => {
                    out.clear();
                    let detach = matcher.feed(&buf[..n], &mut out);
                    if !out.is_empty() && sender.send_stdin(&out).is_err() {
                        return false;
                    }
                    if detach {
                        let _ = sender.shutdown();
                        return true;
                    }
                }
            }
        }
    }
}

/// The size of the caller's terminal (fd 0, else 1).
fn term_size() -> Option<(u16, u16)> {
    for fd in [0, 1] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into a live local.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// The caller's terminal in raw mode; restored on drop.
struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: fd.try_clone_to_owned().ok()?,
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Where the SIGWINCH handler writes (the write end of [`WinchPipe`]).
static WINCH_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe { libc::write(fd, b"w".as_ptr().cast(), 1) };
    }
}

/// A SIGWINCH handler that writes to a pipe, installed for one session;
/// the previous disposition comes back on drop.
struct WinchPipe {
    read: OwnedFd,
    write: OwnedFd,
    old: nix::sys::signal::SigAction,
}

impl WinchPipe {
    fn install() -> Result<WinchPipe, AttachError> {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
        let (read, write) = nix::unistd::pipe2(flags).map_err(|errno| AttachError::Sys {
            what: "pipe2",
            errno,
        })?;
        WINCH_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_winch),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only loads an atomic and calls write(2), both
        // async-signal-safe.
        let old =
            unsafe { sigaction(Signal::SIGWINCH, &action) }.map_err(|errno| AttachError::Sys {
                what: "sigaction SIGWINCH",
                errno,
            })?;
        Ok(WinchPipe { read, write, old })
    }
}

impl Drop for WinchPipe {
    fn drop(&mut self) {
        // SAFETY: restores the disposition that was in place before.
        let _ =
            unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGWINCH, &self.old) };
        WINCH_FD.store(-1, Ordering::Relaxed);
        let _ = self.write.as_raw_fd();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(
            parse_detach_keys(DEFAULT_DETACH_KEYS).expect("default"),
            vec![0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-a,x").expect("a,x"), vec![1, b'x']);
        assert_eq!(
            parse_detach_keys("ctrl-@,ctrl-[").expect("@["),
            vec![0, 0x1b]
        );
        assert_eq!(parse_detach_keys("").expect("empty"), Vec::<u8>::new());
        for bad in ["ctrl-", "ctrl-ab", "ctrl-1", "xy", "a,,b", "\u{e9}"] {
            assert!(
                matches!(parse_detach_keys(bad), Err(AttachError::DetachKeys { .. })),
                "{bad:?} parsed"
            );
        }
    }

    fn feed_all(keys: &[u8], chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut m = DetachMatcher {
            keys: keys.to_vec(),
            held: 0,
        };
        let mut out = Vec::new();
        for c in chunks {
            if m.feed(c, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn the_matcher_holds_a_prefix_and_passes_it_on_when_it_breaks() {
        let k = [0x10, 0x11];
        assert_eq!(feed_all(&k, &[b"ab"]), (b"ab".to_vec(), false));
        // Split across reads, and what follows is dropped.
        assert_eq!(feed_all(&k, &[b"a\x10", b"\x11zz"]), (b"a".to_vec(), true));
        // A broken prefix is passed on, and a new one can start at once.
        assert_eq!(
            feed_all(&k, &[b"\x10x\x10\x10\x11"]),
            (b"\x10x\x10".to_vec(), true)
        );
        // Held at the end of the input: not sent yet.
        assert_eq!(feed_all(&k, &[b"q\x10"]), (b"q".to_vec(), false));
        // No keys: everything goes.
        assert_eq!(feed_all(&[], &[b"\x10\x11"]), (b"\x10\x11".to_vec(), false));
        // One key.
        assert_eq!(feed_all(b"~", &[b"ab~c"]), (b"ab".to_vec(), true));
    }
}
