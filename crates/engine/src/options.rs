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
    /// `--pid`, `--ipc`, `--uts`: `host`, or a namespace of its own
    /// (`private`, the default).
    pub pid: Option<String>,
    pub ipc: Option<String>,
    pub uts: Option<String>,
    /// The size of /dev/shm (docker's default: 64m).
    pub shm_size: Option<String>,
    /// Supplementary groups: gids or names in the image's /etc/group.
    pub group_add: Vec<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub cpu_shares: Option<u64>,
    /// Memory plus swap (docker's meaning); -1: unlimited swap.
    pub memory_swap: Option<String>,
    pub memory_reservation: Option<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `-P`: every exposed port (the image's and `--expose`) published on
    /// a free host port.
    pub publish_all: bool,
    /// `--expose PORT[/PROTO]` (or a range).
    pub expose: Vec<String>,
    /// `--restart no|on-failure[:N]|always|unless-stopped`.
    pub restart: Option<String>,
}

/// When a container that exited is started again by its exit command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    /// After a non-zero exit, at most this many times (None: always).
    OnFailure(Option<u32>),
    /// After any exit that `stop`/`kill` did not cause.
    Always,
    /// As Always (there is no daemon restart to tell them apart).
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(v: Option<&str>) -> Result<RestartPolicy, OptionError> {
        let Some(v) = v else {
            return Ok(RestartPolicy::No);
        };
        let (name, max) = v.split_once(':').map_or((v, None), |(n, m)| (n, Some(m)));
        let max = max
            .map(str::parse::<u32>)
            .transpose()
            .map_err(|_| bad("--restart", v, "the retry count is a number (on-failure:N)"))?;
        match (name, max) {
            ("" | "no", None) => Ok(RestartPolicy::No),
            ("on-failure", m) => Ok(RestartPolicy::OnFailure(m)),
            ("always", None) => Ok(RestartPolicy::Always),
            ("unless-stopped", None) => Ok(RestartPolicy::UnlessStopped),
            _ => Err(bad(
                "--restart",
                v,
                "expected no, on-failure[:N], always or unless-stopped",
            )),
        }
    }

    /// docker's (Name, MaximumRetryCount).
    pub fn docker(&self) -> (&'static str, u32) {
        match self {
            RestartPolicy::No => ("no", 0),
            RestartPolicy::OnFailure(m) => ("on-failure", m.unwrap_or(0)),
            RestartPolicy::Always => ("always", 0),
            RestartPolicy::UnlessStopped => ("unless-stopped", 0),
        }
    }
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

/// `--pid`/`--ipc`/`--uts`: whether the host's namespace is asked for.
pub fn host_namespace(flag: &'static str, v: Option<&str>) -> Result<bool, OptionError> {
    match v {
        None | Some("") | Some("private") => Ok(false),
        Some("host") => Ok(true),
        Some(other) => Err(bad(
            flag,
            other,
            "expected host or private (a pod shares namespaces between containers)",
        )),
    }
}

/// A cpuset list (`0-3,5`).
fn check_cpuset(flag: &'static str, v: &str) -> Result<(), OptionError> {
    let ok = !v.is_empty()
        && v.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let a = ends.next().and_then(|x| x.parse::<u32>().ok());
            match (a, ends.next()) {
                (Some(_), None) => true,
                (Some(a), Some(b)) => b.parse::<u32>().is_ok_and(|b| b >= a),
                _ => false,
            }
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            flag,
            v,
            "expected CPU or node numbers and ranges, such as 0-2,4",
        ))
    }
}

/// A resolv.conf word (`--dns-search`, `--dns-option`): it becomes one
/// token of a line, so no whitespace (a newline would add lines).
fn check_resolv_word(flag: &'static str, v: &str) -> Result<(), OptionError> {
    if v.is_empty() || v.len() > 253 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(flag, v, "expected one word without spaces"));
    }
    Ok(())
}

/// The byte size of a size flag (`512m`, `1g`).
pub fn size(flag: &'static str, v: &str) -> Result<u64, OptionError> {
    crate::util::parse_bytes(v).ok_or_else(|| bad(flag, v, "expected a size such as 512m or 2g"))
}

/// `--memory-swap`: bytes, or -1 (unlimited swap).
pub fn memory_swap(v: &str) -> Result<i64, OptionError> {
    if v.trim() == "-1" {
        return Ok(-1);
    }
    let b = size("--memory-swap", v)?;
    i64::try_from(b).map_err(|_| bad("--memory-swap", v, "too large"))
}

/// Checks the flags of namespaces, /dev/shm, groups, cpusets, memory and
/// DNS that crate::spec and the /etc files apply, before anything is made.
pub fn check_more(o: &CreateOptions) -> Result<(), OptionError> {
    for (flag, v) in [("--pid", &o.pid), ("--ipc", &o.ipc), ("--uts", &o.uts)] {
        let host = host_namespace(flag, v.as_deref())?;
        if host && o.pod.is_some() {
            return Err(bad(
                flag,
                "host",
                "a pod member shares its pod's namespaces",
            ));
        }
    }
    if host_namespace("--uts", o.uts.as_deref())? && o.hostname.is_some() {
        return Err(bad(
            "--hostname",
            o.hostname.as_deref().unwrap_or_default(),
            "a container on the host's UTS namespace has the host's name",
        ));
    }
    if let Some(v) = &o.shm_size {
        if size("--shm-size", v)? == 0 {
            return Err(bad("--shm-size", v, "must be more than 0"));
        }
    }
    for g in &o.group_add {
        if g.is_empty() || g.contains([':', '\n', ' ']) {
            return Err(bad("--group-add", g, "expected a group name or gid"));
        }
    }
    if let Some(v) = &o.cpuset_cpus {
        check_cpuset("--cpuset-cpus", v)?;
    }
    if let Some(v) = &o.cpuset_mems {
        check_cpuset("--cpuset-mems", v)?;
    }
    if let Some(s) = o.cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(bad("--cpu-shares", &s.to_string(), "must be 2 to 262144"));
        }
    }
    if let Some(v) = &o.memory_reservation {
        size("--memory-reservation", v)?;
    }
    if let Some(v) = &o.memory_swap {
        let swap = memory_swap(v)?;
        let memory = match &o.memory {
            Some(m) => size("--memory", m)?,
            None => return Err(bad("--memory-swap", v, "needs --memory (docker's rule)")),
        };
        if swap != -1 && (swap as u64) < memory {
            return Err(bad(
                "--memory-swap",
                v,
                "must be at least --memory (memory plus swap)",
            ));
        }
    }
    for d in &o.dns_search {
        check_resolv_word("--dns-search", d)?;
    }
    for d in &o.dns_options {
        check_resolv_word("--dns-option", d)?;
    }
    for e in &o.expose {
        expose_ports(e)?;
    }
    if RestartPolicy::parse(o.restart.as_deref())? != RestartPolicy::No && o.auto_remove {
        return Err(bad(
            "--restart",
            o.restart.as_deref().unwrap_or_default(),
            "conflicts with --rm",
        ));
    }
    Ok(())
}

/// `--expose 80`, `80/udp`, `8000-8010/tcp`: the ports and protocol.
pub fn expose_ports(v: &str) -> Result<(Vec<u16>, String), OptionError> {
    let (ports, proto) = v.split_once('/').unwrap_or((v, "tcp"));
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(bad("--expose", v, "the protocol is tcp, udp or sctp"));
    }
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let list: Vec<u16> = match ports.split_once('-') {
        Some((a, b)) => match (port(a), port(b)) {
            (Some(a), Some(b)) if a <= b => (a..=b).collect(),
            _ => return Err(bad("--expose", v, "expected PORT or FIRST-LAST")),
        },
        None => vec![port(ports).ok_or_else(|| bad("--expose", v, "expected a port in 1..65535"))?],
    };
    Ok((list, proto.to_string()))
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
