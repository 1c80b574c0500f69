//! The monitor's raw system calls behind small safe wrappers.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A failed system call: which one, on what.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {errno}")]
pub struct SysError {
    pub what: String,
    pub errno: Errno,
}

pub fn sys_err(what: impl Into<String>) -> impl FnOnce(Errno) -> SysError {
    let what = what.into();
    move |errno| SysError { what, errno }
}

/// Result of [`fork`].
pub enum Forked {
    Parent,
    Child,
}

/// fork(2). The monitor is single-threaded when it forks (at start-up,
/// before any thread could exist), so the child may run any code.
pub fn fork() -> Result<Forked, SysError> {
    // SAFETY: called from main before any other thread is started, so the
    // child's copy of the address space has no lock held by a vanished
    // thread.
    match unsafe { nix::unistd::fork() }.map_err(sys_err("fork"))? {
        nix::unistd::ForkResult::Parent { .. } => Ok(Forked::Parent),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// setsid(2) and PR_SET_CHILD_SUBREAPER.
pub fn new_session_as_subreaper() -> Result<(), SysError> {
    nix::unistd::setsid().map_err(sys_err("setsid"))?;
    // SAFETY: prctl with an integer argument; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(SysError {
            what: "prctl(PR_SET_CHILD_SUBREAPER)".into(),
            errno: Errno::last(),
        });
    }
    Ok(())
}

/// Points fds 0, 1 and 2 at /dev/null.
pub fn null_stdio() -> Result<(), SysError> {
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys_err("open /dev/null"))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process
        // owns; nothing in Rust holds them as OwnedFd.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(SysError {
                what: format!("dup2 /dev/null onto fd {fd}"),
                errno: Errno::last(),
            });
        }
    }
    Ok(())
}

/// Closes every descriptor this process inherited except 0-2 and `keep`:
/// a caller's stray descriptors (a shell's, a captured pipe) must not stay
/// open for the container's lifetime. Call first thing, before anything
/// of ours is open.
pub fn close_inherited_fds(keep: Option<RawFd>) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && Some(fd) != keep {
            // SAFETY: nothing in this process owns inherited descriptors
            // yet (main calls this before opening any); the one the
            // directory listing used is already closed, which gives EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), SysError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))
}

pub fn set_nonblocking(fd: BorrowedFd<'_>, what: &str) -> Result<(), SysError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(sys_err(format!("fcntl F_GETFL {what}")))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(sys_err(format!("fcntl F_SETFL O_NONBLOCK {what}")))?;
    Ok(())
}

/// Takes ownership of an inherited descriptor number and marks it
/// close-on-exec, so the runtime and the container do not inherit it.
pub fn adopt_cloexec(fd: RawFd) -> Result<OwnedFd, SysError> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: the caller passes a descriptor it was given (checked open by
    // the argument parser) and nothing else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(sys_err(format!(
        "fcntl F_SETFD FD_CLOEXEC on --sync-fd {fd}"
    )))?;
    Ok(owned)
}

/// Blocks SIGCHLD and returns a non-blocking signalfd for it; ignores
/// SIGPIPE (a vanished attach client is an EPIPE, not a death).
pub fn child_signals() -> Result<SignalFd, SysError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.thread_block()
        .map_err(sys_err("sigprocmask SIG_BLOCK SIGCHLD"))?;
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
        .map_err(sys_err("signal SIGPIPE SIG_IGN"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(sys_err("signalfd SIGCHLD"))
}

/// Empties the signalfd (the wait loop, not the signal count, matters).
pub fn drain_signalfd(sfd: &SignalFd) {
    while let Ok(Some(_)) = sfd.read_signal() {}
}

/// Reaps every exited child: (pid, Some(exit code) | None, signal).
pub fn reap_all() -> Vec<(i32, Option<i32>, Option<i32>)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), Some(code), None)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw(), None, Some(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

/// poll(2) on `fds`, retrying on EINTR; `timeout_ms` -1 waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<(), SysError> {
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd
        // and its length is passed with it.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc >= 0 {
            return Ok(());
        }
        let errno = Errno::last();
        if errno != Errno::EINTR {
            return Err(SysError {
                what: "poll".into(),
                errno,
            });
        }
    }
}

/// A pollfd entry.
pub fn pollfd(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// Receives one message with an fd (SCM_RIGHTS) on a connected unix
/// socket: the runtime sending the pty master over `--console-socket`.
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<Option<OwnedFd>, SysError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys_err("recvmsg on the console socket"))?;
    let mut got = None;
    for c in msg
        .cmsgs()
        .map_err(sys_err("reading SCM_RIGHTS of the console socket"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in our
                // table for this message; we are its only owner.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    Ok(got)
}

/// TIOCSWINSZ on a pty master.
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), SysError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points
    // at a live local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(SysError {
            what: "ioctl TIOCSWINSZ on the pty master".into(),
            errno: Errno::last(),
        });
    }
    Ok(())
}

/// read(2) into `buf`: Ok(None) on EAGAIN, Ok(Some(0)) at end of file
/// (EIO on a pty master whose slave side is closed counts as the end).
pub fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(Some(n)),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::EIO) => return Ok(Some(0)),
            Err(e) => return Err(e),
        }
    }
}

/// write(2) of as much of `buf` as fits now: Ok(0) on EAGAIN.
pub fn write_some(fd: impl AsFd, buf: &[u8]) -> Result<usize, Errno> {
    loop {
        match nix::unistd::write(&fd, buf) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}
