//! File helpers for cgroupfs: control files are written with a single
//! `write(2)` and errors carry the path and value.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CgroupError, Result};

/// Writes `value` to the control file `dir/file` in one `write(2)`.
pub fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    let result = OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| CgroupError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

/// Reads the control file `dir/file` as a string.
pub fn read_file(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

/// Parses the pids listed in a `cgroup.procs` file.
pub fn read_pids(dir: &Path) -> Result<Vec<i32>> {
    let text = read_file(dir, "cgroup.procs")?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Joins a cgroup path (absolute inside its hierarchy) onto a mount point.
pub fn join_under(mount: &Path, cgroup: &str) -> PathBuf {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}
