//! Loading and validating a bundle's `config.json`.
//!
//! Parsing is oci-spec's; this module adds the checks runtime-spec asks of a
//! runtime before it changes anything on the host, each failing with the
//! name of the offending field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.1";

/// A config that cannot be run, with the field that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The JSON does not match runtime-spec's schema.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A field has a value this runtime rejects.
    #[error("config.json: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A parsed, validated config with its bundle's absolute paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: Spec,
    /// The bundle directory, absolute.
    pub bundle: PathBuf,
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
}

/// Reads `bundle/config.json`. Returns the raw bytes too so the caller can
/// keep a copy that later edits to the bundle cannot change.
pub fn load(bundle: &Path) -> Result<(Config, Vec<u8>), SpecError> {
    let bundle = std::path::absolute(bundle).map_err(|source| SpecError::Read {
        path: bundle.to_path_buf(),
        source,
    })?;
    let path = bundle.join("config.json");
    let raw = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let config = parse(&raw, &bundle)?;
    Ok((config, raw))
}

/// Parses and validates config bytes for the bundle at `bundle`.
pub fn parse(raw: &[u8], bundle: &Path) -> Result<Config, SpecError> {
    let spec = parse_spec(raw, &bundle.join("config.json"))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "is required on Linux"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ))
        }
        Err(e) => return Err(invalid("root.path", format!("{}: {e}", rootfs.display()))),
    }
    // The resolved path is what mountinfo shows (cleanup matches on it).
    let rootfs = std::fs::canonicalize(&rootfs)
        .map_err(|e| invalid("root.path", format!("{}: {e}", rootfs.display())))?;
    Ok(Config {
        spec,
        bundle: bundle.to_path_buf(),
        rootfs,
    })
}

/// Parses config bytes and runs [`validate`]: every check of [`parse`]
/// except those of the root filesystem, so nothing is read from disk (only
/// namespace paths given with `hostname`, `domainname` or sysctls are
/// `stat`ed). `path` names the file in parse errors. The fuzz target
/// `spec` calls this.
pub fn parse_spec(raw: &[u8], path: &Path) -> Result<Spec, SpecError> {
    let spec: Spec = serde_json::from_slice(raw).map_err(|e| SpecError::Parse {
        path: path.to_path_buf(),
        message: explain_parse_error(&e),
    })?;
    validate(&spec)?;
    Ok(spec)
}

fn explain_parse_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.contains("unknown variant") && msg.contains("CAP_") {
        format!("unknown capability: {msg}")
    } else {
        msg
    }
}

/// Checks that `ociVersion` is a runtime-spec 1.x version.
pub fn check_version(version: &str) -> Result<(), SpecError> {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Err(invalid(
            "ociVersion",
            format!("{version:?} is not a semantic version like 1.2.0"),
        ));
    }
    if parts[0] != "1" {
        return Err(invalid(
            "ociVersion",
            format!("{version:?} is not supported; this runtime implements runtime-spec 1.x"),
        ));
    }
    Ok(())
}

/// The checks that need no file system access.
pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    check_version(spec.version())?;
    if let Some(process) = spec.process() {
        let args = process.args().as_deref().unwrap_or(&[]);
        if args.is_empty() && process.command_line().is_none() {
            return Err(invalid("process.args", "must name a program to run"));
        }
        if !process.cwd().is_absolute() {
            return Err(invalid(
                "process.cwd",
                format!("{:?} must be an absolute path", process.cwd()),
            ));
        }
        for (i, e) in process.env().iter().flatten().enumerate() {
            if !e.contains('=') || e.starts_with('=') {
                return Err(invalid(
                    format!("process.env[{i}]"),
                    format!("{e:?} is not of the form KEY=value"),
                ));
            }
        }
        let mut seen = HashSet::new();
        for r in process.rlimits().iter().flatten() {
            if !seen.insert(format!("{:?}", r.typ())) {
                return Err(invalid(
                    "process.rlimits",
                    format!("{:?} appears twice", r.typ()),
                ));
            }
            if r.soft() > r.hard() {
                return Err(invalid(
                    "process.rlimits",
                    format!(
                        "{:?}: soft limit {} exceeds hard limit {}",
                        r.typ(),
                        r.soft(),
                        r.hard()
                    ),
                ));
            }
        }
    }
    if let Some(h) = spec.hostname() {
        if !h.is_empty() && !has_private_namespace(spec, LinuxNamespaceType::Uts) {
            return Err(invalid(
                "hostname",
                "setting the hostname needs a UTS namespace that is not the host's in linux.namespaces",
            ));
        }
    }
    if let Some(d) = spec.domainname() {
        if !d.is_empty() && !has_private_namespace(spec, LinuxNamespaceType::Uts) {
            return Err(invalid(
                "domainname",
                "setting the domainname needs a UTS namespace that is not the host's in linux.namespaces",
            ));
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(invalid(
                format!("mounts[{i}].destination"),
                format!("{:?} must be an absolute path", m.destination()),
            ));
        }
    }
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let mut seen = HashSet::new();
    for ns in linux.namespaces().iter().flatten() {
        if !seen.insert(ns.typ()) {
            return Err(invalid(
                "linux.namespaces",
                format!("namespace {} is listed twice", ns.typ()),
            ));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(invalid(
                    "linux.namespaces",
                    format!("{} namespace path {:?} must be absolute", ns.typ(), p),
                ));
            }
        }
    }
    let new_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if new_userns && !has_maps {
        return Err(invalid(
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    if has_maps && !seen.contains(&LinuxNamespaceType::User) {
        return Err(invalid(
            "linux.uidMappings",
            "uid/gid mappings need a user namespace in linux.namespaces",
        ));
    }
    if let Some(offsets) = linux.time_offsets() {
        if !offsets.is_empty() && !seen.contains(&LinuxNamespaceType::Time) {
            return Err(invalid(
                "linux.timeOffsets",
                "time offsets need a time namespace in linux.namespaces",
            ));
        }
        for clock in offsets.keys() {
            if clock != "monotonic" && clock != "boottime" {
                return Err(invalid(
                    "linux.timeOffsets",
                    format!("{clock:?} is not a clock with offsets (monotonic, boottime)"),
                ));
            }
        }
    }
    for key in linux.sysctl().iter().flat_map(|m| m.keys()) {
        check_sysctl(spec, key)?;
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let escapes = d
            .path()
            .components()
            .any(|c| c == std::path::Component::ParentDir);
        if !d.path().is_absolute() || !d.path().starts_with("/dev") || escapes {
            return Err(invalid(
                format!("linux.devices[{i}].path"),
                format!("{:?} must be an absolute path under /dev", d.path()),
            ));
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        if !matches!(
            p.as_str(),
            "" | "private"
                | "rprivate"
                | "slave"
                | "rslave"
                | "shared"
                | "rshared"
                | "unbindable"
                | "runbindable"
        ) {
            return Err(invalid(
                "linux.rootfsPropagation",
                format!("{p:?} is not a propagation mode"),
            ));
        }
    }
    Ok(())
}

/// A sysctl is only allowed when it belongs to a namespace the container
/// has its own copy of; anything else would change the host (runc's rule).
fn check_sysctl(spec: &Spec, key: &str) -> Result<(), SpecError> {
    let valid_name = !key.is_empty()
        && !key.contains("..")
        && !key.starts_with(['/', '.'])
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if !valid_name {
        return Err(invalid(
            "linux.sysctl",
            format!("{key:?} is not a sysctl name"),
        ));
    }
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let (needs, what) = if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        (LinuxNamespaceType::Ipc, "an IPC")
    } else if key.starts_with("net.") {
        (LinuxNamespaceType::Network, "a network")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        (LinuxNamespaceType::Uts, "a UTS")
    } else {
        return Err(invalid(
            "linux.sysctl",
            format!("{key:?} is not namespaced: setting it would change the host"),
        ));
    };
    if !has_private_namespace(spec, needs) {
        return Err(invalid(
            "linux.sysctl",
            format!("{key:?} needs {what} namespace that is not the host's in linux.namespaces"),
        ));
    }
    Ok(())
}

/// True when the container gets a namespace of type `typ` other than the
/// runtime's own: a new one, or one joined by a path that is not ours.
fn has_private_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(ns) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == typ))
    else {
        return false;
    };
    let Some(path) = ns.path() else {
        return true;
    };
    let name = match typ {
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Uts => "uts",
        _ => return false,
    };
    let ours = format!("/proc/self/ns/{name}");
    match (std::fs::metadata(path), std::fs::metadata(ours)) {
        (Ok(a), Ok(b)) => a.ino() != b.ino() || a.dev() != b.dev(),
        _ => false,
    }
}

/// True when linux.namespaces asks for a new namespace of type `typ`.
pub fn has_new_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ && n.path().is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["1.0.0", "1.0.2-dev", "1.3.0", "1.2.1+build"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["", "2.0.0", "0.9.0", "1.0", "a.b.c", "1..0"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    fn spec_of(json: &str) -> Result<Spec, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn rejects_contradictions() {
        let base = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"mount"}]}"#;
        let ok = spec_of(&format!("{base}}}")).expect("parse");
        assert!(validate(&ok).is_ok());
        let host = spec_of(&format!("{base},\"hostname\":\"x\"}}")).expect("parse");
        assert!(
            matches!(validate(&host), Err(SpecError::Invalid { field, .. }) if field == "hostname")
        );
        let dup = spec_of(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"mount"},{"type":"mount"}]}}"#,
        )
        .expect("parse");
        assert!(validate(&dup).is_err());
    }
}
