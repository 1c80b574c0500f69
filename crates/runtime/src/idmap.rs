//! Id-mapped bind mounts (`idmap`/`ridmap` mount options, or a mount with
//! its own `uidMappings`/`gidMappings`, as runc accepts).
//!
//! A file owned by `containerID + n` on the source filesystem appears owned
//! by `hostID + n` through the mount; inside a user namespace that maps
//! `hostID` back, the container sees the on-disk owner without the files
//! ever being chowned. Without mappings on the mount, the container's own
//! user namespace mappings are used.
//!
//! Making an id-mapped mount needs privileges over the source's mount, which
//! init no longer has inside the container's user namespace. So the runtime
//! prepares each one before the clone, as a detached mount
//! (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_IDMAP)` with a
//! user namespace carrying the mappings), and init moves it into place with
//! `move_mount`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use crate::mount_options::MountOptions;
use crate::sys;

/// Why an id-mapped mount could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("mounts[{index}] ({dest}): {reason}")]
    Invalid {
        index: usize,
        dest: PathBuf,
        reason: String,
    },
    #[error("mounts[{index}] ({dest}): {what}: {source}")]
    Sys {
        index: usize,
        dest: PathBuf,
        what: String,
        source: std::io::Error,
    },
}

/// True when mount `m` is to be id-mapped.
pub fn wanted(m: &Mount) -> bool {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
    opts.idmap || m.uid_mappings().is_some() || m.gid_mappings().is_some()
}

/// Prepares every id-mapped mount of `spec`: one detached mount fd per
/// mount index that wants it (None for the others).
pub fn prepare(spec: &Spec, bundle: &Path) -> Result<Vec<Option<OwnedFd>>, IdmapError> {
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let linux = spec.linux().as_ref();
    let mut out = Vec::with_capacity(mounts.len());
    for (index, m) in mounts.iter().enumerate() {
        if !wanted(m) {
            out.push(None);
            continue;
        }
        let dest = m.destination().clone();
        let invalid = |reason: String| IdmapError::Invalid {
            index,
            dest: dest.clone(),
            reason,
        };
        let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
        let is_bind = m.typ().as_deref() == Some("bind") || opts.bind;
        if !is_bind {
            return Err(invalid(
                "id-mapped mounts are supported for bind mounts only".into(),
            ));
        }
        let uids = m
            .uid_mappings()
            .as_deref()
            .or_else(|| linux.and_then(|l| l.uid_mappings().as_deref()))
            .unwrap_or(&[]);
        let gids = m
            .gid_mappings()
            .as_deref()
            .or_else(|| linux.and_then(|l| l.gid_mappings().as_deref()))
            .unwrap_or(&[]);
        if uids.is_empty() || gids.is_empty() {
            return Err(invalid(
                "an id-mapped mount needs uidMappings and gidMappings (on the mount or in linux)"
                    .into(),
            ));
        }
        let source = m
            .source()
            .as_ref()
            .ok_or_else(|| invalid("a bind mount needs a source".into()))?;
        let source = if source.is_absolute() {
            source.clone()
        } else {
            bundle.join(source)
        };
        let sys_err = |what: String| {
            let dest = dest.clone();
            move |source| IdmapError::Sys {
                index,
                dest,
                what,
                source,
            }
        };
        let recursive = opts.recursive_bind || opts.recursive_idmap;
        let tree = sys::open_tree_clone(&source, recursive)
            .map_err(sys_err(format!("open_tree of {}", source.display())))?;
        let userns = userns_with_mappings(uids, gids)
            .map_err(sys_err("making its user namespace".into()))?;
        sys::mount_setattr(&tree, recursive, sys::MOUNT_ATTR_IDMAP, 0, Some(&userns)).map_err(
            sys_err(format!(
                "id-mapping {} (does its filesystem support id-mapped mounts?)",
                source.display()
            )),
        )?;
        out.push(Some(tree));
    }
    Ok(out)
}

/// A user namespace with these mappings, held by an fd: a short-lived
/// child makes it, we write its maps and keep its `ns/user`, then the child
/// goes.
fn userns_with_mappings(
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
) -> std::io::Result<OwnedFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 gave us these fds.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the runtime is single-threaded here; the child only blocks
    // in read(2) and leaves with _exit.
    let pid = unsafe { sys::clone_fork(libc::CLONE_NEWUSER as u64) }?;
    if pid == 0 {
        drop(write_end);
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a valid buffer; EOF ends the wait.
        unsafe { libc::read(read_end.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        sys::exit_now(0);
    }
    drop(read_end);
    let result = (|| {
        let fmt = |maps: &[LinuxIdMapping]| -> String {
            maps.iter()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect()
        };
        std::fs::write(format!("/proc/{pid}/uid_map"), fmt(uids))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), fmt(gids))?;
        sys::open(
            Path::new(&format!("/proc/{pid}/ns/user")),
            libc::O_RDONLY,
            0,
        )
    })();
    drop(write_end);
    // SAFETY: reaping the child we forked.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}

/// Moves a prepared detached mount onto `target` (an O_PATH fd).
pub fn move_into_place(tree: &OwnedFd, target: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: valid fds and empty C strings with the EMPTY_PATH flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            (libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH) as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
