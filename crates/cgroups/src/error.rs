//! Errors of the cgroups crate. Every variant names the path it concerns.

use std::path::PathBuf;

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
    /// A systemd cgroup driver was asked for where systemd does not run.
    #[error("systemd cgroup driver requested (--systemd-cgroup) but systemd is not running on this host (/run/systemd/system is absent)")]
    NoSystemd,
}

pub type Result<T> = std::result::Result<T, CgroupError>;
