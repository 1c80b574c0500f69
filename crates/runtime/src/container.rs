//! The container lifecycle as runtime-spec defines it: create, start,
//! state, kill, delete — plus run, list, ps, pause and resume.
//!
//! Process model of `create` (one clone, no intermediate process):
//!
//! ```text
//! hako-runtime create ──clone(CLONE_NEW*)──▶ init (pid 1 of the container)
//!   │ uid/gid maps, state.json                     │
//!   │ Go(state) ─────────────────────────────────▶│ namespaces, mounts
//!   │ cgroup (init joins it meanwhile)             │
//!   │ CgroupJoined ──────────────────────────────▶│ devices
//!   │◀──────────────────────────── RunCreateHooks │ (only if there are hooks)
//!   │ prestart, createRuntime hooks                │
//!   │ HooksDone ─────────────────────────────────▶│ createContainer hooks,
//!   │                                              │ pivot_root, masks, console,
//!   │◀───────────────────────────────────── Ready │ rlimits, user, caps
//!   exit 0                                          read(exec.fifo) … blocks
//! hako-runtime start: write(exec.fifo) ──────────▶ startContainer hooks, execve
//! ```
//!
//! The cgroup is joined before `Go` instead (and no `CgroupJoined` is
//! sent) with a new cgroup namespace, a two-stage init, a systemd scope or
//! no new mount namespace: see `cgroup_joined_later` in `create`.
//!
//! A seccomp profile with SCMP_ACT_NOTIFY adds one step: init sends
//! `SeccompListener` with the listener fd right after loading its filter
//! (before caps are dropped, or with no_new_privs just before Ready), and
//! create hands the fd to the agent at `listenerPath` before reading on
//! (see [`crate::seccomp_agent`]).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use hako_cgroups::systemd::{UnitLimits, UnitPath};
use hako_cgroups::{Cgroup, CgroupError, CgroupPath, Layout};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use serde::Serialize;

use crate::hooks::{self, HookError};
use crate::init::{self, InitArgs};
use crate::namespaces::{self, NamespaceError, Plan};
use crate::spec::{self, Config, SpecError};
use crate::state::{ContainerState, StateError, Status, Store};
use crate::sync::{Channel, Message};
use crate::sys;

pub use crate::hooks::state_json as hook_state_json;
pub use crate::spec::OCI_VERSION;

/// Errors of lifecycle operations, each naming the container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Idmap(#[from] crate::idmap::IdmapError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    SeccompAgent(#[from] crate::seccomp_agent::AgentError),
    #[error("container {id}: {message}")]
    Init { id: String, message: String },
    #[error("container {id} is {status}: {action}")]
    WrongStatus {
        id: String,
        status: &'static str,
        action: String,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn sys_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Sys { what, source }
}

/// Options of `create` (and `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
}

/// The state document of runtime-spec (what `state` prints and hooks read).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: &'static str,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A container that `create` has set up, still a child of this process.
pub struct Created {
    pub pid: i32,
    pub state: ContainerState,
}

/// The runtime: a state root and global settings.
pub struct Runtime {
    pub store: Store,
    pub systemd_cgroup: bool,
    /// Run by an unprivileged user: cgroups are used only where delegated.
    pub rootless: bool,
}

/// Undoes a partial create unless disarmed.
struct CreateGuard<'a> {
    store: &'a Store,
    /// Set when mounts land in a shared mount namespace under this rootfs.
    shared_mounts: Option<PathBuf>,
    id: String,
    child: Option<i32>,
    cgroup: Option<Cgroup>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(rootfs) = &self.shared_mounts {
            crate::rootfs::unmount_below(rootfs);
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                crate::warn!("cleaning up cgroup of {}: {e}", self.id);
            }
        }
        let _ = self.store.remove(&self.id);
    }
}

impl Runtime {
    /// The seccomp program for `linux.seccomp`, compiled once per profile
    /// and cached under the state root (see [`crate::seccomp_cache`]).
    pub(crate) fn seccomp_program(
        &self,
        linux: Option<&oci_spec::runtime::Linux>,
    ) -> Result<Option<crate::seccomp_cache::Program>> {
        let Some(profile) = linux.and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        let cache = self.store.root.join(crate::seccomp_cache::CACHE_DIR);
        Ok(Some(crate::seccomp_cache::Program::for_profile(
            profile,
            Some(&cache),
        )?))
    }

    pub fn new(root: impl Into<PathBuf>, systemd_cgroup: bool) -> Runtime {
        Runtime {
            store: Store::new(root),
            systemd_cgroup,
            // SAFETY: geteuid cannot fail.
            rootless: unsafe { libc::geteuid() } != 0,
        }
    }

    /// `create`: sets the container up and leaves its init blocked before
    /// the user's program.
    pub fn create(&self, opts: &CreateOptions) -> Result<Created> {
        self.create_with_console(opts, None)
    }

    /// `create` where the pty master goes to `console` (a connected
    /// socket) instead of `opts.console_socket`.
    fn create_with_console(
        &self,
        opts: &CreateOptions,
        console: Option<OwnedFd>,
    ) -> Result<Created> {
        crate::state::validate_id(&opts.id)?;
        if self.systemd_cgroup && !Path::new("/run/systemd/system").exists() {
            return Err(CgroupError::NoSystemd.into());
        }
        let (config, raw) = spec::load(&opts.bundle)?;
        let spec = &config.spec;
        let linux = spec.linux().as_ref();
        let plan = Plan::new(linux.and_then(|l| l.namespaces().as_deref()).unwrap_or(&[]))?;
        // Compiled (or read from the cache) before anything is made: a bad
        // profile fails here with nothing to undo.
        let seccomp = self.seccomp_program(linux)?;
        let wants_terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if wants_terminal && opts.console_socket.is_none() && console.is_none() {
            return Err(RuntimeError::Usage(
                "process.terminal is true: pass --console-socket (the pty master is sent there)"
                    .into(),
            ));
        }
        let console = match (&opts.console_socket, wants_terminal, console) {
            (_, true, Some(fd)) => Some(fd),
            (Some(path), true, None) => Some(connect_unix(path)?),
            _ => None,
        };

        let dir = self.store.create_dir(&opts.id)?;
        // Held until create returns: a concurrent delete waits instead of
        // removing a half-made container.
        let lock = self.store.lock(&opts.id)?;
        let mut guard = CreateGuard {
            store: &self.store,
            shared_mounts: (!plan.new_mount).then(|| config.rootfs.clone()),
            id: opts.id.clone(),
            child: None,
            cgroup: None,
            armed: true,
        };
        std::fs::write(dir.join("config.json"), &raw)
            .map_err(sys_err(format!("writing {}/config.json", dir.display())))?;

        // cgroup. The device rules are checked before anything is made.
        let resources = linux.and_then(|l| l.resources().as_ref());
        let device_rules = hako_cgroups::devices::container_rules(
            resources
                .and_then(|r| r.devices().as_deref())
                .unwrap_or(&[]),
            linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]),
        )?;
        let layout = Layout::detect()?;
        let cgroups_path = linux.and_then(|l| l.cgroups_path().as_deref());
        // --systemd-cgroup: a scope needs a pid, so systemd makes the cgroup
        // once init exists (waiting for Go); init is told where it will be.
        let systemd_unit = match self.systemd_cgroup {
            true => Some(UnitPath::from_config(cgroups_path, &opts.id)?),
            false => None,
        };
        let created = match &systemd_unit {
            Some(unit) => Ok(Cgroup::locate_systemd(&layout, unit)),
            None => Cgroup::create(&layout, &CgroupPath::from_config(cgroups_path, &opts.id)?),
        };
        let cgroup = match created {
            Ok(cg) => cg,
            // Rootless without a delegated cgroup: fine unless limits were
            // asked for (runc's behaviour).
            Err(e) if self.rootless && e.is_permission_denied() => {
                if resources.is_some_and(has_limits) {
                    return Err(RuntimeError::Usage(format!(
                        "rootless container with linux.resources limits needs a delegated cgroup: {e}"
                    )));
                }
                crate::debug!("rootless: running without a cgroup ({e})");
                Cgroup::none(layout.mode)
            }
            Err(e) => return Err(e.into()),
        };
        if systemd_unit.is_none() {
            guard.cgroup = Some(cgroup.clone());
            apply_limits(&cgroup, resources, &device_rules)?;
        }

        // exec fifo: init holds it open read-write and blocks reading it.
        let fifo_path = dir.join("exec.fifo");
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| sys_err(format!("mkfifo {}", fifo_path.display()))(e.into()))?;
        let fifo = sys::open(&fifo_path, libc::O_RDWR, 0)
            .map_err(sys_err(format!("opening {}", fifo_path.display())))?;
        let status_path = dir.join("exec.status");
        nix::unistd::mkfifo(
            &status_path,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| sys_err(format!("mkfifo {}", status_path.display()))(e.into()))?;
        let exec_status = sys::open(&status_path, libc::O_RDWR, 0)
            .map_err(sys_err(format!("opening {}", status_path.display())))?;

        // Id-mapped mounts need our privileges over their sources: made
        // here, moved into place by init.
        let idmapped = crate::idmap::prepare(spec, &config.bundle)?;
        let (parent_chan, child_chan) =
            Channel::pair().map_err(sys_err("creating the sync socket pair"))?;
        // Joining a pid namespace by path applies to our next child only:
        // switch back right after clone so hooks stay out of it.
        let own_pidns = match &plan.pid_path {
            Some(p) => {
                let own =
                    namespaces::open(LinuxNamespaceType::Pid, Path::new("/proc/self/ns/pid"))?;
                let ns = namespaces::open(LinuxNamespaceType::Pid, p)?;
                namespaces::join(&ns)?;
                Some(own)
            }
            None => None,
        };

        if plan.two_stage && plan.new_pid {
            // init forks into its pid namespace and its first stage exits:
            // be the subreaper so the container's init stays our child.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        // Init joins its cgroup while it sets up its mounts, unless a step
        // before those depends on the cgroup: a new cgroup namespace (rooted
        // where init is when it unshares), a second stage forked early, a
        // systemd scope (made with init's pid before it runs), or mounts
        // made in the host's mount namespace (to be undone by the guard
        // only if init never got that far).
        let cgroup_joined_later =
            systemd_unit.is_none() && !plan.two_stage && !plan.new_cgroup && plan.new_mount;
        // SAFETY: the runtime is single-threaded; the child runs init::run,
        // which ends in execve or _exit.
        let pid = unsafe { sys::clone_fork(plan.clone_flags) }
            .map_err(sys_err("clone of the container init"))?;
        if pid == 0 {
            // flock belongs to the open file: init must not keep it held.
            drop(lock);
            drop(parent_chan);
            init::run(InitArgs {
                id: &opts.id,
                config: &config,
                plan: &plan,
                channel: child_chan,
                fifo,
                exec_status,
                console_socket: console,
                cgroup: Some(&cgroup),
                cgroup_layout: Some(&layout),
                cgroup_joined_later,
                no_pivot: opts.no_pivot,
                no_new_keyring: opts.no_new_keyring,
                preserve_fds: opts.preserve_fds,
                idmapped: &idmapped,
                seccomp: seccomp.as_ref(),
            });
        }
        if let Some(own) = &own_pidns {
            namespaces::join(own)?;
        }
        guard.child = Some(pid);
        drop(child_chan);
        drop(fifo);
        drop(exec_status);
        drop(console);

        let pid_start = hako_procfs::process_start_time(pid).unwrap_or(0);
        let mut state = ContainerState {
            id: opts.id.clone(),
            pid,
            pid_start,
            bundle: config.bundle.clone(),
            rootfs: config.rootfs.clone(),
            created: crate::log::rfc3339_now(),
            phase: Status::Creating,
            annotations: spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            cgroup: cgroup.clone(),
            // SAFETY: getuid cannot fail.
            owner: unsafe { libc::getuid() },
        };
        let fail = |message: String| RuntimeError::Init {
            id: opts.id.clone(),
            message,
        };
        let mut pid = pid;
        match &systemd_unit {
            Some(unit) => {
                let limits = UnitLimits::from_resources(layout.mode, resources);
                let description = format!("hako container {}", opts.id);
                let cg = Cgroup::create_systemd(&layout, unit, pid, &description, limits)?;
                guard.cgroup = Some(cg.clone());
                apply_limits(&cg, resources, &device_rules)?;
                state.cgroup = cg;
            }
            None if !cgroup_joined_later => cgroup.add_process(pid)?,
            None => {}
        }
        if plan.new_user && !plan.two_stage {
            write_id_maps(pid, spec)?;
        }
        self.store.save(&state)?;
        // Hooks during create see "created": the container is set up from
        // their point of view (what runtime-tools checks, and crun sends).
        let mut state_json = hook_state_json(&opts.id, &config, pid, "created");
        parent_chan
            .send(&Message::Go(pid.to_string()))
            .map_err(sys_err("starting container init"))?;
        if cgroup_joined_later {
            let joined = cgroup.add_process(pid);
            let sent = match &joined {
                Ok(()) => parent_chan.send(&Message::CgroupJoined),
                Err(_) => Ok(()),
            };
            // Init may have failed meanwhile (a zombie then, with its socket
            // closed): its own error says why. A live init is still waiting
            // for CgroupJoined, so nothing is read from it (the guard kills
            // it).
            let init_exited = || matches!(hako_procfs::stat(pid), None | Some(('Z', _)));
            if joined.is_err() || sent.is_err() {
                if sent.is_err() || init_exited() {
                    if let Ok(Some((Message::Error(e), _))) = parent_chan.recv_with_fd() {
                        return Err(fail(e));
                    }
                }
                joined?;
                sent.map_err(sys_err("resuming container init"))?;
            }
        }
        loop {
            let received = parent_chan
                .recv_with_fd()
                .map_err(sys_err("waiting for container init"))?;
            let Some((message, fd)) = received else {
                let mut status = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                guard.child = None;
                return Err(fail(format!(
                    "init exited during setup ({})",
                    describe_wait(status)
                )));
            };
            match message {
                Message::Ready => break,
                Message::SeccompListener => {
                    // Init loaded a filter that notifies and waits for no
                    // reply: hand the fd on and read on.
                    let listener = fd.ok_or_else(|| {
                        fail("init sent its seccomp listener without the fd".into())
                    })?;
                    crate::seccomp_agent::send_listener(
                        linux.and_then(|l| l.seccomp().as_ref()),
                        pid,
                        &oci_state(&state, Status::Creating),
                        listener,
                    )?;
                }
                Message::RunCreateHooks => {
                    #[allow(deprecated)]
                    let prestart = hooks::of(spec, |h| h.prestart());
                    let result = hooks::run("prestart", prestart, &state_json).and_then(|_| {
                        hooks::run(
                            "createRuntime",
                            hooks::of(spec, |h| h.create_runtime()),
                            &state_json,
                        )
                    });
                    if let Err(e) = result {
                        let _ = parent_chan.send(&Message::Error(e.to_string()));
                        return Err(e.into());
                    }
                    parent_chan
                        .send(&Message::HooksDone)
                        .map_err(sys_err("resuming container init"))?;
                }
                Message::MapIds if plan.two_stage => {
                    write_id_maps(pid, spec)?;
                    parent_chan
                        .send(&Message::IdsMapped)
                        .map_err(sys_err("resuming container init"))?;
                }
                Message::Pid(init_pid) if plan.two_stage => {
                    // The first stage exits; its child is the container's init.
                    // SAFETY: reaping our own child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    pid = init_pid;
                    guard.child = Some(pid);
                    state.pid = pid;
                    state.pid_start = hako_procfs::process_start_time(pid).unwrap_or(0);
                    self.store.save(&state)?;
                    state_json = hook_state_json(&opts.id, &config, pid, "created");
                    parent_chan
                        .send(&Message::Go(pid.to_string()))
                        .map_err(sys_err("starting container init"))?;
                }
                Message::Error(e) => return Err(fail(e)),
                other => return Err(fail(format!("unexpected message from init: {other:?}"))),
            }
        }
        state.phase = Status::Created;
        self.store.save(&state)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        drop(lock);
        guard.armed = false;
        Ok(Created { pid, state })
    }

    /// `start`: releases a created container's init into the user program.
    pub fn start(&self, id: &str) -> Result<()> {
        let _lock = self.store.lock(id)?;
        let state = self.store.load(id)?;
        let dir = self.store.dir(id);
        let status = state.status(&dir);
        if status != Status::Created {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: status.as_str(),
                action: "only a created container can be started".into(),
            });
        }
        let config = self.frozen_config(id, &state)?;
        if config.spec.process().is_none() {
            return Err(RuntimeError::Usage(format!(
                "container {id}: config.json has no process to start"
            )));
        }
        // Open the status fifo before releasing init: what init writes
        // there is only kept while someone holds the fifo open.
        let status_path = dir.join("exec.status");
        let exec_status = sys::open(&status_path, libc::O_RDONLY | libc::O_NONBLOCK, 0)
            .map_err(sys_err(format!("opening {}", status_path.display())))?;
        let fifo_path = dir.join("exec.fifo");
        let fifo = sys::open(&fifo_path, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                RuntimeError::WrongStatus {
                    id: id.into(),
                    status: "stopped",
                    action: "its init exited before start".into(),
                }
            } else {
                sys_err(format!("opening {}", fifo_path.display()))(e)
            }
        })?;
        let mut f = std::fs::File::from(fifo);
        std::io::Write::write_all(&mut f, b"0").map_err(sys_err("releasing container init"))?;
        drop(f);
        let _ = std::fs::remove_file(&fifo_path);
        // Wait for execve (or its failure): startContainer hooks run first,
        // poststart hooks only after the user's program started.
        let hook_secs: i64 = hooks::of(&config.spec, |h| h.start_container())
            .iter()
            .map(|h| h.timeout().unwrap_or(0).max(0))
            .sum();
        let outcome = wait_exec_status(&exec_status, 60_000 + hook_secs.saturating_mul(1000));
        let _ = std::fs::remove_file(&status_path);
        match outcome {
            ExecOutcome::Started => {}
            ExecOutcome::Failed(message) => {
                return Err(RuntimeError::Init {
                    id: id.into(),
                    message,
                })
            }
                        ExecOutcome::TimedOut => {
                return Err(RuntimeError::Init {
                    id: id.into(),
                    message: "init did not reach execve within a minute of start (a startContainer hook without timeout?)".into(),
                })
            }
        }
        let poststart = hooks::of(&config.spec, |h| h.poststart());
        if !poststart.is_empty() {
            let json = hook_state_json(id, &config, state.pid, "running");
            hooks::run_warning("poststart", poststart, &json);
        }
        Ok(())
    }

    /// `run`: create, start, wait, delete (unless `keep`). Returns the exit
    /// code (128+N for a signal). With `detach`, returns 0 once it runs.
    pub fn run(&self, opts: &CreateOptions, detach: bool, keep: bool) -> Result<i32> {
        let blocked = if detach {
            None
        } else {
            Some(SignalForwarder::block())
        };
        // A foreground terminal without --console-socket: we hold the pty
        // master ourselves and proxy it to our stdio, like runc.
        let proxy_tty = !detach && opts.console_socket.is_none() && {
            let (config, _) = spec::load(&opts.bundle)?;
            config
                .spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false)
        };
        let (ours, theirs) = if proxy_tty {
            let (a, b) = std::os::unix::net::UnixStream::pair()
                .map_err(sys_err("creating the console socket pair"))?;
            (Some(a), Some(OwnedFd::from(b)))
        } else {
            (None, None)
        };
        let created = self.create_with_console(opts, theirs)?;
        let master = match &ours {
            Some(sock) => match crate::console::recv_fd(sock) {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = self.delete(&opts.id, true);
                    return Err(sys_err("receiving the pty master")(e));
                }
            },
            None => None,
        };
        if let Err(e) = self.start(&opts.id) {
            let _ = self.delete(&opts.id, true);
            return Err(e);
        }
        let Some(fwd) = blocked else {
            return Ok(0);
        };
        let code = match &master {
            Some(m) => crate::terminal::proxy(m, created.pid, &fwd.set)
                .map_err(sys_err("terminal proxy"))?,
            None => fwd.wait_forwarding(created.pid),
        };
        if keep {
            return Ok(code);
        }
        if let Err(e) = self.delete(&opts.id, true) {
            crate::warn!("deleting {}: {e}", opts.id);
        }
        Ok(code)
    }

    /// The config copy taken at create time.
    pub fn frozen_config(&self, id: &str, state: &ContainerState) -> Result<Config> {
        let path = self.store.dir(id).join("config.json");
        let raw = std::fs::read(&path).map_err(sys_err(format!("reading {}", path.display())))?;
        let spec: Spec = serde_json::from_slice(&raw).map_err(|e| SpecError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Config {
            spec,
            bundle: state.bundle.clone(),
            rootfs: state.rootfs.clone(),
        })
    }

    /// `state`: the runtime-spec state of a container.
    pub fn state(&self, id: &str) -> Result<OciState> {
        let st = self.store.load(id)?;
        let status = st.status(&self.store.dir(id));
        Ok(oci_state(&st, status))
    }

    /// `list`: every container with its status.
    pub fn list(&self) -> Result<Vec<OciState>> {
        let mut out = Vec::new();
        for id in self.store.list()? {
            if let Ok(st) = self.store.load(&id) {
                let status = st.status(&self.store.dir(&id));
                out.push(oci_state(&st, status));
            }
        }
        Ok(out)
    }

    /// `kill`: sends `signal` to init, or with `all` to every process of the
    /// container's cgroup.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let (state, status) = self.load_status(id)?;
        if status == Status::Stopped && !all {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: status.as_str(),
                action: "there is no process to signal".into(),
            });
        }
        if all {
            // Every process of the cgroup, init included (it is in there).
            for p in self.container_pids(&state, status)? {
                // SAFETY: kill with integer arguments.
                unsafe { libc::kill(p, signal) };
            }
            return Ok(());
        }
        signal_init(&state, signal)
    }

    /// `delete`: removes a stopped container (any container with `force`,
    /// killing it first), running poststop hooks.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let _lock = self.store.lock(id)?;
        let state = match self.store.load(id) {
            Ok(s) => s,
            Err(StateError::NotFound(_)) | Err(StateError::Corrupt { .. }) if force => {
                self.store.remove(id)?;
                return Ok(());
            }
            Err(StateError::NotFound(_)) => {
                // A directory without state: a create that died half-way.
                self.store.remove(id)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let status = state.status(&self.store.dir(id));
        let cg = state.cgroup.clone();
        if status != Status::Stopped {
            if !force {
                return Err(RuntimeError::WrongStatus {
                    id: id.into(),
                    status: status.as_str(),
                    action: "stop it first or use delete --force".into(),
                });
            }
            kill_and_wait(&state, &cg);
        }
        // poststop hooks see the frozen config; their failures are warnings.
        if let Ok(config) = self.frozen_config(id, &state) {
            let poststop = hooks::of(&config.spec, |h| h.poststop());
            if !poststop.is_empty() {
                let json = hook_state_json(id, &config, state.pid, "stopped");
                hooks::run_warning("poststop", poststop, &json);
            }
        }
        if let Ok(config) = self.frozen_config(id, &state) {
            if !spec::has_new_namespace(&config.spec, LinuxNamespaceType::Mount) {
                crate::rootfs::unmount_below(&state.rootfs);
            }
        }
        // Without a pid namespace, processes can outlive init: empty the
        // cgroup before removing it.
        kill_leftovers(&cg);
        cg.destroy()?;
        self.store.remove(id)?;
        Ok(())
    }

    /// A container's recorded state and its current status.
    pub(crate) fn load_status(&self, id: &str) -> Result<(ContainerState, Status)> {
        let state = self.store.load(id)?;
        let status = state.status(&self.store.dir(id));
        Ok((state, status))
    }

    /// A container's state, or an error saying why a stopped one cannot `action`.
    pub(crate) fn load_live(&self, id: &str, action: &str) -> Result<ContainerState> {
        let (state, status) = self.load_status(id)?;
        if status == Status::Stopped {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: status.as_str(),
                action: action.into(),
            });
        }
        Ok(state)
    }

    /// `ps`: pids in the container's cgroup.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (state, status) = self.load_status(id)?;
        self.container_pids(&state, status)
    }

    /// The container's processes: its cgroup's, or only init for a rootless
    /// container that has no cgroup.
    fn container_pids(&self, state: &ContainerState, status: Status) -> Result<Vec<i32>> {
        if state.cgroup.is_none() {
            return Ok(if status == Status::Stopped {
                Vec::new()
            } else {
                vec![state.pid]
            });
        }
        Ok(state.cgroup.pids()?)
    }

    /// `update`: applies new `linux.resources` to a live container's cgroup.
    /// Returns warnings for settings this kernel has no file for.
    ///
    /// `devices`, when given, replaces the container's device rules: the
    /// new list, then the default devices and the container's own
    /// `linux.devices` (from its saved config), as at create.
    pub fn update(&self, id: &str, res: &oci_spec::runtime::LinuxResources) -> Result<Vec<String>> {
        let _lock = self.store.lock(id)?;
        let state = self.load_live(id, "a stopped container has no cgroup to update")?;
        require_cgroup(id, &state, "update")?;
        let device_rules = match res.devices() {
            Some(devices) => {
                let config = self.frozen_config(id, &state)?;
                let nodes = config
                    .spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.devices().clone());
                Some(hako_cgroups::devices::container_rules(
                    devices,
                    nodes.as_deref().unwrap_or(&[]),
                )?)
            }
            None => None,
        };
        let mut warnings = hako_cgroups::resources::apply(&state.cgroup, res)?;
        if let Some(rules) = device_rules {
            warnings.extend(hako_cgroups::devices::apply(&state.cgroup, &rules)?);
        }
        Ok(warnings)
    }

    /// `events --stats`: the cgroup's usage statistics.
    pub fn stats(&self, id: &str) -> Result<hako_cgroups::stats::Stats> {
        let state = self.load_live(id, "a stopped container has no statistics")?;
        require_cgroup(id, &state, "statistics")?;
        Ok(hako_cgroups::stats::read(&state.cgroup))
    }

    /// OOM kills recorded in the container's cgroup so far.
    pub fn oom_kills(&self, id: &str) -> Result<u64> {
        let state = self.store.load(id)?;
        Ok(hako_cgroups::stats::oom_kills(&state.cgroup))
    }

    /// `pause` / `resume`.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        let _lock = self.store.lock(id)?;
        let (state, status) = self.load_status(id)?;
        require_cgroup(id, &state, if paused { "pause" } else { "resume" })?;
        let ok = if paused {
            status == Status::Running
        } else {
            status == Status::Paused
        };
        if !ok {
            return Err(RuntimeError::WrongStatus {
                id: id.into(),
                status: status.as_str(),
                action: if paused {
                    "only a running container can be paused"
                } else {
                    "only a paused container can be resumed"
                }
                .into(),
            });
        }
        state.cgroup.clone().set_frozen(paused)?;
        Ok(())
    }

    /// The process a plain `exec` starts with: the container's own process
    /// settings (user, env, cwd, capabilities, rlimits, …) with new args.
    pub fn exec_defaults(&self, id: &str) -> Result<Process> {
        let state = self.store.load(id)?;
        let config = self.frozen_config(id, &state)?;
        Ok(config.spec.process().clone().unwrap_or_default())
    }
}

pub(crate) fn oci_state(st: &ContainerState, status: Status) -> OciState {
    OciState {
        oci_version: OCI_VERSION.to_string(),
        id: st.id.clone(),
        status: status.as_str(),
        pid: if status == Status::Stopped { 0 } else { st.pid },
        bundle: st.bundle.clone(),
        rootfs: st.rootfs.clone(),
        created: st.created.clone(),
        owner: String::new(),
        annotations: st.annotations.clone(),
    }
}

/// Signals the container's init through a pidfd after checking, on that
/// pidfd's process, that it is still the recorded one.
fn signal_init(state: &ContainerState, signal: i32) -> Result<()> {
    let gone = || RuntimeError::WrongStatus {
        id: state.id.clone(),
        status: "stopped",
        action: "there is no process to signal".into(),
    };
    let pidfd = sys::pidfd_open(state.pid).map_err(|_| gone())?;
    if !state.is_alive() {
        return Err(gone());
    }
    sys::pidfd_send_signal(&pidfd, signal).map_err(sys_err(format!(
        "signalling container {} (pid {})",
        state.id, state.pid
    )))
}

/// SIGKILLs whatever is still in the cgroup (thawing it if frozen) until it
/// is empty, for up to 5 s.
fn kill_leftovers(cg: &Cgroup) {
    for _ in 0..500 {
        let pids = cg.pids().unwrap_or_default();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = cg.set_frozen(false);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SIGKILLs init and every process of the cgroup and waits (up to 10 s)
/// until init has exited.
fn kill_and_wait(state: &ContainerState, cg: &Cgroup) {
    let pidfd = sys::pidfd_open(state.pid).ok().filter(|_| state.is_alive());
    if let Some(fd) = &pidfd {
        let _ = sys::pidfd_send_signal(fd, libc::SIGKILL);
    }
    for p in cg.pids().unwrap_or_default() {
        // SAFETY: kill with integer arguments.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    // Frozen tasks only die once thawed: a paused container must be
    // thawed after the SIGKILLs are queued.
    if state.is_frozen() {
        let _ = cg.set_frozen(false);
    }
    if let Some(fd) = &pidfd {
        let _ = sys::poll_readable(fd, 10_000);
        // If it is our child (run), reap it so the cgroup empties.
        // SAFETY: non-blocking waitpid on a pid; harmless if not our child.
        unsafe { libc::waitpid(state.pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

fn connect_unix(path: &Path) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path).map_err(sys_err(format!(
        "connecting to --console-socket {}",
        path.display()
    )))?;
    Ok(OwnedFd::from(s))
}

/// Writes the uid and gid maps of a new user namespace.
///
/// Root writes them directly. An unprivileged user may write a single
/// mapping of its own id itself (for gids only after denying setgroups);
/// anything else goes through the setuid helpers newuidmap/newgidmap of
/// the uidmap package, which check /etc/subuid and /etc/subgid.
fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let uids = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or(&[]);
    let gids = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or(&[]);
    for (kind, maps, own) in [("uid", uids, euid), ("gid", gids, egid)] {
        if maps.is_empty() {
            continue;
        }
        let only_self = maps.len() == 1 && maps[0].host_id() == own && maps[0].size() == 1;
        if euid == 0 || only_self {
            if euid != 0 && kind == "gid" {
                let path = format!("/proc/{pid}/setgroups");
                std::fs::write(&path, "deny")
                    .map_err(sys_err(format!("writing deny to {path}")))?;
            }
            let text: String = maps
                .iter()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect();
            let path = format!("/proc/{pid}/{kind}_map");
            std::fs::write(&path, &text).map_err(sys_err(format!(
                "writing {path} ({})",
                text.trim().replace('\n', ", ")
            )))?;
            continue;
        }
        let helper = format!("new{kind}map");
        let mut cmd = std::process::Command::new(&helper);
        cmd.arg(pid.to_string());
        for m in maps {
            cmd.args([
                m.container_id().to_string(),
                m.host_id().to_string(),
                m.size().to_string(),
            ]);
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(sys_err(format!(
                "running {helper} for the {kind} mappings (install the uidmap package)"
            )))?;
        if !out.status.success() {
            return Err(RuntimeError::Usage(format!(
                "{helper} refused the {kind} mappings ({}; check /etc/sub{kind}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// What became of init after `start` released it.
enum ExecOutcome {
    Started,
    Failed(String),
    TimedOut,
}

/// Reads the exec status fifo until EOF: data means init failed before or
/// at execve (the message), plain EOF means execve closed it.
fn wait_exec_status(fd: &OwnedFd, timeout_ms: i64) -> ExecOutcome {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.max(0) as u64);
    let mut message = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            message.extend_from_slice(&buf[..n as usize]);
            continue;
        }
        if n == 0 {
            return if message.is_empty() {
                ExecOutcome::Started
            } else {
                ExecOutcome::Failed(String::from_utf8_lossy(&message).into_owned())
            };
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR) {
            return ExecOutcome::Failed(format!("reading the exec status: {e}"));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return ExecOutcome::TimedOut;
        }
        let _ = sys::poll_readable(fd, left.as_millis().min(i32::MAX as u128) as i32);
    }
}

/// Writes a pid file atomically (containerd and conmon poll for it).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("hako-tmp");
    std::fs::write(&tmp, pid.to_string())
        .map_err(sys_err(format!("writing pid file {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(sys_err(format!("renaming pid file to {}", path.display())))
}

fn describe_wait(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// Converts a wait status to a shell-style exit code.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Blocks the signals `run` forwards to the container and forwards them
/// until the container's init exits.
pub struct SignalForwarder {
    pub set: libc::sigset_t,
}

impl SignalForwarder {
    /// Blocks every catchable signal (the child unblocks before exec).
    pub fn block() -> SignalForwarder {
        // SAFETY: sigset operations on a local, initialised set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            libc::sigdelset(&mut set, libc::SIGSEGV);
            libc::sigdelset(&mut set, libc::SIGBUS);
            libc::sigdelset(&mut set, libc::SIGILL);
            libc::sigdelset(&mut set, libc::SIGFPE);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            SignalForwarder { set }
        }
    }

    /// Forwards signals to `pid` until it exits; returns its exit code.
    pub fn wait_forwarding(&self, pid: i32) -> i32 {
        loop {
            // SAFETY: siginfo_t is plain data; sigwaitinfo fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid set and info pointers.
            let sig = unsafe { libc::sigwaitinfo(&self.set, &mut info) };
            if sig < 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    // SAFETY: reaping any exited child without blocking.
                    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                    if r == pid {
                        return exit_code(status);
                    }
                    if r <= 0 {
                        break;
                    }
                }
                continue;
            }
            if sig == libc::SIGURG {
                // Go runtimes use SIGURG for preemption: noise, not a request.
                continue;
            }
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        // SAFETY: unblocking the set we blocked.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}

/// Writes `linux.resources` and the device rules to a made cgroup.
fn apply_limits(
    cgroup: &Cgroup,
    resources: Option<&oci_spec::runtime::LinuxResources>,
    device_rules: &[hako_cgroups::devices::DeviceRule],
) -> Result<()> {
    if cgroup.is_none() {
        return Ok(());
    }
    if let Some(res) = resources {
        for w in hako_cgroups::resources::apply(cgroup, res)? {
            crate::warn!("{w}");
        }
    }
    for w in hako_cgroups::devices::apply(cgroup, device_rules)? {
        crate::warn!("{w}");
    }
    Ok(())
}

/// Fails for a container without a cgroup (rootless, not delegated).
fn require_cgroup(id: &str, state: &ContainerState, what: &str) -> Result<()> {
    if state.cgroup.is_none() {
        return Err(RuntimeError::Usage(format!(
            "container {id} has no cgroup (rootless without a delegated cgroup): {what} is not available"
        )));
    }
    Ok(())
}

/// True when `res` asks for a limit a cgroup would enforce (device rules
/// aside: without a cgroup, a rootless container cannot create device
/// nodes anyway).
fn has_limits(res: &oci_spec::runtime::LinuxResources) -> bool {
    res.memory().is_some()
        || res.cpu().is_some()
        || res.pids().is_some()
        || res.block_io().is_some()
        || res
            .hugepage_limits()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        || res.network().is_some()
        || res.rdma().is_some()
        || res.unified().as_ref().is_some_and(|u| !u.is_empty())
}
