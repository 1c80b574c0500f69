//! Raw Linux system calls with safe wrappers: the only module that talks
//! to the kernel. No libc: the numbers and layouts below are the kernel's
//! ABI for x86_64 and aarch64 (generic signal numbers on both).

use core::arch::asm;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const WRITE: usize = 1;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const IOCTL: usize = 16;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const SETPGID: usize = 109;
    pub const GETPGID: usize = 121;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PRCTL: usize = 157;
    pub const EXIT_GROUP: usize = 231;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const WRITE: usize = 64;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const IOCTL: usize = 29;
    pub const GETPID: usize = 172;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const WAIT4: usize = 260;
    pub const KILL: usize = 129;
    pub const SETPGID: usize = 154;
    pub const GETPGID: usize = 155;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const PRCTL: usize = 167;
    pub const EXIT_GROUP: usize = 94;
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("hako-init has syscall tables for x86_64 and aarch64 only");

/// # Safety
/// The arguments must be valid for system call `n` (pointers it reads or
/// writes must be valid for that access).
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers
    // only rcx and r11 besides rax.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// # Safety
/// The arguments must be valid for system call `n` (pointers it reads or
/// writes must be valid for that access).
#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `svc 0` returns in x0
    // and clobbers nothing else.
    unsafe {
        asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            options(nostack),
        );
    }
    ret
}

/// An errno value from a failed system call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Errno(pub i32);

impl Errno {
    pub const ENOENT: Errno = Errno(2);
    pub const ESRCH: Errno = Errno(3);
    pub const EINTR: Errno = Errno(4);
    pub const ENOEXEC: Errno = Errno(8);
    pub const ECHILD: Errno = Errno(10);
    pub const EACCES: Errno = Errno(13);
    pub const ENOTDIR: Errno = Errno(20);
    pub const EISDIR: Errno = Errno(21);
    pub const ETXTBSY: Errno = Errno(26);
    pub const ENAMETOOLONG: Errno = Errno(36);
    pub const ELOOP: Errno = Errno(40);

    /// A short description of the common exec errors (else `None`).
    pub fn describe(self) -> Option<&'static str> {
        Some(match self {
            Errno::ENOENT => "no such file or directory",
            Errno::EACCES => "permission denied",
            Errno::ENOEXEC => "exec format error",
            Errno::ENOTDIR => "not a directory",
            Errno::EISDIR => "is a directory",
            Errno::ETXTBSY => "text file busy",
            Errno::ENAMETOOLONG => "file name too long",
            Errno::ELOOP => "too many levels of symbolic links",
            _ => return None,
        })
    }
}

pub type Result<T> = core::result::Result<T, Errno>;

fn check(ret: isize) -> Result<usize> {
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// A signal number (1..=64).
pub type Signal = i32;

pub const SIGHUP: Signal = 1;
pub const SIGINT: Signal = 2;
pub const SIGILL: Signal = 4;
pub const SIGTRAP: Signal = 5;
pub const SIGABRT: Signal = 6;
pub const SIGBUS: Signal = 7;
pub const SIGFPE: Signal = 8;
pub const SIGKILL: Signal = 9;
pub const SIGUSR1: Signal = 10;
pub const SIGSEGV: Signal = 11;
pub const SIGTERM: Signal = 15;
pub const SIGCHLD: Signal = 17;
pub const SIGSTOP: Signal = 19;
pub const SIGTTIN: Signal = 21;
pub const SIGTTOU: Signal = 22;
pub const SIGSYS: Signal = 31;
/// The highest signal number (SIGRTMAX).
pub const SIGMAX: Signal = 64;

/// A kernel signal set (`sigset_t` of the raw syscalls: 64 bits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SigSet(u64);

impl SigSet {
    pub const fn empty() -> SigSet {
        SigSet(0)
    }

    pub const fn full() -> SigSet {
        SigSet(u64::MAX)
    }

    pub const fn with(self, sig: Signal) -> SigSet {
        SigSet(self.0 | Self::bit(sig))
    }

    pub const fn without(self, sig: Signal) -> SigSet {
        SigSet(self.0 & !Self::bit(sig))
    }

    pub const fn contains(self, sig: Signal) -> bool {
        self.0 & Self::bit(sig) != 0
    }

    const fn bit(sig: Signal) -> u64 {
        if sig >= 1 && sig <= SIGMAX {
            1 << (sig - 1)
        } else {
            0
        }
    }
}

const SIGSET_SIZE: usize = core::mem::size_of::<SigSet>();

/// The kernel's `struct sigaction` (with `sa_restorer` on both arches).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: SigSet,
}

const SIG_DFL: usize = 0;
const SIG_SETMASK: usize = 2;

/// Writes `buf` to `fd`, retrying short writes and EINTR.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let ret = unsafe {
            syscall(
                nr::WRITE,
                [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0],
            )
        };
        match check(ret) {
            Ok(0) => return Ok(()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the process with `code`.
pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes no pointers and does not return.
        unsafe { syscall(nr::EXIT_GROUP, [code as usize, 0, 0, 0, 0]) };
    }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid takes no arguments.
    unsafe { syscall(nr::GETPID, [0; 5]) as i32 }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are reparented
/// to this process instead of the pid namespace's init.
pub fn set_child_subreaper() -> Result<()> {
    const PR_SET_CHILD_SUBREAPER: usize = 36;
    // SAFETY: this prctl option takes an integer, no pointers.
    check(unsafe { syscall(nr::PRCTL, [PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0]) }).map(drop)
}

/// Replaces the signal mask, returning the old one.
pub fn set_signal_mask(mask: SigSet) -> Result<SigSet> {
    let mut old = SigSet::empty();
    // SAFETY: both pointers are to live SigSets of SIGSET_SIZE bytes.
    check(unsafe {
        syscall(
            nr::RT_SIGPROCMASK,
            [
                SIG_SETMASK,
                &mask as *const SigSet as usize,
                &mut old as *mut SigSet as usize,
                SIGSET_SIZE,
                0,
            ],
        )
    })?;
    Ok(old)
}

/// Sets the disposition of `sig` to SIG_DFL.
pub fn set_default_action(sig: Signal) -> Result<()> {
    let action = KernelSigaction {
        handler: SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: SigSet::empty(),
    };
    // SAFETY: action is a live kernel sigaction; no old action is asked for.
    check(unsafe {
        syscall(
            nr::RT_SIGACTION,
            [
                sig as usize,
                &action as *const KernelSigaction as usize,
                0,
                SIGSET_SIZE,
                0,
            ],
        )
    })
    .map(drop)
}

/// Waits for one of the (blocked) signals in `set` and dequeues it.
pub fn wait_signal(set: SigSet) -> Result<Signal> {
    // SAFETY: set is a live SigSet; siginfo and timeout may be NULL
    // (no siginfo wanted, wait forever).
    check(unsafe {
        syscall(
            nr::RT_SIGTIMEDWAIT,
            [&set as *const SigSet as usize, 0, 0, SIGSET_SIZE, 0],
        )
    })
    .map(|s| s as Signal)
}

pub enum Fork {
    Child,
    Parent(i32),
}

/// `fork()`, through `clone(SIGCHLD)`.
pub fn fork() -> Result<Fork> {
    // SAFETY: with a NULL stack and no CLONE_VM the child runs on a copy of
    // our address space, like fork(2). hako-init is single-threaded and has
    // no locks or allocator whose state a copy could corrupt.
    let pid = check(unsafe { syscall(nr::CLONE, [SIGCHLD as usize, 0, 0, 0, 0]) })?;
    Ok(match pid {
        0 => Fork::Child,
        pid => Fork::Parent(pid as i32),
    })
}

/// `execve(path, argv, envp)`; returns only on failure.
///
/// # Safety
/// `path` must be NUL-terminated; `argv` and `envp` must be NULL-terminated
/// arrays of pointers to NUL-terminated strings.
pub unsafe fn execve(path: &[u8], argv: *const *const u8, envp: *const *const u8) -> Errno {
    if path.last() != Some(&0) {
        return Errno::ENOENT;
    }
    // SAFETY: the caller vouches for argv and envp; path is NUL-terminated.
    let ret = unsafe {
        syscall(
            nr::EXECVE,
            [path.as_ptr() as usize, argv as usize, envp as usize, 0, 0],
        )
    };
    match check(ret) {
        Err(e) => e,
        Ok(_) => Errno(0),
    }
}

/// A `wait4` status word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WaitStatus(pub i32);

impl WaitStatus {
    /// The exit code a shell would report: the exit status, or 128 plus
    /// the number of the signal that killed the process.
    pub fn exit_code(self) -> i32 {
        let sig = self.0 & 0x7f;
        if sig == 0 {
            (self.0 >> 8) & 0xff
        } else {
            128 + sig
        }
    }
}

/// Reaps one exited child if there is one (`wait4(-1, WNOHANG)`).
/// `Ok(None)`: children remain but none has exited; `Err(ECHILD)`: no
/// children at all.
pub fn reap_one() -> Result<Option<(i32, WaitStatus)>> {
    const WNOHANG: usize = 1;
    let mut status = 0i32;
    // SAFETY: status is a live i32; no rusage is asked for.
    let pid = check(unsafe {
        syscall(
            nr::WAIT4,
            [
                -1isize as usize,
                &mut status as *mut i32 as usize,
                WNOHANG,
                0,
                0,
            ],
        )
    })?;
    Ok((pid != 0).then_some((pid as i32, WaitStatus(status))))
}

/// `kill(pid, sig)`; a negative `pid` is a process group.
pub fn kill(pid: i32, sig: Signal) -> Result<()> {
    // SAFETY: kill takes no pointers.
    check(unsafe { syscall(nr::KILL, [pid as isize as usize, sig as usize, 0, 0, 0]) }).map(drop)
}

/// `setpgid(pid, pgid)` (0 means the caller / its own pid).
pub fn setpgid(pid: i32, pgid: i32) -> Result<()> {
    // SAFETY: setpgid takes no pointers.
    check(unsafe { syscall(nr::SETPGID, [pid as usize, pgid as usize, 0, 0, 0]) }).map(drop)
}

/// `getpgid(pid)` (0: the caller).
pub fn getpgid(pid: i32) -> Result<i32> {
    // SAFETY: getpgid takes no pointers.
    check(unsafe { syscall(nr::GETPGID, [pid as usize, 0, 0, 0, 0]) }).map(|g| g as i32)
}

/// `tcgetpgrp(fd)`: the foreground process group of the terminal `fd`.
pub fn tcgetpgrp(fd: i32) -> Result<i32> {
    const TIOCGPGRP: usize = 0x540f;
    let mut pgid = 0i32;
    // SAFETY: TIOCGPGRP writes one pid_t through the pointer, a live i32.
    check(unsafe {
        syscall(
            nr::IOCTL,
            [fd as usize, TIOCGPGRP, &mut pgid as *mut i32 as usize, 0, 0],
        )
    })?;
    Ok(pgid)
}

/// `tcsetpgrp(fd, pgid)`: makes `pgid` the foreground process group of
/// the terminal `fd` (ENOTTY when `fd` is not our controlling terminal).
pub fn tcsetpgrp(fd: i32, pgid: i32) -> Result<()> {
    const TIOCSPGRP: usize = 0x5410;
    // SAFETY: TIOCSPGRP reads one pid_t through the pointer, a live i32.
    check(unsafe {
        syscall(
            nr::IOCTL,
            [fd as usize, TIOCSPGRP, &pgid as *const i32 as usize, 0, 0],
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(WaitStatus(0).exit_code(), 0);
        assert_eq!(WaitStatus(3 << 8).exit_code(), 3);
        assert_eq!(WaitStatus(255 << 8).exit_code(), 255);
        assert_eq!(WaitStatus(SIGKILL).exit_code(), 137);
        assert_eq!(WaitStatus(SIGTERM | 0x80).exit_code(), 143); // core dumped
    }

    #[test]
    fn sigsets_are_bit_per_signal() {
        let s = SigSet::empty().with(SIGHUP).with(SIGMAX);
        assert_eq!(s.0, 1 | 1 << 63);
        assert!(s.contains(SIGHUP) && !s.contains(SIGINT));
        assert_eq!(SigSet::full().without(SIGKILL).0, !(1 << 8));
        assert_eq!(SigSet::empty().with(0).with(65), SigSet::empty());
    }

    #[test]
    fn raw_syscalls_reach_the_kernel() {
        assert_eq!(getpid() as u32, std::process::id());
        assert_eq!(kill(getpid(), 0), Ok(()));
        assert_eq!(kill(i32::MAX, 0), Err(Errno::ESRCH));
        // SAFETY: empty argv/envp arrays are NULL-terminated.
        let e = unsafe {
            execve(
                b"/nonexistent/x\0",
                [core::ptr::null()].as_ptr(),
                [core::ptr::null()].as_ptr(),
            )
        };
        assert_eq!(e, Errno::ENOENT);
    }
}
