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
}

/// What [`attach_stdio`] forwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachStdio {
    /// Forward fd 0 to the container; at its end, close the container's
    /// stdin (`echo hi | hako run -i img cat` ends).
    pub stdin: bool,
    /// The container has a terminal: raw mode on fd 0 (if it is a tty) for
    /// the session, size forwarded at start and on SIGWINCH.
    pub tty: bool,
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
        Some(std::thread::spawn(move || {
            pump_input(sender, stdin_fd, with_stdin, winch_r, stop_r)
        }))
    } else {
        None
    };
    let result = pump_output(&attach, run_dir);
    let _ = nix::unistd::write(&stop_w, b"x");
    if let Some(t) = pump {
        let _ = t.join();
    }
    drop(winch);
    result
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
fn pump_input(
    sender: Attach,
    stdin: OwnedFd,
    with_stdin: bool,
    winch: Option<OwnedFd>,
    stop: OwnedFd,
) {
    let mut stdin_open = with_stdin;
    let mut buf = vec![0u8; 32 * 1024];
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
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        if let Some(w) = &winch {
            if fds[1].revents != 0 {
                let mut b = [0u8; 64];
                let _ = nix::unistd::read(w.as_fd(), &mut b);
                if let Some((rows, cols)) = term_size() {
                    if sender.resize(rows, cols).is_err() {
                        return;
                    }
                }
            }
        }
        if stdin_open && fds[fds.len() - 1].revents != 0 {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    if sender.close_stdin().is_err() {
                        return;
                    }
                }
                Ok(n) => {
                    if sender.send_stdin(&buf[..n]).is_err() {
                        return;
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
