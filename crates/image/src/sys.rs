//! The `*at` system calls the unpacker and the snapshotter share, as safe
//! wrappers on directory fds and plain names.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// -1 → the errno as an io::Error.
pub(crate) fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A name or path as a C string (EINVAL if it holds a NUL).
pub(crate) fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    cstr(path.as_os_str())
}

/// openat(dir, name, flags | O_CLOEXEC), mode 0600 if it creates.
pub(crate) fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: valid fd (or AT_FDCWD) and C string; a new fd or -1.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    check(fd)?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat(dir, name, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
/// mode): a new file (the process's umask applies to `mode`).
pub(crate) fn create_at(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid fd and C string; the mode is passed as the variadic
    // argument openat reads with O_CREAT. A new fd or -1.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, libc::c_uint::from(mode)) };
    check(fd)?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The process's umask, from /proc/self/status (reading it with umask(2)
/// would change it for every thread meanwhile); None if unknown.
pub(crate) fn umask() -> Option<libc::mode_t> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    libc::mode_t::from_str_radix(value.trim(), 8).ok()
}

/// fstatat(AT_SYMLINK_NOFOLLOW); None when absent.
pub(crate) fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: stat is plain data; zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and out pointer.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    match check(r) {
        Ok(()) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The names in a directory, without `.` and `..`.
pub(crate) fn dir_names(dir: RawFd) -> io::Result<Vec<CString>> {
    let mut d = nix::dir::Dir::openat(
        // SAFETY: `dir` is an open directory fd for the length of the call.
        unsafe { BorrowedFd::borrow_raw(dir) },
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

/// Removes `name` in `dir`, recursively for a directory, never following
/// a symlink and never crossing into another mount (EBUSY instead): the
/// contents of a mount left below are never deleted.
pub(crate) fn remove_all_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let sub = open_at(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )?;
        clear_dir_on(sub.as_raw_fd(), st.st_dev)?;
        // SAFETY: valid fd and C string.
        check(unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) })
    } else {
        // SAFETY: valid fd and C string.
        check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })
    }
}

/// Removes everything inside the directory `dir` (see [`remove_all_at`]).
pub(crate) fn clear_dir(dir: RawFd) -> io::Result<()> {
    clear_dir_on(dir, fstat(dir)?.st_dev)
}

fn clear_dir_on(dir: RawFd, dev: libc::dev_t) -> io::Result<()> {
    if fstat(dir)?.st_dev != dev {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    for name in dir_names(dir)? {
        let Some(st) = lstat_at(dir, &name)? else {
            continue;
        };
        if is_dir(&st) {
            let sub = open_at(
                dir,
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            )?;
            clear_dir_on(sub.as_raw_fd(), dev)?;
            // SAFETY: valid fd and C string.
            check(unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) })?;
        } else {
            // SAFETY: valid fd and C string.
            check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })?;
        }
    }
    Ok(())
}

/// [`remove_all_at`] for a path; nothing there is fine.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    remove_all_at(libc::AT_FDCWD, &cpath(path)?)
}
