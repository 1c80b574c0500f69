//! Starting a monitor from the engine: [`spawn`].

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::protocol;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("creating the monitor's sync pipe: {0}")]
    SyncPipe(nix::errno::Errno),
    #[error("starting the monitor {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for the monitor {path}: {source}")]
    Wait {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The monitor refused its arguments (its stderr says why).
    #[error("the monitor {path} failed to start ({status}): {stderr}")]
    Start {
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("reading the monitor's create report: {0}")]
    ReadSync(std::io::Error),
    /// The monitor ended without reporting (it crashed or was killed).
    #[error("the monitor for {id} exited without reporting the create result")]
    NoReport { id: String },
    #[error("the monitor for {id} sent a malformed create report {line:?}")]
    BadReport { id: String, line: String },
    /// The runtime's create failed; the message is the runtime's own text.
    #[error("creating container {id}: {message}")]
    Create { id: String, message: String },
    #[error("reading {path}: {source}")]
    MonitorPid {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to start a monitor with; mirrors `hako-monitor`'s flags.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// The hako-monitor executable.
    pub monitor: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    /// The run dir (created by the caller, mode 0700; removed by it too).
    pub run_dir: PathBuf,
    pub log_path: PathBuf,
    /// None: `hako-runtime` next to the monitor executable, else in PATH.
    pub runtime: Option<PathBuf>,
    /// Global runtime args before the subcommand (`--root X`, `--log F`),
    /// passed verbatim; the runtime runs in the run dir, so give absolute
    /// paths. With `--log F --log-format json`, F's error entries join the
    /// runtime's stderr in [`MonitorError::Create`].
    pub runtime_args: Vec<OsString>,
    /// Rotate the log past this size; 0 never.
    pub log_max_size: u64,
    /// The bundle has process.terminal=true.
    pub terminal: bool,
    /// Keep a stdin pipe open for the container.
    pub stdin: bool,
    /// Run after the exit file is written (detached, stdio /dev/null).
    pub exit_command: Option<PathBuf>,
    pub exit_args: Vec<OsString>,
    /// Skip the exit command while the process this file names as `PID
    /// START` lives (one that took the cleanup over, e.g. an attached CLI).
    pub exit_command_unless: Option<PathBuf>,
}

/// A created container, held by its monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub monitor_pid: i32,
    pub container_pid: i32,
}

impl MonitorOptions {
    pub fn new(
        monitor: impl Into<PathBuf>,
        id: impl Into<String>,
        bundle: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
    ) -> MonitorOptions {
        MonitorOptions {
            monitor: monitor.into(),
            id: id.into(),
            bundle: bundle.into(),
            run_dir: run_dir.into(),
            log_path: log_path.into(),
            runtime: None,
            runtime_args: Vec::new(),
            log_max_size: 0,
            terminal: false,
            stdin: false,
            exit_command: None,
            exit_args: Vec::new(),
            exit_command_unless: None,
        }
    }

    /// The `hako-monitor` arguments (without argv[0]) for these options.
    pub fn to_args(&self, sync_fd: Option<RawFd>) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut pair = |k: &str, v: &std::ffi::OsStr| {
            a.push(k.into());
            a.push(v.to_os_string());
        };
        pair("--id", self.id.as_ref());
        pair("--bundle", self.bundle.as_os_str());
        pair("--run-dir", self.run_dir.as_os_str());
        pair("--log-path", self.log_path.as_os_str());
        if let Some(r) = &self.runtime {
            pair("--runtime", r.as_os_str());
        }
        for r in &self.runtime_args {
            pair("--runtime-arg", r);
        }
        if self.log_max_size > 0 {
            pair("--log-max-size", self.log_max_size.to_string().as_ref());
        }
        if let Some(fd) = sync_fd {
            pair("--sync-fd", fd.to_string().as_ref());
        }
        if let Some(c) = &self.exit_command {
            pair("--exit-command", c.as_os_str());
            for e in &self.exit_args {
                pair("--exit-arg", e);
            }
            if let Some(f) = &self.exit_command_unless {
                pair("--exit-command-unless", f.as_os_str());
            }
        }
        if self.terminal {
            a.push("--terminal".into());
        }
        if self.stdin {
            a.push("--stdin".into());
        }
        a
    }
}

/// Spawns a monitor and waits until the runtime's `create` finished:
/// returns the monitor's and the container's pids, or the runtime's error
/// (the monitor then has exited and left nothing running). The caller
/// then runs `runtime start ID` itself. There is no timeout: a create
/// that hangs (a hook, say) makes this hang too.
pub fn spawn(opts: &MonitorOptions) -> Result<Started, MonitorError> {
    let (sync_r, sync_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(MonitorError::SyncPipe)?;
    // Out of the stdio range, so the child's dup2 onto 0-2 cannot clobber it.
    let sync_w: OwnedFd = if sync_w.as_raw_fd() < 3 {
        nix::fcntl::fcntl(&sync_w, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            .map_err(MonitorError::SyncPipe)
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
            .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })?
    } else {
        sync_w
    };
    let child_fd = sync_w.as_raw_fd();
    let mut cmd = Command::new(&opts.monitor);
    cmd.args(opts.to_args(Some(child_fd)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl(2), which is async-signal-safe; it touches no memory
    // shared with the parent's other threads.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| MonitorError::Spawn {
        path: opts.monitor.clone(),
        source,
    })?;
    drop(cmd);
    drop(sync_w);
    // The first process exits as soon as the forked monitor is set up;
    // the monitor's stderr is /dev/null, so this pipe ends with it.
    let out = child
        .wait_with_output()
        .map_err(|source| MonitorError::Wait {
            path: opts.monitor.clone(),
            source,
        })?;
    let mut line = String::new();
    std::fs::File::from(sync_r)
        .read_to_string(&mut line)
        .map_err(MonitorError::ReadSync)?;
    if line.trim().is_empty() {
        if !out.status.success() {
            return Err(MonitorError::Start {
                path: opts.monitor.clone(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        return Err(MonitorError::NoReport {
            id: opts.id.clone(),
        });
    }
    let bad = || MonitorError::BadReport {
        id: opts.id.clone(),
        line: line.trim().to_string(),
    };
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|_| bad())?;
    if let Some(msg) = v["error"].as_str() {
        return Err(MonitorError::Create {
            id: opts.id.clone(),
            message: msg.to_string(),
        });
    }
    let container_pid = v["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(bad)?;
    let monitor_pid = read_monitor_pid(&opts.run_dir)?;
    Ok(Started {
        monitor_pid,
        container_pid,
    })
}

/// The pid in `RUN/monitor.pid`.
pub fn read_monitor_pid(run_dir: &Path) -> Result<i32, MonitorError> {
    let path = run_dir.join(protocol::MONITOR_PID_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| MonitorError::MonitorPid {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| MonitorError::MonitorPid {
        path,
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a pid: {text:?}"),
        ),
    })
}
