//! Running one CNI plugin binary, per the CNI spec's execution protocol:
//! the command and its parameters in `CNI_*` environment variables, the
//! network configuration on stdin, a result or an error object on stdout.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Debian's plugin directory, used when `$HAKO_CNI_PATH` is unset.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";

/// The environment variable that overrides the plugin directories
/// (a colon-separated list, searched in order).
pub const CNI_PATH_ENV: &str = "HAKO_CNI_PATH";

/// The CNI spec versions this crate writes, newest first. 1.0.0 is used
/// whenever the installed `bridge` plugin supports it.
pub const SPEC_VERSIONS: &[&str] = &["1.0.0", "0.4.0", "0.3.1"];

/// A failure to find, run or understand a plugin. Every variant names the
/// plugin and the network (the conflist's `name`) it ran for.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No directory of the plugin path has an executable of that name.
    #[error("network {network}: CNI plugin {plugin:?} not found in {search_path}")]
    NotFound {
        plugin: String,
        network: String,
        search_path: String,
    },
    /// The plugin type is not a plain file name.
    #[error("network {network}: CNI plugin type {plugin:?} is not a file name")]
    BadType { plugin: String, network: String },
    /// Spawning or talking to the plugin process failed.
    #[error("network {network}: {command} of CNI plugin {plugin} ({path}): {op}: {source}")]
    Exec {
        plugin: String,
        network: String,
        command: CniCommand,
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// The plugin failed and printed a CNI error object.
    #[error("network {network}: {command} of CNI plugin {plugin} failed: {msg}{} (CNI error code {code})", details_suffix(details))]
    Plugin {
        plugin: String,
        network: String,
        command: CniCommand,
        code: u64,
        msg: String,
        details: String,
    },
    /// The plugin failed without a readable error object.
    #[error("network {network}: {command} of CNI plugin {plugin} exited with {status}: {output}")]
    Failed {
        plugin: String,
        network: String,
        command: CniCommand,
        status: std::process::ExitStatus,
        output: String,
    },
    /// Removing the bridge plugin's masquerade rule by hand failed (see the
    /// `masq` module: the plugin cannot when the namespace is gone).
    #[error("network {network}: removing the bridge plugin's masquerade rule of container {container} ({command}): {output}")]
    MasqCleanup {
        network: String,
        container: String,
        command: String,
        output: String,
    },
    /// The plugin succeeded but its stdout is not a JSON result.
    #[error("network {network}: {command} of CNI plugin {plugin} printed no valid result ({reason}): {output:?}")]
    BadResult {
        plugin: String,
        network: String,
        command: CniCommand,
        reason: String,
        output: String,
    },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

/// The CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
        })
    }
}

/// The directories searched for plugin binaries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniPath {
    dirs: Vec<PathBuf>,
}

impl CniPath {
    /// `$HAKO_CNI_PATH` if set and non-empty, else [`DEFAULT_CNI_PATH`].
    pub fn from_env() -> CniPath {
        CniPath::parse(
            std::env::var_os(CNI_PATH_ENV)
                .as_deref()
                .and_then(|v| v.to_str()),
        )
    }

    /// A colon-separated list; `None` or an empty list gives the default.
    /// Empty entries are skipped.
    pub fn parse(list: Option<&str>) -> CniPath {
        let dirs: Vec<PathBuf> = list
            .unwrap_or("")
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        if dirs.is_empty() {
            CniPath::new(vec![PathBuf::from(DEFAULT_CNI_PATH)])
        } else {
            CniPath::new(dirs)
        }
    }

    pub fn new(dirs: Vec<PathBuf>) -> CniPath {
        CniPath { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The list as `CNI_PATH` wants it.
    pub fn joined(&self) -> OsString {
        let mut out = OsString::new();
        for (i, d) in self.dirs.iter().enumerate() {
            if i > 0 {
                out.push(":");
            }
            out.push(d);
        }
        out
    }

    /// The first executable regular file named `plugin`.
    pub fn find(&self, plugin: &str, network: &str) -> Result<PathBuf, CniError> {
        if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
            return Err(CniError::BadType {
                plugin: plugin.to_string(),
                network: network.to_string(),
            });
        }
        self.dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| {
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
            .ok_or_else(|| CniError::NotFound {
                plugin: plugin.to_string(),
                network: network.to_string(),
                search_path: self.joined().to_string_lossy().into_owned(),
            })
    }
}

/// The per-invocation parameters of the CNI protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Invocation<'a> {
    pub command: CniCommand,
    pub container_id: &'a str,
    /// `None` leaves `CNI_NETNS` empty, which the spec allows for DEL when
    /// the namespace is already gone.
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
}

/// Runs `plugin` with `config` on stdin. Returns the parsed stdout (ADD and
/// VERSION print a JSON object; DEL and CHECK print nothing: `Value::Null`).
pub(crate) fn exec(
    cni: &CniPath,
    plugin: &str,
    network: &str,
    inv: &Invocation<'_>,
    config: &Value,
) -> Result<Value, CniError> {
    let path = cni.find(plugin, network)?;
    let exec_err = |op: &'static str, source: std::io::Error| CniError::Exec {
        plugin: plugin.to_string(),
        network: network.to_string(),
        command: inv.command,
        path: path.clone(),
        op,
        source,
    };
    let stdin = serde_json::to_vec(config).map_err(|e| exec_err("encoding config", e.into()))?;
    let mut cmd = Command::new(&path);
    cmd.env("CNI_COMMAND", inv.command.to_string())
        .env("CNI_CONTAINERID", inv.container_id)
        .env(
            "CNI_NETNS",
            inv.netns.map(Path::as_os_str).unwrap_or_default(),
        )
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", cni.joined())
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| exec_err("spawn", e))?;
    if let Some(mut pipe) = child.stdin.take() {
        // The config is a few KB at most, well under a pipe's buffer, and
        // plugins read all of stdin before writing: no deadlock.
        // A plugin that exits before reading gets EPIPE here; its own
        // output below says why, so only other write errors are reported.
        match pipe.write_all(&stdin) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(exec_err("writing config to stdin", e));
            }
            _ => {}
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| exec_err("waiting", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if let Ok(err) = serde_json::from_str::<Value>(&stdout) {
            if let Some(code) = err.get("code").and_then(Value::as_u64) {
                return Err(CniError::Plugin {
                    plugin: plugin.to_string(),
                    network: network.to_string(),
                    command: inv.command,
                    code,
                    msg: text_field(&err, "msg"),
                    details: text_field(&err, "details"),
                });
            }
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(CniError::Failed {
            plugin: plugin.to_string(),
            network: network.to_string(),
            command: inv.command,
            status: out.status,
            output: format!("{}{}", stdout.trim(), stderr.trim()),
        });
    }
    if stdout.trim().is_empty() {
        return match inv.command {
            CniCommand::Add | CniCommand::Version => Err(CniError::BadResult {
                plugin: plugin.to_string(),
                network: network.to_string(),
                command: inv.command,
                reason: "empty output".into(),
                output: String::new(),
            }),
            CniCommand::Del | CniCommand::Check => Ok(Value::Null),
        };
    }
    match serde_json::from_str::<Value>(&stdout) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(bad_result(
            plugin,
            network,
            inv.command,
            "not a JSON object",
            &stdout,
        )),
        Err(e) => Err(bad_result(
            plugin,
            network,
            inv.command,
            &e.to_string(),
            &stdout,
        )),
    }
}

fn bad_result(
    plugin: &str,
    network: &str,
    command: CniCommand,
    reason: &str,
    out: &str,
) -> CniError {
    CniError::BadResult {
        plugin: plugin.to_string(),
        network: network.to_string(),
        command,
        reason: reason.to_string(),
        output: out.chars().take(500).collect(),
    }
}

fn text_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The spec versions a plugin supports (its VERSION answer).
pub fn supported_versions(cni: &CniPath, plugin: &str) -> Result<Vec<String>, CniError> {
    let inv = Invocation {
        command: CniCommand::Version,
        container_id: "",
        netns: None,
        ifname: "",
    };
    let config = serde_json::json!({ "cniVersion": SPEC_VERSIONS[0] });
    let out = exec(cni, plugin, "-", &inv, &config)?;
    Ok(out
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// The newest of [`SPEC_VERSIONS`] that `supported` lists; 1.0.0 if none.
pub fn pick_version(supported: &[String]) -> &'static str {
    SPEC_VERSIONS
        .iter()
        .find(|v| supported.iter().any(|s| s == *v))
        .copied()
        .unwrap_or(SPEC_VERSIONS[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parsing() {
        assert_eq!(CniPath::parse(None).dirs(), [PathBuf::from("/usr/lib/cni")]);
        assert_eq!(
            CniPath::parse(Some("")).dirs(),
            [PathBuf::from("/usr/lib/cni")]
        );
        let p = CniPath::parse(Some("/a::/b"));
        assert_eq!(p.dirs(), [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(p.joined(), "/a:/b");
    }

    #[test]
    fn version_choice() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_version(&v(&["0.3.1", "0.4.0", "1.0.0"])), "1.0.0");
        assert_eq!(pick_version(&v(&["0.3.0", "0.3.1", "0.4.0"])), "0.4.0");
        assert_eq!(pick_version(&v(&[])), "1.0.0");
    }

    #[test]
    fn bad_plugin_type() {
        let p = CniPath::parse(None);
        assert!(matches!(
            p.find("../bin/sh", "n"),
            Err(CniError::BadType { .. })
        ));
        assert!(matches!(
            p.find("no-such-plugin-xyz", "n"),
            Err(CniError::NotFound { plugin, .. }) if plugin == "no-such-plugin-xyz"
        ));
    }
}
