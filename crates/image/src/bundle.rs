//! Image config → runtime bundle: `config.json` next to `rootfs/`.
//!
//! Starts from the config `hako-runtime spec` writes (or its hardened
//! variant) and fills in what the image says: Entrypoint + Cmd, Env,
//! WorkingDir, User (names resolved through the image's /etc/passwd and
//! /etc/group, read inside the rootfs only), Labels as annotations,
//! StopSignal, ExposedPorts and Volumes recorded as annotations.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::manifest::ImageConfig;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the image has neither Entrypoint nor Cmd, and no command was given")]
    NoCommand,
    #[error("User {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("--group-add {group:?}: no such group in the image's /etc/group")]
    Group { group: String },
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// Docker's default capabilities, seccomp profile and masked paths.
    pub hardened: bool,
    /// Replaces Cmd (and, with `entrypoint`, Entrypoint).
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub terminal: bool,
    /// Replaces the image's User (docker's forms: name, uid, uid:gid, …).
    pub user: Option<String>,
    /// Replaces the image's WorkingDir.
    pub workdir: Option<String>,
}

/// PATH when the image sets none (docker's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `ociVersion` of the configs made here: the runtime-spec version
/// every runc-compatible runtime takes (Debian's crun 1.8 refuses
/// anything but 1.0.x and 1.1.x with "unknown version specified"). It
/// is what podman writes; runtimes do not gate fields on it.
pub const BUNDLE_OCI_VERSION: &str = "1.0.2-dev";

/// The runtime config for an image whose rootfs is at `rootfs`.
pub fn runtime_spec(
    image: &ImageConfig,
    rootfs: &Path,
    opts: &BundleOptions,
) -> Result<Value, BundleError> {
    let mut spec = hako_runtime::defaults::default_spec(false);
    spec["ociVersion"] = Value::from(BUNDLE_OCI_VERSION);
    if opts.hardened {
        hako_runtime::hardened::apply(&mut spec);
    }
    let c = image.config.clone().unwrap_or_default();
    let entrypoint = opts
        .entrypoint
        .clone()
        .or(c.entrypoint.clone())
        .unwrap_or_default();
    let cmd = match (&opts.command, &opts.entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => c.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }
    let mut env: Vec<String> = c.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    let user = opts.user.as_deref().or(c.user.as_deref()).unwrap_or("");
    let (uid, gid, additional) = resolve_user(rootfs, user)?;
    let cwd = opts
        .workdir
        .clone()
        .or(c.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    spec["process"]["args"] = json!(args);
    spec["process"]["env"] = json!(env);
    spec["process"]["cwd"] = json!(cwd);
    spec["process"]["terminal"] = json!(opts.terminal);
    spec["process"]["user"] = json!({"uid": uid, "gid": gid});
    if !additional.is_empty() {
        spec["process"]["user"]["additionalGids"] = json!(additional);
    }
    spec["root"] = json!({"path": "rootfs", "readonly": false});
    let mut annotations = serde_json::Map::new();
    for (k, v) in c.labels.iter().flatten() {
        annotations.insert(k.clone(), json!(v));
    }
    if let Some(s) = &c.stop_signal {
        annotations.insert("org.opencontainers.image.stopSignal".into(), json!(s));
    }
    if let Some(p) = &c.exposed_ports {
        let list: Vec<&str> = p.keys().map(String::as_str).collect();
        annotations.insert(
            "org.opencontainers.image.exposedPorts".into(),
            json!(list.join(",")),
        );
    }
    if let Some(v) = &c.volumes {
        let list: Vec<&str> = v.keys().map(String::as_str).collect();
        annotations.insert(
            "org.opencontainers.image.volumes".into(),
            json!(list.join(",")),
        );
    }
    if !annotations.is_empty() {
        spec["annotations"] = Value::Object(annotations);
    }
    Ok(spec)
}

/// [`runtime_spec`] for callers that speak oci-spec's types: the image
/// configuration in, the runtime spec out.
pub fn oci_runtime_spec(
    config: &oci_spec::image::ImageConfiguration,
    rootfs: &Path,
    opts: &BundleOptions,
) -> Result<oci_spec::runtime::Spec, BundleError> {
    let value = serde_json::to_value(config).map_err(|source| BundleError::Json {
        what: "encoding the image configuration",
        source,
    })?;
    let image: ImageConfig = serde_json::from_value(value).map_err(|source| BundleError::Json {
        what: "reading the image configuration",
        source,
    })?;
    let spec = runtime_spec(&image, rootfs, opts)?;
    serde_json::from_value(spec).map_err(|source| BundleError::Json {
        what: "the runtime config as an OCI runtime spec",
        source,
    })
}

/// Writes `spec` as `config.json` in `dir` (temp file, then rename).
pub fn write_bundle(dir: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), BundleError> {
    let value = serde_json::to_value(spec).map_err(|source| BundleError::Json {
        what: "encoding the runtime spec",
        source,
    })?;
    write_config(dir, &value)
}

/// Writes `config.json` in `dir` (temp file, then rename): a reader sees
/// the old file or the new one, never half of one.
pub fn write_config(dir: &Path, spec: &Value) -> Result<(), BundleError> {
    let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { what, path, source }
    };
    let text = serde_json::to_vec_pretty(spec).map_err(|source| BundleError::Json {
        what: "encoding config.json",
        source,
    })?;
    std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, dir.join("config.json")).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("renaming", &tmp)(e)
    })
}

/// Reads a file inside `rootfs`, resolving symlinks as if rootfs were `/`
/// (openat2 RESOLVE_IN_ROOT): an image's /etc/passwd pointing at the
/// host's reads the image's own path instead. At most 4 MiB.
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = std::fs::File::open(rootfs).ok()?;
    let fd = hako_runtime::sys::openat2(
        std::os::fd::AsRawFd::as_raw_fd(&root),
        Path::new(path.trim_start_matches('/')),
        libc::O_RDONLY,
        0,
        hako_runtime::sys::RESOLVE_IN_ROOT,
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// [`resolve_user`] for callers outside (`hako exec -u`): uid, gid and
/// supplementary groups of `user` in the image at `rootfs`.
pub fn resolve_user_in(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), BundleError> {
    resolve_user(rootfs, user)
}

/// Resolves docker's User forms: "", uid, uid:gid, name, name:group,
/// uid:group, name:gid. Returns uid, gid and the supplementary groups the
/// user name belongs to in /etc/group.
fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), BundleError> {
    if user.is_empty() {
        return Ok((0, 0, groups_of(rootfs, "root", 0)));
    }
    let err = |reason: String| BundleError::User {
        user: user.to_string(),
        reason,
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
    let (uid, default_gid, name) = match (u.parse::<u32>(), &entry) {
        (Ok(n), Some(f)) => (n, f[3].parse().unwrap_or(0), Some(f[0].to_string())),
        (Ok(n), None) => (n, 0, None),
        (Err(_), Some(f)) => (
            f[2].parse()
                .map_err(|_| err("its /etc/passwd uid is not a number".into()))?,
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (Err(_), None) => return Err(err(format!("no user {u:?} in the image's /etc/passwd"))),
    };
    let gid = match g {
        None => default_gid,
        Some(g) => group_id(rootfs, g)
            .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
    };
    let additional = match (&name, g) {
        (Some(n), None) => groups_of(rootfs, n, gid),
        _ => Vec::new(),
    };
    Ok((uid, gid, additional))
}

/// A group's gid: `group` itself when numeric, else its entry in the
/// image's /etc/group.
fn group_id(rootfs: &Path, group: &str) -> Option<u32> {
    if let Ok(n) = group.parse::<u32>() {
        return Some(n);
    }
    read_in_root(rootfs, "/etc/group")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == group)
        .and_then(|f| f[2].parse().ok())
}

/// `--group-add`: the gid of `group` (a number, or a name in the image's
/// /etc/group).
pub fn resolve_group_in(rootfs: &Path, group: &str) -> Result<u32, BundleError> {
    group_id(rootfs, group).ok_or_else(|| BundleError::Group {
        group: group.to_string(),
    })
}

/// Groups in /etc/group that list `name` as a member (not `primary`).
fn groups_of(rootfs: &Path, name: &str, primary: u32) -> Vec<u32> {
    let group = read_in_root(rootfs, "/etc/group").unwrap_or_default();
    let mut out: Vec<u32> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .filter(|g| *g != primary)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
