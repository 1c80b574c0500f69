//! What `hako create`/`run` was asked for, kept in the container's record
//! (`inspect` shows it) and turned into a runtime config by crate::spec.
//! Flags keep docker's names and meaning; their values are checked here,
//! before anything is made, so bad input leaves nothing behind.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateOptions {
    pub image: String,
    pub name: Option<String>,
    /// Replaces the image's Cmd.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint (an empty string clears it).
    pub entrypoint: Option<Vec<String>>,
    /// KEY=VALUE (already expanded from the host for a bare KEY).
    pub env: Vec<String>,
    /// `-v`: HOST:CTR[:OPTS], NAME:CTR[:OPTS] or CTR (anonymous).
    pub volumes: Vec<String>,
    /// `--tmpfs CTR[:OPTS]`.
    pub tmpfs: Vec<String>,
    /// `-p`, docker's forms.
    pub publish: Vec<String>,
    /// none, host, bridge (default), a network name, container:ID.
    pub network: Option<String>,
    pub dns: Vec<String>,
    /// HOST:IP.
    pub add_hosts: Vec<String>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    /// seccomp=FILE|unconfined, no-new-privileges[=true|false].
    pub security_opt: Vec<String>,
    pub init: bool,
    /// KEY=VALUE.
    pub labels: Vec<String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u64>,
    /// NAME=SOFT[:HARD].
    pub ulimits: Vec<String>,
    /// HOST[:CTR[:PERMS]].
    pub devices: Vec<String>,
    /// KEY=VALUE.
    pub sysctls: Vec<String>,
    pub pod: Option<String>,
    pub interactive: bool,
    pub tty: bool,
    pub auto_remove: bool,
    /// The OCI runtime (default: hako-runtime).
    pub runtime: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("{flag} {value:?}: {reason}")]
    Bad {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

pub(crate) fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> OptionError {
    OptionError::Bad {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// One `-v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub source: VolumeSource,
    pub destination: String,
    pub read_only: bool,
    /// Extra mount options kept as given (e.g. rprivate, nosuid).
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    Host(PathBuf),
    Named(String),
    /// A new volume of its own (`-v /data`), named by the engine.
    Anonymous,
}

/// Parses `-v` forms: `/host:/ctr[:ro|rw|z|Z|…]`, `name:/ctr[:opts]`,
/// `/ctr`.
pub fn parse_volume(v: &str) -> Result<VolumeSpec, OptionError> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => (None, *d, ""),
        [s, d] => (Some(*s), *d, ""),
        [s, d, o] => (Some(*s), *d, *o),
        _ => return Err(bad("-v", v, "expected SOURCE:DEST[:OPTIONS]")),
    };
    if !dst.starts_with('/') {
        return Err(bad("-v", v, "the container path must be absolute"));
    }
    if dst.split('/').any(|c| c == "..") {
        return Err(bad("-v", v, "the container path may not hold \"..\""));
    }
    let mut read_only = false;
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            // SELinux relabelling: nothing to do without SELinux.
            "z" | "Z" => {}
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "nosuid"
            | "suid" | "nodev" | "dev" | "noexec" | "exec" | "bind" | "rbind" => {
                options.push(o.to_string())
            }
            _ => return Err(bad("-v", v, format!("unknown option {o:?}"))),
        }
    }
    let source = match src {
        None => VolumeSource::Anonymous,
        Some(s) if s.starts_with('/') => VolumeSource::Host(PathBuf::from(s)),
        Some(s) if s.starts_with('.') || s.is_empty() => {
            return Err(bad("-v", v, "a host path must be absolute"))
        }
        Some(s) if crate::util::valid_name(s) => VolumeSource::Named(s.to_string()),
        Some(_) => {
            return Err(bad(
                "-v",
                v,
                "a volume name may hold only [a-zA-Z0-9][a-zA-Z0-9_.-]",
            ))
        }
    };
    Ok(VolumeSpec {
        source,
        destination: dst.to_string(),
        read_only,
        options,
    })
}

/// `--tmpfs /run[:size=64m,mode=1777,…]` → (destination, options).
pub fn parse_tmpfs(v: &str) -> Result<(String, Vec<String>), OptionError> {
    let (dst, opts) = v.split_once(':').unwrap_or((v, ""));
    if !dst.starts_with('/') || dst.split('/').any(|c| c == "..") {
        return Err(bad(
            "--tmpfs",
            v,
            "the container path must be absolute, without \"..\"",
        ));
    }
    let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
    options.extend(
        opts.split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string),
    );
    Ok((dst.to_string(), options))
}

/// `--ulimit nofile=1024[:2048]` → (RLIMIT_NOFILE, soft, hard).
pub fn parse_ulimit(v: &str) -> Result<(String, u64, u64), OptionError> {
    let (name, vals) = v
        .split_once('=')
        .ok_or_else(|| bad("--ulimit", v, "expected NAME=SOFT[:HARD]"))?;
    const NAMES: &[&str] = &[
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
        "as",
    ];
    if !NAMES.contains(&name) {
        return Err(bad("--ulimit", v, format!("unknown limit {name:?}")));
    }
    let num = |s: &str| -> Result<u64, OptionError> {
        if s == "-1" || s == "unlimited" {
            return Ok(u64::MAX);
        }
        s.parse()
            .map_err(|_| bad("--ulimit", v, format!("{s:?} is not a number")))
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard {
        return Err(bad("--ulimit", v, "the soft limit is above the hard limit"));
    }
    Ok((format!("RLIMIT_{}", name.to_ascii_uppercase()), soft, hard))
}

/// `KEY=VALUE` lists (labels, sysctls).
pub fn parse_pairs(
    flag: &'static str,
    list: &[String],
) -> Result<Vec<(String, String)>, OptionError> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad(flag, l, "expected KEY=VALUE")),
        })
        .collect()
}

/// A capability as the runtime spells it: `net_admin`, `NET_ADMIN` and
/// `CAP_NET_ADMIN` are one; `ALL` stays.
pub fn normalise_cap(flag: &'static str, c: &str) -> Result<String, OptionError> {
    let up = c.to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if !hako_runtime::defaults::known_capabilities().contains(&name) {
        return Err(bad(flag, c, "unknown capability"));
    }
    Ok(name)
}

/// A signal by name (`TERM`, `SIGTERM`) or number → its number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            let rt = name.strip_prefix("RTMIN")?;
            let off: i32 = if rt.is_empty() {
                0
            } else {
                rt.strip_prefix('+')?.parse().ok()?
            };
            let n = libc::SIGRTMIN() + off;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_forms() {
        let v = parse_volume("/srv/data:/data:ro").expect("host");
        assert_eq!(v.source, VolumeSource::Host("/srv/data".into()));
        assert!(v.read_only);
        let v = parse_volume("cache:/var/cache").expect("named");
        assert_eq!(v.source, VolumeSource::Named("cache".into()));
        assert!(!v.read_only);
        assert_eq!(
            parse_volume("/data").expect("anon").source,
            VolumeSource::Anonymous
        );
        for bad in [
            "rel/path:/data",
            "/a:data",
            "/a:/b:bogus",
            "/a:/../etc",
            "./x:/y",
            "a:b:c:d",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ulimits_and_signals() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048").expect("ok"),
            ("RLIMIT_NOFILE".into(), 1024, 2048)
        );
        assert!(parse_ulimit("nofile=2048:1024").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("RTMIN+1"), Some(libc::SIGRTMIN() + 1));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("99"), None);
    }

    #[test]
    fn capabilities() {
        assert_eq!(
            normalise_cap("--cap-add", "net_admin").expect("ok"),
            "CAP_NET_ADMIN"
        );
        assert_eq!(normalise_cap("--cap-add", "all").expect("ok"), "ALL");
        assert!(normalise_cap("--cap-add", "CAP_NOPE").is_err());
    }
}
