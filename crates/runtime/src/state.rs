//! Container state on disk: `ROOT/ID/state.json`, the frozen copy of the
//! config, the exec fifo, and the per-container lock.
//!
//! Status is derived, never trusted from the file alone: a recorded pid is
//! alive only if `/proc/PID/stat` still shows the same start time, so a
//! reused pid is never mistaken for the container.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys;

/// Errors of the state store, naming the container and path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container ID {0:?} is invalid: use letters, digits, '_', '+', '-' and '.', not '.' or '..' alone, at most 1024 characters")]
    InvalidId(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state of container {id:?} is corrupt ({path}): {message}")]
    Corrupt {
        id: String,
        path: PathBuf,
        message: String,
    },
}

type Result<T> = std::result::Result<T, StateError>;

/// runtime-spec's status values (plus runc's "paused").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Paused => "paused",
        }
    }
}

/// What the runtime records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// Host pid of the container's init; 0 before it exists.
    pub pid: i32,
    /// Its start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// "creating" until init reported ready, then "created".
    pub phase: Status,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The container's cgroup (one directory per hierarchy), removed on delete.
    pub cgroup: hako_cgroups::Cgroup,
    /// The owner (uid) who created the container.
    #[serde(default)]
    pub owner: u32,
}

/// Checks a container ID the way runc does.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId(id.to_string()))
    }
}

/// The state root (`--root`).
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Creates the directory of a new container; fails if it exists.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        if let Err(source) = std::fs::create_dir_all(&self.root) {
            return Err(StateError::Io {
                what: "creating state root",
                path: self.root.clone(),
                source,
            });
        }
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711));
                Ok(dir)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.to_string()))
            }
            Err(source) => Err(StateError::Io {
                what: "creating state directory",
                path: dir,
                source,
            }),
        }
    }

    /// Loads a container's state.
    pub fn load(&self, id: &str) -> Result<ContainerState> {
        validate_id(id)?;
        let path = self.dir(id).join("state.json");
        let raw = match std::fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(source) => {
                return Err(StateError::Io {
                    what: "reading",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&raw).map_err(|e| StateError::Corrupt {
            id: id.to_string(),
            path,
            message: e.to_string(),
        })
    }

    /// Writes state atomically (temp file + rename).
    pub fn save(&self, state: &ContainerState) -> Result<()> {
        let dir = self.dir(&state.id);
        let tmp = dir.join(".state.json.tmp");
        let path = dir.join("state.json");
        let data = serde_json::to_vec(state).map_err(|e| StateError::Corrupt {
            id: state.id.clone(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, data).map_err(|source| StateError::Io {
            what: "writing",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            what: "renaming",
            path,
            source,
        })
    }

    /// Takes the container's exclusive lock, released when dropped.
    pub fn lock(&self, id: &str) -> Result<Lock> {
        validate_id(id)?;
        let dir = self.dir(id);
        let fd = match sys::open(&dir, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(source) => {
                return Err(StateError::Io {
                    what: "opening",
                    path: dir,
                    source,
                })
            }
        };
        loop {
            // SAFETY: flock on a valid fd.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(StateError::Io {
                    what: "locking",
                    path: dir,
                    source: e,
                });
            }
        }
        Ok(Lock { _fd: fd })
    }

    /// IDs of all containers under the root, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    what: "listing",
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes a container's directory and everything in it.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                what: "removing",
                path: dir,
                source,
            }),
        }
    }
}

/// An exclusive lock on one container (flock on its directory).
pub struct Lock {
    _fd: OwnedFd,
}

impl ContainerState {
    /// True while the recorded init process exists and is not a zombie.
    pub fn is_alive(&self) -> bool {
        hako_procfs::process_alive(self.pid, self.pid_start)
    }

    /// The container's current status.
    pub fn status(&self, dir: &Path) -> Status {
        if self.pid == 0 {
            return Status::Creating;
        }
        if !self.is_alive() {
            return Status::Stopped;
        }
        if self.phase == Status::Creating {
            return Status::Creating;
        }
        if dir.join("exec.fifo").exists() {
            return Status::Created;
        }
        if self.is_frozen() {
            return Status::Paused;
        }
        Status::Running
    }

    /// True when the container's cgroup is frozen (`pause`).
    pub fn is_frozen(&self) -> bool {
        if let Some(d) = self.cgroup.dir_for("freezer") {
            return std::fs::read_to_string(d.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN");
        }
        self.cgroup
            .unified_dir()
            .and_then(|d| std::fs::read_to_string(d.join("cgroup.freeze")).ok())
            .is_some_and(|s| s.trim() == "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "abc-1_2.3+4", "A"] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_stat_parses() {
        let me = std::process::id() as i32;
        let (state, start) = hako_procfs::stat(me).expect("stat");
        assert!(state == 'R' || state == 'S');
        assert!(start > 0);
    }
}
