//! Namespaces from `linux.namespaces`: which to create with clone(2),
//! which to create later with unshare(2), and which to join by path.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::sys;

/// A namespace that could not be joined or created.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("opening {kind} namespace {path}: {source}")]
    Open {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("joining {kind} namespace {path}: setns: {source}")]
    Join {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a {kind} namespace")]
    WrongType { kind: &'static str, path: PathBuf },
    #[error("unshare({what}): {source}")]
    Unshare {
        what: String,
        source: std::io::Error,
    },
    #[error("linux.namespaces: {0}")]
    Unsupported(String),
}

/// The CLONE_NEW* flag of a namespace type.
pub fn flag(t: LinuxNamespaceType) -> u64 {
    (match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }) as u64
}

/// The name under /proc/PID/ns/.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Every type, in the order they are joined: user first (it grants the
/// rights to join the others), mount last (it changes path lookup).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

/// How the container gets each of its namespaces.
#[derive(Debug, Default)]
pub struct Plan {
    /// Created by clone(2) (the container's init is born into them).
    pub clone_flags: u64,
    /// Created by init with unshare(2) after joining (cgroup must follow the
    /// move into the container's cgroup; time offsets need writing first).
    pub unshare_flags: u64,
    /// Joined by path, in JOIN_ORDER, pid excluded.
    pub joins: Vec<(LinuxNamespaceType, PathBuf)>,
    /// A pid namespace to join (set for children by the runtime itself).
    pub pid_path: Option<PathBuf>,
    pub new_user: bool,
    pub new_pid: bool,
    pub new_net: bool,
    pub new_cgroup: bool,
    pub new_time: bool,
    /// A new mount namespace: mounts are private to the container and the
    /// root can be pivoted. Without one, mounts land in the namespace the
    /// container shares and the root is entered with chroot.
    pub new_mount: bool,
    /// The container runs in a user namespace (new or joined).
    pub in_userns: bool,
    /// Namespaces must be joined before new ones are created, which one
    /// clone cannot do: init first joins (as a child in the host's user
    /// namespace), then unshares the user namespace (the runtime writes its
    /// id maps), then `stage_flags`, and forks into a new pid namespace.
    pub two_stage: bool,
    /// With `two_stage`: the new namespaces created after the user namespace.
    pub stage_flags: u64,
}

impl Plan {
    pub fn new(namespaces: &[LinuxNamespace]) -> Result<Plan, NamespaceError> {
        let mut plan = Plan::default();
        let find = |t| namespaces.iter().find(|n| n.typ() == t);
        let user_joined = find(LinuxNamespaceType::User).is_some_and(|n| n.path().is_some());
        for t in JOIN_ORDER {
            let Some(ns) = find(t) else { continue };
            match ns.path() {
                Some(p) => {
                    if t == LinuxNamespaceType::Pid {
                        plan.pid_path = Some(p.clone());
                    } else {
                        plan.joins.push((t, p.clone()));
                    }
                }
                None => {
                    let f = flag(t);
                    match t {
                        LinuxNamespaceType::User => plan.new_user = true,
                        LinuxNamespaceType::Pid => plan.new_pid = true,
                        LinuxNamespaceType::Network => plan.new_net = true,
                        LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                        LinuxNamespaceType::Time => plan.new_time = true,
                        LinuxNamespaceType::Mount => plan.new_mount = true,
                        _ => {}
                    }
                    let late = matches!(t, LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time)
                        || (user_joined && !matches!(t, LinuxNamespaceType::Pid));
                    if late {
                        plan.unshare_flags |= f;
                    } else {
                        plan.clone_flags |= f;
                    }
                }
            }
        }
        plan.in_userns = find(LinuxNamespaceType::User).is_some();
        let joins_others = plan
            .joins
            .iter()
            .any(|(t, _)| *t != LinuxNamespaceType::User);
        if (plan.new_user && joins_others) || (user_joined && plan.new_pid) {
            let late = (libc::CLONE_NEWCGROUP | libc::CLONE_NEWTIME) as u64;
            let all_new = plan.clone_flags | plan.unshare_flags;
            plan.two_stage = true;
            plan.clone_flags = 0;
            plan.unshare_flags = all_new & late;
            plan.stage_flags = all_new & !late & !(libc::CLONE_NEWUSER as u64);
        }
        Ok(plan)
    }
}

/// An opened namespace ready to join.
pub struct OpenNamespace {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

/// Opens a namespace file, checking it is of the expected type.
pub fn open(
    t: LinuxNamespaceType,
    path: &std::path::Path,
) -> Result<OpenNamespace, NamespaceError> {
    let fd = sys::open(path, libc::O_RDONLY, 0).map_err(|source| NamespaceError::Open {
        kind: proc_name(t),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(OpenNamespace {
        typ: t,
        path: path.to_path_buf(),
        fd,
    })
}

/// Joins an opened namespace.
pub fn join(ns: &OpenNamespace) -> Result<(), NamespaceError> {
    // SAFETY: setns with a valid fd and a CLONE_NEW* type.
    let ret = unsafe { libc::setns(ns.fd.as_raw_fd(), flag(ns.typ) as libc::c_int) };
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            return Err(NamespaceError::WrongType {
                kind: proc_name(ns.typ),
                path: ns.path.clone(),
            });
        }
        return Err(NamespaceError::Join {
            kind: proc_name(ns.typ),
            path: ns.path.clone(),
            source: e,
        });
    }
    Ok(())
}

/// Moves this process into the time namespace its children would get.
///
/// unshare(CLONE_NEWTIME) affects children only, and its offsets can be
/// set only until a process is in it. Kernels since 6.x also switch on
/// execve, older ones (Debian 12's 6.1) do not; entering explicitly after
/// the offsets are written works on both.
pub fn enter_children_time_namespace() -> Result<(), NamespaceError> {
    let path = std::path::Path::new("/proc/self/ns/time_for_children");
    let ns = open(LinuxNamespaceType::Time, path)?;
    join(&ns)
}

/// unshare(2) with `flags`.
pub fn unshare(flags: u64) -> Result<(), NamespaceError> {
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: unshare with CLONE_NEW* flags.
    if unsafe { libc::unshare(flags as libc::c_int) } < 0 {
        return Err(NamespaceError::Unshare {
            what: format!("{flags:#x}"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
