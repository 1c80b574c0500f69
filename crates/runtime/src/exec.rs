//! `exec`: a new process inside a running container.
//!
//! ```text
//! hako-runtime exec ── setns(pid) for children, fork ──▶ helper = the new process
//!   │ cgroup.procs ← pid                                  │ setns user, ipc, uts, net,
//!   │ Go ────────────────────────────────────────────────▶│ cgroup, time, mnt
//!   │                                                     │ console, rlimits, user, caps
//!   │◀─────────────────────────────────────────────Ready │ execve
//!   wait (or exit with --detach)
//! ```
//!
//! With a seccomp profile that notifies, the child sends `SeccompListener`
//! and the listener fd right after loading its filter (before Ready, or
//! with no_new_privs between Ready and execve) and the runtime hands it to
//! the agent at `listenerPath` (see [`crate::seccomp_agent`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::container::{write_pid_file, Runtime, RuntimeError, SignalForwarder};
use crate::init;
use crate::namespaces::{self, OpenNamespace, JOIN_ORDER};
use crate::process;
use crate::state::Status;
use crate::sync::{Channel, Message};
use crate::sys;

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub process: Process,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn sys_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Sys { what, source }
}

/// Namespaces of `pid` that differ from ours, in join order.
fn namespaces_to_join(pid: i32, types: &[LinuxNamespaceType]) -> Result<Vec<OpenNamespace>> {
    let mut out = Vec::new();
    for t in JOIN_ORDER {
        if !types.contains(&t) {
            continue;
        }
        let name = namespaces::proc_name(t);
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = format!("/proc/self/ns/{name}");
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            _ => false,
        };
        if !same {
            out.push(namespaces::open(t, &theirs)?);
        }
    }
    Ok(out)
}

impl Runtime {
    /// Runs `opts.process` in container `id`. Returns its exit code, or 0
    /// right after it started with `detach`.
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32> {
        let (state, status) = self.load_status(id)?;
        if !matches!(status, Status::Running | Status::Created) {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: status.as_str(),
                action: "exec needs a running container".into(),
            });
        }
        let config = self.frozen_config(id, &state)?;
        let linux = config.spec.linux().as_ref();
        let types: Vec<LinuxNamespaceType> = linux
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or(&[])
            .iter()
            .map(|n| n.typ())
            .collect();
        let in_userns = types.contains(&LinuxNamespaceType::User);
        let p = &opts.process;
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(RuntimeError::Usage("exec: no command given".into()));
        }
        if !p.cwd().is_absolute() {
            return Err(RuntimeError::Usage(format!(
                "exec: cwd {:?} must be an absolute path",
                p.cwd()
            )));
        }
        let wants_tty = p.terminal().unwrap_or(false);
        if wants_tty && opts.console_socket.is_none() && opts.detach {
            return Err(RuntimeError::Usage(
                "exec --tty --detach needs --console-socket".into(),
            ));
        }
        // A foreground terminal without --console-socket: we receive the
        // pty master ourselves and proxy it to our stdio, like runc.
        let mut proxy_sock: Option<std::os::unix::net::UnixStream> = None;
        let console: Option<OwnedFd> = match (&opts.console_socket, wants_tty) {
            (Some(path), true) => Some(
                std::os::unix::net::UnixStream::connect(path)
                    .map(OwnedFd::from)
                    .map_err(sys_err(format!(
                        "connecting to --console-socket {}",
                        path.display()
                    )))?,
            ),
            (None, true) => {
                let (a, b) = std::os::unix::net::UnixStream::pair()
                    .map_err(sys_err("creating the console socket pair"))?;
                proxy_sock = Some(a);
                Some(OwnedFd::from(b))
            }
            _ => None,
        };
        let mut joins = namespaces_to_join(state.pid, &types)?;
        // Sharing our mount namespace, the container's root is a chroot:
        // the exec'd process must enter it too, or it would see the host.
        let root = if joins.iter().any(|n| n.typ == LinuxNamespaceType::Mount) {
            None
        } else {
            let path = PathBuf::from(format!("/proc/{}/root", state.pid));
            Some(
                sys::open(&path, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(sys_err(format!("opening {}", path.display())))?,
            )
        };
        // The pid namespace applies to our children: join it here.
        // An unprivileged caller may join it only from inside the
        // container's user namespace, so it enters that one here too.
        if let Some(pos) = joins.iter().position(|n| n.typ == LinuxNamespaceType::Pid) {
            let pidns = joins.remove(pos);
            if let Err(e) = namespaces::join(&pidns) {
                let user = joins.iter().position(|n| n.typ == LinuxNamespaceType::User);
                match user {
                    Some(u) if self.rootless => {
                        let userns = joins.remove(u);
                        namespaces::join(&userns)?;
                        namespaces::join(&pidns)?;
                    }
                    _ => return Err(e.into()),
                }
            }
        }
        if !state.is_alive() {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: "stopped",
                action: "exec needs a running container".into(),
            });
        }
        let seccomp = self.seccomp_program(linux)?;
        let blocked = if opts.detach {
            None
        } else {
            Some(SignalForwarder::block())
        };
        let (parent, child) = Channel::pair().map_err(sys_err("creating the sync socket pair"))?;
        // SAFETY: single-threaded; the child ends in execve or _exit.
        let pid = unsafe { sys::clone_fork(0) }.map_err(sys_err("fork of the exec process"))?;
        if pid == 0 {
            drop(parent);
            let fds = ChildFds {
                console: console.as_ref(),
                root: root.as_ref(),
            };
            let err = exec_child(
                &child,
                &joins,
                p,
                seccomp.as_ref(),
                in_userns,
                fds,
                opts.preserve_fds,
            );
            let _ = child.send(&Message::Error(err));
            sys::exit_now(127);
        }
        drop(child);
        drop(console);
        let cg = &state.cgroup;
        let reap = |pid: i32| {
            // SAFETY: reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        };
        if let Err(e) = cg.add_process(pid) {
            reap(pid);
            return Err(e.into());
        }
        parent
            .send(&Message::Go(String::new()))
            .map_err(sys_err("starting the exec process"))?;
        // Ready comes just before execve; a failing execve reports an Error
        // right after, and the channel closes on success (CLOEXEC). A
        // filter that notifies sends its listener before or after Ready,
        // depending on when it is loaded (see init::SeccompPlan).
        let profile = linux.and_then(|l| l.seccomp().as_ref());
        let mut ready = false;
        loop {
            let failure = match parent.recv_with_fd() {
                Ok(Some((Message::Ready, _))) if !ready => {
                    ready = true;
                    continue;
                }
                Ok(Some((Message::SeccompListener, Some(listener)))) => {
                    let exec_state = crate::container::oci_state(&state, status);
                    match crate::seccomp_agent::send_listener(profile, pid, &exec_state, listener) {
                        Ok(()) => continue,
                        Err(e) => e.into(),
                    }
                }
                Ok(Some((Message::SeccompListener, None))) => RuntimeError::Init {
                    id: id.into(),
                    message: "the exec process sent its seccomp listener without the fd".into(),
                },
                Ok(Some((Message::Error(e), _))) => RuntimeError::Init {
                    id: id.into(),
                    message: e,
                },
                _ if ready => break,
                other => RuntimeError::Init {
                    id: id.into(),
                    message: format!(
                        "exec process failed to start ({:?})",
                        other.map(|o| o.map(|(m, _)| m))
                    ),
                },
            };
            reap(pid);
            return Err(failure);
        }
        let master = match &proxy_sock {
            Some(sock) => match crate::console::recv_fd(sock) {
                Ok(m) => Some(m),
                Err(e) => {
                    reap(pid);
                    return Err(sys_err("receiving the pty master")(e));
                }
            },
            None => None,
        };
        if let Some(f) = &opts.pid_file {
            write_pid_file(f, pid)?;
        }
        match (blocked, master) {
            (None, _) => Ok(0),
            (Some(fwd), Some(m)) => {
                crate::terminal::proxy(&m, pid, &fwd.set).map_err(sys_err("terminal proxy"))
            }
            (Some(fwd), None) => Ok(fwd.wait_forwarding(pid)),
        }
    }
}

/// Descriptors the exec child uses besides the sync channel.
struct ChildFds<'a> {
    console: Option<&'a OwnedFd>,
    /// The container's root, when it is a chroot in our mount namespace.
    root: Option<&'a OwnedFd>,
}

/// The child side of exec. Returns only with an error message.
fn exec_child(
    chan: &Channel,
    joins: &[OpenNamespace],
    p: &Process,
    seccomp: Option<&crate::seccomp_cache::Program>,
    in_userns: bool,
    fds: ChildFds,
    preserve_fds: u32,
) -> String {
    let console = fds.console;
    type Prepared<'a> = (PathBuf, Vec<String>, Vec<String>, init::SeccompPlan<'a>);
    let run = || -> std::result::Result<Prepared<'_>, String> {
        match chan.recv() {
            Ok(Some(Message::Go(_))) => {}
            _ => return Err("the runtime went away".into()),
        }
        // Root joins the container's namespaces with its host privileges,
        // then its user namespace. An unprivileged caller has privileges
        // only inside that user namespace: what it cannot join before,
        // it joins after entering it.
        let mut later = Vec::new();
        for ns in joins.iter().filter(|n| n.typ != LinuxNamespaceType::User) {
            if namespaces::join(ns).is_err() {
                later.push(ns);
            }
        }
        for ns in joins.iter().filter(|n| n.typ == LinuxNamespaceType::User) {
            namespaces::join(ns).map_err(|e| e.to_string())?;
        }
        for ns in later {
            namespaces::join(ns).map_err(|e| e.to_string())?;
        }
        if let Some(root) = fds.root {
            // SAFETY: fchdir on a valid directory fd, then chroot to ".".
            let ok =
                unsafe { libc::fchdir(root.as_raw_fd()) == 0 && libc::chroot(c".".as_ptr()) == 0 };
            if !ok {
                return Err(format!(
                    "entering the container's root: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if in_userns {
            // SAFETY: integer arguments.
            unsafe {
                libc::setresgid(0, 0, 0);
                libc::setresuid(0, 0, 0);
            }
        }
        // SAFETY: setsid has no memory effects.
        unsafe { libc::setsid() };
        if let Some(sock) = console {
            init::setup_console(sock, Some(p), false).map_err(|e| e.to_string())?;
        }
        sys::cloexec_from(3 + preserve_fds)
            .map_err(|e| format!("marking fds close-on-exec: {e}"))?;
        let filter = init::SeccompPlan::new(seccomp, p);
        filter.load_early(chan).map_err(|e| e.to_string())?;
        init::apply_process(p, in_userns).map_err(|e| e.to_string())?;
        let args = p.args().clone().unwrap_or_default();
        let env = process::with_home(p.env().clone().unwrap_or_default(), p.user().uid());
        let exe = process::find_executable(args.first().map(String::as_str).unwrap_or(""), &env)
            .map_err(|e| e.to_string())?;
        Ok((exe, args, env, filter))
    };
    match run() {
        Ok((exe, args, env, filter)) => {
            if let Err(e) = chan.send(&Message::Ready) {
                return e.to_string();
            }
            process::reset_signals();
            // The runtime reads the channel until execve closes it: a
            // listener's fd can still go there.
            if let Err(e) = filter
                .load_listener_late(chan)
                .and_then(|()| filter.load_late())
            {
                return e.to_string();
            }
            process::exec(Path::new(&exe), &args, &env).to_string()
        }
        Err(e) => e,
    }
}
