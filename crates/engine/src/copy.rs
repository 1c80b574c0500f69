//! `hako cp`: files between a container and the host, as a tar stream.
//!
//! The container's side is always resolved inside the container: for a
//! running one, by a child process that joined its mount namespace (its
//! root is then the container's, volumes included, and no symlink can
//! point outside it); for a stopped one, in its rootfs with
//! RESOLVE_IN_ROOT. Files are written by hako-image's unpacker, which
//! resolves every path inside its destination, so a hostile tar (from a
//! container) cannot reach past the directory it is unpacked in.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use hako_image::unpack::{self, UnpackOptions, WhiteoutMode};

use crate::container::{ContainerRecord, Engine, EngineError};

/// Which way `hako cp` copies.
#[derive(Debug, Clone)]
pub enum Copy {
    /// `CONTAINER:SRC HOST_DEST`
    Out { src: String, dest: PathBuf },
    /// `HOST_SRC CONTAINER:DEST`
    In { src: PathBuf, dest: String },
}

fn fail(rec: &ContainerRecord, what: impl Into<String>) -> EngineError {
    EngineError::Other {
        id: rec.id.clone(),
        what: what.into(),
    }
}

/// A tar of `src` (a file, or a directory with everything below it,
/// symlinks as symlinks), its top entry named `name`.
/// With `opened`, `src` is a /proc/self/fd path of a file opened inside
/// the container: it is followed to that file.
fn write_tar(src: &Path, name: &str, out: impl Write, opened: bool) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let md = if opened {
        std::fs::metadata(src)?
    } else {
        std::fs::symlink_metadata(src)?
    };
    if md.is_dir() {
        b.append_dir_all(name, src)?;
    } else if opened {
        b.append_file(name, &mut std::fs::File::open(src)?)?;
    } else {
        b.append_path_with_name(src, name)?;
    }
    b.into_inner()?.flush()
}

/// Where a copy lands: into `dest` when it is an existing directory (the
/// source keeps its name), else as `dest` itself (in its parent).
fn target(dest_is_dir: bool, dest: &Path, src_name: &str) -> (PathBuf, String) {
    if dest_is_dir {
        return (dest.to_path_buf(), src_name.to_string());
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| src_name.to_string());
    (parent.unwrap_or(Path::new("/")).to_path_buf(), name)
}

fn base_name(p: &str) -> String {
    Path::new(p.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

fn no_whiteouts() -> UnpackOptions {
    UnpackOptions {
        whiteouts: WhiteoutMode::None,
    }
}

impl Engine {
    pub fn copy(&self, rec: &ContainerRecord, how: &Copy) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        let running = self.status(rec).is_running();
        let pid = if running { self.pid(rec) } else { None };
        match (how, pid) {
            (Copy::Out { src, dest }, Some(pid)) => {
                let dest_is_dir = dest.is_dir();
                let (dir, name) = target(dest_is_dir, dest, &base_name(src));
                let src = src.clone();
                // The container side writes the tar; we unpack it here.
                let reader = in_container(rec, pid, move |w| {
                    write_tar(Path::new(&src), &name, w, false).map_err(|e| e.to_string())
                })?;
                let r = unpack::apply_layer(&dir, reader.0, &no_whiteouts());
                reader.1.finish(rec)?;
                r.map(|_| ()).map_err(|e| fail(rec, e.to_string()))
            }
            (Copy::In { src, dest }, Some(pid)) => {
                let src = src.clone();
                let dest = dest.clone();
                let name = base_name(&src.to_string_lossy());
                let (r, w) = pipe(rec)?;
                // Whether DEST is a directory is known in the container
                // only: the child says the name the copy lands under, and
                // the tar's top entry is named so.
                let (name_r, name_w) = pipe(rec)?;
                let (w_raw, name_r_raw) = (w.as_raw_fd(), name_r.as_raw_fd());
                let child = fork_in(rec, pid, move || -> Result<(), String> {
                    // Our copies of the host's ends, or the streams never end.
                    // SAFETY: closing fds this child inherited and owns.
                    unsafe {
                        libc::close(w_raw);
                        libc::close(name_r_raw);
                    }
                    let dest_is_dir = Path::new(&dest).is_dir();
                    let (dir, new_name) = target(dest_is_dir, Path::new(&dest), &name);
                    std::fs::File::from(name_w)
                        .write_all(new_name.as_bytes())
                        .map_err(|e| format!("naming the copy: {e}"))?;
                    unpack::apply_layer(&dir, std::fs::File::from(r), &no_whiteouts())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })?;
                let mut new_name = String::new();
                let _ = std::fs::File::from(name_r).read_to_string(&mut new_name);
                if new_name.is_empty() {
                    // It failed before unpacking: its error says why.
                    drop(w);
                    return child.finish(rec);
                }
                let written = write_tar(&src, &new_name, std::fs::File::from(w), false);
                child.finish(rec)?;
                written.map_err(|e| fail(rec, format!("reading {}: {e}", src.display())))
            }
            (how, None) => self.copy_stopped(rec, how),
        }
    }

    /// A stopped container: its rootfs, everything resolved inside it.
    fn copy_stopped(&self, rec: &ContainerRecord, how: &Copy) -> Result<(), EngineError> {
        let fs = self.container_dir(&rec.id).join("fs");
        let rootfs = self.mount_for_copy(rec, &fs)?;
        let root = std::fs::File::open(&rootfs)
            .map_err(|e| fail(rec, format!("opening its rootfs: {e}")))?;
        let open_in = |p: &str, flags: i32| {
            hako_runtime::sys::openat2(
                root.as_raw_fd(),
                Path::new(p.trim_start_matches('/')),
                flags,
                0,
                hako_runtime::sys::RESOLVE_IN_ROOT,
            )
            .map(std::fs::File::from)
            .map_err(|e| fail(rec, format!("{p} in the container: {e}")))
        };
        let proc_path =
            |f: &std::fs::File| PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        let result = match how {
            Copy::Out { src, dest } => {
                let f = open_in(src, libc::O_PATH)?;
                let (dir, name) = target(dest.is_dir(), dest, &base_name(src));
                let (r, w) = pipe(rec)?;
                let path = proc_path(&f);
                let writer = std::thread::spawn(move || {
                    write_tar(&path, &name, std::fs::File::from(w), true)
                });
                let unpacked = unpack::apply_layer(&dir, std::fs::File::from(r), &no_whiteouts());
                let wrote = writer
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("tar writer")));
                drop(f);
                unpacked.map_err(|e| fail(rec, e.to_string()))?;
                wrote.map_err(|e| fail(rec, format!("reading {src}: {e}")))
            }
            Copy::In { src, dest } => {
                let name = base_name(&src.to_string_lossy());
                let (dir, new_name) = match open_in(dest, libc::O_RDONLY | libc::O_DIRECTORY) {
                    Ok(d) => (d, name.clone()),
                    Err(_) => {
                        let (parent, n) = target(false, Path::new(dest), &name);
                        (
                            open_in(
                                &parent.to_string_lossy(),
                                libc::O_RDONLY | libc::O_DIRECTORY,
                            )?,
                            n,
                        )
                    }
                };
                let (r, w) = pipe(rec)?;
                let src2 = src.clone();
                let writer = std::thread::spawn(move || {
                    write_tar(&src2, &new_name, std::fs::File::from(w), false)
                });
                let unpacked =
                    unpack::apply_layer(&proc_path(&dir), std::fs::File::from(r), &no_whiteouts());
                let wrote = writer
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("tar writer")));
                unpacked.map_err(|e| fail(rec, e.to_string()))?;
                wrote.map_err(|e| fail(rec, format!("reading {}: {e}", src.display())))
            }
        };
        drop(root);
        self.unmount_after_copy(rec, &fs);
        result
    }
}

fn pipe(rec: &ContainerRecord) -> Result<(OwnedFd, OwnedFd), EngineError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail(rec, format!("pipe2: {e}")))
}

/// A child process in the container's mount namespace.
struct Child {
    pid: i32,
    err: OwnedFd,
}

impl Child {
    /// Waits for it; its error, if it had one.
    fn finish(self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let mut msg = String::new();
        let _ = std::fs::File::from(self.err).read_to_string(&mut msg);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        if !msg.is_empty() {
            return Err(fail(rec, msg));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(fail(rec, "the copy in the container failed"));
        }
        Ok(())
    }
}

/// Forks a child that joins `pid`'s mount namespace (its root becomes the
/// container's) and runs `f`; an error text comes back on a pipe.
fn fork_in(
    rec: &ContainerRecord,
    pid: i32,
    f: impl FnOnce() -> Result<(), String>,
) -> Result<Child, EngineError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|e| fail(rec, format!("opening its mount namespace: {e}")))?;
    let (er, ew) = pipe(rec)?;
    // SAFETY: `hako cp` is single-threaded here; the child only calls
    // setns, chdir and the copy, then _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(fail(
            rec,
            format!("fork: {}", std::io::Error::last_os_error()),
        ));
    }
    if child == 0 {
        drop(er);
        let mut ew = std::fs::File::from(ew);
        // SAFETY: setns with an open namespace fd; chdir to a C literal.
        let joined = unsafe {
            libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) == 0 && libc::chdir(c"/".as_ptr()) == 0
        };
        let r = if joined {
            f()
        } else {
            Err(format!(
                "joining its mount namespace: {}",
                std::io::Error::last_os_error()
            ))
        };
        let code = match r {
            Ok(()) => 0,
            Err(e) => {
                let _ = ew.write_all(e.as_bytes());
                1
            }
        };
        // SAFETY: leaving the forked child without running destructors.
        unsafe { libc::_exit(code) };
    }
    drop(ew);
    Ok(Child {
        pid: child,
        err: er,
    })
}

/// Runs `write` in the container's mount namespace with the write end of
/// a pipe; returns the read end and the child.
fn in_container(
    rec: &ContainerRecord,
    pid: i32,
    write: impl FnOnce(std::fs::File) -> Result<(), String>,
) -> Result<(std::fs::File, Child), EngineError> {
    let (r, w) = pipe(rec)?;
    let w_raw = w.as_raw_fd();
    let child = fork_in(rec, pid, move || {
        // SAFETY: the child owns this copy of the write end.
        let file = unsafe { std::fs::File::from_raw_fd(w_raw) };
        write(file)
    })?;
    drop(w);
    Ok((std::fs::File::from(r), child))
}
