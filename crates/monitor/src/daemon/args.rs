//! The `hako-monitor` command line (the engine builds it with
//! [`crate::MonitorOptions::to_args`]; keep the two in step).

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "usage: hako-monitor --id ID --bundle DIR --run-dir DIR --log-path FILE
   [--runtime PATH] [--runtime-arg ARG]... [--log-max-size BYTES]
   [--terminal] [--stdin] [--sync-fd N]
   [--exit-command PATH [--exit-arg ARG]... [--exit-command-unless FILE]]";

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error("--bundle {path}: {what}")]
    Bundle { path: PathBuf, what: String },
    #[error("--run-dir {path}: {what}")]
    RunDir { path: PathBuf, what: String },
    #[error("--log-path {path}: its directory does not exist")]
    LogDir { path: PathBuf },
    #[error("--sync-fd {fd} is not an open file descriptor")]
    SyncFd { fd: RawFd },
    #[error("no OCI runtime: {what}")]
    Runtime { what: String },
}

/// Parsed and validated arguments.
#[derive(Debug, Clone)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub run_dir: PathBuf,
    pub log_path: PathBuf,
    pub runtime: PathBuf,
    pub runtime_args: Vec<OsString>,
    pub log_max_size: u64,
    pub terminal: bool,
    pub stdin: bool,
    pub sync_fd: Option<RawFd>,
    pub exit_command: Option<PathBuf>,
    pub exit_args: Vec<OsString>,
    /// A file naming a process as `PID START` (START: field 22 of
    /// /proc/PID/stat): while that process lives, the exit command is not
    /// run (it has taken the cleanup over). A missing file: run it.
    pub exit_command_unless: Option<PathBuf>,
}

impl Args {
    /// Parses `argv[1..]` and checks the paths (absolute from here on).
    pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Args, ArgsError> {
        let usage = |m: String| ArgsError::Usage(m);
        let mut id = None;
        let mut bundle = None;
        let mut run_dir = None;
        let mut log_path = None;
        let mut runtime = None;
        let mut runtime_args = Vec::new();
        let mut log_max_size = 0;
        let mut terminal = false;
        let mut stdin = false;
        let mut sync_fd = None;
        let mut exit_command = None;
        let mut exit_args = Vec::new();
        let mut exit_command_unless = None;

        let mut it = argv.into_iter();
        while let Some(arg) = it.next() {
            let bytes = arg.as_bytes();
            let (name, inline) = match bytes.iter().position(|&b| b == b'=') {
                Some(eq) if bytes.starts_with(b"--") => (
                    OsStr::from_bytes(&bytes[..eq]).to_os_string(),
                    Some(OsStr::from_bytes(&bytes[eq + 1..]).to_os_string()),
                ),
                _ => (arg.clone(), None),
            };
            let name = name.to_string_lossy().into_owned();
            let mut value = |inline: Option<OsString>| {
                inline
                    .or_else(|| it.next())
                    .ok_or_else(|| usage(format!("{name} needs a value")))
            };
            match name.as_str() {
                "--id" => id = Some(value(inline)?.to_string_lossy().into_owned()),
                "--bundle" => bundle = Some(PathBuf::from(value(inline)?)),
                "--run-dir" => run_dir = Some(PathBuf::from(value(inline)?)),
                "--log-path" => log_path = Some(PathBuf::from(value(inline)?)),
                "--runtime" => runtime = Some(PathBuf::from(value(inline)?)),
                "--runtime-arg" => runtime_args.push(value(inline)?),
                "--exit-command" => exit_command = Some(PathBuf::from(value(inline)?)),
                "--exit-arg" => exit_args.push(value(inline)?),
                "--exit-command-unless" => {
                    exit_command_unless = Some(PathBuf::from(value(inline)?))
                }
                "--log-max-size" => {
                    let v = value(inline)?;
                    log_max_size = v
                        .to_string_lossy()
                        .parse()
                        .map_err(|_| usage(format!("--log-max-size {v:?} is not a byte count")))?;
                }
                "--sync-fd" => {
                    let v = value(inline)?;
                    sync_fd = Some(v.to_string_lossy().parse().map_err(|_| {
                        usage(format!("--sync-fd {v:?} is not a file descriptor number"))
                    })?);
                }
                "--terminal" | "--stdin" if inline.is_some() => {
                    return Err(usage(format!("{name} takes no value")))
                }
                "--terminal" => terminal = true,
                "--stdin" => stdin = true,
                "-h" | "--help" => return Err(usage("help".into())),
                other => return Err(usage(format!("unknown argument {other:?}"))),
            }
        }
        let id = id.ok_or_else(|| usage("--id is required".into()))?;
        if id.is_empty() || id.contains('/') {
            return Err(usage(format!("--id {id:?} is not a container id")));
        }
        let bundle = bundle.ok_or_else(|| usage("--bundle is required".into()))?;
        let run_dir = run_dir.ok_or_else(|| usage("--run-dir is required".into()))?;
        let log_path = log_path.ok_or_else(|| usage("--log-path is required".into()))?;
        if !exit_args.is_empty() && exit_command.is_none() {
            return Err(usage("--exit-arg needs --exit-command".into()));
        }
        if exit_command_unless.is_some() && exit_command.is_none() {
            return Err(usage("--exit-command-unless needs --exit-command".into()));
        }

        let bundle = absolute_dir(&bundle).map_err(|what| ArgsError::Bundle {
            path: bundle.clone(),
            what,
        })?;
        if !bundle.join("config.json").is_file() {
            return Err(ArgsError::Bundle {
                path: bundle,
                what: "has no config.json".into(),
            });
        }
        let run_dir = absolute_dir(&run_dir).map_err(|what| ArgsError::RunDir {
            path: run_dir.clone(),
            what,
        })?;
        let log_path = absolute(&log_path);
        if !log_path.parent().is_some_and(Path::is_dir) {
            return Err(ArgsError::LogDir { path: log_path });
        }
        if let Some(fd) = sync_fd {
            // SAFETY: F_GETFD only inspects the descriptor table.
            if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(ArgsError::SyncFd { fd });
            }
        }
        let runtime = resolve_runtime(runtime)?;
        Ok(Args {
            id,
            bundle,
            run_dir,
            log_path,
            runtime,
            runtime_args,
            log_max_size,
            terminal,
            stdin,
            sync_fd,
            exit_command,
            exit_args,
            exit_command_unless,
        })
    }

    /// The file the runtime args ask the runtime to log to in JSON
    /// (`--log FILE` with `--log-format json`), where its errors are.
    pub fn runtime_json_log(&self) -> Option<PathBuf> {
        let mut log = None;
        let mut json = false;
        let mut it = self.runtime_args.iter();
        while let Some(a) = it.next() {
            let a = a.to_string_lossy();
            match a.split_once('=') {
                Some(("--log", v)) => log = Some(PathBuf::from(v)),
                Some(("--log-format", v)) => json = v == "json",
                _ if a == "--log" => log = it.next().map(PathBuf::from),
                _ if a == "--log-format" => json = it.next().is_some_and(|v| v == "json"),
                _ => {}
            }
        }
        log.filter(|_| json).map(|p| absolute(&p))
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn absolute_dir(p: &Path) -> Result<PathBuf, String> {
    let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    std::fs::canonicalize(p).map_err(|e| e.to_string())
}

/// `--runtime` (searched in PATH when it has no slash), else
/// `hako-runtime` next to this executable, else `hako-runtime` in PATH.
fn resolve_runtime(given: Option<PathBuf>) -> Result<PathBuf, ArgsError> {
    let in_path = |name: &OsStr| -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|c| is_executable(c))
        })
    };
    match given {
        Some(p) if p.as_os_str().as_bytes().contains(&b'/') => {
            if is_executable(&p) {
                Ok(absolute(&p))
            } else {
                Err(ArgsError::Runtime {
                    what: format!("--runtime {} is not an executable file", p.display()),
                })
            }
        }
        Some(name) => in_path(name.as_os_str()).ok_or_else(|| ArgsError::Runtime {
            what: format!("--runtime {}: not found in PATH", name.display()),
        }),
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("hako-runtime")))
                .filter(|p| is_executable(p));
            beside
                .or_else(|| in_path(OsStr::new("hako-runtime")))
                .ok_or_else(|| ArgsError::Runtime {
                    what:
                        "hako-runtime is neither next to hako-monitor nor in PATH; pass --runtime"
                            .into(),
                })
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn missing_and_unknown_arguments_are_usage_errors() {
        assert!(matches!(
            Args::parse(args(&["--bundle", "/"])),
            Err(ArgsError::Usage(_))
        ));
        assert!(matches!(
            Args::parse(args(&["--frob"])),
            Err(ArgsError::Usage(_))
        ));
        assert!(matches!(
            Args::parse(args(&["--id"])),
            Err(ArgsError::Usage(_))
        ));
    }

    #[test]
    fn finds_the_json_log_among_runtime_args() {
        let mut a = Args {
            id: "x".into(),
            bundle: "/".into(),
            run_dir: "/".into(),
            log_path: "/l".into(),
            runtime: "/r".into(),
            runtime_args: args(&["--root", "/r", "--log", "/tmp/l.json", "--log-format=json"]),
            log_max_size: 0,
            terminal: false,
            stdin: false,
            sync_fd: None,
            exit_command: None,
            exit_args: vec![],
            exit_command_unless: None,
        };
        assert_eq!(a.runtime_json_log(), Some(PathBuf::from("/tmp/l.json")));
        a.runtime_args = args(&["--log=/tmp/l"]);
        assert_eq!(a.runtime_json_log(), None);
    }
}
