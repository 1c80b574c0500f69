//! The OCI runtime, driven through runc's command line: hako-runtime by
//! default, runc or crun when asked (`--runtime PATH`).
//!
//! `start` and `delete` of the hako-runtime built with this hako (the one
//! beside the `hako` executable) are called in this process through the
//! runtime library instead: the same code on the same state directory,
//! without an exec (~2-3 ms each, on the path of every `hako run`).
//! `create` always runs as a command, from the monitor, which must be the
//! container's parent.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("running {} {args}: {source}", runtime.display())]
    Spawn {
        runtime: PathBuf,
        args: String,
        source: std::io::Error,
    },
    #[error("{} {args} failed: {message}", runtime.display())]
    Failed {
        runtime: PathBuf,
        args: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub path: PathBuf,
    /// Its state directory (`--root`), one per engine runroot.
    pub root: PathBuf,
    /// `path` is the hako-runtime built with this hako: see the module doc.
    linked: bool,
}

/// Whether `path` is the hako-runtime beside the running executable.
fn is_linked_runtime(path: &Path) -> bool {
    if path.file_name() != Some(std::ffi::OsStr::new("hako-runtime")) {
        return false;
    }
    let (Ok(exe), Ok(rt)) = (std::env::current_exe(), std::fs::canonicalize(path)) else {
        return false;
    };
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    exe.parent().is_some() && exe.parent() == rt.parent()
}

impl OciRuntime {
    pub fn new(path: PathBuf, root: PathBuf) -> OciRuntime {
        let linked = is_linked_runtime(&path);
        OciRuntime { path, root, linked }
    }

    /// The runtime library on our state directory, when `path` is ours.
    fn linked(&self) -> Option<hako_runtime::Runtime> {
        self.linked
            .then(|| hako_runtime::Runtime::new(&self.root, false))
    }

    fn failed(&self, args: &[&str], e: hako_runtime::RuntimeError) -> RuntimeError {
        RuntimeError::Failed {
            runtime: self.path.clone(),
            args: args.join(" "),
            message: e.to_string(),
        }
    }

    /// The global arguments every call gets (before the subcommand).
    pub fn global_args(&self) -> Vec<String> {
        vec!["--root".into(), self.root.to_string_lossy().into_owned()]
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.path);
        c.args(self.global_args()).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                runtime: self.path.clone(),
                args: args.join(" "),
                source,
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if message.is_empty() {
            message = format!("{}", out.status);
        }
        Err(RuntimeError::Failed {
            runtime: self.path.clone(),
            args: args.join(" "),
            message,
        })
    }

    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(rt) = self.linked() {
            return rt.start(id).map_err(|e| self.failed(&["start", id], e));
        }
        self.run(&["start", id]).map(|_| ())
    }

    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.run(&args).map(|_| ())
    }

    /// Deletes the runtime's state of `id` (killing it with `force`); a
    /// container the runtime does not know is not an error.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        if let Some(rt) = self.linked() {
            return match rt.delete(id, force) {
                Ok(())
                | Err(hako_runtime::RuntimeError::State(
                    hako_runtime::state::StateError::NotFound(_),
                )) => Ok(()),
                Err(e) => Err(self.failed(&args, e)),
            };
        }
        match self.run(&args) {
            Ok(_) => Ok(()),
            Err(RuntimeError::Failed { message, .. })
                if message.contains("does not exist")
                    || message.contains("not found")
                    || message.contains("No such file") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.run(&["pause", id]).map(|_| ())
    }

    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.run(&["resume", id]).map(|_| ())
    }

    /// `runtime state ID`, or None when the runtime has no such container.
    pub fn state(&self, id: &str) -> Option<serde_json::Value> {
        let out = self.run(&["state", id]).ok()?;
        serde_json::from_str(&out).ok()
    }
}

/// A helper binary of hako's (hako-runtime, hako-monitor, hako-init):
/// `$HAKO_<NAME>` (NAME upper-case, `-` as `_`) when set, else beside the
/// running executable, else in /usr/libexec/hako, else from PATH.
pub fn helper_binary(name: &str) -> PathBuf {
    let var = format!("HAKO_{}", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    let libexec = Path::new("/usr/libexec/hako").join(name);
    if libexec.is_file() {
        return libexec;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

/// A runtime given as a name (`runc`) or a path.
pub fn resolve_runtime(given: Option<&Path>) -> PathBuf {
    match given {
        None => helper_binary("hako-runtime"),
        Some(p) if p.components().count() > 1 => p.to_path_buf(),
        Some(p) => {
            let name = p.to_string_lossy();
            if name == "hako-runtime" {
                return helper_binary("hako-runtime");
            }
            if let Some(path) = std::env::var_os("PATH") {
                for d in std::env::split_paths(&path) {
                    let c = d.join(p);
                    if c.is_file() {
                        return c;
                    }
                }
            }
            p.to_path_buf()
        }
    }
}
