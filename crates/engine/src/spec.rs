//! A container's runtime config: the image's bundle config
//! (hako_image::bundle, with the hardened profile of hako-runtime) with
//! the create options applied: mounts, namespaces, resources, security.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hako_image::bundle::{self, BundleOptions};
use hako_image::manifest::ImageConfig;
use serde_json::{json, Value};

use crate::options::{self, bad, CreateOptions, OptionError};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("the image config: {0}")]
    Bundle(#[from] bundle::BundleError),
    #[error("{flag} {value:?}: {}: {source}", path.display())]
    Io {
        flag: &'static str,
        value: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the container's network namespace is had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNs {
    /// A new empty one (loopback only), made by the runtime.
    New,
    /// The host's.
    Host,
    /// One made beforehand (by hako-network, a pod or another container).
    Path(PathBuf),
}

/// A resolved `-v`: where the mount comes from on the host.
#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    pub options: Vec<String>,
}

/// What the engine made for the container, beside its options.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    pub image: &'a ImageConfig,
    /// The rootfs directory (absolute).
    pub rootfs: &'a Path,
    pub hostname: String,
    /// Generated /etc/hosts, /etc/hostname and /etc/resolv.conf, bound in.
    pub etc_files: Vec<(PathBuf, &'static str)>,
    pub net: NetNs,
    /// Namespaces joined by path (pods): ("ipc", path) …
    pub join: Vec<(&'static str, PathBuf)>,
    pub mounts: Vec<Mount>,
    /// hako-init, bound in at /run/hako-init when --init.
    pub init: Option<PathBuf>,
    pub cgroups_path: String,
}

/// Where --init puts hako-init in the container.
pub const INIT_PATH: &str = "/run/hako-init";

pub fn runtime_spec(opts: &CreateOptions, ctx: &SpecContext<'_>) -> Result<Value, SpecError> {
    let entrypoint = opts.entrypoint.as_ref().map(|e| {
        // `--entrypoint ""` clears the image's entrypoint.
        e.iter().filter(|s| !s.is_empty()).cloned().collect()
    });
    let mut env = vec![format!("HOSTNAME={}", ctx.hostname)];
    if opts.tty {
        env.push("TERM=xterm".into());
    }
    env.extend(opts.env.iter().cloned());
    let bopts = BundleOptions {
        hardened: true,
        command: opts.command.clone(),
        entrypoint,
        env,
        terminal: opts.tty,
        user: opts.user.clone(),
        workdir: opts.workdir.clone(),
    };
    let mut spec = bundle::runtime_spec(ctx.image, ctx.rootfs, &bopts)?;
    spec["root"] = json!({"path": ctx.rootfs, "readonly": opts.read_only});
    spec["hostname"] = json!(ctx.hostname);
    // Like docker: setuid programs work unless asked otherwise.
    spec["process"]["noNewPrivileges"] = json!(false);
    spec["linux"]["cgroupsPath"] = json!(ctx.cgroups_path);
    if let Some(init) = &ctx.init {
        let args = spec["process"]["args"].take();
        let mut with_init = vec![json!(INIT_PATH), json!("--")];
        with_init.extend(args.as_array().cloned().unwrap_or_default());
        spec["process"]["args"] = json!(with_init);
        push_mount(
            &mut spec,
            json!({"destination": INIT_PATH, "type": "bind", "source": init,
                   "options": ["bind", "ro", "nosuid", "nodev"]}),
        );
    }
    namespaces(&mut spec, ctx);
    host_namespaces(&mut spec, opts)?;
    if let Some(v) = &opts.shm_size {
        let bytes = options::size("--shm-size", v)?;
        if let Some(m) = spec["mounts"].as_array_mut().and_then(|ms| {
            ms.iter_mut()
                .find(|m| m["destination"] == "/dev/shm" && m["type"] == "tmpfs")
        }) {
            let mut o: Vec<Value> = m["options"].as_array().cloned().unwrap_or_default();
            o.retain(|x| !x.as_str().is_some_and(|x| x.starts_with("size=")));
            o.push(json!(format!("size={}k", bytes.div_ceil(1024))));
            m["options"] = json!(o);
        }
    }
    if !opts.group_add.is_empty() {
        let mut gids: Vec<u32> = spec["process"]["user"]["additionalGids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_u64().map(|g| g as u32))
                    .collect()
            })
            .unwrap_or_default();
        for g in &opts.group_add {
            gids.push(bundle::resolve_group_in(ctx.rootfs, g)?);
        }
        gids.sort_unstable();
        gids.dedup();
        spec["process"]["user"]["additionalGids"] = json!(gids);
    }
    for (path, dest) in &ctx.etc_files {
        push_mount(
            &mut spec,
            json!({"destination": dest, "type": "bind", "source": path,
                   "options": ["bind", "rprivate", "nosuid", "nodev", "noexec"]}),
        );
    }
    for m in &ctx.mounts {
        let mut o = vec!["rbind".to_string()];
        if !m
            .options
            .iter()
            .any(|x| x.ends_with("private") || x.ends_with("shared") || x.ends_with("slave"))
        {
            o.push("rprivate".into());
        }
        o.extend(
            m.options
                .iter()
                .filter(|x| *x != "bind" && *x != "rbind")
                .cloned(),
        );
        if m.read_only {
            o.push("ro".into());
        }
        push_mount(
            &mut spec,
            json!({"destination": m.destination, "type": "bind", "source": m.source, "options": o}),
        );
    }
    for t in &opts.tmpfs {
        let (dst, o) = options::parse_tmpfs(t)?;
        push_mount(
            &mut spec,
            json!({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": o}),
        );
    }
    resources(&mut spec, opts)?;
    security(&mut spec, opts)?;
    for u in &opts.ulimits {
        let (typ, soft, hard) = options::parse_ulimit(u)?;
        let list = spec["process"]["rlimits"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut list: Vec<Value> = list.into_iter().filter(|r| r["type"] != typ).collect();
        list.push(json!({"type": typ, "soft": soft, "hard": hard}));
        spec["process"]["rlimits"] = json!(list);
    }
    for (k, v) in options::parse_pairs("--sysctl", &opts.sysctls)? {
        spec["linux"]["sysctl"][k] = json!(v);
    }
    for d in &opts.devices {
        device(&mut spec, d)?;
    }
    for (k, v) in options::parse_pairs("--label", &opts.labels)? {
        spec["annotations"][k] = json!(v);
    }
    Ok(spec)
}

/// The strings of a JSON array (none for anything else).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn push_mount(spec: &mut Value, m: Value) {
    let dest = m["destination"].clone();
    if let Some(list) = spec["mounts"].as_array_mut() {
        // A later mount on the same path replaces the earlier one (a
        // volume on /dev/shm, a tmpfs on /tmp …).
        list.retain(|x| x["destination"] != dest);
        list.push(m);
    }
}

fn namespaces(spec: &mut Value, ctx: &SpecContext<'_>) {
    let mut list: Vec<Value> = spec["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.retain(|n| n["type"] != "network");
    match &ctx.net {
        NetNs::New => list.push(json!({"type": "network"})),
        NetNs::Host => {}
        NetNs::Path(p) => list.push(json!({"type": "network", "path": p})),
    }
    for (typ, path) in &ctx.join {
        list.retain(|n| n["type"] != *typ);
        list.push(json!({"type": typ, "path": path}));
        if *typ == "uts" {
            // The hostname is the UTS namespace's owner's.
            if let Some(o) = spec.as_object_mut() {
                o.remove("hostname");
            }
        }
    }
    spec["linux"]["namespaces"] = json!(list);
    if ctx.net == NetNs::Host {
        // The host's network: its sysfs view would be the host's too, and
        // a new sysfs mount needs a network namespace of its own.
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for m in mounts.iter_mut() {
                if m["destination"] == "/sys" {
                    *m = json!({"destination": "/sys", "type": "bind", "source": "/sys",
                        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
                }
            }
        }
    }
}

/// `--pid host`, `--ipc host`, `--uts host`: no namespace of its own.
fn host_namespaces(spec: &mut Value, opts: &CreateOptions) -> Result<(), SpecError> {
    let mut drop = Vec::new();
    if options::host_namespace("--pid", opts.pid.as_deref())? {
        drop.push("pid");
    }
    if options::host_namespace("--ipc", opts.ipc.as_deref())? {
        drop.push("ipc");
        // The host's POSIX shared memory, not a new tmpfs (an mqueue
        // mounted in the host's IPC namespace shows the host's queues).
        push_mount(
            spec,
            json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                   "options": ["rbind", "nosuid", "nodev", "noexec"]}),
        );
    }
    if options::host_namespace("--uts", opts.uts.as_deref())? {
        drop.push("uts");
        if let Some(o) = spec.as_object_mut() {
            o.remove("hostname");
        }
    }
    if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
        list.retain(|n| !drop.iter().any(|d| n["type"] == *d));
    }
    Ok(())
}

fn resources(spec: &mut Value, opts: &CreateOptions) -> Result<(), SpecError> {
    let r = &mut spec["linux"]["resources"];
    if let Some(m) = &opts.memory {
        let bytes = options::size("--memory", m)?;
        if bytes < 6 << 20 {
            return Err(bad("--memory", m, "the minimum is 6 MiB (as docker)").into());
        }
        r["memory"]["limit"] = json!(bytes);
    }
    if let Some(c) = opts.cpus {
        if !c.is_finite() || c <= 0.0 {
            return Err(bad("--cpus", &c.to_string(), "must be a positive number").into());
        }
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        if c > ncpu as f64 {
            return Err(bad(
                "--cpus",
                &c.to_string(),
                format!("more than the {ncpu} CPUs this machine has"),
            )
            .into());
        }
        r["cpu"]["period"] = json!(100_000u64);
        r["cpu"]["quota"] = json!((c * 100_000.0).round() as i64);
    }
    if let Some(v) = &opts.cpuset_cpus {
        r["cpu"]["cpus"] = json!(v);
    }
    if let Some(v) = &opts.cpuset_mems {
        r["cpu"]["mems"] = json!(v);
    }
    if let Some(v) = opts.cpu_shares {
        r["cpu"]["shares"] = json!(v);
    }
    if let Some(v) = &opts.memory_reservation {
        r["memory"]["reservation"] = json!(options::size("--memory-reservation", v)?);
    }
    if let Some(v) = &opts.memory_swap {
        r["memory"]["swap"] = json!(options::memory_swap(v)?);
    }
    if let Some(p) = opts.pids_limit {
        // 0 and -1: unlimited, as docker.
        if p > 0 {
            r["pids"]["limit"] = json!(p);
        } else if p < -1 {
            return Err(bad("--pids-limit", &p.to_string(), "must be -1, 0 or positive").into());
        }
    }
    Ok(())
}

fn security(spec: &mut Value, opts: &CreateOptions) -> Result<(), SpecError> {
    let mut seccomp: Option<String> = None;
    for s in &opts.security_opt {
        let (k, v) = s
            .split_once(['=', ':'])
            .map_or((s.as_str(), None), |(k, v)| (k, Some(v)));
        match (k, v) {
            ("no-new-privileges", None | Some("true")) => {
                spec["process"]["noNewPrivileges"] = json!(true)
            }
            ("no-new-privileges", Some("false")) => {
                spec["process"]["noNewPrivileges"] = json!(false)
            }
            ("seccomp", Some(v)) => seccomp = Some(v.to_string()),
            ("label" | "apparmor", _) => {} // neither SELinux nor AppArmor here
            _ => {
                return Err(bad(
                    "--security-opt",
                    s,
                    "expected seccomp=FILE|unconfined or no-new-privileges",
                )
                .into())
            }
        }
    }
    let mut caps: Vec<String> = strings(&spec["process"]["capabilities"]["bounding"]);
    let all = hako_runtime::defaults::known_capabilities();
    if opts.privileged {
        caps = all.clone();
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for m in mounts.iter_mut() {
                if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                    if let Some(o) = m["options"].as_array_mut() {
                        o.retain(|x| x != "ro");
                    }
                }
            }
        }
    }
    for c in &opts.cap_drop {
        match options::normalise_cap("--cap-drop", c)?.as_str() {
            "ALL" => caps.clear(),
            name => caps.retain(|x| x != name),
        }
    }
    for c in &opts.cap_add {
        match options::normalise_cap("--cap-add", c)?.as_str() {
            "ALL" => caps = all.clone(),
            name if !caps.iter().any(|x| x == name) => caps.push(name.to_string()),
            _ => {}
        }
    }
    spec["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    match seccomp.as_deref() {
        Some("unconfined") => {
            if let Some(l) = spec["linux"].as_object_mut() {
                l.remove("seccomp");
            }
        }
        Some(file) => {
            let text = std::fs::read(file).map_err(|source| SpecError::Io {
                flag: "--security-opt",
                value: format!("seccomp={file}"),
                path: file.into(),
                source,
            })?;
            let profile: Value = serde_json::from_slice(&text).map_err(|e| {
                bad(
                    "--security-opt",
                    &format!("seccomp={file}"),
                    format!("not a seccomp profile: {e}"),
                )
            })?;
            spec["linux"]["seccomp"] = docker_seccomp_to_oci(&profile, &caps)
                .map_err(|r| bad("--security-opt", &format!("seccomp={file}"), r))?;
        }
        None if opts.privileged => {
            if let Some(l) = spec["linux"].as_object_mut() {
                l.remove("seccomp");
            }
        }
        None => spec["linux"]["seccomp"] = hako_runtime::hardened::seccomp_profile(&caps),
    }
    Ok(())
}

/// A docker/podman seccomp profile (archMap, includes/excludes by
/// capability and architecture) → the runtime spec's LinuxSeccomp for
/// this machine and the container's capabilities. A profile already in
/// the runtime spec's form passes through.
pub fn docker_seccomp_to_oci(p: &Value, caps: &[String]) -> Result<Value, String> {
    let default = p["defaultAction"]
        .as_str()
        .ok_or("it has no defaultAction")?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        other => return Err(format!("no seccomp architecture known for {other}")),
    };
    let mut arches: Vec<Value> = Vec::new();
    if let Some(map) = p["archMap"].as_array() {
        for a in map.iter().filter(|a| a["architecture"] == arch) {
            arches.push(a["architecture"].clone());
            arches.extend(
                a["subArchitectures"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    } else if let Some(a) = p["architectures"].as_array() {
        arches = a.clone();
    }
    let short_arch = std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64");
    let has_cap = |c: &Value| c.as_str().is_some_and(|c| caps.iter().any(|x| x == c));
    let mut rules = Vec::new();
    for s in p["syscalls"].as_array().cloned().unwrap_or_default() {
        let inc = &s["includes"];
        let exc = &s["excludes"];
        if let Some(c) = inc["caps"].as_array() {
            if !c.iter().all(has_cap) {
                continue;
            }
        }
        if let Some(a) = inc["arches"].as_array() {
            if !a.iter().any(|x| x == short_arch.as_str()) {
                continue;
            }
        }
        if exc["caps"]
            .as_array()
            .is_some_and(|c| c.iter().any(has_cap))
        {
            continue;
        }
        if exc["arches"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == short_arch.as_str()))
        {
            continue;
        }
        let names = match (&s["names"], &s["name"]) {
            (Value::Array(n), _) => n.clone(),
            (_, Value::String(n)) => vec![json!(n)],
            _ => return Err("a syscall rule without names".into()),
        };
        let mut r = json!({"names": names, "action": s["action"]});
        if !s["action"].is_string() {
            return Err("a syscall rule without an action".into());
        }
        if let Some(args) = s["args"].as_array().filter(|a| !a.is_empty()) {
            r["args"] = json!(args);
        }
        if let Some(e) = s["errnoRet"].as_u64() {
            r["errnoRet"] = json!(e);
        }
        rules.push(r);
    }
    let mut out = json!({"defaultAction": default, "syscalls": rules});
    if !arches.is_empty() {
        out["architectures"] = json!(arches);
    }
    if let Some(e) = p["defaultErrnoRet"].as_u64() {
        out["defaultErrnoRet"] = json!(e);
    }
    if let Some(f) = p["flags"].as_array() {
        out["flags"] = json!(f);
    }
    Ok(out)
}

/// `--device /dev/X[:/dev/Y[:rwm]]`.
fn device(spec: &mut Value, d: &str) -> Result<(), SpecError> {
    let parts: Vec<&str> = d.split(':').collect();
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|x| "rwm".contains(x)) && !c.starts_with('/') => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(bad("--device", d, "expected HOST[:CONTAINER[:PERMISSIONS]]").into()),
    };
    if perms.is_empty() || !perms.chars().all(|x| "rwm".contains(x)) {
        return Err(bad("--device", d, "permissions are a mix of r, w and m").into());
    }
    if !ctr.starts_with('/') || ctr.split('/').any(|c| c == "..") {
        return Err(bad("--device", d, "the container path must be absolute").into());
    }
    let md = std::fs::metadata(host).map_err(|source| SpecError::Io {
        flag: "--device",
        value: d.to_string(),
        path: host.into(),
        source,
    })?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(bad("--device", d, "not a device node").into());
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let node = json!({"path": ctr, "type": typ, "major": major, "minor": minor,
        "fileMode": md.mode() & 0o7777, "uid": md.uid(), "gid": md.gid()});
    match spec["linux"]["devices"].as_array_mut() {
        Some(list) => list.push(node),
        None => spec["linux"]["devices"] = json!([node]),
    }
    let allow =
        json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": perms});
    match spec["linux"]["resources"]["devices"].as_array_mut() {
        Some(list) => list.push(allow),
        None => spec["linux"]["resources"]["devices"] = json!([allow]),
    }
    Ok(())
}
