//! The container commands: argument parsing, output and exit codes only;
//! the work is in hako-engine.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hako_engine::{ContainerRecord, CreateOptions, Engine, EngineError, Status};
use hako_image::store::ImageRecord;

use crate::stdout::{out, outln, Table};
use crate::Error;

/// docker's exit codes for what went wrong before the container ran.
pub const EXIT_ENGINE: i32 = 125;
pub const EXIT_CANNOT_INVOKE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (-h is --hostname, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// The keys that end an attached terminal session, leaving the
    /// container running (docker's format; empty: none).
    #[arg(long = "detach-keys", default_value = hako_monitor::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    name: Option<String>,
    /// KEY=VALUE, or KEY to pass the host's value.
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// HOST:CTR[:ro], NAME:CTR[:ro] or CTR.
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// CTR[:OPTIONS].
    #[arg(long)]
    tmpfs: Vec<String>,
    /// type=bind|volume|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…].
    #[arg(long)]
    mount: Vec<String>,
    /// [IP:][HOST:]CTR[/PROTO].
    #[arg(short, long = "publish")]
    publish: Vec<String>,
    /// none, host, bridge, a network name or container:ID.
    #[arg(long = "network", alias = "net")]
    network: Option<String>,
    #[arg(long)]
    dns: Vec<String>,
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    #[arg(long = "dns-option")]
    dns_option: Vec<String>,
    /// NAME:IP.
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    #[arg(long, short = 'h')]
    hostname: Option<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(short, long)]
    memory: Option<String>,
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// CPU weight relative to other containers (cgroup cpu.shares).
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// Memory plus swap; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// host, or private (the default).
    #[arg(long)]
    pid: Option<String>,
    /// host, or private (the default).
    #[arg(long)]
    ipc: Option<String>,
    /// host, or private (the default).
    #[arg(long)]
    uts: Option<String>,
    /// The size of /dev/shm (64m by default).
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Supplementary groups (gids or names in the image's /etc/group).
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// Publish every exposed port on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Exposes PORT[/PROTO] (published with -P).
    #[arg(long)]
    expose: Vec<String>,
    /// Write the container ID to this file (which must not exist).
    #[arg(long)]
    cidfile: Option<PathBuf>,
    /// no, on-failure[:N], always or unless-stopped: started again after
    /// it exits (not after `stop` or `kill`; not at boot: no daemon).
    #[arg(long)]
    restart: Option<String>,
    #[arg(long = "read-only")]
    read_only: bool,
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    #[arg(long)]
    privileged: bool,
    /// seccomp=FILE|unconfined, no-new-privileges.
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Run a tiny init as process 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    #[arg(short, long = "label")]
    label: Vec<String>,
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<u64>,
    /// NAME=SOFT[:HARD].
    #[arg(long)]
    ulimit: Vec<String>,
    /// HOST[:CTR[:PERMS]].
    #[arg(long)]
    device: Vec<String>,
    /// KEY=VALUE.
    #[arg(long)]
    sysctl: Vec<String>,
    #[arg(long)]
    pod: Option<String>,
    /// os/arch[/variant] of the image to pull.
    #[arg(long)]
    platform: Option<String>,
    /// always, missing (default) or never.
    #[arg(long, default_value = "missing")]
    pull: String,
    /// The OCI runtime (a path, or a name in PATH): hako-runtime by default.
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Quiet pull.
    #[arg(short, long)]
    quiet: bool,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers.
    Ls(crate::ps::PsArgs),
    /// Remove every container that is not running.
    Prune {
        #[arg(short, long)]
        force: bool,
    },
    /// Show containers as JSON.
    Inspect {
        /// A Go template applied to each (`{{.State.Pid}}`), or `json`.
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Used by the monitor when a container exits.
    #[command(hide = true)]
    Cleanup { container: String },
}

pub(crate) fn engine(root: &Path, runroot: &Path) -> Result<Engine, Error> {
    Ok(Engine::open(root, runroot)?)
}

/// The options of `run`/`create`, checked.
fn create_options(a: &RunArgs) -> Result<CreateOptions, Error> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("--env-file {}: {e}", f.display()))?;
        for line in text.lines() {
            let l = line.trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            env.push(expand_env(l));
        }
    }
    for e in &a.env {
        env.push(expand_env(e));
    }
    let env: Vec<String> = env.into_iter().flatten().collect();
    let entrypoint = a.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            vec![String::new()]
        } else {
            vec![e.clone()]
        }
    });
    let mut volumes = a.volume.clone();
    let mut tmpfs = a.tmpfs.clone();
    for m in &a.mount {
        match parse_mount(m)? {
            MountFlag::Volume(v) => volumes.push(v),
            MountFlag::Tmpfs(t) => tmpfs.push(t),
        }
    }
    Ok(CreateOptions {
        image: a.image.clone(),
        name: a.name.clone(),
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        entrypoint,
        env,
        volumes,
        tmpfs,
        publish: a.publish.clone(),
        network: a.network.clone(),
        dns: a.dns.clone(),
        add_hosts: a.add_host.clone(),
        hostname: a.hostname.clone(),
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        memory: a.memory.clone(),
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        security_opt: a.security_opt.clone(),
        init: a.init,
        labels: a.label.clone(),
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        ulimits: a.ulimit.clone(),
        devices: a.device.clone(),
        sysctls: a.sysctl.clone(),
        pod: a.pod.clone(),
        interactive: a.interactive,
        tty: a.tty,
        auto_remove: a.rm,
        runtime: a.runtime.clone(),
        pid: a.pid.clone(),
        ipc: a.ipc.clone(),
        uts: a.uts.clone(),
        shm_size: a.shm_size.clone(),
        group_add: a.group_add.clone(),
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        cpu_shares: a.cpu_shares,
        memory_swap: a.memory_swap.clone(),
        memory_reservation: a.memory_reservation.clone(),
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_option.clone(),
        publish_all: a.publish_all,
        expose: a.expose.clone(),
        restart: a.restart.clone(),
    })
}

/// What a `--mount` is in `-v` or `--tmpfs` terms.
enum MountFlag {
    Volume(String),
    Tmpfs(String),
}

/// docker's `--mount type=bind|volume|tmpfs,source=…,target=…,readonly`.
fn parse_mount(m: &str) -> Result<MountFlag, Error> {
    let bad = |why: &str| -> Error { format!("--mount {m:?}: {why}").into() };
    let (mut kind, mut source, mut target) = ("volume".to_string(), None, None);
    let (mut read_only, mut propagation, mut tmpfs_opts) = (false, None, Vec::new());
    for part in m.split(',') {
        let (k, v) = part
            .split_once('=')
            .map_or((part, None), |(k, v)| (k, Some(v)));
        match (k, v) {
            ("type", Some(t)) => kind = t.to_string(),
            ("source" | "src", Some(v)) => source = Some(v.to_string()),
            ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_string()),
            ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
            ("readonly" | "ro", Some("false" | "0")) => read_only = false,
            ("bind-propagation", Some(p)) => propagation = Some(p.to_string()),
            ("volume-nocopy", _) => {}
            ("tmpfs-size", Some(v)) => tmpfs_opts.push(format!("size={v}")),
            ("tmpfs-mode", Some(v)) => tmpfs_opts.push(format!("mode={v}")),
            _ => return Err(bad(&format!("unknown key {k:?}"))),
        }
    }
    let target = target.ok_or_else(|| bad("target is required"))?;
    for p in [Some(&target), source.as_ref()].into_iter().flatten() {
        if p.contains(':') {
            return Err(bad("paths with ':' are not supported"));
        }
    }
    let mut opts: Vec<String> = Vec::new();
    if read_only {
        opts.push("ro".into());
    }
    opts.extend(propagation);
    let with_opts = |spec: String| {
        if opts.is_empty() {
            spec
        } else {
            format!("{spec}:{}", opts.join(","))
        }
    };
    match kind.as_str() {
        "bind" => {
            let src = source.ok_or_else(|| bad("a bind mount needs a source"))?;
            // Unlike -v, a missing source is an error, as in docker.
            if std::fs::symlink_metadata(&src).is_err() {
                return Err(bad(&format!("bind source path {src} does not exist")));
            }
            Ok(MountFlag::Volume(with_opts(format!("{src}:{target}"))))
        }
        "volume" => Ok(MountFlag::Volume(with_opts(match source {
            Some(name) => format!("{name}:{target}"),
            None => target,
        }))),
        "tmpfs" => {
            if source.is_some() {
                return Err(bad("a tmpfs has no source"));
            }
            if read_only {
                tmpfs_opts.push("ro".into());
            }
            Ok(MountFlag::Tmpfs(if tmpfs_opts.is_empty() {
                target
            } else {
                format!("{target}:{}", tmpfs_opts.join(","))
            }))
        }
        other => Err(bad(&format!(
            "type {other:?}: expected bind, volume or tmpfs"
        ))),
    }
}

/// `KEY=VALUE` as is; `KEY` takes the host's value (dropped if unset).
fn expand_env(e: &str) -> Option<String> {
    if e.contains('=') {
        return Some(e.to_string());
    }
    std::env::var(e).ok().map(|v| format!("{e}={v}"))
}

/// The image for `run`/`create`, pulled as `--pull` says.
fn image_for(engine: &Engine, a: &RunArgs) -> Result<ImageRecord, Error> {
    let store = engine.store();
    let wanted = a
        .platform
        .as_deref()
        .map(hako_image::manifest::Platform::parse)
        .transpose()?;
    let have = store.resolve(&a.image);
    // A local image of another platform than --platform names is not the
    // image asked for: it is pulled (or, with --pull never, refused).
    let other_platform = match (&have, &wanted) {
        (Ok(r), Some(w)) => hako_image::manifest::Platform::parse(&r.platform)
            .is_ok_and(|p| p.os != w.os || p.architecture != w.architecture)
            .then(|| r.platform.clone()),
        _ => None,
    };
    let have: Result<ImageRecord, Error> = match other_platform {
        Some(p) => Err(format!(
            "image {}: it is {p}, not the {} --platform asks for",
            a.image,
            a.platform.as_deref().unwrap_or_default()
        )
        .into()),
        None => have.map_err(Error::from),
    };
    match (a.pull.as_str(), have) {
        ("missing", Ok(r)) | ("never", Ok(r)) => Ok(r),
        ("never", Err(e)) => Err(e),
        ("always", _) | ("missing", Err(_)) => crate::pull_image(
            store,
            &a.image,
            a.platform.as_deref(),
            a.quiet || !std::io::stderr().is_terminal() && a.detach,
        ),
        (other, _) => Err(format!("--pull {other:?}: expected always, missing or never").into()),
    }
}

/// The exit code for a create that failed: 127 when the command is not
/// found, 126 when it cannot be run, else 125 (as docker).
fn create_failure_code(e: &EngineError) -> i32 {
    let msg = e.to_string();
    if !msg.contains("exec") {
        return EXIT_ENGINE;
    }
    exec_failure_code(&msg)
}

/// Prints `hako: MESSAGE` with its sources.
pub fn report(e: &(dyn std::error::Error + 'static)) {
    eprintln!("hako: {}", crate::error_text(e));
}

pub fn run(root: &Path, runroot: &Path, a: RunArgs, start: bool) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let detach_keys = hako_monitor::parse_detach_keys(&a.detach_keys)?;
    let opts = create_options(&a)?;
    if let Some(f) = &a.cidfile {
        if f.exists() {
            return Err(format!(
                "--cidfile {}: the file exists (another container's?): remove it first",
                f.display()
            )
            .into());
        }
    }
    let image = image_for(&engine, &a)?;
    let rec = match engine.create(&image, &opts) {
        Ok(r) => r,
        Err(e) => {
            let code = create_failure_code(&e);
            report(&e);
            return Ok(code);
        }
    };
    // A container that cannot go on is removed, with its --cidfile.
    let abandon = |e: &(dyn std::error::Error + 'static)| {
        report(e);
        let _ = engine.remove(&rec, true);
        if let Some(f) = &a.cidfile {
            let _ = std::fs::remove_file(f);
        }
        EXIT_ENGINE
    };
    if let Some(f) = &a.cidfile {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(f)
            .and_then(|mut file| file.write_all(rec.id.as_bytes()));
        if let Err(e) = written {
            let _ = engine.remove(&rec, true);
            return Err(format!("--cidfile {}: {e}", f.display()).into());
        }
    }
    if !start {
        outln!("{}", rec.id);
        return Ok(0);
    }
    if a.detach {
        if let Err(e) = engine.start(&rec) {
            return Ok(abandon(&e));
        }
        outln!("{}", rec.id);
        return Ok(0);
    }
    let run_dir = engine.run_dir(&rec.id);
    // Attached before start: nothing the container writes is missed.
    let attach = match hako_monitor::Attach::connect(&run_dir) {
        Ok(a) => a,
        Err(e) => return Ok(abandon(&e)),
    };
    if let Err(e) = engine.mark_attached(&rec).and_then(|()| engine.start(&rec)) {
        return Ok(abandon(&e));
    }
    let how = hako_monitor::AttachStdio {
        stdin: a.interactive,
        tty: a.tty,
        detach_keys,
    };
    let code = match forward_signals_while(&engine, &rec, || {
        hako_monitor::attach_stdio_with(attach, &run_dir, how)
    }) {
        // Detached: the container runs on; the monitor's exit command
        // cleans up (and removes it with --rm) when it exits.
        Err(e) if detached(&e) => return Ok(0),
        other => other?,
    };
    // Ours to clean up (the monitor's exit command sees us alive and
    // leaves it; had we been killed, it would have done it).
    if a.rm {
        engine.remove(&rec, true)?;
    } else {
        engine.cleanup(&rec.id)?;
    }
    Ok(code)
}

/// Whether an attach ended because the user typed the detach keys.
fn detached(e: &Error) -> bool {
    matches!(
        e.downcast_ref::<hako_monitor::AttachError>(),
        Some(hako_monitor::AttachError::Detached)
    )
}

/// Runs `f` while SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2
/// sent to us go to the container (docker's --sig-proxy).
fn forward_signals_while<T>(
    engine: &Engine,
    rec: &ContainerRecord,
    f: impl FnOnce() -> Result<T, hako_monitor::AttachError>,
) -> Result<T, Error> {
    let sigs = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in sigs {
        set.add(nix::sys::signal::Signal::try_from(s)?);
    }
    // Blocked here and taken by a thread with sigwait: no handler runs in
    // the middle of the attach loop.
    let old = set.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
    let id = rec.id.clone();
    let rt = engine.oci_runtime(rec);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let waiter = std::thread::spawn(move || {
        let _keep = w;
        while let Ok(sig) = set.wait() {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let _ = rt.kill(&id, sig as i32, false);
        }
    });
    let out = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Wake the waiter with one of its signals, sent to this thread group;
    // it sees `stop` and ends. (A waiter already gone would leave the
    // signal pending for us to die of once unblocked: then none is sent.)
    if !waiter.is_finished() {
        // SAFETY: sending a signal we block to our own process.
        unsafe { libc::kill(std::process::id() as i32, libc::SIGUSR2) };
    }
    let _ = waiter.join();
    drop(r);
    let _ = old.thread_set_mask();
    Ok(out?)
}

pub fn start(
    root: &Path,
    runroot: &Path,
    attach: bool,
    interactive: bool,
    detach_keys: &str,
    names: &[String],
) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let detach_keys = hako_monitor::parse_detach_keys(detach_keys)?;
    if attach {
        let [name] = names else {
            return Err("start --attach takes one container".into());
        };
        let rec = engine.find(name)?;
        if !engine.status(&rec).is_live() {
            // A new monitor first, so the attach sees everything.
            engine.prepare_start(&rec)?;
        }
        let run_dir = engine.run_dir(&rec.id);
        let a = hako_monitor::Attach::connect(&run_dir)?;
        engine.start(&rec)?;
        let how = hako_monitor::AttachStdio {
            stdin: interactive && rec.options.interactive,
            tty: rec.options.tty,
            detach_keys,
        };
        return match forward_signals_while(&engine, &rec, || {
            hako_monitor::attach_stdio_with(a, &run_dir, how)
        }) {
            Err(e) if detached(&e) => Ok(0),
            other => other,
        };
    }
    let mut code = 0;
    for n in names {
        match engine.find(n).and_then(|r| engine.start(&r)) {
            Ok(()) => outln!("{n}"),
            Err(e) => {
                report(&e);
                code = EXIT_ENGINE;
            }
        }
    }
    Ok(code)
}

pub fn stop(
    root: &Path,
    runroot: &Path,
    time: Option<u64>,
    names: &[String],
) -> Result<i32, Error> {
    each_container(root, runroot, names, |e, r| e.stop(r, time))
}

pub fn restart(
    root: &Path,
    runroot: &Path,
    time: Option<u64>,
    names: &[String],
) -> Result<i32, Error> {
    each_container(root, runroot, names, |e, r| e.restart(r, time))
}

/// `pause` (true) or `unpause` of each container.
pub fn pause(root: &Path, runroot: &Path, freeze: bool, names: &[String]) -> Result<i32, Error> {
    each_container(root, runroot, names, |e, r| {
        if freeze {
            e.pause(r)
        } else {
            e.unpause(r)
        }
    })
}

pub fn kill(root: &Path, runroot: &Path, signal: &str, names: &[String]) -> Result<i32, Error> {
    let sig = hako_engine::options::parse_signal(signal)
        .ok_or_else(|| format!("--signal {signal:?}: not a signal name or number"))?;
    each_container(root, runroot, names, |e, r| e.kill(r, sig))
}

pub fn rm(root: &Path, runroot: &Path, force: bool, names: &[String]) -> Result<i32, Error> {
    each_container(root, runroot, names, |e, r| e.remove(r, force))
}

/// `hako rename CONTAINER NAME`.
pub fn rename(root: &Path, runroot: &Path, container: &str, name: &str) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let rec = engine.find(container)?;
    engine.rename(&rec, name)?;
    Ok(0)
}

/// `f` on each container named, printing its name when done, reporting
/// (and going on) when not: 125 if any failed, as docker.
fn each_container(
    root: &Path,
    runroot: &Path,
    names: &[String],
    f: impl Fn(&Engine, &ContainerRecord) -> Result<(), EngineError>,
) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let mut code = 0;
    for n in names {
        match engine.find(n).and_then(|r| f(&engine, &r)) {
            Ok(()) => outln!("{n}"),
            Err(e) => {
                report(&e);
                code = EXIT_ENGINE;
            }
        }
    }
    Ok(code)
}

pub fn wait(root: &Path, runroot: &Path, names: &[String]) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let mut code = 0;
    for n in names {
        match engine.find(n).and_then(|r| engine.wait(&r)) {
            Ok(c) => outln!("{c}"),
            Err(e) => {
                report(&e);
                code = EXIT_ENGINE;
            }
        }
    }
    Ok(code)
}

pub(crate) fn labels(r: &ContainerRecord) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for l in &r.options.labels {
        if let Some((k, v)) = l.split_once('=') {
            m.insert(k.into(), v.into());
        }
    }
    serde_json::Value::Object(m)
}

/// docker's inspect document for a container.
pub fn inspect_json(engine: &Engine, r: &ContainerRecord) -> serde_json::Value {
    let st = engine.status(r);
    let (code, finished) = match &st {
        Status::Exited { code, finished_at } => (*code, finished_at.clone()),
        _ => (0, "0001-01-01T00:00:00Z".into()),
    };
    // What the container runs with: its bundle's process and mounts.
    let bundle: serde_json::Value =
        std::fs::read(engine.container_dir(&r.id).join("bundle/config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    let process = &bundle["process"];
    let user = match (
        process["user"]["uid"].as_u64(),
        process["user"]["gid"].as_u64(),
    ) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        _ => String::new(),
    };
    let ports = port_bindings(&r.network.ports);
    let networks = engine.attached_networks(r);
    let first = networks.first();
    let net_json: serde_json::Map<String, serde_json::Value> = networks
        .iter()
        .map(|n| {
            (
                n.network.clone(),
                serde_json::json!({
                    "IPAddress": n.ip.to_string(),
                    "IPPrefixLen": n.prefix,
                    "Gateway": n.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    "MacAddress": n.mac,
                    "Aliases": n.aliases,
                    "Bridge": n.bridge,
                }),
            )
        })
        .collect();
    let restart = hako_engine::options::RestartPolicy::parse(r.options.restart.as_deref())
        .unwrap_or(hako_engine::options::RestartPolicy::No)
        .docker();
    serde_json::json!({
        "Id": r.id,
        "Name": r.name,
        "Created": hako_engine::util::rfc3339_nanos(r.created),
        "RestartCount": engine.restart_count(r),
        "Path": r.args.first(),
        "Args": r.args.get(1..).unwrap_or_default(),
        "Image": r.image_id,
        "ImageName": r.image_name,
        "State": {
            "Status": st.word(),
            "Running": st.is_running(),
            "Dead": st == Status::Dead,
            "Pid": if st.is_running() { engine.pid(r).unwrap_or(0) } else { 0 },
            "ExitCode": code,
            "StartedAt": engine.started_at(r).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": finished,
            "Paused": st == Status::Paused,
            "Restarting": false,
            "OOMKilled": false,
            "Error": "",
        },
        "LogPath": engine.log_path(&r.id),
        "HostnamePath": engine.container_dir(&r.id).join("hostname"),
        "HostsPath": engine.container_dir(&r.id).join("hosts"),
        "ResolvConfPath": engine.container_dir(&r.id).join("resolv.conf"),
        "Config": {
            "Hostname": r.hostname,
            "Image": r.image,
            "Labels": labels(r),
            "StopSignal": r.stop_signal,
            "StopTimeout": r.stop_timeout,
            "Tty": r.options.tty,
            "OpenStdin": r.options.interactive,
            "Env": process["env"],
            "Cmd": r.args,
            "Entrypoint": r.options.entrypoint,
            "WorkingDir": process["cwd"],
            "User": user,
        },
        "HostConfig": {
            "AutoRemove": r.options.auto_remove,
            "NetworkMode": network_mode(engine, r),
            "PortBindings": ports,
            "Runtime": r.runtime,
            "Binds": r.options.volumes,
            "Tmpfs": r.options.tmpfs,
            "Privileged": r.options.privileged,
            "ReadonlyRootfs": r.options.read_only,
            "RestartPolicy": {
                "Name": restart.0,
                "MaximumRetryCount": restart.1,
            },
            "CapAdd": r.options.cap_add,
            "CapDrop": r.options.cap_drop,
        },
        "NetworkSettings": {
            "IPAddress": first.map(|n| n.ip.to_string()).unwrap_or_default(),
            "IPPrefixLen": first.map_or(0, |n| n.prefix),
            "Gateway": first.and_then(|n| n.gateway).map(|g| g.to_string()).unwrap_or_default(),
            "MacAddress": first.map(|n| n.mac.clone()).unwrap_or_default(),
            "Ports": ports,
            "Networks": net_json,
        },
        "Mounts": mounts_json(r, &bundle),
        "Volumes": r.volumes,
        "Snapshotter": r.snapshotter,
        "Pod": r.pod,
        "Options": r.options,
    })
}

/// docker's port map: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`.
fn port_bindings(ports: &[hako_network::PortMapping]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for p in ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let binding = serde_json::json!({
            "HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
            "HostPort": p.host_port.to_string(),
        });
        match m.get_mut(&key).and_then(|v| v.as_array_mut()) {
            Some(list) => list.push(binding),
            None => {
                m.insert(key, serde_json::json!([binding]));
            }
        }
    }
    serde_json::Value::Object(m)
}

/// docker's HostConfig.NetworkMode: none, host, a network's name,
/// `container:ID`; a pod member's is `container:` its infra.
fn network_mode(engine: &Engine, r: &ContainerRecord) -> String {
    use hako_engine::net::NetMode;
    match &r.network.mode {
        NetMode::None => "none".into(),
        NetMode::Host => "host".into(),
        NetMode::Network(n) => n.clone(),
        NetMode::Container(id) => format!("container:{id}"),
        NetMode::Pod(p) => match engine.find_pod(p) {
            Ok(pod) => format!("container:{}", pod.infra),
            Err(_) => format!("pod:{p}"),
        },
    }
}

/// docker's Mounts: each `-v` with where it comes from.
fn mounts_json(r: &ContainerRecord, bundle: &serde_json::Value) -> serde_json::Value {
    use hako_engine::options::{parse_volume, VolumeSource};
    let mut anonymous = r.anonymous_volumes.iter();
    let mut out = Vec::new();
    for v in &r.options.volumes {
        let Ok(spec) = parse_volume(v) else { continue };
        let source = bundle["mounts"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .rev()
                    .find(|m| m["destination"].as_str() == Some(spec.destination.as_str()))
            })
            .and_then(|m| m["source"].as_str())
            .unwrap_or_default()
            .to_string();
        let (kind, name) = match &spec.source {
            VolumeSource::Host(_) => ("bind", None),
            VolumeSource::Named(n) => ("volume", Some(n.clone())),
            VolumeSource::Anonymous => ("volume", anonymous.next().cloned()),
        };
        let mut m = serde_json::json!({
            "Type": kind,
            "Source": source,
            "Destination": spec.destination,
            "Mode": if spec.read_only { "ro" } else { "" },
            "RW": !spec.read_only,
        });
        if let Some(n) = name {
            m["Name"] = n.into();
            m["Driver"] = "local".into();
        }
        out.push(m);
    }
    serde_json::Value::Array(out)
}

pub fn inspect(
    root: &Path,
    runroot: &Path,
    names: &[String],
    format: Option<&str>,
) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let mut out = Vec::new();
    let mut code = 0;
    for n in names {
        match engine.find(n) {
            Ok(r) => out.push(inspect_json(&engine, &r)),
            Err(e) => {
                report(&e);
                code = EXIT_ENGINE;
            }
        }
    }
    print_inspected(&out, format)?;
    Ok(code)
}

/// One document: pretty JSON, or `--format` applied to it.
pub fn print_inspected_one(doc: &serde_json::Value, format: Option<&str>) -> Result<(), Error> {
    match format {
        None => outln!("{}", serde_json::to_string_pretty(doc)?),
        Some(f) => crate::template::print(
            f,
            &serde_json::Value::Null,
            std::slice::from_ref(doc),
            Some(doc),
        )?,
    }
    Ok(())
}

/// inspect's output: the JSON array, or `--format` applied to each.
pub fn print_inspected(docs: &[serde_json::Value], format: Option<&str>) -> Result<(), Error> {
    match format {
        None => outln!("{}", serde_json::to_string_pretty(docs)?),
        Some(f) => crate::template::print(f, &serde_json::Value::Null, docs, None)?,
    }
    Ok(())
}

pub fn logs(
    root: &Path,
    runroot: &Path,
    follow: bool,
    since: Option<&str>,
    tail: Option<&str>,
    timestamps: bool,
    name: &str,
) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let rec = engine.find(name)?;
    let since = since.map(parse_since).transpose()?;
    let tail = match tail {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| format!("--tail {n:?}: a number or \"all\""))?,
        ),
    };
    let follow = if follow && engine.status(&rec).is_live() {
        hako_monitor::Follow::UntilExit {
            run_dir: engine.run_dir(&rec.id),
        }
    } else {
        hako_monitor::Follow::No
    };
    let path = engine.log_path(&rec.id);
    if !path.exists() && follow == hako_monitor::Follow::No {
        return Ok(0);
    }
    let reader = hako_monitor::read_log(&path, follow, since, tail)?;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for line in hako_monitor::join_partials(reader) {
        let line = line?;
        let out: &mut dyn Write = match line.stream {
            hako_monitor::Stream::Stdout => &mut stdout,
            hako_monitor::Stream::Stderr => &mut stderr,
        };
        let written = (|| {
            if timestamps {
                write!(out, "{} ", line.timestamp.to_rfc3339())?;
            }
            out.write_all(&line.content)?;
            if line.complete {
                out.write_all(b"\n")?;
            }
            out.flush()
        })();
        if let Err(e) = written {
            crate::stdout::failed(&e);
        }
    }
    Ok(0)
}

/// `--since`: RFC 3339, a Unix time, or a duration back from now (`10m`,
/// `1h30m`, `45s`).
fn parse_since(s: &str) -> Result<std::time::SystemTime, Error> {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    if let Some(n) = hako_engine::util::parse_rfc3339_nanos(s) {
        return Ok(UNIX_EPOCH + Duration::from_nanos(n.max(0) as u64));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    let mut total = 0f64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num
            .parse()
            .map_err(|_| format!("--since {s:?}: a time or a duration like 10m"))?;
        num.clear();
        total += n * match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => return Err(format!("--since {s:?}: unknown unit {c:?}").into()),
        };
    }
    if !num.is_empty() {
        return Err(format!("--since {s:?}: a duration needs a unit (s, m, h)").into());
    }
    Ok(SystemTime::now() - Duration::from_secs_f64(total))
}

pub fn container_cmd(root: &Path, runroot: &Path, c: ContainerCommand) -> Result<i32, Error> {
    match c {
        ContainerCommand::Ls(a) => crate::ps::ps(root, runroot, &a),
        ContainerCommand::Inspect { format, containers } => {
            inspect(root, runroot, &containers, format.as_deref())
        }
        ContainerCommand::Prune { .. } => {
            let engine = engine(root, runroot)?;
            for id in engine.prune()? {
                outln!("{id}");
            }
            Ok(0)
        }
        ContainerCommand::Cleanup { container } => {
            if Engine::attached_cli_alive(runroot, &container) {
                return Ok(0);
            }
            engine(root, runroot)?.cleanup(&container)?;
            Ok(0)
        }
    }
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(short, long)]
    interactive: bool,
    #[arg(short, long)]
    tty: bool,
    #[arg(short, long)]
    detach: bool,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn exec(root: &Path, runroot: &Path, a: ExecArgs) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let rec = engine.find(&a.container)?;
    let req = hako_engine::ExecRequest {
        args: a.command.clone(),
        env: a.env.iter().filter_map(|e| expand_env(e)).collect(),
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        tty: a.tty,
        detach: a.detach,
    };
    let mut exec = engine.exec_command(&rec, &req)?;
    if !a.interactive {
        exec.command.stdin(std::process::Stdio::null());
    }
    let status = exec.command.status();
    let failure = exec.runtime_error();
    exec.clean();
    let status = status.map_err(|e| format!("running {}: {e}", rec.runtime.display()))?;
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    // The runtime could not start the process (it said why on stderr):
    // 127 not found, 126 not runnable, 125 else, as podman.
    Ok(match failure {
        Some(msg) if code != 0 => exec_failure_code(&msg),
        _ => code,
    })
}

fn exec_failure_code(msg: &str) -> i32 {
    if msg.contains("not found") || msg.contains("No such file") || msg.contains("no such file") {
        EXIT_NOT_FOUND
    } else if msg.contains("ermission denied")
        || msg.contains("not executable")
        || msg.contains("is a directory")
    {
        EXIT_CANNOT_INVOKE
    } else {
        EXIT_ENGINE
    }
}

/// `hako port CONTAINER`: its published ports.
pub fn port(root: &Path, runroot: &Path, name: &str) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let rec = engine.find(name)?;
    let rec = match &rec.pod {
        Some(p) => engine.find(&engine.find_pod(p)?.infra)?,
        None => rec,
    };
    for p in &rec.network.ports {
        outln!(
            "{}/{} -> {}:{}",
            p.container_port,
            p.protocol,
            p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string()),
            p.host_port
        );
    }
    Ok(0)
}

/// `hako attach`: the container's live output (and stdin, if it has one)
/// until it exits; signals go to it, as docker's --sig-proxy.
pub fn attach(
    root: &Path,
    runroot: &Path,
    no_stdin: bool,
    detach_keys: &str,
    name: &str,
) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let detach_keys = hako_monitor::parse_detach_keys(detach_keys)?;
    let rec = engine.find(name)?;
    let st = engine.status(&rec);
    if !st.is_running() {
        return Err(EngineError::State {
            name: rec.name.clone(),
            state: st.word().into(),
            hint: "only a running container can be attached to",
        }
        .into());
    }
    let run_dir = engine.run_dir(&rec.id);
    let a = hako_monitor::Attach::connect(&run_dir)?;
    let how = hako_monitor::AttachStdio {
        stdin: rec.options.interactive && !no_stdin,
        tty: rec.options.tty,
        detach_keys,
    };
    match forward_signals_while(&engine, &rec, || {
        hako_monitor::attach_stdio_with(a, &run_dir, how)
    }) {
        Err(e) if detached(&e) => Ok(0),
        other => other,
    }
}

/// `hako top`: the container's processes, through the runtime's `ps`.
pub fn top(root: &Path, runroot: &Path, name: &str, ps_args: &[String]) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let rec = engine.find(name)?;
    let st = engine.status(&rec);
    if !st.is_running() {
        return Err(EngineError::State {
            name: rec.name.clone(),
            state: st.word().into(),
            hint: "top needs a running container",
        }
        .into());
    }
    let mut c = engine.oci_runtime(&rec).command(&["ps", &rec.id]);
    if !ps_args.is_empty() {
        c.arg("--").args(ps_args);
    }
    let status = c
        .status()
        .map_err(|e| format!("running {}: {e}", rec.runtime.display()))?;
    Ok(status.code().unwrap_or(EXIT_ENGINE))
}

/// One reading of a container's cgroup through `runtime events --stats`.
struct Sample {
    cpu_ns: u64,
    mem: u64,
    limit: u64,
    pids: u64,
    at: std::time::Instant,
}

fn sample(engine: &Engine, rec: &ContainerRecord) -> Option<Sample> {
    let out = engine
        .oci_runtime(rec)
        .command(&["events", "--stats", &rec.id])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let d = &v["data"];
    let mem = &d["memory"];
    let cache = mem["raw"]["total_inactive_file"]
        .as_u64()
        .or(mem["raw"]["inactive_file"].as_u64())
        .unwrap_or(0);
    let limit = mem["usage"]["limit"].as_u64().unwrap_or(0);
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX);
    Some(Sample {
        cpu_ns: d["cpu"]["usage"]["total"].as_u64().unwrap_or(0),
        mem: mem["usage"]["usage"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(cache),
        limit: if limit == 0 || limit > host {
            host
        } else {
            limit
        },
        pids: d["pids"]["current"].as_u64().unwrap_or(0),
        at: std::time::Instant::now(),
    })
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", units[i])
}

/// `hako stats`: CPU, memory and pids of running containers (all of them
/// without names), every second, or once with --no-stream.
pub fn stats(
    root: &Path,
    runroot: &Path,
    no_stream: bool,
    format: Option<&str>,
    names: &[String],
) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    if let Some(f) = format {
        crate::template::Format::parse(f)?;
    }
    let pick = || -> Result<Vec<ContainerRecord>, Error> {
        Ok(if names.is_empty() {
            engine
                .list()?
                .into_iter()
                .filter(|r| r.infra_for.is_none() && engine.status(r).is_running())
                .collect()
        } else {
            names
                .iter()
                .map(|n| engine.find(n))
                .collect::<Result<_, _>>()?
        })
    };
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut prev: std::collections::HashMap<String, Sample> = Default::default();
    loop {
        let recs = pick()?;
        for r in &recs {
            if let Some(s) = sample(&engine, r) {
                prev.insert(r.id.clone(), s);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(if no_stream {
            500
        } else {
            1000
        }));
        if !no_stream && format.is_none() {
            out!("\x1b[2J\x1b[H");
        }
        let mut rows = Vec::new();
        for r in &recs {
            let Some(now) = sample(&engine, r) else {
                continue;
            };
            let cpu = prev.get(&r.id).map_or(0.0, |p| {
                let dt = now.at.duration_since(p.at).as_nanos() as f64;
                if dt > 0.0 {
                    (now.cpu_ns.saturating_sub(p.cpu_ns)) as f64 / dt * 100.0
                } else {
                    0.0
                }
            });
            let cpu = cpu.min(100.0 * ncpu);
            let mem_perc = now.mem as f64 / now.limit.max(1) as f64 * 100.0;
            // docker's stats template fields.
            rows.push(serde_json::json!({
                "ID": &r.id[..12], "Container": &r.id[..12], "Name": r.name,
                "CPUPerc": format!("{cpu:.2}%"),
                "MemUsage": format!("{} / {}", human_bytes(now.mem), human_bytes(now.limit)),
                "MemPerc": format!("{mem_perc:.2}%"),
                "PIDs": now.pids.to_string(),
            }));
            prev.insert(r.id.clone(), now);
        }
        match format {
            Some(f) => {
                let header = serde_json::json!({
                    "ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME",
                    "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                    "PIDs": "PIDS",
                });
                crate::template::print(f, &header, &rows, None)?;
            }
            None => {
                let mut table = Table::new(&[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "PIDS",
                ]);
                for row in &rows {
                    let cell = |k: &str| row[k].as_str().unwrap_or_default().to_string();
                    table.row(
                        ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "PIDs"]
                            .map(cell)
                            .to_vec(),
                    );
                }
                table.print();
            }
        }
        std::io::stdout().flush()?;
        if no_stream {
            return Ok(0);
        }
    }
}

/// `hako cp CONTAINER:SRC DEST` or `hako cp SRC CONTAINER:DEST`.
pub fn cp(root: &Path, runroot: &Path, src: &str, dest: &str) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let split = |s: &str| -> Option<(String, String)> {
        if s.starts_with('/') || s.starts_with('.') {
            return None;
        }
        let (c, p) = s.split_once(':')?;
        Some((c.to_string(), p.to_string()))
    };
    let (rec, how) = match (split(src), split(dest)) {
        (Some((c, p)), None) => (
            engine.find(&c)?,
            hako_engine::copy::Copy::Out {
                src: p,
                dest: PathBuf::from(dest),
            },
        ),
        (None, Some((c, p))) => (
            engine.find(&c)?,
            hako_engine::copy::Copy::In {
                src: PathBuf::from(src),
                dest: p,
            },
        ),
        _ => return Err("cp: exactly one of SRC and DEST is CONTAINER:PATH".into()),
    };
    engine.copy(&rec, &how)?;
    Ok(0)
}
