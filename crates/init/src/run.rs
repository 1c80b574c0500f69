//! The two modes: init (run a command as our only child, forward signals
//! to it, reap everything, pass its status on) and pause (reap until
//! SIGTERM/SIGINT).
//!
//! ```text
//! hako-init (pid 1)                      child
//! ─────────────────                      ─────
//! SIGCHLD → SIG_DFL, block all catchable
//! signals (they queue; pid 1 would drop
//! unhandled ones otherwise)
//! not pid 1? → PR_SET_CHILD_SUBREAPER
//! fork ─────────────────────────────────▶ own process group (foreground of
//! setpgid(child, child)                   the terminal if ours was), all
//! loop rt_sigtimedwait(all):              dispositions SIG_DFL, empty mask,
//!   SIGCHLD → wait4(-1, WNOHANG) until    execve (PATH search): failures
//!             none left; the child's      print "hako-init: CMD: …" and exit
//!             status ends the loop        127 (not found) / 126 (not run)
//!   TTIN/TTOU → dropped
//!   other   → kill(child or -pgid, sig)
//! exit(child status, 128+N if killed)
//! ```
//! Signals are taken synchronously with rt_sigtimedwait, never with
//! handlers: no async-signal-safety questions and no EINTR loops. Only
//! the synchronous fault signals (SEGV, BUS, ILL, FPE, TRAP, ABRT, SYS)
//! stay unblocked, and SIGKILL/SIGSTOP cannot be blocked.

use crate::cli::{self, Mode, UsageError};
use crate::message::Message;
use crate::startup::{Args, Env};
use crate::sys::{self, Errno, Fork, SigSet, Signal};

/// hako-init's own failure (fork, sigprocmask), as docker reports its own.
pub const EXIT_INIT_FAILED: i32 = 125;
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// PATH when the environment has none (the OCI/docker default).
const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PATH_MAX: usize = 4096;

/// The signals hako-init waits for: all but the unblockable ones and the
/// synchronous faults, which must keep killing hako-init itself.
pub const fn caught_signals() -> SigSet {
    SigSet::full()
        .without(sys::SIGKILL)
        .without(sys::SIGSTOP)
        .without(sys::SIGILL)
        .without(sys::SIGTRAP)
        .without(sys::SIGABRT)
        .without(sys::SIGBUS)
        .without(sys::SIGFPE)
        .without(sys::SIGSEGV)
        .without(sys::SIGSYS)
}

/// Runs hako-init; the result is the process's exit status.
pub fn main(args: Args, env: Env) -> i32 {
    match cli::parse(args.iter_from(1)) {
        Ok(Mode::Run { command, group }) => init(args, command + 1, group, env),
        Ok(Mode::Pause) => pause(),
        Ok(Mode::Version) => {
            let _ = sys::write_all(
                1,
                concat!("hako-init ", env!("CARGO_PKG_VERSION"), "\n").as_bytes(),
            );
            0
        }
        Ok(Mode::Help) => {
            let _ = sys::write_all(1, cli::USAGE.as_bytes());
            let _ = sys::write_all(1, cli::HELP.as_bytes());
            0
        }
        Err(e) => {
            let mut m = Message::new();
            match e {
                UsageError::MissingCommand => m.push(b"no command given"),
                UsageError::UnknownOption(i) => m
                    .push(b"unknown option ")
                    .push(args.get(i + 1).unwrap_or_default()),
                UsageError::NotAlone(i) => m
                    .push(b"unexpected argument ")
                    .push(args.get(i + 1).unwrap_or_default()),
            };
            m.print();
            let _ = sys::write_all(2, cli::USAGE.as_bytes());
            2
        }
    }
}

fn report(what: &str, e: Errno) {
    Message::new()
        .push_str(what)
        .push(b": errno ")
        .push_int(e.0.into())
        .print();
}

/// Makes every catchable signal queue for [`sys::wait_signal`], and keeps
/// exited children around for wait4 (an inherited SIG_IGN for SIGCHLD
/// would have the kernel reap them, statuses lost).
fn take_signals() -> Result<(), Errno> {
    sys::set_default_action(sys::SIGCHLD)?;
    sys::set_signal_mask(caught_signals())?;
    Ok(())
}

/// Outside pid 1's seat, orphans would go to someone else's init.
fn become_reaper() {
    if sys::getpid() != 1 {
        if let Err(e) = sys::set_child_subreaper() {
            report("warning: prctl(PR_SET_CHILD_SUBREAPER)", e);
        }
    }
}

/// Reaps every exited child; returns the exit code of `child` if it was
/// among them.
fn reap(child: Option<i32>) -> Option<i32> {
    let mut code = None;
    loop {
        match sys::reap_one() {
            Ok(Some((pid, status))) => {
                if Some(pid) == child {
                    code = Some(status.exit_code());
                }
            }
            Err(Errno::EINTR) => {}
            // None exited yet, no children at all, or a kernel surprise.
            Ok(None) | Err(_) => return code,
        }
    }
}

fn init(args: Args, command: usize, group: bool, env: Env) -> i32 {
    if let Err(e) = take_signals() {
        report("blocking signals", e);
        return EXIT_INIT_FAILED;
    }
    become_reaper();
    let child = match sys::fork() {
        Ok(Fork::Child) => exec_child(args, command, env),
        Ok(Fork::Parent(pid)) => pid,
        Err(e) => {
            report("fork", e);
            return EXIT_INIT_FAILED;
        }
    };
    // The child does this too: whichever runs first, the group exists
    // before a signal is forwarded to it. (After the child's execve this
    // fails with EACCES, harmlessly.)
    let _ = sys::setpgid(child, child);
    let target = if group { -child } else { child };
    loop {
        match sys::wait_signal(caught_signals()) {
            Ok(sys::SIGCHLD) => {
                if let Some(code) = reap(Some(child)) {
                    return code;
                }
            }
            // Terminal job control aimed at hako-init, which is not the
            // terminal's foreground group once the child took it.
            Ok(sys::SIGTTIN | sys::SIGTTOU) => {}
            Ok(sig) => forward(target, child, sig),
            Err(_) => {}
        }
    }
}

fn forward(target: i32, child: i32, sig: Signal) {
    // The group is gone when the child left it (setpgid/setsid of its own):
    // the child still gets the signal.
    if sys::kill(target, sig) == Err(Errno::ESRCH) && target != child {
        let _ = sys::kill(child, sig);
    }
}

/// The child side of the fork: becomes the command or exits 126/127.
fn exec_child(args: Args, command: usize, env: Env) -> ! {
    // Take the terminal's foreground only if our group had it: a
    // hako-init started in the background of a shell must not steal it.
    let foreground = sys::tcgetpgrp(0).is_ok_and(|fg| Ok(fg) == sys::getpgid(0));
    let _ = sys::setpgid(0, 0);
    if foreground {
        // SIGTTOU is still blocked, so a background group may do this.
        let _ = sys::tcsetpgrp(0, sys::getpid());
    }
    for sig in 1..=sys::SIGMAX {
        if sig != sys::SIGKILL && sig != sys::SIGSTOP {
            let _ = sys::set_default_action(sig);
        }
    }
    let _ = sys::set_signal_mask(SigSet::empty());

    let name = args.get(command).unwrap_or_default();
    let argv = args.tail_ptr(command);
    let mut buf = [0u8; PATH_MAX];
    let exec = |path: &[u8]| {
        // SAFETY: argv is a NULL-terminated suffix of our own argv and env
        // our own envp, as the kernel gave them to us.
        unsafe { sys::execve(path, argv, env.as_ptr()) }
    };
    if name.is_empty() {
        exec_failed(name, Errno::ENOENT);
    }
    if name.contains(&b'/') {
        let e = match join_path(&mut buf, &[name]) {
            Some(path) => exec(path),
            None => Errno::ENAMETOOLONG,
        };
        exec_failed(name, e);
    }
    // execvp's search: EACCES is remembered while later directories are
    // tried; a missing directory or file moves on; anything else stops.
    let mut denied = false;
    for dir in env
        .get(b"PATH")
        .unwrap_or(DEFAULT_PATH)
        .split(|&b| b == b':')
    {
        // An empty PATH entry is the current directory.
        let parts: [&[u8]; 3] = if dir.is_empty() {
            [b"", b"", name]
        } else {
            [dir, b"/", name]
        };
        let Some(path) = join_path(&mut buf, &parts) else {
            continue;
        };
        match exec(path) {
            Errno::EACCES => denied = true,
            Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG | Errno::ELOOP => {}
            e => exec_failed(name, e),
        }
    }
    exec_failed(name, if denied { Errno::EACCES } else { Errno::ENOENT })
}

/// `parts` concatenated and NUL-terminated in `buf` (None if too long).
fn join_path<'b>(buf: &'b mut [u8; PATH_MAX], parts: &[&[u8]]) -> Option<&'b [u8]> {
    let mut len = 0;
    for part in parts.iter().chain([&&b"\0"[..]]) {
        buf.get_mut(len..len + part.len())?.copy_from_slice(part);
        len += part.len();
    }
    buf.get(..len)
}

/// The docker/shell convention: 127 when the command does not exist, 126
/// when it exists but cannot be executed.
fn exec_failed(name: &[u8], e: Errno) -> ! {
    let mut m = Message::new();
    m.push(name).push(b": ");
    let code = match e {
        Errno::ENOENT => {
            m.push(b"not found");
            EXIT_NOT_FOUND
        }
        e => {
            match e.describe() {
                Some(text) => m.push_str(text),
                None => m.push(b"cannot execute: errno ").push_int(e.0.into()),
            };
            EXIT_CANNOT_EXECUTE
        }
    };
    m.print();
    sys::exit(code)
}

fn pause() -> i32 {
    if let Err(e) = take_signals() {
        report("blocking signals", e);
        return EXIT_INIT_FAILED;
    }
    become_reaper();
    reap(None);
    loop {
        match sys::wait_signal(caught_signals()) {
            Ok(sys::SIGCHLD) => {
                reap(None);
            }
            Ok(sys::SIGTERM | sys::SIGINT) => {
                reap(None);
                return 0;
            }
            // Everything else is ignored, as pid 1 ignores it by default.
            Ok(_) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths_with_a_nul() {
        let mut buf = [0u8; PATH_MAX];
        assert_eq!(
            join_path(&mut buf, &[b"/bin", b"/", b"sh"]),
            Some(&b"/bin/sh\0"[..])
        );
        assert_eq!(join_path(&mut buf, &[b"", b"", b"sh"]), Some(&b"sh\0"[..]));
        let long = [b'a'; PATH_MAX];
        assert_eq!(join_path(&mut buf, &[&long]), None);
        assert!(join_path(&mut buf, &[&long[..PATH_MAX - 1]]).is_some());
    }

    #[test]
    fn faults_are_not_caught() {
        let s = caught_signals();
        for sig in [
            sys::SIGTERM,
            sys::SIGINT,
            sys::SIGHUP,
            sys::SIGUSR1,
            sys::SIGCHLD,
            34,
            64,
        ] {
            assert!(s.contains(sig), "{sig}");
        }
        for sig in [
            sys::SIGKILL,
            sys::SIGSTOP,
            sys::SIGSEGV,
            sys::SIGBUS,
            sys::SIGABRT,
        ] {
            assert!(!s.contains(sig), "{sig}");
        }
    }
}
