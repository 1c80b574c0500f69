//! Running lifecycle hooks: the container state on stdin, the hook's own
//! env, and its timeout enforced through a pidfd.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use oci_spec::runtime::{Hook, Hooks, Spec};

use crate::sys;

/// A hook that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {index} ({path}): {source}")]
    Spawn {
        kind: &'static str,
        index: usize,
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} hook {index} ({path}) exited with {status}")]
    Failed {
        kind: &'static str,
        index: usize,
        path: String,
        status: String,
    },
    #[error("{kind} hook {index} ({path}) timed out after {secs}s and was killed")]
    TimedOut {
        kind: &'static str,
        index: usize,
        path: String,
        secs: i64,
    },
    #[error("{kind} hook {index} ({path}): timeout must be greater than zero, got {secs}")]
    BadTimeout {
        kind: &'static str,
        index: usize,
        path: String,
        secs: i64,
    },
}

/// The hooks of one kind from a config (empty when absent).
pub fn of<'a>(spec: &'a Spec, pick: impl Fn(&'a Hooks) -> &'a Option<Vec<Hook>>) -> &'a [Hook] {
    spec.hooks()
        .as_ref()
        .and_then(|h| pick(h).as_deref())
        .unwrap_or(&[])
}

/// The state JSON given to hooks.
pub fn state_json(
    id: &str,
    config: &crate::spec::Config,
    pid: i32,
    status: &'static str,
) -> String {
    let annotations: BTreeMap<String, String> = config
        .spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let s = serde_json::json!({
        "ociVersion": crate::spec::OCI_VERSION,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": config.bundle,
        "annotations": annotations,
    });
    s.to_string()
}

/// Runs `hooks` in order, stopping at the first failure.
pub fn run(kind: &'static str, hooks: &[Hook], state_json: &str) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_one(kind, index, hook, state_json)?;
    }
    Ok(())
}

/// Runs every hook even when some fail, logging each failure as a warning
/// (runtime-spec's rule for poststart and poststop).
pub fn run_warning(kind: &'static str, hooks: &[Hook], state_json: &str) {
    for (index, hook) in hooks.iter().enumerate() {
        if let Err(e) = run_one(kind, index, hook, state_json) {
            crate::warn!("{e}");
        }
    }
}

fn run_one(
    kind: &'static str,
    index: usize,
    hook: &Hook,
    state_json: &str,
) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    if let Some(secs) = hook.timeout() {
        if secs <= 0 {
            return Err(HookError::BadTimeout {
                kind,
                index,
                path,
                secs,
            });
        }
    }
    let spawn_err = |source| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        source,
    };
    let mut cmd = Command::new(hook.path());
    let args = hook.args().as_deref().unwrap_or(&[]);
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for e in hook.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    // Hooks talk to the runtime's stderr; stdout may be the container's.
    let out = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from);
    cmd.stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // The state goes in from a short-lived thread: a hook that never reads
    // its stdin must not stall us past its timeout once the state is larger
    // than a pipe (big annotations). It is not joined: it ends when the
    // hook (and whatever inherited its stdin) closes the pipe, or with us.
    if let Some(mut stdin) = child.stdin.take() {
        let data = state_json.to_owned();
        std::thread::spawn(move || {
            // A hook may exit without reading its stdin; that is not an error.
            let _ = stdin.write_all(data.as_bytes());
        });
    }
    let pid = child.id() as i32;
    if let Some(secs) = hook.timeout() {
        let pidfd = sys::pidfd_open(pid).map_err(spawn_err)?;
        let ms = secs.saturating_mul(1000).min(i32::MAX as i64) as i32;
        if !sys::poll_readable(&pidfd, ms).map_err(spawn_err)? {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                kind,
                index,
                path,
                secs,
            });
        }
    }
    let status = child.wait().map_err(spawn_err)?;
    if !status.success() {
        return Err(HookError::Failed {
            kind,
            index,
            path,
            status: status.to_string(),
        });
    }
    Ok(())
}
