//! `linux.seccomp` → a seccomp filter, compiled with libseccomp and loaded
//! by the process it confines just before exec.
//!
//! Unknown syscall names are skipped (with a debug line) like runc does, so
//! one profile serves kernels and architectures of different ages; a
//! malformed rule is an error naming the rule.
//!
//! The runtime exports the compiled program and caches it; the container
//! process loads it with seccomp(2) ([`crate::seccomp_cache`]).
//!
//! SCMP_ACT_NOTIFY (user notification): the program is loaded with a new
//! listener, whose fd the loading process sends to the runtime at once
//! over the sync channel; the runtime passes it on to the agent at
//! `listenerPath` ([`crate::seccomp_agent`]).

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

/// A profile that cannot be compiled or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: {0}")]
    Invalid(String),
    #[error("linux.seccomp: {what}: {source}")]
    Lib {
        what: String,
        source: libseccomp::error::SeccompError,
    },
}

fn lib(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Lib { what, source }
}

/// A compiled filter, ready to load.
pub struct Filter {
    ctx: ScmpFilterContext,
}

/// The action as libseccomp encodes it. The kernel has 16 bits for an
/// errno or trace value (SECCOMP_RET_DATA) and libseccomp keeps only those,
/// as runc and crun do; truncating here too makes two actions equal exactly
/// when libseccomp sees them as the same, which the default-action check in
/// [`compile`] relies on.
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    let data = errno.map_or(libc::EPERM as u16, |e| e as u16);
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(data)),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(data),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn compare_op(op: LinuxSeccompOperator, value: u64) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value),
    }
}

/// True when the profile uses SCMP_ACT_NOTIFY anywhere.
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The syscall that carries the listener fd from the process that loaded
/// the filter to the runtime ([`crate::sync::Channel::send_seccomp_listener`]).
const LISTENER_SEND_SYSCALL: &str = "sendmsg";

/// Checks a profile's use of SCMP_ACT_NOTIFY, as runc does: it needs a
/// `listenerPath`, and may not notify the runtime's own way of handing the
/// listener over. Until the listener fd has left the process that loaded
/// the filter, a notified syscall there would wait for an agent that can
/// never get the fd: so neither the default action (every syscall) nor a
/// rule for `sendmsg` may be SCMP_ACT_NOTIFY (runc refuses the default
/// action and `write`, its own carrier). Part of [`compile`], which
/// `create` and `exec` run before they make anything.
pub fn check_notify(s: &LinuxSeccomp) -> Result<(), SeccompError> {
    if !uses_notify(s) {
        return Ok(());
    }
    if s.listener_path()
        .as_ref()
        .is_none_or(|p| p.as_os_str().is_empty())
    {
        return Err(SeccompError::Invalid(
            "SCMP_ACT_NOTIFY needs listenerPath: the unix socket of the seccomp agent \
             that receives the notification fd"
                .into(),
        ));
    }
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::Invalid(
            "SCMP_ACT_NOTIFY cannot be the default action: the process loading the filter \
             must still send the listener fd to the runtime (runc refuses it too); \
             notify the syscalls the agent handles, one rule each"
                .into(),
        ));
    }
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        if rule.action() == LinuxSeccompAction::ScmpActNotify
            && rule.names().iter().any(|n| n == LISTENER_SEND_SYSCALL)
        {
            return Err(SeccompError::Invalid(format!(
                "syscalls[{i}]: SCMP_ACT_NOTIFY cannot be used for {LISTENER_SEND_SYSCALL}: \
                 the runtime sends the listener fd with it before any agent has the fd"
            )));
        }
    }
    Ok(())
}

/// Compiles a profile.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    check_notify(s)?;
    let notify = uses_notify(s);
    if notify
        && !libseccomp::check_api(6, libseccomp::ScmpVersion::from((2, 5, 0))).unwrap_or(false)
    {
        return Err(SeccompError::Invalid(format!(
            "SCMP_ACT_NOTIFY needs libseccomp >= 2.5.0 and Linux >= 5.7 (libseccomp API level 6; this one has {})",
            libseccomp::get_api()
        )));
    }
    let default = action(s.default_action(), s.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("creating the filter"))?;
    // libseccomp sets no_new_privs itself unless told not to; that is the
    // config's decision (process.noNewPrivileges), not the filter's.
    ctx.set_ctl_nnp(false)
        .map_err(lib("clearing SCMP_FLTATR_CTL_NNP"))?;
    for arch in s.architectures().iter().flatten() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let a = ScmpArch::from_str(&name).map_err(|_| {
            SeccompError::Invalid(format!("architecture {name:?} is not known to libseccomp"))
        })?;
        if let Err(e) = ctx.add_arch(a) {
            // The native architecture is already in the filter.
            if e.errno() != Some(libseccomp::error::SeccompErrno::EEXIST) {
                return Err(lib(format!("adding architecture {name}"))(e));
            }
        }
    }
    for flag in s.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                ctx.set_ctl_tsync(true)
                    .map_err(lib("flag SECCOMP_FILTER_FLAG_TSYNC"))?;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                ctx.set_ctl_log(true)
                    .map_err(lib("flag SECCOMP_FILTER_FLAG_LOG"))?;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                ctx.set_ctl_ssb(true)
                    .map_err(lib("flag SECCOMP_FILTER_FLAG_SPEC_ALLOW"))?;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                // A load flag only (libseccomp 2.5 has no attribute for it):
                // seccomp_cache::Program::load passes it with a listener.
            }
        }
    }
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            // libseccomp refuses rules that repeat the default action.
            continue;
        }
        if rule.names().is_empty() {
            return Err(SeccompError::Invalid(format!("syscalls[{i}] has no names")));
        }
        let args = rule.args().as_deref().unwrap_or(&[]);
        let mut cmps = Vec::with_capacity(args.len());
        for a in args {
            if a.index() > 5 {
                return Err(SeccompError::Invalid(format!(
                    "syscalls[{i}]: argument index {} is out of range 0-5",
                    a.index()
                )));
            }
            let cmp = if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                ScmpArgCompare::new(
                    a.index() as u32,
                    compare_op(a.op(), a.value()),
                    a.value_two().unwrap_or(0),
                )
            } else {
                ScmpArgCompare::new(a.index() as u32, compare_op(a.op(), a.value()), a.value())
            };
            cmps.push(cmp);
        }
        // Conditions on distinct arguments are ANDed in one rule; several on
        // the same argument become one rule each (ORed), as runc does.
        let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let one_rule = indexes.len() == args.len();
        for name in rule.names() {
            let sc = match ScmpSyscall::from_name(name) {
                Ok(sc) => sc,
                Err(_) => {
                    crate::debug!(
                        "seccomp: syscall {name:?} is unknown on this system; rule skipped"
                    );
                    continue;
                }
            };
            let what = || format!("syscalls[{i}] ({name})");
            if cmps.is_empty() {
                ctx.add_rule(act, sc).map_err(lib(what()))?;
            } else if one_rule {
                ctx.add_rule_conditional(act, sc, &cmps)
                    .map_err(lib(what()))?;
            } else {
                for c in &cmps {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(lib(what()))?;
                }
            }
        }
    }
    Ok(Filter { ctx })
}

impl Filter {
    /// The filter as the kernel would receive it (classic BPF, 8 bytes per
    /// `sock_filter` instruction), without loading it: for tests and the
    /// fuzz target `seccomp`. libseccomp 2.5 exports only to a file
    /// descriptor, so this goes through a memfd.
    pub fn export_bpf(&self) -> Result<Vec<u8>, SeccompError> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        use std::io::{Read, Seek, SeekFrom};
        let failed = |e: std::io::Error| {
            SeccompError::Invalid(format!("exporting the filter through a memfd: {e}"))
        };
        let fd = memfd_create(c"hako-seccomp-bpf", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| failed(e.into()))?;
        let mut file = std::fs::File::from(fd);
        self.ctx
            .export_bpf(&file)
            .map_err(lib("exporting the filter"))?;
        let mut bpf = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(failed)?;
        file.read_to_end(&mut bpf).map_err(failed)?;
        Ok(bpf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("profile parses")
    }

    fn bpf(json: &str) -> Vec<u8> {
        compile(&profile(json))
            .expect("profile compiles")
            .export_bpf()
            .expect("filter exports")
    }

    #[test]
    fn exports_without_loading() {
        let code = bpf(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW",
             "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#);
        assert!(
            !code.is_empty() && code.len().is_multiple_of(8),
            "{} bytes",
            code.len()
        );
        // SAFETY: PR_GET_SECCOMP takes no pointers; it returns this
        // thread's seccomp mode.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_SECCOMP) }, 0);
    }

    /// Caught by the `seccomp` fuzz target (seed errno-default-and-rules):
    /// errnoRet 65537 is errno 1 to libseccomp, so this rule repeats the
    /// default action and must be skipped; it used to reach libseccomp,
    /// which refused it (EACCES) and so failed the whole profile.
    #[test]
    fn rule_equal_to_default_after_truncation_is_skipped() {
        let with_rule = bpf(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["close"],"action":"SCMP_ACT_ERRNO","errnoRet":65537},
            {"names":["ptrace"],"action":"SCMP_ACT_ERRNO","errnoRet":4294901761}]}"#);
        let without = bpf(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1}"#);
        assert_eq!(with_rule, without);
    }
}
