//! Raw system calls the runtime needs and neither std nor nix wraps the way
//! we need them. Each wrapper is safe: it takes Rust types, checks the
//! result, and returns `std::io::Error` from errno.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cstring(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `openat2(2)` flags: resolve every path inside the directory `dirfd`, as if
/// it were `/` (symlinks and `..` cannot leave it), and refuse magic links.
pub const RESOLVE_IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
/// Stay beneath `dirfd` and follow no symlink at all.
pub const RESOLVE_STRICT: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// For files under a verified procfs: beneath it, no magic links, and no
/// crossing into another mount (a bind mount over /proc/sys/... or
/// /proc/self/attr/... would redirect the write: CVE-2019-19921,
/// CVE-2023-27561). Plain symlinks (`self`, `thread-self`) stay allowed.
pub const RESOLVE_PROC: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;

/// The layout of `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)`: opens `path` relative to `dirfd` with `resolve` flags.
pub fn openat2(
    dirfd: RawFd,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    let mut how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve,
    };
    loop {
        // SAFETY: `c` is a valid NUL-terminated string and `how` a valid
        // open_how whose size we pass; the kernel only reads them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c.as_ptr(),
                &mut how as *mut OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match check(ret) {
            // SAFETY: the kernel returned a new file descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            // openat2 returns EAGAIN when a rename raced the lookup; retry.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `open(2)` of an absolute or cwd-relative path.
pub fn open(path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid C string; open returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned by open and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path through which the kernel reaches an open fd, usable as a mount
/// source or target so the mount lands on exactly the inode we checked.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `mount(2)`.
pub fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let to_c = |s: &str| {
        CString::new(s)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in mount argument"))
    };
    let src = source.map(to_c).transpose()?;
    let tgt = to_c(target)?;
    let fst = fstype.map(to_c).transpose()?;
    let dat = data.filter(|d| !d.is_empty()).map(to_c).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a valid NUL-terminated string
    // that outlives the call.
    let ret = unsafe {
        libc::mount(
            ptr(&src),
            tgt.as_ptr(),
            ptr(&fst),
            flags,
            ptr(&dat) as *const libc::c_void,
        )
    };
    check(ret as libc::c_long).map(|_| ())
}

/// `umount2(2)`.
pub fn umount2(target: &str, flags: i32) -> io::Result<()> {
    let c = CString::new(target).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(c.as_ptr(), flags) } as libc::c_long).map(|_| ())
}

/// The layout of `struct mount_attr` for `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x200000;

pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `mount_setattr(2)` on the mount at `fd`, recursively.
pub fn mount_setattr_recursive(fd: &impl AsRawFd, set: u64, clear: u64) -> io::Result<()> {
    mount_setattr(fd, true, set, clear, None)
}

/// `mount_setattr(2)` on the mount at `fd` (and its submounts with
/// `recursive`); `userns` goes with MOUNT_ATTR_IDMAP.
pub fn mount_setattr(
    fd: &impl AsRawFd,
    recursive: bool,
    set: u64,
    clear: u64,
    userns: Option<&OwnedFd>,
) -> io::Result<()> {
    let mut attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map(|u| u.as_raw_fd() as u64).unwrap_or(0),
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    let empty = c"";
    // SAFETY: `attr` is a valid mount_attr of the size passed; the path is
    // an empty C string used with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            &mut attr as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(|_| ())
}

/// `open_tree(2)` with OPEN_TREE_CLONE: a detached copy of the mount at
/// `path` (a bind mount of just that file or directory), attached to no
/// mount namespace.
/// With `recursive`, submounts come along.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut flags = (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: valid C string; flags are constants.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let fd = check(ret)?;
    // SAFETY: open_tree returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &str, put_old: &str) -> io::Result<()> {
    let n = CString::new(new_root).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let o = CString::new(put_old).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: two valid C strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) }).map(|_| ())
}

/// Marks every fd from `first` upwards close-on-exec.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(ret).map(|_| ())
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: a new fd owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: signals exactly the process the pidfd refers to,
/// never a process that reused its pid.
pub fn pidfd_send_signal(pidfd: &impl AsRawFd, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    check(ret).map(|_| ())
}

/// Waits until `fd` is readable or `timeout_ms` passes (-1: forever).
/// Returns false on timeout.
pub fn poll_readable(fd: &impl AsRawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(ret > 0);
    }
}

/// `clone(2)` used like `fork(2)` but with namespace flags: the child gets a
/// copy of the address space and continues from the call.
///
/// # Safety
/// The caller must be single-threaded (as `fork` in a threaded program, the
/// child would hold copies of other threads' locks), and the child must
/// only exit through `_exit` or `execve`.
pub unsafe fn clone_fork(flags: u64) -> io::Result<i32> {
    let flags = flags | libc::SIGCHLD as u64;
    // SAFETY: with a null stack the child continues on a copy of the
    // parent's stack, as with fork; the caller upholds single-threadedness.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0,
        )
    };
    check(ret).map(|p| p as i32)
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, name)`.
pub fn join_session_keyring(name: &str) -> io::Result<()> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string argument.
    check(unsafe { libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, c.as_ptr()) }).map(|_| ())
}

/// `fstatfs(2)` f_type of an fd.
pub fn fs_type(fd: &impl AsRawFd) -> io::Result<i64> {
    // SAFETY: statfs is plain data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer to a statfs.
    let ret = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    check(ret as libc::c_long)?;
    Ok(st.f_type as i64)
}

/// `fstat(2)`.
pub fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; zeroed is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    let ret = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    check(ret as libc::c_long)?;
    Ok(st)
}

/// The mount flags (ST_*) of the mount holding `fd`.
pub fn mount_flags(fd: &impl AsRawFd) -> io::Result<u64> {
    // SAFETY: statvfs is plain data; zeroed is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    let ret = unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) };
    check(ret as libc::c_long)?;
    Ok(st.f_flag)
}

/// `_exit(2)`: leaves the process without running destructors or atexit
/// handlers (for forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}
