//! The last steps before the user's program runs, shared by container init
//! and `exec`: rlimits, capabilities, user and groups, no_new_privs, the
//! executable lookup and execve itself.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimit, PosixRlimitType, User};

/// A failure applying process attributes, naming the attribute.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error("capability {0}: not known to this runtime")]
    UnknownCapability(String),
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("exec: {path:?}: {reason}")]
    NotExecutable { path: String, reason: String },
}

type Result<T> = std::result::Result<T, ProcessError>;

fn sys_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessError {
    let what = what.into();
    move |source| ProcessError::Sys { what, source }
}

fn last_err(what: impl Into<String>) -> ProcessError {
    ProcessError::Sys {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Applies `process.rlimits`. Raising a hard limit needs CAP_SYS_RESOURCE;
/// without it the kernel's EPERM is reported with the limit's name.
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for r in rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: valid resource id and pointer to an initialised rlimit.
        if unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) } < 0 {
            return Err(last_err(format!(
                "setting {:?} to soft {} hard {} (raising a hard limit needs CAP_SYS_RESOURCE)",
                r.typ(),
                r.soft(),
                r.hard()
            )));
        }
    }
    Ok(())
}

/// Sets no_new_privs.
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(last_err("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Converts an OCI capability set, dropping (with a debug line) the ones
/// this kernel does not have.
fn to_caps(set: &Option<Capabilities>, last: u8) -> Result<HashSet<caps::Capability>> {
    let mut out = HashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap: caps::Capability = name
            .parse()
            .map_err(|_| ProcessError::UnknownCapability(name.clone()))?;
        if cap.index() > last {
            crate::debug!("capability {name} is not supported by this kernel; skipped");
            continue;
        }
        out.insert(cap);
    }
    Ok(out)
}

/// The five sets, converted once.
pub struct CapSets {
    pub bounding: HashSet<caps::Capability>,
    pub effective: HashSet<caps::Capability>,
    pub permitted: HashSet<caps::Capability>,
    pub inheritable: HashSet<caps::Capability>,
    pub ambient: HashSet<caps::Capability>,
}

impl CapSets {
    pub fn from_spec(c: &LinuxCapabilities) -> Result<CapSets> {
        let last = last_cap();
        Ok(CapSets {
            bounding: to_caps(c.bounding(), last)?,
            effective: to_caps(c.effective(), last)?,
            permitted: to_caps(c.permitted(), last)?,
            inheritable: to_caps(c.inheritable(), last)?,
            ambient: to_caps(c.ambient(), last)?,
        })
    }
}

/// Drops every capability not in `keep` from the bounding set. Must run
/// while CAP_SETPCAP is still effective (before switching user).
pub fn drop_bounding(keep: &HashSet<caps::Capability>) -> Result<()> {
    let last = last_cap();
    for cap in caps::all() {
        if cap.index() > last || keep.contains(&cap) {
            continue;
        }
        caps::drop(None, caps::CapSet::Bounding, cap).map_err(|e| ProcessError::Sys {
            what: format!("dropping {cap} from the bounding set"),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}

/// Switches to `user` (uid, gid, additional gids), keeping the permitted
/// capabilities across the switch so `apply_caps` can set them.
pub fn switch_user(user: &User, setgroups_allowed: bool) -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
        return Err(last_err("prctl(PR_SET_KEEPCAPS)"));
    }
    if setgroups_allowed {
        let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
        // SAFETY: pointer and length describe the vector.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } < 0 {
            return Err(last_err(format!("setgroups({groups:?})")));
        }
    } else if user
        .additional_gids()
        .as_ref()
        .is_some_and(|g| !g.is_empty())
    {
        return Err(ProcessError::Sys {
            what: "process.user.additionalGids".into(),
            source: std::io::Error::other("setgroups is denied in this user namespace"),
        });
    }
    let (uid, gid) = (user.uid(), user.gid());
    // SAFETY: integer arguments.
    if unsafe { libc::setresgid(gid, gid, gid) } < 0 {
        return Err(last_err(format!("setresgid({gid})")));
    }
    // SAFETY: integer arguments.
    if unsafe { libc::setresuid(uid, uid, uid) } < 0 {
        return Err(last_err(format!("setresuid({uid})")));
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } < 0 {
        return Err(last_err("prctl(PR_SET_KEEPCAPS, 0)"));
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets.
pub fn apply_caps(sets: &CapSets) -> Result<()> {
    let set = |which: caps::CapSet, value: &HashSet<caps::Capability>, name: &str| {
        caps::set(None, which, value).map_err(|e| ProcessError::Sys {
            what: format!("setting the {name} capability set"),
            source: std::io::Error::other(e.to_string()),
        })
    };
    // Permitted must grow before effective can; inheritable needs permitted.
    let mut first: HashSet<caps::Capability> =
        sets.permitted.union(&sets.effective).copied().collect();
    first.extend(sets.inheritable.iter().copied());
    let _ = caps::set(None, caps::CapSet::Effective, &first);
    set(caps::CapSet::Inheritable, &sets.inheritable, "inheritable")?;
    set(caps::CapSet::Effective, &sets.effective, "effective")?;
    set(caps::CapSet::Permitted, &sets.permitted, "permitted")?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| ProcessError::Sys {
        what: "clearing the ambient capability set".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    for cap in &sets.ambient {
        if let Err(e) = caps::raise(None, caps::CapSet::Ambient, *cap) {
            crate::warn!(
                "cannot raise ambient capability {cap} (it must be permitted and inheritable): {e}"
            );
        }
    }
    Ok(())
}

/// Adds HOME from the container's /etc/passwd entry for `uid` (or "/")
/// when the environment has none, as runc does.
pub fn with_home(mut env: Vec<String>, uid: u32) -> Vec<String> {
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return env;
    }
    let home = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());
    env.push(format!("HOME={home}"));
    env
}

/// The default PATH when process.env has none (runc's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds the program to execute the way execvp would, with the container's
/// PATH, in the current root and working directory.
pub fn find_executable(program: &str, env: &[String]) -> Result<PathBuf> {
    if program.is_empty() {
        return Err(ProcessError::NotFound(program.to_string()));
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        check_executable(&p)?;
        return Ok(p);
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(ProcessError::NotFound(program.to_string()))
}

fn check_executable(p: &Path) -> Result<()> {
    let meta = std::fs::metadata(p).map_err(|e| ProcessError::NotExecutable {
        path: p.display().to_string(),
        reason: e.to_string(),
    })?;
    if meta.is_dir() {
        return Err(ProcessError::NotExecutable {
            path: p.display().to_string(),
            reason: "is a directory".into(),
        });
    }
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(ProcessError::NotExecutable {
            path: p.display().to_string(),
            reason: "permission denied (no execute bit)".into(),
        });
    }
    Ok(())
}

/// Restores default dispositions and an empty signal mask, so the container
/// does not inherit the runtime's (Rust ignores SIGPIPE, `run` blocks the
/// signals it forwards).
pub fn reset_signals() {
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL for a valid signal number is always sound.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn to_cstrings(items: &[String], what: &str) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| ProcessError::Sys {
                what: format!("{what} {s:?}"),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })
        })
        .collect()
}

/// Replaces the process image. Returns only on failure.
pub fn exec(path: &Path, args: &[String], env: &[String]) -> ProcessError {
    let prog = match CString::new(path.as_os_str().as_encoded_bytes()) {
        Ok(p) => p,
        Err(_) => return ProcessError::NotFound(path.display().to_string()),
    };
    let argv = match to_cstrings(args, "argument") {
        Ok(a) => a,
        Err(e) => return e,
    };
    let envp = match to_cstrings(env, "environment entry") {
        Ok(a) => a,
        Err(e) => return e,
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: the argument and environment arrays are NULL-terminated arrays
    // of valid C strings that live until the call returns.
    unsafe { libc::execve(prog.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    sys_err(format!("execve {}", path.display()))(std::io::Error::last_os_error())
}
