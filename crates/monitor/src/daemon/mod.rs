//! The `hako-monitor` process: parent and subreaper of one container.
//!
//! ```text
//! engine                hako-monitor (P)     monitor (M, forked)           runtime / container
//!   | spawn(P, sync fd) ----->|
//!   |                         | fork ------------>| setsid, SUBREAPER,
//!   |                         |<-- ready byte ----| stdio → /dev/null, RUN/monitor.pid
//!   |<-- P exits 0 -----------|                   | log open, RUN/attach bound,
//!   |                                             | pipes (or RUN/console.sock)
//!   |                                             | `RT create --pid-file RUN/pid ID` --> init waits for start
//!   |                                             |   (its stdio = the container's pipes; M reads them
//!   |                                             |    meanwhile: runtime errors; pty master via SCM_RIGHTS)
//!   |<-- {"pid": N} or {"error": ...} on sync ----| RT create exits; init is reparented to M
//!   | `RT start ID`  ------------------------------------------------------------------> runs
//!   | attach clients <-> RUN/attach <------------>| poll loop: output → log + frames; frames → stdin,
//!   |                                             |   resize; SIGCHLD → reap all (exit of init noted)
//!   |                                             | init exited: drain output (EOF or 2 s),
//!   |                                             |   RUN/exit (tmp + rename), Exit frames,
//!   |                                             |   spawn the exit command (not waited), exit 0
//! ```
//!
//! Everything runs on one thread with poll(2). Writes to attach clients
//! block for at most [`CLIENT_SEND_TIMEOUT`] (SO_SNDTIMEO); a client that
//! makes no progress for that long is dropped, so a stalled client slows
//! the container (backpressure on its pipes) for a bounded time only.

pub mod args;
mod sys;

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signalfd::SignalFd;

use crate::logs::{LogWriter, Stream};
use crate::protocol::{self, ExitRecord, Frame};
use crate::time::Timestamp;
pub use args::Args;
use sys::SysError;

/// How long a write to an attach client may make no progress.
pub const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long output is drained after the container's init exited (other
/// processes may still hold its pipes).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The most runtime output kept for an error message.
const MAX_RUNTIME_OUTPUT: usize = 64 * 1024;
const READ_BUFFER: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] crate::logs::LogError),
    #[error("starting the runtime {path}: {source}")]
    SpawnRuntime {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The runtime's create failed; the text carries its own message.
    #[error("{0}")]
    Create(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
    let path = path.to_path_buf();
    move |source| SetupError::Io { what, path, source }
}

/// The process's entry point; returns the exit status of the process
/// that returns (the parent after the fork, or the monitor at the end).
pub fn main(argv: impl IntoIterator<Item = OsString>) -> i32 {
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hako-monitor: {e}");
            return 2;
        }
    };
    sys::close_inherited_fds(args.sync_fd);
    let sync = match args.sync_fd.map(sys::adopt_cloexec).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hako-monitor: {e}");
            return 2;
        }
    };
    let mut sync = SyncReport(sync);
    let (ready_r, ready_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hako-monitor: {e}");
            return 1;
        }
    };
    match sys::fork() {
        Err(e) => {
            eprintln!("hako-monitor: {e}");
            return 1;
        }
        Ok(sys::Forked::Parent) => {
            drop(ready_w);
            drop(sync);
            let mut byte = [0u8; 1];
            let ok = File::from(ready_r).read(&mut byte).is_ok_and(|n| n == 1);
            return if ok { 0 } else { 1 };
        }
        Ok(sys::Forked::Child) => drop(ready_r),
    }
    match setup(&args, ready_w) {
        Ok(mut monitor) => {
            sync.send(&serde_json::json!({ "pid": monitor.container_pid }));
            monitor.run();
            0
        }
        Err(e) => {
            cleanup_failed_create(&args);
            sync.send(&serde_json::json!({ "error": e.to_string() }));
            1
        }
    }
}

/// The create report on `--sync-fd`: one JSON line, then closed.
struct SyncReport(Option<OwnedFd>);

impl SyncReport {
    fn send(&mut self, v: &serde_json::Value) {
        if let Some(fd) = self.0.take() {
            let mut f = File::from(fd);
            let _ = writeln!(f, "{v}");
        }
    }
}

/// After a failed create: `RT delete --force ID` (best effort) and kill
/// whatever init the pid file names, so nothing is left running.
fn cleanup_failed_create(args: &Args) {
    if let Some(pid) = read_pid_file(&args.run_dir.join(protocol::PID_FILE)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    let _ = Command::new(&args.runtime)
        .args(&args.runtime_args)
        .args(["delete", "--force", &args.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = sys::reap_all();
}

fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 0)
}

/// One container output stream.
struct Output {
    fd: OwnedFd,
    stream: Stream,
    kind: u8,
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    /// A write or read failed: dropped at the end of the poll round (not
    /// before, as the round's poll entries are matched to clients by index).
    gone: bool,
}

struct Monitor {
    args: Args,
    log: LogWriter,
    outputs: Vec<Output>,
    /// Where client stdin goes: the stdin pipe, or a dup of the pty master.
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    stdin_close: bool,
    pty: Option<OwnedFd>,
    listener: UnixListener,
    clients: Vec<Client>,
    sigfd: SignalFd,
    container_pid: i32,
    /// (exit code, signal) once the init was reaped, and the drain deadline.
    exited: Option<(Option<i32>, Option<i32>, Instant)>,
    buf: Vec<u8>,
    frame: Vec<u8>,
}

/// Steps 1-3: session, files, stdio, `RT create`. Returns the monitor
/// ready for its loop, or the error to report.
fn setup(args: &Args, ready: OwnedFd) -> Result<Monitor, SetupError> {
    let run = &args.run_dir;
    sys::new_session_as_subreaper()?;
    sys::null_stdio()?;
    std::env::set_current_dir(run).map_err(io_err("chdir to the run dir", run))?;
    let pid_path = run.join(protocol::MONITOR_PID_FILE);
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))
        .map_err(io_err("writing", &pid_path))?;
    let _ = File::from(ready).write_all(b"1");

    let sigfd = sys::child_signals()?;
    for stale in [
        protocol::PID_FILE,
        protocol::EXIT_FILE,
        protocol::CONSOLE_SOCKET,
        protocol::ATTACH_SOCKET,
    ] {
        let _ = std::fs::remove_file(run.join(stale));
    }
    let log = LogWriter::open(&args.log_path, args.log_max_size)?;
    // Bound relative to the run dir (our cwd): sun_path holds 108 bytes.
    let listener = UnixListener::bind(protocol::ATTACH_SOCKET).map_err(io_err(
        "binding the attach socket",
        &run.join(protocol::ATTACH_SOCKET),
    ))?;
    listener.set_nonblocking(true).map_err(io_err(
        "making non-blocking",
        &run.join(protocol::ATTACH_SOCKET),
    ))?;

    let mut cmd = Command::new(&args.runtime);
    cmd.args(&args.runtime_args)
        .arg("create")
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(run.join(protocol::PID_FILE));
    let mut outputs = Vec::new();
    let mut stdin = None;
    // What the runtime writes during create: its errors.
    let mut capture = Vec::new();
    let mut console = None;
    let mut run_dir_fd = None;
    if args.terminal {
        let path = run.join(protocol::CONSOLE_SOCKET);
        let l = UnixListener::bind(protocol::CONSOLE_SOCKET)
            .map_err(io_err("binding the console socket", &path))?;
        l.set_nonblocking(true)
            .map_err(io_err("making non-blocking", &path))?;
        console = Some(l);
        // A socket address holds 108 bytes: a longer path goes through
        // our descriptor of the run dir, which the runtime can follow.
        if path.as_os_str().len() < 100 {
            cmd.arg("--console-socket").arg(&path);
        } else {
            let dir = File::open(run).map_err(io_err("opening the run dir", run))?;
            cmd.arg("--console-socket").arg(format!(
                "/proc/{}/fd/{}/{}",
                std::process::id(),
                dir.as_raw_fd(),
                protocol::CONSOLE_SOCKET
            ));
            run_dir_fd = Some(dir);
        }
        let (r, w) = sys::pipe()?;
        let w2 = w
            .try_clone()
            .map_err(io_err("dup of the capture pipe", run))?;
        cmd.stdin(Stdio::null()).stdout(w).stderr(w2);
        sys::set_nonblocking(r.as_fd(), "the runtime output pipe")?;
        capture.push(r);
    } else {
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        cmd.stdout(out_w).stderr(err_w);
        if args.stdin {
            let (in_r, in_w) = sys::pipe()?;
            sys::set_nonblocking(in_w.as_fd(), "the stdin pipe")?;
            cmd.stdin(in_r);
            stdin = Some(in_w);
        } else {
            cmd.stdin(Stdio::null());
        }
        for (fd, stream, kind) in [
            (out_r, Stream::Stdout, protocol::STDOUT),
            (err_r, Stream::Stderr, protocol::STDERR),
        ] {
            sys::set_nonblocking(fd.as_fd(), "a container output pipe")?;
            outputs.push(Output { fd, stream, kind });
        }
    }
    cmd.arg(&args.id).current_dir(run);

    let json_log = args.runtime_json_log();
    let json_log_start = json_log
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let runtime_pid = cmd
        .spawn()
        .map_err(|source| SetupError::SpawnRuntime {
            path: args.runtime.clone(),
            source,
        })?
        .id() as i32;
    // Our copies of the child's ends must go, or the pipes never see EOF.
    drop(cmd);

    let read_fds: Vec<&OwnedFd> = if args.terminal {
        capture.iter().collect()
    } else {
        outputs.iter().map(|o| &o.fd).collect()
    };
    let mut buf = vec![0u8; READ_BUFFER];
    let created = wait_for_create(&sigfd, runtime_pid, &read_fds, console.as_ref(), &mut buf)?;
    drop((console, run_dir_fd, capture));
    let _ = std::fs::remove_file(run.join(protocol::CONSOLE_SOCKET));

    if created.status != Some((Some(0), None)) {
        return Err(SetupError::Create(create_failure(
            args,
            created.status,
            &created.output,
            json_log.as_deref(),
            json_log_start,
        )));
    }
    let container_pid = read_pid_file(&run.join(protocol::PID_FILE)).ok_or_else(|| {
        SetupError::Create(format!(
            "{} create succeeded but wrote no pid to {}",
            args.runtime.display(),
            run.join(protocol::PID_FILE).display()
        ))
    })?;
    let mut pty = None;
    if args.terminal {
        let m = created.master.ok_or_else(|| {
            SetupError::Create(format!(
                "{} create succeeded but sent no pty master over {}",
                args.runtime.display(),
                run.join(protocol::CONSOLE_SOCKET).display()
            ))
        })?;
        sys::set_nonblocking(m.as_fd(), "the pty master")?;
        stdin = Some(
            m.try_clone()
                .map_err(io_err("dup of the pty master", run))?,
        );
        outputs.push(Output {
            fd: m
                .try_clone()
                .map_err(io_err("dup of the pty master", run))?,
            stream: Stream::Stdout,
            kind: protocol::STDOUT,
        });
        pty = Some(m);
    }
    let exited = created
        .reaped
        .iter()
        .find(|r| r.0 == container_pid)
        .map(|r| (r.1, r.2, Instant::now() + DRAIN_AFTER_EXIT));
    Ok(Monitor {
        args: args.clone(),
        log,
        outputs,
        stdin,
        stdin_pending: Vec::new(),
        stdin_close: false,
        pty,
        listener,
        clients: Vec::new(),
        sigfd,
        container_pid,
        exited,
        buf,
        frame: Vec::new(),
    })
}

/// What happened while the runtime's create ran.
struct Created {
    /// The runtime's (exit code, signal); None if it was never reaped.
    status: Option<(Option<i32>, Option<i32>)>,
    /// What it wrote on its stdout and stderr (bounded).
    output: Vec<u8>,
    /// The pty master it sent over the console socket.
    master: Option<OwnedFd>,
    /// Other children reaped meanwhile: (pid, exit code, signal).
    reaped: Vec<(i32, Option<i32>, Option<i32>)>,
}

/// Waits for `RT create` (pid `runtime_pid`) to exit, meanwhile reading
/// what it writes on `output_fds` and accepting the pty master on
/// `console`; reaps every child.
fn wait_for_create(
    sigfd: &SignalFd,
    runtime_pid: i32,
    output_fds: &[&OwnedFd],
    console: Option<&UnixListener>,
    buf: &mut [u8],
) -> Result<Created, SetupError> {
    let mut c = Created {
        status: None,
        output: Vec::new(),
        master: None,
        reaped: Vec::new(),
    };
    let mut drain = |c: &mut Created| -> Result<(), SetupError> {
        for fd in output_fds {
            while let Ok(Some(n)) = sys::read_some(fd.as_fd(), buf) {
                if n == 0 {
                    break;
                }
                if c.output.len() < MAX_RUNTIME_OUTPUT {
                    c.output.extend_from_slice(&buf[..n]);
                }
            }
        }
        if let (Some(l), None) = (console, &c.master) {
            c.master = accept_master(l)?;
        }
        Ok(())
    };
    while c.status.is_none() {
        let mut fds = vec![sys::pollfd(sigfd.as_fd(), libc::POLLIN)];
        fds.extend(
            output_fds
                .iter()
                .map(|fd| sys::pollfd(fd.as_fd(), libc::POLLIN)),
        );
        if let (Some(l), None) = (console, &c.master) {
            fds.push(sys::pollfd(l.as_fd(), libc::POLLIN));
        }
        sys::poll(&mut fds, 1000)?;
        drain(&mut c)?;
        sys::drain_signalfd(sigfd);
        for (pid, code, sig) in sys::reap_all() {
            if pid == runtime_pid {
                c.status = Some((code, sig));
            } else {
                c.reaped.push((pid, code, sig));
            }
        }
    }
    // What it wrote (or sent) right before exiting.
    drain(&mut c)?;
    Ok(c)
}

fn accept_master(l: &UnixListener) -> Result<Option<OwnedFd>, SetupError> {
    match l.accept() {
        Ok((conn, _)) => Ok(sys::recv_fd(conn.as_fd())?),
        Err(_) => Ok(None),
    }
}

/// The error message of a failed create: the runtime's own words (its
/// stdout/stderr, and the error entries of its JSON log if it keeps one).
fn create_failure(
    args: &Args,
    status: Option<(Option<i32>, Option<i32>)>,
    output: &[u8],
    json_log: Option<&Path>,
    json_log_start: u64,
) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text
        .lines()
        .map(logfmt_message)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.as_str();
    let mut parts: Vec<String> = Vec::new();
    if !text.is_empty() {
        parts.push(text.to_string());
    }
    if let Some(log) = json_log.and_then(|p| std::fs::read(p).ok()) {
        let start = usize::try_from(json_log_start).unwrap_or(0).min(log.len());
        for line in log[start..].split(|&b| b == b'\n') {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let level = v["level"].as_str().unwrap_or("");
            if let ("error" | "fatal", Some(msg)) = (level, v["msg"].as_str()) {
                if !text.contains(msg) && !parts.iter().any(|p| p == msg) {
                    parts.push(msg.to_string());
                }
            }
        }
    }
    let how = match status {
        Some((Some(c), _)) => format!("exit status {c}"),
        Some((_, Some(s))) => format!("signal {s}"),
        _ => "unknown status".into(),
    };
    let runtime = args.runtime.display();
    if parts.is_empty() {
        format!("{runtime} create failed ({how}) without a message")
    } else {
        format!("{runtime} create failed ({how}): {}", parts.join("; "))
    }
}

/// runc's text log lines are logfmt (`time="…" level=error msg="…"`):
/// their `msg` is the message. Other lines are kept as they are.
fn logfmt_message(line: &str) -> String {
    let line = line.trim();
    let Some(start) = line.find(" msg=\"").map(|i| i + 6) else {
        return line.to_string();
    };
    let mut msg = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return msg,
            '\\' => msg.extend(chars.next()),
            c => msg.push(c),
        }
    }
    line.to_string()
}

impl Monitor {
    /// Step 5: the loop until the container exited and its output drained.
    fn run(&mut self) {
        loop {
            let timeout = match self.exited {
                Some((_, _, deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if self.outputs.is_empty() || left.is_zero() {
                        break;
                    }
                    i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
                }
                None => -1,
            };
            let mut fds = vec![
                sys::pollfd(self.sigfd.as_fd(), libc::POLLIN),
                sys::pollfd(self.listener.as_fd(), libc::POLLIN),
            ];
            let first_output = fds.len();
            fds.extend(
                self.outputs
                    .iter()
                    .map(|o| sys::pollfd(o.fd.as_fd(), libc::POLLIN)),
            );
            let stdin_at = match (&self.stdin, self.stdin_pending.is_empty()) {
                (Some(fd), false) => {
                    fds.push(sys::pollfd(fd.as_fd(), libc::POLLOUT));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            // While stdin is backed up, clients are not read: backpressure.
            let first_client = fds.len();
            if self.stdin_pending.is_empty() {
                fds.extend(
                    self.clients
                        .iter()
                        .map(|c| sys::pollfd(c.sock.as_fd(), libc::POLLIN)),
                );
            }
            if sys::poll(&mut fds, timeout).is_err() {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if fds[0].revents != 0 {
                self.reap();
            }
            // Accept before reading output: a client that connected before
            // the output was produced gets all of it.
            self.accept_clients();
            let ready: Vec<bool> = fds[first_output..first_output + self.outputs.len()]
                .iter()
                .map(|p| p.revents != 0)
                .collect();
            let mut closed = Vec::new();
            for (i, r) in ready.into_iter().enumerate() {
                if r && !self.read_output(i) {
                    closed.push(i);
                }
            }
            for i in closed.into_iter().rev() {
                self.outputs.remove(i);
            }
            if stdin_at.is_some_and(|i| fds[i].revents != 0) {
                self.flush_stdin();
            }
            if self.stdin_pending.is_empty() && fds.len() > first_client {
                // fds[first_client + i] is clients[i]: clients accepted in
                // this round come after them, and none is removed before
                // the round ends.
                let ready: Vec<bool> = fds[first_client..].iter().map(|p| p.revents != 0).collect();
                for (i, r) in ready.into_iter().enumerate() {
                    if r && !self.clients[i].gone && !self.read_client(i) {
                        self.clients[i].gone = true;
                    }
                }
                self.flush_stdin();
            }
            self.clients.retain(|c| !c.gone);
        }
        self.finish();
    }

    fn reap(&mut self) {
        sys::drain_signalfd(&self.sigfd);
        for (pid, code, sig) in sys::reap_all() {
            if pid == self.container_pid && self.exited.is_none() {
                self.exited = Some((code, sig, Instant::now() + DRAIN_AFTER_EXIT));
            }
        }
    }

    fn accept_clients(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            if sock.set_write_timeout(Some(CLIENT_SEND_TIMEOUT)).is_ok() {
                self.clients.push(Client {
                    sock,
                    inbuf: Vec::new(),
                    gone: false,
                });
            }
        }
    }

    /// Reads one chunk of output `i`: logs it and sends it to every
    /// client. False at end of file.
    fn read_output(&mut self, i: usize) -> bool {
        let out = &self.outputs[i];
        let n = match sys::read_some(out.fd.as_fd(), &mut self.buf) {
            Ok(Some(0)) | Err(_) => return false,
            Ok(None) => return true,
            Ok(Some(n)) => n,
        };
        let (stream, kind) = (out.stream, out.kind);
        let _ = self.log.write(stream, &self.buf[..n], Timestamp::now());
        self.frame.clear();
        protocol::encode_frame(kind, &self.buf[..n], &mut self.frame);
        let frame = &self.frame;
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            c.gone = c.sock.write_all(frame).is_err();
        }
        true
    }

    /// Reads what a client sent and acts on its complete frames. False
    /// when the client is gone or broke the protocol.
    fn read_client(&mut self, i: usize) -> bool {
        let mut tmp = [0u8; 8192];
        let n = match self.clients[i].sock.read(&mut tmp) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        self.clients[i].inbuf.extend_from_slice(&tmp[..n]);
        loop {
            let inbuf = &self.clients[i].inbuf;
            if inbuf.len() < 5 {
                return true;
            }
            let len = u32::from_be_bytes([inbuf[1], inbuf[2], inbuf[3], inbuf[4]]) as usize;
            if len > protocol::MAX_PAYLOAD {
                return false;
            }
            if inbuf.len() < 5 + len {
                return true;
            }
            let kind = inbuf[0];
            let payload = inbuf[5..5 + len].to_vec();
            self.clients[i].inbuf.drain(..5 + len);
            match Frame::decode(kind, payload) {
                Ok(Frame::Stdin(data)) => {
                    if self.stdin.is_some() {
                        self.stdin_pending.extend_from_slice(&data);
                    } else {
                        let msg = if self.args.stdin || self.args.terminal {
                            "the container's stdin is closed"
                        } else {
                            "the container has no stdin (the monitor was started without --stdin)"
                        };
                        let mut f = Vec::new();
                        protocol::encode_frame(protocol::ERROR, msg.as_bytes(), &mut f);
                        if self.clients[i].sock.write_all(&f).is_err() {
                            return false;
                        }
                    }
                }
                Ok(Frame::CloseStdin) => self.stdin_close = true,
                Ok(Frame::Resize { rows, cols }) => {
                    if let Some(pty) = &self.pty {
                        let _ = sys::set_winsize(pty.as_fd(), rows, cols);
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Writes pending stdin as far as the pipe takes it; closes stdin
    /// once drained if a client asked to (a pty master stays open: its
    /// output is the container's).
    fn flush_stdin(&mut self) {
        if let Some(fd) = &self.stdin {
            while !self.stdin_pending.is_empty() {
                match sys::write_some(fd, &self.stdin_pending) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.stdin_pending.drain(..n);
                    }
                    Err(_) => {
                        self.stdin_pending.clear();
                        self.stdin = None;
                        break;
                    }
                }
            }
        } else {
            self.stdin_pending.clear();
        }
        if self.stdin_close && self.stdin_pending.is_empty() && !self.args.terminal {
            self.stdin = None;
        }
    }

    /// Step 5, the end: log tail, RUN/exit, Exit frames, exit command.
    fn finish(&mut self) {
        let _ = self.log.flush_partial(Timestamp::now());
        let (code, sig, _) = self.exited.unwrap_or((None, None, Instant::now()));
        let record = ExitRecord::new(code, sig, Timestamp::now());
        let _ = record.write(&self.args.run_dir);
        self.frame.clear();
        protocol::encode_frame(
            protocol::EXIT,
            &record.exit_code.to_be_bytes(),
            &mut self.frame,
        );
        for c in &mut self.clients {
            let _ = c.sock.write_all(&self.frame);
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
        let taken_over = self
            .args
            .exit_command_unless
            .as_deref()
            .is_some_and(hako_procfs::marked_process_alive);
        if let Some(cmd) = self.args.exit_command.as_ref().filter(|_| !taken_over) {
            // Not waited for: it outlives us and is reparented (and reaped)
            // above; a cleanup command may well wait for this monitor.
            let _ = Command::new(cmd)
                .args(&self.args.exit_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::logfmt_message;

    #[test]
    fn takes_the_msg_of_logfmt_lines() {
        let l = r#"time="2026-12-02T15:53:25Z" level=error msg="runc create failed: exec: \"/x\": stat /x: no such file""#;
        assert_eq!(
            logfmt_message(l),
            r#"runc create failed: exec: "/x": stat /x: no such file"#
        );
        assert_eq!(logfmt_message("  plain error "), "plain error");
    }
}
