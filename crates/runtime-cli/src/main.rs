//! `hako-runtime`: runc's command line over the hako runtime library.
//! Only argument parsing, output formatting and exit codes live here.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hako_runtime::{log, CreateOptions, ExecOptions, Runtime, RuntimeError};

#[derive(Parser)]
#[command(
    name = "hako-runtime",
    about = "Run OCI containers (runc-compatible command line)",
    disable_version_flag = true
)]
struct Cli {
    /// Directory for container state [default: /run/hako-runtime for root,
    /// $XDG_RUNTIME_DIR/hako-runtime for other users].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Write log lines to this file instead of stderr.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Log format.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log debug lines too.
    #[arg(long)]
    debug: bool,
    /// Manage cgroups through systemd (needs a running systemd).
    #[arg(long = "systemd-cgroup")]
    systemd_cgroup: bool,
    /// Rootless mode: auto, true or false.
    #[arg(long, default_value = "auto")]
    rootless: String,
    /// Accepted for runc compatibility; checkpointing is not supported.
    #[arg(long, hide = true)]
    criu: Option<String>,
    /// Print version information.
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Args)]
struct CreateArgs {
    /// Path to the bundle directory.
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    /// File to write the container's init pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master of a terminal container.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass this many extra fds (3, 4, …) into the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Container ID.
    id: String,
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.as_ref().map(absolute),
            console_socket: self.console_socket.clone(),
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds + listen_fds(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a container (set up, but do not run the user process).
    Create(CreateArgs),
    /// Start the user process of a created container.
    Start { id: String },
    /// Create and start a container, wait for it, and delete it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container runs.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal to a container's init (or all its processes).
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        /// Signal name (TERM, SIGTERM) or number; default SIGTERM.
        signal: Option<String>,
    },
    /// Delete a container and its resources.
    Delete {
        /// Kill the container first if it is running.
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Print only IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        id: String,
        /// Options for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run a new process in a running container.
    Exec(Box<ExecArgs>),
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for running as an unprivileged user.
        #[arg(long)]
        rootless: bool,
        /// The hardened default profile: Docker's default capabilities and
        /// seccomp allowlist, masked and read-only paths.
        #[arg(long)]
        hardened: bool,
    },
    /// Print the runtime's features as JSON (runtime-spec features.md).
    Features,
    /// Print resource usage statistics (once with --stats, else every --interval).
    Events {
        #[arg(long)]
        stats: bool,
        /// Time between two reports (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Change the resource limits of a running container.
    Update(Box<UpdateArgs>),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
}

#[derive(Args)]
struct UpdateArgs {
    /// A linux.resources JSON document ("-" reads standard input).
    #[arg(short, long)]
    resources: Option<PathBuf>,
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-share")]
    cpu_share: Option<u64>,
    #[arg(long = "cpu-rt-period")]
    cpu_rt_period: Option<u64>,
    #[arg(long = "cpu-rt-runtime")]
    cpu_rt_runtime: Option<i64>,
    /// cgroup2 cpu.idle: 1 runs the container at SCHED_IDLE priority.
    #[arg(long = "cpu-idle", allow_hyphen_values = true)]
    cpu_idle: Option<i64>,
    /// CFS burst in microseconds.
    #[arg(long = "cpu-burst")]
    cpu_burst: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Memory limit in bytes (suffixes k, m, g accepted; -1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Memory plus swap limit.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long = "kernel-memory", allow_hyphen_values = true)]
    kernel_memory: Option<String>,
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    kernel_memory_tcp: Option<String>,
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    id: String,
}

#[derive(Args)]
struct ExecArgs {
    /// A process.json to run instead of ARGS.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=value).
    #[arg(short, long)]
    env: Vec<String>,
    /// Working directory in the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Additional gids.
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// Add a capability (bounding, effective, permitted and ambient sets).
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    #[arg(long)]
    apparmor: Option<String>,
    #[arg(long = "process-label")]
    process_label: Option<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted for runc compatibility.
    #[arg(long = "ignore-paused", hide = true)]
    ignore_paused: bool,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn version_text() -> String {
    format!(
        "{}\nspec: {}\ncgroups: v1, v2, hybrid",
        env!("CARGO_PKG_VERSION"),
        hako_runtime::OCI_VERSION
    )
}

fn absolute(p: &PathBuf) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.clone())
}

/// Socket-activation fds passed through, as runc does.
fn listen_fds() -> u32 {
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// runc (urfave/cli) accepts single-dash long flags (`-root x`); clap does
/// not, so rewrite the ones callers use.
fn normalise_args(args: impl Iterator<Item = String>) -> Vec<String> {
    const LONG: &[&str] = &[
        "root",
        "log",
        "log-format",
        "debug",
        "systemd-cgroup",
        "rootless",
        "criu",
        "bundle",
        "pid-file",
        "console-socket",
        "no-pivot",
        "no-new-keyring",
        "preserve-fds",
        "detach",
        "force",
        "all",
        "format",
        "process",
        "tty",
        "env",
        "cwd",
        "user",
        "cap",
        "no-new-privs",
        "keep",
        "quiet",
        "apparmor",
        "process-label",
        "additional-gids",
        "ignore-paused",
    ];
    let mut out = Vec::new();
    let mut after_id = false;
    for a in args {
        if a == "--" {
            after_id = true;
        }
        if !after_id && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
            let name = a[1..].split('=').next().unwrap_or("");
            if LONG.contains(&name) {
                out.push(format!("-{a}"));
                continue;
            }
        }
        out.push(a);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalise_args(std::env::args()));
    let log_file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let format = match cli.log_format {
        LogFormat::Text => log::Format::Text,
        LogFormat::Json => log::Format::Json,
    };
    log::init(log_file, format, cli.debug);
    if cli.version {
        println!("hako-runtime version {}", version_text());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command.as_ref() else {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::from(1);
    };
    if !matches!(cli.rootless.as_str(), "auto" | "true" | "false") {
        eprintln!("hako-runtime: --rootless must be auto, true or false");
        return ExitCode::from(1);
    }
    // Commands whose processes enter a container run from a sealed copy
    // of this binary (CVE-2019-5736); see hako_runtime::sealed_exe.
    if matches!(
        command,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_)
    ) {
        if let Err(e) = hako_runtime::sealed_exe::reexec_sealed() {
            log::log(log::Level::Warn, &e.to_string());
        }
    }
    let root = cli.root.clone().unwrap_or_else(default_root);
    let runtime = Runtime::new(root, cli.systemd_cgroup);
    match dispatch(&runtime, command) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let msg = e.to_string();
            if log::has_file() {
                log::log(log::Level::Error, &msg);
            }
            eprintln!("hako-runtime: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Where state lives without --root: /run for root, the user's runtime
/// directory otherwise (rootless mode), like runc.
fn default_root() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return PathBuf::from("/run/hako-runtime");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("hako-runtime"),
        None => std::env::temp_dir().join(format!("hako-runtime-{euid}")),
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<i32, RuntimeError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| RuntimeError::Usage(e.to_string()))?;
    let _ = writeln!(std::io::stdout(), "{text}");
    Ok(0)
}

fn dispatch(rt: &Runtime, command: &Command) -> Result<i32, RuntimeError> {
    match command {
        Command::Create(args) => rt.create(&args.options()).map(|_| 0),
        Command::Start { id } => rt.start(id).map(|_| 0),
        Command::Run {
            create,
            detach,
            keep,
        } => rt.run(&create.options(), *detach, *keep),
        Command::State { id } => print_json(&rt.state(id)?),
        Command::Kill { all, id, signal } => {
            let name = signal.as_deref().unwrap_or("SIGTERM");
            let sig = hako_runtime::signal::parse(name)
                .ok_or_else(|| RuntimeError::Usage(format!("unknown signal {name:?}")))?;
            rt.kill(id, sig, *all).map(|_| 0)
        }
        Command::Delete { force, id } => match rt.delete(id, *force) {
            // runc: deleting a missing container with --force succeeds.
            Err(RuntimeError::State(hako_runtime::state::StateError::NotFound(_))) if *force => {
                Ok(0)
            }
            other => other.map(|_| 0),
        },
        Command::List { format, quiet } => {
            let list = rt.list()?;
            if *quiet {
                for s in &list {
                    println!("{}", s.id);
                }
            } else if *format == Format::Json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<12} {:<10} {:<10} {:<40} {:<30} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for s in &list {
                    println!(
                        "{:<12} {:<10} {:<10} {:<40} {:<30} {}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display(),
                        s.created,
                        owner_name()
                    );
                }
            }
            Ok(0)
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = rt.pids(id)?;
            if *format == Format::Json {
                return print_json(&pids);
            }
            ps_table(&pids, ps_args)
        }
        Command::Exec(args) => exec(rt, args),
        Command::Spec {
            bundle,
            rootless,
            hardened,
        } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(RuntimeError::Usage(format!(
                    "{} exists; remove it first",
                    path.display()
                )));
            }
            let mut config = hako_runtime::defaults::default_spec(*rootless);
            if *hardened {
                hako_runtime::hardened::apply(&mut config);
            }
            let text = serde_json::to_string_pretty(&config)
                .map_err(|e| RuntimeError::Usage(e.to_string()))?;
            std::fs::write(&path, text + "\n").map_err(|e| RuntimeError::Sys {
                what: format!("writing {}", path.display()),
                source: e,
            })?;
            Ok(0)
        }
        Command::Features => print_json(&hako_runtime::defaults::features()),
        Command::Events {
            stats,
            interval,
            id,
        } => {
            let every = parse_interval(interval)?;
            let mut ooms = rt.oom_kills(id)?;
            loop {
                // OOM kills since the last report become "oom" events (runc's).
                let now = rt.oom_kills(id)?;
                if now > ooms {
                    let line = serde_json::json!({"type": "oom", "id": id});
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                    ooms = now;
                }
                let data = match rt.stats(id) {
                    Ok(d) => d,
                    // The stream ends when the container does.
                    Err(RuntimeError::WrongStatus {
                        status: "stopped", ..
                    }) if !*stats => return Ok(0),
                    Err(e) => return Err(e),
                };
                let line = serde_json::json!({"type": "stats", "id": id, "data": data});
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
                if *stats {
                    return Ok(0);
                }
                std::thread::sleep(every);
            }
        }
        Command::Update(args) => {
            let res = update_resources(args)?;
            for w in rt.update(&args.id, &res)? {
                log::log(log::Level::Warn, &w);
            }
            Ok(0)
        }
        Command::Pause { id } => rt.set_paused(id, true).map(|_| 0),
        Command::Resume { id } => rt.set_paused(id, false).map(|_| 0),
    }
}

fn owner_name() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        "root".into()
    } else {
        uid.to_string()
    }
}

/// Runs ps(1) and keeps the header and the lines of the container's pids.
fn ps_table(pids: &[i32], ps_args: &[String]) -> Result<i32, RuntimeError> {
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| RuntimeError::Sys {
            what: "running ps".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Usage(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| RuntimeError::Usage("ps output has no PID column".into()))?;
    println!("{header}");
    for line in lines {
        if let Some(pid) = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&pid) {
                println!("{line}");
            }
        }
    }
    Ok(0)
}

fn exec(rt: &Runtime, a: &ExecArgs) -> Result<i32, RuntimeError> {
    let process = match &a.process {
        Some(path) => {
            let raw = std::fs::read(path).map_err(|e| RuntimeError::Sys {
                what: format!("reading --process {}", path.display()),
                source: e,
            })?;
            let mut p: oci_spec::runtime::Process = serde_json::from_slice(&raw)
                .map_err(|e| RuntimeError::Usage(format!("--process {}: {e}", path.display())))?;
            // Security settings the file leaves out come from the container,
            // never from the runtime's own (full) privileges.
            let defaults = rt.exec_defaults(&a.id)?;
            if p.capabilities().is_none() {
                p.set_capabilities(defaults.capabilities().clone());
            }
            if p.no_new_privileges().is_none() {
                p.set_no_new_privileges(defaults.no_new_privileges());
            }
            if p.apparmor_profile().is_none() {
                p.set_apparmor_profile(defaults.apparmor_profile().clone());
            }
            if p.selinux_label().is_none() {
                p.set_selinux_label(defaults.selinux_label().clone());
            }
            p
        }
        None => {
            if a.command.is_empty() {
                return Err(RuntimeError::Usage(
                    "exec: give a command or --process".into(),
                ));
            }
            let mut p = rt.exec_defaults(&a.id)?;
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(a.tty));
            let mut env = p.env().clone().unwrap_or_default();
            for e in &a.env {
                let key = e.split('=').next().unwrap_or("");
                env.retain(|x| x.split('=').next() != Some(key));
                env.push(e.clone());
            }
            p.set_env(Some(env));
            if let Some(cwd) = &a.cwd {
                p.set_cwd(cwd.clone());
            }
            if let Some(u) = &a.user {
                let (uid, gid) = match u.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (u.as_str(), None),
                };
                let uid: u32 = uid.parse().map_err(|_| {
                    RuntimeError::Usage(format!("--user {u:?}: uid must be a number"))
                })?;
                let mut user = p.user().clone();
                user.set_uid(uid);
                if let Some(g) = gid {
                    user.set_gid(g.parse().map_err(|_| {
                        RuntimeError::Usage(format!("--user {u:?}: gid must be a number"))
                    })?);
                }
                p.set_user(user);
            }
            if !a.additional_gids.is_empty() {
                let mut user = p.user().clone();
                user.set_additional_gids(Some(a.additional_gids.clone()));
                p.set_user(user);
            }
            if !a.cap.is_empty() {
                let mut caps = p.capabilities().clone().unwrap_or_default();
                for name in &a.cap {
                    let cap: oci_spec::runtime::Capability =
                        serde_json::from_value(serde_json::Value::String(name.clone())).map_err(
                            |_| RuntimeError::Usage(format!("--cap {name:?}: unknown capability")),
                        )?;
                    // Never inheritable: see CVE-2022-29162.
                    for set in [
                        caps.bounding().clone(),
                        caps.effective().clone(),
                        caps.permitted().clone(),
                        caps.ambient().clone(),
                    ]
                    .iter()
                    .enumerate()
                    {
                        let mut s = set.1.clone().unwrap_or_default();
                        s.insert(cap);
                        match set.0 {
                            0 => caps.set_bounding(Some(s)),
                            1 => caps.set_effective(Some(s)),
                            2 => caps.set_permitted(Some(s)),
                            _ => caps.set_ambient(Some(s)),
                        };
                    }
                }
                p.set_capabilities(Some(caps));
            }
            if a.no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if let Some(prof) = &a.apparmor {
                p.set_apparmor_profile(Some(prof.clone()));
            }
            if let Some(label) = &a.process_label {
                p.set_selinux_label(Some(label.clone()));
            }
            p
        }
    };
    let opts = ExecOptions {
        process,
        detach: a.detach,
        pid_file: a.pid_file.as_ref().map(absolute),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
    };
    let _ = a.ignore_paused;
    rt.exec(&a.id, &opts)
}

/// Parses an interval like `5s`, `500ms`, `1m` (a bare number is seconds).
fn parse_interval(v: &str) -> Result<std::time::Duration, RuntimeError> {
    let bad = || {
        RuntimeError::Usage(format!(
            "--interval {v:?}: expected a duration like 5s or 500ms"
        ))
    };
    let (num, unit_ms) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (v, 1000.0)
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    if n.is_nan() || n <= 0.0 || n * unit_ms > 86_400_000.0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_millis((n * unit_ms) as u64))
}

/// Parses a byte count like runc: plain bytes or with a k/m/g/t suffix
/// (binary multiples), "-1" for unlimited.
fn parse_bytes(flag: &str, v: &str) -> Result<i64, RuntimeError> {
    let bad = || {
        RuntimeError::Usage(format!(
            "--{flag} {v:?}: expected bytes like 512m, 1g or -1"
        ))
    };
    if v == "-1" {
        return Ok(-1);
    }
    let lower = v.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        _ => (lower, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if n.is_nan() || n < 0.0 || n * (mult as f64) > i64::MAX as f64 {
        return Err(bad());
    }
    Ok((n * mult as f64) as i64)
}

/// The resources `update` applies: the --resources document, or one built
/// from the individual flags.
fn update_resources(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources, RuntimeError> {
    use serde_json::{json, Map, Value};
    if let Some(path) = &a.resources {
        let raw = if path.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(|e| {
                RuntimeError::Sys {
                    what: "reading resources from stdin".into(),
                    source: e,
                }
            })?;
            buf
        } else {
            std::fs::read(path).map_err(|e| RuntimeError::Sys {
                what: format!("reading --resources {}", path.display()),
                source: e,
            })?
        };
        return serde_json::from_slice(&raw).map_err(|e| {
            RuntimeError::Usage(format!("--resources: not a linux.resources document: {e}"))
        });
    }
    let mut memory = Map::new();
    for (key, flag, v) in [
        ("limit", "memory", &a.memory),
        ("reservation", "memory-reservation", &a.memory_reservation),
        ("swap", "memory-swap", &a.memory_swap),
        ("kernel", "kernel-memory", &a.kernel_memory),
        ("kernelTCP", "kernel-memory-tcp", &a.kernel_memory_tcp),
    ] {
        if let Some(v) = v {
            memory.insert(key.into(), json!(parse_bytes(flag, v)?));
        }
    }
    let mut cpu = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            cpu.insert(k.into(), v);
        }
    };
    put("shares", a.cpu_share.map(|v| json!(v)));
    put("quota", a.cpu_quota.map(|v| json!(v)));
    put("period", a.cpu_period.map(|v| json!(v)));
    put("realtimeRuntime", a.cpu_rt_runtime.map(|v| json!(v)));
    put("realtimePeriod", a.cpu_rt_period.map(|v| json!(v)));
    put("idle", a.cpu_idle.map(|v| json!(v)));
    put("burst", a.cpu_burst.map(|v| json!(v)));
    put("cpus", a.cpuset_cpus.clone().map(Value::String));
    put("mems", a.cpuset_mems.clone().map(Value::String));
    let mut res = Map::new();
    if !memory.is_empty() {
        res.insert("memory".into(), Value::Object(memory));
    }
    if !cpu.is_empty() {
        res.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(l) = a.pids_limit {
        res.insert("pids".into(), json!({ "limit": l }));
    }
    if let Some(w) = a.blkio_weight {
        res.insert("blockIO".into(), json!({ "weight": w }));
    }
    if res.is_empty() {
        return Err(RuntimeError::Usage(
            "update: give --resources or at least one limit flag".into(),
        ));
    }
    serde_json::from_value(Value::Object(res))
        .map_err(|e| RuntimeError::Usage(format!("update: {e}")))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("memory", "1024").ok(), Some(1024));
        assert_eq!(parse_bytes("memory", "64m").ok(), Some(64 << 20));
        assert_eq!(parse_bytes("memory", "1G").ok(), Some(1 << 30));
        assert_eq!(parse_bytes("memory", "2kb").ok(), Some(2048));
        assert_eq!(parse_bytes("memory", "-1").ok(), Some(-1));
        assert!(parse_bytes("memory", "lots").is_err());
        assert!(parse_bytes("memory", "-5").is_err());
        assert!(parse_bytes("memory", "99999999999t").is_err());
    }
}

#[cfg(test)]
mod interval_tests {
    use super::parse_interval;
    use std::time::Duration;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_interval("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_interval("2").ok(), Some(Duration::from_secs(2)));
        assert_eq!(parse_interval("1m").ok(), Some(Duration::from_secs(60)));
        for bad in ["", "0s", "-1s", "soon", "NaNs"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
