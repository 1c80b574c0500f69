//! The container's init process during `create`: everything between
//! clone(2) and the exec of the user's program. It runs in the child and
//! never returns: it either execs or reports an error to the runtime over
//! the sync channel and exits. See [`crate::sync`] for the message flow.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use hako_cgroups::{Cgroup, Layout};
use oci_spec::runtime::{Process, Spec};

use crate::console;
use crate::hooks::{self, HookError};
use crate::namespaces::{self, NamespaceError, Plan};
use crate::process::{self, ProcessError};
use crate::rootfs::{self, MountContext, NodeKind, Root, RootfsError};
use crate::seccomp_cache::Program;
use crate::spec::Config;
use crate::sync::{Channel, Message};
use crate::sys;

/// Why init could not get the container ready. Sent as text to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error("sync with the runtime: {0}")]
    Sync(std::io::Error),
    /// The working directory resolved outside the container's root.
    #[error("process.cwd {} is outside the container's root filesystem", .0.display())]
    CwdOutsideRoot(std::path::PathBuf),
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Sys { what, source }
}

/// Everything init needs, prepared by the runtime before clone.
pub struct InitArgs<'a> {
    pub id: &'a str,
    pub config: &'a Config,
    pub plan: &'a Plan,
    pub channel: Channel,
    /// The exec fifo, opened read-write: init blocks reading it until `start`.
    pub fifo: OwnedFd,
    /// The exec status fifo, read-write and close-on-exec: a successful
    /// execve closes it (EOF for `start`), a failure writes the error first.
    pub exec_status: OwnedFd,
    pub console_socket: Option<OwnedFd>,
    pub cgroup: Option<&'a Cgroup>,
    pub cgroup_layout: Option<&'a Layout>,
    /// The runtime puts init into its cgroup after `Go`, while init joins
    /// namespaces and mounts (moving a process between cgroup v1
    /// hierarchies waits for an RCU grace period, ~10-25 ms here, that
    /// would otherwise come before all of it), and sends `CgroupJoined`.
    /// Init waits for it before the first step the cgroup governs:
    /// creating device nodes (the devices controller), hooks and the
    /// user's process. Only when nothing before that depends on the
    /// cgroup: see `Runtime::create`.
    pub cgroup_joined_later: bool,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// Id-mapped mounts prepared by the runtime, by mount index.
    pub idmapped: &'a [Option<OwnedFd>],
    /// The seccomp program for `linux.seccomp`, compiled by the runtime.
    pub seccomp: Option<&'a Program>,
}

/// Entry point in the child. Never returns.
pub fn run(args: InitArgs) -> ! {
    let result = setup(&args);
    let err = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = args.channel.send(&Message::Error(err.to_string()));
    sys::exit_now(1)
}

/// True when the runtime must run prestart or createRuntime hooks mid-create.
pub fn has_runtime_create_hooks(spec: &Spec) -> bool {
    #[allow(deprecated)]
    let prestart = hooks::of(spec, |h| h.prestart());
    !prestart.is_empty() || !hooks::of(spec, |h| h.create_runtime()).is_empty()
}

enum Never {}

fn setup(args: &InitArgs) -> Result<Never, InitError> {
    let spec = &args.config.spec;
    let plan = args.plan;
    let linux = spec.linux().as_ref();
    let process = spec.process().as_ref();

    // Die with the runtime while it still supervises us.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };

    let mut state_json = match args.channel.recv().map_err(InitError::Sync)? {
        Some(Message::Error(e)) => return Err(InitError::Sync(std::io::Error::other(e))),
        Some(Message::Go(pid)) => state_for_hooks(args, &pid),
        Some(other) => {
            return Err(InitError::Sync(std::io::Error::other(format!(
                "unexpected {other:?}"
            ))))
        }
        None => return Err(InitError::Sync(std::io::ErrorKind::UnexpectedEof.into())),
    };

    // Join namespaces given by path (opened first: paths are host paths).
    let mut opened = Vec::new();
    for (t, p) in &plan.joins {
        opened.push(namespaces::open(*t, p)?);
    }
    for ns in &opened {
        namespaces::join(ns)?;
    }
    drop(opened);
    if plan.two_stage {
        if plan.new_user {
            namespaces::unshare(libc::CLONE_NEWUSER as u64)?;
            args.channel
                .send(&Message::MapIds)
                .map_err(InitError::Sync)?;
            args.channel
                .expect(&Message::IdsMapped)
                .map_err(InitError::Sync)?;
        }
        namespaces::unshare(plan.stage_flags)?;
        if plan.new_pid {
            // SAFETY: single-threaded; both sides continue with plain code
            // and end in _exit or execve.
            match unsafe { sys::clone_fork(0) } {
                Err(e) => return Err(sys_err("forking into the new pid namespace")(e)),
                Ok(0) => {
                    // The first stage exits at once, so no parent-death
                    // signal here: a vanished runtime shows as EOF below.
                    state_json = match args.channel.recv().map_err(InitError::Sync)? {
                        Some(Message::Go(pid)) => state_for_hooks(args, &pid),
                        _ => return Err(InitError::Sync(std::io::ErrorKind::UnexpectedEof.into())),
                    };
                }
                Ok(child) => {
                    let _ = args.channel.send(&Message::Pid(child));
                    sys::exit_now(0);
                }
            }
        }
    }
    if plan.in_userns {
        // Become root of the user namespace so files we create are owned
        // by the container's root, not the overflow id.
        // SAFETY: integer arguments.
        if unsafe { libc::setresgid(0, 0, 0) } < 0 || unsafe { libc::setresuid(0, 0, 0) } < 0 {
            return Err(sys_err(
                "becoming root in the user namespace (is container uid/gid 0 mapped?)",
            )(std::io::Error::last_os_error()));
        }
    }
    namespaces::unshare(plan.unshare_flags)?;
    if plan.new_time {
        write_time_offsets(spec)?;
        namespaces::enter_children_time_namespace()?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| sys_err(format!("sethostname({h})"))(e.into()))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        set_domainname(d)?;
    }
    if !args.no_new_keyring {
        if let Err(e) = sys::join_session_keyring(&format!("_ses.{}", args.id)) {
            // Keyrings may be unavailable (ENOSYS) or denied by policy; runc ignores that too.
            crate::debug!("joining a new session keyring: {e}");
        }
    }
    if let Some(adj) = process.and_then(|p| p.oom_score_adj()) {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(sys_err(format!(
            "setting oom_score_adj to {adj} (a negative value needs CAP_SYS_RESOURCE)"
        )))?;
    }

    // Root filesystem.
    // SAFETY: umask only changes the process's file creation mask.
    unsafe { libc::umask(0) };
    let rootfs_path = &args.config.rootfs;
    let propagation = linux.and_then(|l| l.rootfs_propagation().as_deref());
    rootfs::prepare_root(rootfs_path, plan.new_mount)?;
    let root = Root::open(rootfs_path)?;
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let ctx = MountContext {
        bundle: &args.config.bundle,
        cgroup: args.cgroup,
        cgroup_layout: args.cgroup_layout,
        new_cgroupns: plan.new_cgroup,
        new_netns: plan.new_net,
        in_userns: plan.in_userns,
        mount_label: linux.and_then(|l| l.mount_label().as_deref()),
        idmapped: args.idmapped,
    };
    rootfs::mount_all(&root, mounts, &ctx)?;
    if args.cgroup_joined_later {
        args.channel
            .expect(&Message::CgroupJoined)
            .map_err(InitError::Sync)?;
    }
    if !rootfs::dev_is_bind_mounted(mounts) {
        let devices = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
        rootfs::create_devices(&root, devices, plan.in_userns)?;
    }
    if let Some(p) = process {
        // A cwd through a magic link (/proc/self/fd/N, /proc/self/cwd)
        // could name a directory outside the rootfs: refused here, and
        // checked again after the chdir (see check_cwd_inside_root).
        match root.ensure(p.cwd(), NodeKind::Dir) {
            Err(RootfsError::Io { source, .. }) if source.raw_os_error() == Some(libc::ELOOP) => {
                return Err(InitError::CwdOutsideRoot(p.cwd().to_path_buf()));
            }
            other => {
                other?;
            }
        }
    }
    let wants_console = process.and_then(|p| p.terminal()).unwrap_or(false);
    if wants_console {
        root.ensure(Path::new("/dev/console"), NodeKind::File)?;
    }
    drop(root);

    if has_runtime_create_hooks(spec) {
        args.channel
            .send(&Message::RunCreateHooks)
            .map_err(InitError::Sync)?;
        args.channel
            .expect(&Message::HooksDone)
            .map_err(InitError::Sync)?;
    }
    hooks::run(
        "createContainer",
        hooks::of(spec, |h| h.create_container()),
        &state_json,
    )?;

    let mode = match (plan.new_mount, args.no_pivot) {
        (false, _) => rootfs::EnterMode::Chroot,
        (true, true) => rootfs::EnterMode::MoveChroot,
        (true, false) => rootfs::EnterMode::Pivot,
    };
    rootfs::enter(rootfs_path, mode)?;
    if plan.new_mount {
        rootfs::apply_root_propagation(propagation)?;
    }
    if let Some(l) = linux {
        let mut sysctls: Vec<(String, String)> = l
            .sysctl()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sysctls.sort();
        rootfs::write_sysctls(&sysctls)?;
        rootfs::mask_paths(
            l.masked_paths().as_deref().unwrap_or(&[]),
            l.mount_label().as_deref(),
        )?;
        rootfs::readonly_paths(l.readonly_paths().as_deref().unwrap_or(&[]))?;
    }

    // SAFETY: setsid has no memory effects; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    if wants_console {
        let socket = args.console_socket.as_ref().ok_or_else(|| {
            sys_err("process.terminal")(std::io::Error::other(
                "a terminal was requested but no --console-socket was given",
            ))
        })?;
        setup_console(socket, process, true)?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        rootfs::readonly_root()?;
    }
    let Some(process) = process else {
        return Err(sys_err("process")(std::io::Error::other(
            "config.json has no process to run",
        )));
    };
    sys::cloexec_from(3 + args.preserve_fds)
        .map_err(sys_err("marking inherited fds close-on-exec"))?;
    let filter = SeccompPlan::new(args.seccomp, process);
    filter.load_early(&args.channel)?;
    apply_process(process, plan.in_userns)?;
    let args_list = process.args().clone().unwrap_or_default();
    let env = process::with_home(
        process.env().clone().unwrap_or_default(),
        process.user().uid(),
    );
    let program = args_list.first().cloned().unwrap_or_default();
    let exe = process::find_executable(&program, &env)?;
    filter.load_listener_late(&args.channel)?;

    // Ready: from here on the container lives on without the runtime.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    args.channel
        .send(&Message::Ready)
        .map_err(InitError::Sync)?;

    // Block until `start` writes to the exec fifo.
    let mut fifo = std::fs::File::from(
        args.fifo
            .try_clone()
            .map_err(sys_err("duplicating exec fifo"))?,
    );
    let mut byte = [0u8; 1];
    loop {
        match fifo.read(&mut byte) {
            Ok(1) => break,
            Ok(_) => {
                return Err(sys_err("waiting for start")(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(sys_err("waiting for start on exec fifo")(e)),
        }
    }
    drop(fifo);
    // From here on `start` is waiting on the exec status fifo for the
    // outcome: an error message, or EOF once execve closed it.
    let fail = |msg: String| -> ! {
        // SAFETY: writing a valid buffer to our own open fifo fd.
        unsafe { libc::write(args.exec_status.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        sys::exit_now(127)
    };
    let start_hooks = hooks::of(spec, |h| h.start_container());
    if let Err(e) = hooks::run(
        "startContainer",
        start_hooks,
        &state_json.replace("\"status\":\"created\"", "\"status\":\"running\""),
    ) {
        fail(e.to_string());
    }
    process::reset_signals();
    if let Err(e) = filter.load_late() {
        fail(e.to_string());
    }
    let err = process::exec(&exe, &args_list, &env);
    fail(err.to_string())
}

fn write_time_offsets(spec: &Spec) -> Result<(), InitError> {
    let Some(offsets) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    else {
        return Ok(());
    };
    let mut text = String::new();
    let mut keys: Vec<_> = offsets.keys().collect();
    keys.sort();
    for clock in keys {
        let o = &offsets[clock];
        text.push_str(&format!(
            "{clock} {} {}\n",
            o.secs().unwrap_or(0),
            o.nanosecs().unwrap_or(0)
        ));
    }
    std::fs::write("/proc/self/timens_offsets", text)
        .map_err(sys_err("writing /proc/self/timens_offsets"))
}

fn set_domainname(name: &str) -> Result<(), InitError> {
    // SAFETY: pointer and length describe `name`'s bytes.
    if unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } < 0 {
        return Err(sys_err(format!("setdomainname({name})"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Allocates the pty, sends its master over the console socket and makes
/// the slave our terminal (and, for init, /dev/console).
pub fn setup_console(
    socket: &OwnedFd,
    process: Option<&Process>,
    is_init: bool,
) -> Result<(), InitError> {
    let pty = console::open_pty().map_err(sys_err("allocating a pty"))?;
    if let Some(size) = process.and_then(|p| p.console_size()) {
        console::set_size(&pty.slave, size.height() as u16, size.width() as u16)
            .map_err(sys_err("setting the console size"))?;
    }
    if let Some(p) = process {
        // The pty belongs to the container's user, like a login terminal.
        // SAFETY: fchown on a valid fd.
        unsafe { libc::fchown(pty.slave.as_raw_fd(), p.user().uid(), u32::MAX) };
    }
    if is_init {
        let target = sys::open(
            Path::new("/dev/console"),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )
        .map_err(sys_err("opening /dev/console"))?;
        // A symlink planted at /dev/console must not turn the bind mount
        // of the pty into a mount somewhere else (CVE-2025-52565).
        let st = sys::fstat(&target).map_err(sys_err("checking /dev/console"))?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFREG && kind != libc::S_IFCHR {
            return Err(InitError::Rootfs(rootfs::RootfsError::Invalid(
                "/dev/console in the container is not a file or character device; refusing to mount the console over it".into(),
            )));
        }
        sys::mount(
            Some(&sys::fd_path(&pty.slave)),
            &sys::fd_path(&target),
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(sys_err("bind-mounting the pty to /dev/console"))?;
    }
    console::send_fd(
        socket,
        &format!("/dev/pts/{}", pty.number),
        pty.master.as_raw_fd(),
    )
    .map_err(sys_err("sending the pty master over --console-socket"))?;
    drop(pty.master);
    console::make_controlling(&pty.slave)
        .map_err(sys_err("making the pty the controlling terminal"))?;
    Ok(())
}

/// Applies the process attributes common to init and exec, ending with the
/// user switch and the final capability sets.
pub fn apply_process(process: &Process, in_userns: bool) -> Result<(), InitError> {
    if let Some(profile) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        apply_lsm_label("apparmor", profile)?;
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        apply_lsm_label("selinux", label)?;
    }
    process::set_rlimits(process.rlimits().as_deref().unwrap_or(&[]))?;
    let caps = match process.capabilities() {
        Some(c) => Some(process::CapSets::from_spec(c)?),
        None => None,
    };
    if let Some(c) = &caps {
        process::drop_bounding(&c.bounding)?;
    }
    let setgroups_allowed = !in_userns
        || std::fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim() != "deny")
            .unwrap_or(true);
    process::switch_user(process.user(), setgroups_allowed)?;
    if let Some(c) = &caps {
        process::apply_caps(c)?;
    }
    if process.no_new_privileges() == Some(true) {
        process::set_no_new_privs()?;
    }
    let mask = process.user().umask().unwrap_or(0o022);
    // SAFETY: umask only changes the process's file creation mask.
    unsafe { libc::umask(mask as libc::mode_t) };
    std::env::set_current_dir(process.cwd())
        .map_err(sys_err(format!("process.cwd {}", process.cwd().display())))?;
    check_cwd_inside_root(process.cwd())
}

/// Refuses a working directory outside the process's root. A cwd such as
/// `/proc/self/fd/N` naming a leaked host directory fd would otherwise give
/// the container the host's filesystem (CVE-2024-21626). The kernel's
/// getcwd reports such a directory as unreachable, which libc turns into
/// an error or a path not starting with `/`.
fn check_cwd_inside_root(cwd: &Path) -> Result<(), InitError> {
    match std::env::current_dir() {
        Ok(p) if !p.is_absolute() => Err(InitError::CwdOutsideRoot(cwd.to_path_buf())),
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            Err(InitError::CwdOutsideRoot(cwd.to_path_buf()))
        }
        // getcwd itself refused (a seccomp profile loaded early may deny
        // it): the chdir stands, as it would without the check.
        Err(_) => Ok(()),
    }
}

/// Sets the LSM label for the next exec, or says (debug) why it is skipped.
fn apply_lsm_label(lsm: &str, label: &str) -> Result<(), InitError> {
    let enabled = match lsm {
        "apparmor" => std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false),
        _ => rootfs::selinux_enabled(),
    };
    if !enabled {
        crate::debug!("{lsm} is not enabled on this host; not applying label {label:?}");
        return Ok(());
    }
    let proc = rootfs::open_procfs()?;
    let (rel, value) = match lsm {
        "apparmor" => ("self/attr/apparmor/exec", format!("exec {label}")),
        _ => ("self/attr/exec", label.to_string()),
    };
    let fd = sys::openat2(
        proc.as_raw_fd(),
        Path::new(rel),
        libc::O_WRONLY,
        0,
        sys::RESOLVE_PROC,
    )
    .or_else(|_| {
        sys::openat2(
            proc.as_raw_fd(),
            Path::new("self/attr/exec"),
            libc::O_WRONLY,
            0,
            sys::RESOLVE_PROC,
        )
    })
    .map_err(sys_err(format!("opening /proc/{rel}")))?;
    rootfs::check_on_procfs(&fd, &format!("/proc/{rel}"))?;
    std::fs::File::from(fd)
        .write_all(value.as_bytes())
        .map_err(sys_err(format!("setting {lsm} label {label:?}")))
}

/// The state hooks get, for init's host pid as the runtime sent it (init
/// cannot see it from inside its pid namespace).
fn state_for_hooks(args: &InitArgs, pid: &str) -> String {
    hooks::state_json(args.id, args.config, pid.parse().unwrap_or(0), "created")
}

/// When to load the seccomp filter: as late as possible, i.e. right before
/// execve when no_new_privs is set; without it loading needs CAP_SYS_ADMIN,
/// so before capabilities are dropped (what runc does too).
///
/// A filter with SCMP_ACT_NOTIFY is loaded with a listener, whose fd goes
/// to the runtime over the sync channel at once; so it is loaded while the
/// runtime still reads the channel: early as above, or with no_new_privs at
/// [`SeccompPlan::load_listener_late`], which init calls just before Ready
/// (`create` exits after Ready; runc's order too) and exec right before
/// execve (`exec` reads the channel until execve closes it).
pub struct SeccompPlan<'a> {
    program: Option<&'a Program>,
    no_new_privs: bool,
}

impl<'a> SeccompPlan<'a> {
    /// `program` was compiled (or taken from the cache) by the runtime
    /// before it cloned this process.
    pub fn new(program: Option<&'a Program>, process: &Process) -> SeccompPlan<'a> {
        SeccompPlan {
            program,
            no_new_privs: process.no_new_privileges() == Some(true),
        }
    }

    /// Loads now unless the filter can wait for a later step; a listener's
    /// fd goes to the runtime over `chan`.
    pub fn load_early(&self, chan: &Channel) -> Result<(), InitError> {
        match self.program {
            Some(p) if !self.no_new_privs => load_program(p, chan),
            _ => Ok(()),
        }
    }

    /// With no_new_privs, loads a filter that notifies and sends its
    /// listener's fd to the runtime over `chan`.
    pub fn load_listener_late(&self, chan: &Channel) -> Result<(), InitError> {
        match self.program {
            Some(p) if self.no_new_privs && p.uses_notify() => load_program(p, chan),
            _ => Ok(()),
        }
    }

    /// With no_new_privs, loads a filter without listener: right before
    /// execve.
    pub fn load_late(&self) -> Result<(), InitError> {
        match self.program {
            Some(p) if self.no_new_privs && !p.uses_notify() => {
                p.load()?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Loads `program`. A listener's fd is sent to the runtime over `chan` as
/// the very next syscall: until the runtime has passed it to the agent, a
/// notified syscall of ours would wait for an answer (see
/// [`Channel::send_seccomp_listener`]). Our copy is closed afterwards (it
/// is close-on-exec anyway), so the agent holds the only one.
fn load_program(program: &Program, chan: &Channel) -> Result<(), InitError> {
    let Some(listener) = program.load()? else {
        return Ok(());
    };
    let sent = chan.send_seccomp_listener(std::os::fd::AsFd::as_fd(&listener));
    drop(listener);
    sent.map_err(sys_err("sending the seccomp listener fd to the runtime"))
}
