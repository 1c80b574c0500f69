//! Persistent network namespaces: a bind mount of a namespace onto a file,
//! the way `ip netns add` makes them.
//!
//! ```text
//! Netns::create(path)
//!   ├─ creates the empty file `path` (its directory too)
//!   └─ a short-lived thread:
//!        unshare(CLONE_NEWNET)           only this thread moves
//!        ioctl(SIOCSIFFLAGS, lo, IFF_UP)  loopback up, in the new netns
//!        mount --bind /proc/thread-self/ns/net  path
//!      the thread exits; the mount keeps the namespace alive
//! Netns::remove(path)
//!   umount2(path, MNT_DETACH); unlink(path)   the namespace dies with its
//!                                            last user (mount, process, fd)
//! ```
//!
//! The mount is made in the caller's mount namespace. A container's mount
//! namespace copies it when it is created, but the runtime's pivot_root and
//! detach of the old root drop that copy, so a removed netns is not kept
//! alive by running containers.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

/// A failure to make, open, enter or remove a network namespace. Each
/// variant names the path and the syscall.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A syscall on the namespace file failed.
    #[error("network namespace {path}: {syscall}: {source}")]
    Syscall {
        path: PathBuf,
        syscall: &'static str,
        source: Errno,
    },
    /// A file operation (create the directory or file, open, unlink) failed.
    #[error("network namespace {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// The path exists and is already a mounted namespace.
    #[error("network namespace {path} already exists")]
    Exists { path: PathBuf },
    /// The path is not a network namespace (not an nsfs mount).
    #[error("{path} is not a network namespace (no nsfs mount there)")]
    NotNetns { path: PathBuf },
    /// The helper thread could not be started or died.
    #[error("network namespace {path}: helper thread: {reason}")]
    Thread { path: PathBuf, reason: String },
}

/// An open persistent network namespace.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Makes a new network namespace, with `lo` up, persisted at `path`
    /// (e.g. `<runroot>/netns/<container-id>`). Fails if `path` already holds
    /// one; a leftover plain file (from a crash) is reused.
    pub fn create(path: &Path) -> Result<Netns, NetnsError> {
        let io = |op, source| NetnsError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
        }
        if is_netns(path) {
            return Err(NetnsError::Exists {
                path: path.to_path_buf(),
            });
        }
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("creating the mount point file", e))?;

        let target = path.to_path_buf();
        let made = std::thread::Builder::new()
            .name("hako-netns".into())
            .spawn(move || new_netns_onto(&target))
            .map_err(|e| NetnsError::Thread {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
            .join()
            .map_err(|_| NetnsError::Thread {
                path: path.to_path_buf(),
                reason: "panicked".into(),
            })?;
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Netns::open(path)
    }

    /// Opens an existing persistent namespace.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        if !is_netns(path) {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(|e| NetnsError::Io {
            path: path.to_path_buf(),
            op: "open",
            source: e,
        })?;
        Ok(Netns {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Unmounts and unlinks a persistent namespace. Idempotent: a path that
    /// is not mounted or does not exist is fine.
    pub fn remove(path: &Path) -> Result<(), NetnsError> {
        match umount2(path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point; ENOENT: already gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(source) => {
                return Err(NetnsError::Syscall {
                    path: path.to_path_buf(),
                    syscall: "umount2(MNT_DETACH)",
                    source,
                })
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetnsError::Io {
                path: path.to_path_buf(),
                op: "unlink",
                source: e,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling thread into this namespace for good. Only for
    /// threads made for the purpose (the main thread would take the whole
    /// program's networking along); see [`Netns::run`].
    pub fn enter_current_thread(&self) -> Result<(), NetnsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Syscall {
            path: self.path.clone(),
            syscall: "setns(CLONE_NEWNET)",
            source,
        })
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// what it returns. Sockets made by `f` belong to the namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("hako-netns-run".into())
                .spawn_scoped(s, || -> Result<T, NetnsError> {
                    self.enter_current_thread()?;
                    Ok(f())
                })
                .map_err(|e| NetnsError::Thread {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
            handle.join().map_err(|_| NetnsError::Thread {
                path: self.path.clone(),
                reason: "panicked".into(),
            })?
        })
    }
}

/// Whether `path` is a mounted namespace file (nsfs).
pub fn is_netns(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// On a dedicated thread: leaves the current netns for a new one, brings its
/// loopback up and bind-mounts it onto `target`.
fn new_netns_onto(target: &Path) -> Result<(), NetnsError> {
    let sys = |syscall, source| NetnsError::Syscall {
        path: target.to_path_buf(),
        syscall,
        source,
    };
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| sys("unshare(CLONE_NEWNET)", e))?;
    loopback_up().map_err(|(call, e)| sys(call, e))?;
    mount(
        Some("/proc/thread-self/ns/net"),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| sys("mount(/proc/thread-self/ns/net, MS_BIND)", e))
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> Result<(), (&'static str, Errno)> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ("socket(AF_INET)", e))?;
    // SAFETY: ifreq is a plain C struct of arrays and a union of integers;
    // all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of the ifreq
    // we own; the socket fd is open for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(("ioctl(SIOCGIFFLAGS, lo)", Errno::last()));
    }
    // SAFETY: the kernel just filled ifru_flags, the member SIOCGIFFLAGS
    // uses; reading and updating that member of the union is sound.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads ifr_name and ifr_flags of our ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc < 0 {
        return Err(("ioctl(SIOCSIFFLAGS, lo)", Errno::last()));
    }
    Ok(())
}
