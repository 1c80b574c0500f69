//! Running from a sealed copy of our own binary (CVE-2019-5736).
//!
//! Processes of the runtime enter the container (init, the `exec` child),
//! and a container can get one of them to execute `/proc/self/exe` (an
//! entrypoint of `/proc/self/exe`, or a script with `#!/proc/self/exe`).
//! Its `/proc/PID/exe` is then the runtime's binary on the host, which a
//! process in the container can open and, once the runtime exits, rewrite:
//! the next `hako-runtime` anyone runs on the host is the attacker's.
//!
//! So `create`, `run` and `exec` first re-execute themselves from a copy
//! nobody can write to, so `/proc/PID/exe` of every runtime process a
//! container can see is that:
//! - as root: a detached, read-only bind mount of the binary
//!   (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_RDONLY)`),
//!   executed with `execveat`. Opening it for writing fails with EROFS, and
//!   the mount belongs to no mount namespace, so nothing in a container can
//!   reach it to remount it. No data is copied: the page cache is shared.
//! - otherwise (rootless, or kernels without the new mount API): a memfd
//!   holding a copy of the binary, sealed against writes, shrinking and
//!   growing (one `sendfile` of the binary, ~5 ms per call on these
//!   machines, mostly faulting the fresh copy in).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Why the runtime could not re-execute from a sealed copy.
#[derive(Debug, thiserror::Error)]
#[error("running from a sealed copy of the runtime binary: {what}: {source}")]
pub struct SealError {
    what: &'static str,
    source: std::io::Error,
}

fn err(what: &'static str) -> impl FnOnce(std::io::Error) -> SealError {
    move |source| SealError { what, source }
}

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True when `fd` is a memfd carrying our seals.
fn is_sealed(fd: &OwnedFd) -> bool {
    // SAFETY: fcntl(F_GET_SEALS) only reads the fd's seals.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// True when this process already runs from a file nobody can write to:
/// a sealed memfd, or a file on a read-only mount.
pub fn running_sealed() -> bool {
    let Ok(fd) = crate::sys::open(std::path::Path::new("/proc/self/exe"), libc::O_RDONLY, 0) else {
        return false;
    };
    if is_sealed(&fd) {
        return true;
    }
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs writes into the valid statvfs we pass.
    let ok = unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) } == 0;
    ok && st.f_flag & libc::ST_RDONLY != 0
}

/// A detached read-only bind mount of the running binary, as an fd to
/// execute.
fn read_only_mount() -> Result<OwnedFd, SealError> {
    let tree = crate::sys::open_tree_clone(std::path::Path::new("/proc/self/exe"), false)
        .map_err(err("open_tree of /proc/self/exe"))?;
    crate::sys::mount_setattr_recursive(&tree, crate::sys::MOUNT_ATTR_RDONLY, 0)
        .map_err(err("making the binary's mount read-only"))?;
    Ok(tree)
}

/// Makes a sealed memfd copy of the running binary.
fn sealed_copy() -> Result<OwnedFd, SealError> {
    let exe = crate::sys::open(std::path::Path::new("/proc/self/exe"), libc::O_RDONLY, 0)
        .map_err(err("opening /proc/self/exe"))?;
    let name = c"hako-runtime";
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) keeps the copy executable where vm.memfd_noexec
    // would otherwise make new memfds non-executable; older kernels reject
    // the flag and make executable memfds anyway.
    // SAFETY: valid C string and flags.
    let mut raw = unsafe { libc::memfd_create(name.as_ptr(), base | libc::MFD_EXEC) };
    if raw < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        raw = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if raw < 0 {
        return Err(err("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new fd that we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    loop {
        // SAFETY: both fds are valid; a null offset uses exe's file offset.
        let n = unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                exe.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 30,
            )
        };
        match n {
            0 => break,
            n if n > 0 => continue,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err("copying the binary")(e));
            }
        }
    }
    // SAFETY: F_ADD_SEALS with constant flags on our memfd.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(err("sealing the copy")(std::io::Error::last_os_error()));
    }
    Ok(memfd)
}

/// Re-executes the current command line from a sealed copy of the binary,
/// unless this process already runs from one. Returns only on failure.
pub fn reexec_sealed() -> Result<(), SealError> {
    if running_sealed() {
        return Ok(());
    }
    let memfd = match read_only_mount() {
        Ok(fd) => fd,
        Err(e) => {
            crate::debug!("{e}; copying the binary into a sealed memfd instead");
            sealed_copy()?
        }
    };
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| err("command line")(std::io::Error::other(e)))?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| err("environment")(std::io::Error::other(e)))?;
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings
    // that outlive the call; "" with AT_EMPTY_PATH executes the fd itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            memfd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(err("execveat of the sealed copy")(
        std::io::Error::last_os_error(),
    ))
}
