//! Errors of the cgroups crate. Every variant names the path it concerns.

use std::path::PathBuf;

use crate::systemd::dbus::DbusError;

/// A failure while detecting, creating, configuring or removing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Reading the mount table failed.
    #[error("reading {path}: {source}")]
    MountInfo {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No cgroup hierarchy is mounted at all.
    #[error("no cgroup filesystem is mounted (looked in /proc/self/mountinfo)")]
    NoHierarchy,
    /// Creating a cgroup directory failed.
    #[error("creating cgroup directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing a cgroup control file failed.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    /// Reading a cgroup control file failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("removing cgroup directory {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The cgroup path from the config is unusable.
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A resource setting is not supported by this host's cgroup layout.
    #[error("linux.resources.{field}: {reason}")]
    Unsupported { field: &'static str, reason: String },
    /// A device rule (from the config or in the v1 text form) is malformed.
    #[error("device rule {rule}: {reason}")]
    InvalidDeviceRule { rule: String, reason: String },
    /// A `bpf(2)` command for the device filter of a cgroup2 directory failed.
    #[error("device filter of cgroup {path}: bpf({command}): {source}")]
    Bpf {
        path: PathBuf,
        command: &'static str,
        source: std::io::Error,
    },
    /// The kernel refused to load the device filter program for a cgroup2
    /// directory; the verifier log says why.
    #[error(
        "device filter of cgroup {path}: bpf(BPF_PROG_LOAD): {source}{}",
        verifier_log(log)
    )]
    BpfVerifier {
        path: PathBuf,
        source: std::io::Error,
        log: String,
    },
    /// A systemd cgroup driver was asked for where systemd does not run.
    #[error("systemd cgroup driver requested (--systemd-cgroup) but systemd is not running on this host (/run/systemd/system is absent)")]
    NoSystemd,
    /// A call to systemd's manager (over D-Bus) failed; `source` carries
    /// systemd's error name and message, or why it could not be reached.
    #[error("systemd {method} of unit {unit}: {source}")]
    Systemd {
        unit: String,
        method: &'static str,
        source: DbusError,
    },
    /// systemd accepted a job for the unit, but its effect did not show.
    #[error("systemd unit {unit}: {what} within {} s", crate::systemd::UNIT_TIMEOUT.as_secs())]
    SystemdTimeout { unit: String, what: String },
    /// Setting a systemd unit up failed, and stopping it again failed too.
    #[error("{error}; stopping unit {unit} again also failed: {cleanup}")]
    SystemdCleanup {
        unit: String,
        error: Box<CgroupError>,
        cleanup: Box<CgroupError>,
    },
}

fn verifier_log(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier log:\n{log}")
    }
}

impl CgroupError {
    /// True when creating the cgroup failed for lack of permission (an
    /// unprivileged user without a delegated cgroup).
    pub fn is_permission_denied(&self) -> bool {
        match self {
            CgroupError::Create { source, .. } | CgroupError::Write { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
            ),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, CgroupError>;
