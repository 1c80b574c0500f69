//! seccomp profiles from linux.seccomp: rules bite, other syscalls work,
//! exec'd processes are filtered too, and bad profiles are refused.
//! SCMP_ACT_NOTIFY: the listener reaches an agent at listenerPath (a
//! supervisor in the test, answering through the kernel's ioctls).

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hako_tests::{cgroup_dirs_named, json, unique, Bundle, Runtime, TempDir, Value};

fn with_profile(args: &[&str], profile: hako_tests::Value, nnp: bool) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["process"]["noNewPrivileges"] = json!(nnp);
        c["linux"]["seccomp"] = profile;
    });
    b
}

#[test]
fn errno_rule_bites_and_other_syscalls_work() {
    let rt = Runtime::new();
    for nnp in [true, false] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "not_a_real_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        });
        let b = with_profile(
            &["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/blocked 2>/dev/null; echo mkdir=$?; echo hi > /tmp/f && cat /tmp/f"],
            profile,
            nnp,
        );
        let (code, out, err) = rt.run_bundle(&b, &unique("sc"));
        assert_eq!(code, 0, "nnp={nnp}: {err}");
        // The filter must not turn on no_new_privs behind the config's back.
        let want = format!("NoNewPrivs:\t{}\nSeccomp:\t2\nmkdir=1\nhi\n", u8::from(nnp));
        assert_eq!(out, want, "nnp={nnp}");
        assert!(!b.rootfs().join("tmp/blocked").exists());
    }
}

#[test]
fn argument_filters_and_default_errno() {
    let rt = Runtime::new();
    // Deny everything but what sh needs? Simpler: default allow, and block
    // personality(0xffffffff query) only when arg0 equals a given value.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    // kill -USR1 (10) is refused, kill -0 (signal 0) works.
    let b = with_profile(
        &[
            "sh",
            "-c",
            "kill -0 $$; echo zero=$?; kill -USR1 $$ 2>/dev/null; echo usr1=$?",
        ],
        profile,
        true,
    );
    let (code, out, err) = rt.run_bundle(&b, &unique("scarg"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "zero=0\nusr1=1\n");
}

#[test]
fn kill_action_kills_the_process() {
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]
    });
    let b = with_profile(
        &["sh", "-c", "echo before; echo $PPID"],
        profile.clone(),
        true,
    );
    // busybox sh calls getppid at start-up: the shell dies with SIGSYS.
    let (code, out, _) = rt.run_bundle(&b, &unique("sckill"));
    assert_eq!(code, 128 + libc::SIGSYS, "out: {out}");
    let b = with_profile(&["true"], profile, true);
    let (code, _, err) = rt.run_bundle(&b, &unique("scok"));
    assert_eq!(
        code, 0,
        "a process that does not call the syscall runs: {err}"
    );
}

#[test]
fn exec_processes_get_the_filter() {
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let b = with_profile(&["sleep", "100"], profile, true);
    let id = unique("scexec");
    rt.ok(&["run", "-d", "--bundle", &b.path().to_string_lossy(), &id]);
    let out = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "mkdir /tmp/d 2>/dev/null; echo $?; grep '^Seccomp:' /proc/self/status",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\nSeccomp:\t2\n");
    rt.ok(&["delete", "-f", &id]);
}

#[test]
fn malformed_profiles_are_refused() {
    let rt = Runtime::new();
    let bad = [
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
               "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
        json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/nonexistent.sock"}),
        // sendmsg carries the listener fd to the runtime: it cannot wait for the agent.
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent.sock",
               "syscalls": [{"names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY"}]}),
    ];
    for (i, p) in bad.into_iter().enumerate() {
        let b = with_profile(&["true"], p, true);
        let id = unique(&format!("scbad{i}"));
        let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
        assert!(err.contains("linux.seccomp"), "case {i}: {err}");
        assert!(!rt.has_state(&id), "case {i}: state left behind");
    }
    let b = with_profile(&["true"], json!({"defaultAction": "SCMP_ACT_BOGUS"}), true);
    let err = rt.fails(&[
        "run",
        "--bundle",
        &b.path().to_string_lossy(),
        &unique("scbogus"),
    ]);
    assert!(err.contains("config.json"), "{err}");
}

// ---- SCMP_ACT_NOTIFY: the listener goes to the agent at listenerPath ----

/// What a seccomp agent receives on `listenerPath`: runtime-spec's
/// container process state and, in the same message, the listener fd.
struct Delivery {
    state: Value,
    listener: OwnedFd,
}

/// A seccomp agent: a unix socket at `path` whose next `connections`
/// connections each deliver a [`Delivery`] to the returned receiver. The
/// socket stops accepting (and refuses connections) after the last one.
fn agent(path: &Path, connections: usize) -> mpsc::Receiver<Delivery> {
    let listener = UnixListener::bind(path).expect("bind the agent socket");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let (stream, _) = listener.accept().expect("accept");
            if tx.send(receive_delivery(&stream)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads one delivery: the fd comes with the first bytes (SCM_RIGHTS), the
/// JSON runs until the runtime closes the connection.
fn receive_delivery(stream: &UnixStream) -> Delivery {
    let (mut json, mut fds) = hako_tests::recv_with_fds(stream.as_fd(), 65536);
    (&*stream).read_to_end(&mut json).expect("read the rest");
    assert_eq!(fds.len(), 1, "exactly one fd (the listener) is sent");
    let state = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "agent message is not JSON ({e}): {}",
            String::from_utf8_lossy(&json)
        )
    });
    let listener = fds.pop().expect("one fd");
    Delivery { state, listener }
}

/// How the supervisor answers one notification.
#[derive(Clone, Copy)]
enum Answer {
    /// The syscall fails with this errno.
    Errno(i32),
    /// The syscall "succeeds" with this return value without running.
    Value(i64),
    /// The syscall runs as if it had not been notified.
    Continue,
}

/// One notification as the supervisor saw it.
#[derive(Debug)]
struct Notification {
    pid: u32,
    nr: i32,
    arch: u32,
    /// The path argument of mkdir/mkdirat, read from the process's memory.
    path: String,
}

/// Acts as the seccomp supervisor on `listener`: receives notifications
/// (SECCOMP_IOCTL_NOTIF_RECV) and answers them in turn with `answers`
/// (SECCOMP_IOCTL_NOTIF_SEND). Returns after the last answer, or with what
/// it got when 20 s pass or the filter has no users left.
fn supervise(listener: &OwnedFd, answers: &[Answer]) -> Vec<Notification> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < answers.len() {
        let Some(req) = next_notification(listener, deadline) else {
            break;
        };
        let path_arg = if i64::from(req.data.nr) == libc::SYS_mkdirat {
            req.data.args[1]
        } else {
            req.data.args[0]
        };
        let path = read_c_string(req.pid, path_arg);
        respond(listener, req.id, answers[seen.len()]);
        seen.push(Notification {
            pid: req.pid,
            nr: req.data.nr,
            arch: req.data.arch,
            path,
        });
    }
    seen
}

/// The next notification on `listener`; None once the filter has no users
/// left (POLLHUP) or at `deadline`.
fn next_notification(listener: &OwnedFd, deadline: Instant) -> Option<libc::seccomp_notif> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).expect("poll the listener") == 0 {
            continue;
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if !revents.contains(PollFlags::POLLIN) {
            return None; // POLLHUP: every process using the filter is gone
        }
        // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV fills the seccomp_notif the valid pointer names.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut req,
            )
        };
        if r == 0 {
            return Some(req);
        }
        // ENOENT: the process was killed before we got to it.
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOENT),
            "SECCOMP_IOCTL_NOTIF_RECV: {e}"
        );
    }
    None
}

/// Answers notification `id` (SECCOMP_IOCTL_NOTIF_SEND).
fn respond(listener: &OwnedFd, id: u64, answer: Answer) {
    let (val, error, flags) = match answer {
        Answer::Errno(e) => (0, -e, 0),
        Answer::Value(v) => (v, 0, 0),
        Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: NOTIF_SEND reads the seccomp_notif_resp the valid pointer names.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    let e = std::io::Error::last_os_error();
    // ENOENT: the process was killed while waiting.
    assert!(
        r == 0 || e.raw_os_error() == Some(libc::ENOENT),
        "SECCOMP_IOCTL_NOTIF_SEND: {e}"
    );
}

/// True when a notification waits on `listener` right now.
fn notification_pending(listener: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).expect("poll") > 0
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

/// A NUL-terminated string at `addr` in process `pid` (what a real agent
/// does to see a path argument).
fn read_c_string(pid: u32, addr: u64) -> String {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let mut buf = [0u8; 64];
    let n = mem.read_at(&mut buf, addr).expect("read the path argument");
    let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn notify_profile(listener: &Path, metadata: &str) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener,
        "listenerMetadata": metadata,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    })
}

/// Checks the container process state an agent received.
fn check_process_state(d: &Delivery, id: &str, pid: i64, status: &str, metadata: &str) {
    let s = &d.state;
    assert!(
        s["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{s}"
    );
    assert_eq!(s["fds"], json!(["seccompFd"]), "{s}");
    assert_eq!(s["pid"], json!(pid), "{s}");
    assert_eq!(s["metadata"], json!(metadata), "{s}");
    assert_eq!(s["state"]["id"], json!(id), "{s}");
    assert_eq!(s["state"]["status"], json!(status), "{s}");
    // The fd is a seccomp listener.
    let link = std::fs::read_link(format!("/proc/self/fd/{}", d.listener.as_raw_fd()))
        .expect("readlink the received fd");
    assert_eq!(link.to_string_lossy(), "anon_inode:seccomp notify");
}

/// EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE (linux/audit.h).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

fn is_mkdir(nr: i32) -> bool {
    [libc::SYS_mkdir, libc::SYS_mkdirat].contains(&i64::from(nr))
}

/// Processes whose command line mentions `word` (a container id): the
/// runtime and an init it cloned carry it; zombies have none.
fn processes_mentioning(word: &str) -> Vec<String> {
    let own = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == own {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.split(' ').any(|a| a == word) {
            out.push(format!("{name}: {text}"));
        }
    }
    out
}

/// SIGKILLs every process [`processes_mentioning`] `word`.
fn kill_processes_mentioning(word: &str) {
    for p in processes_mentioning(word) {
        if let Some(pid) = p.split(':').next().and_then(|n| n.parse::<i32>().ok()) {
            // SAFETY: kill with a pid and a signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn notify_listener_reaches_the_agent_at_create_and_the_agent_answers() {
    let rt = Runtime::new();
    // Without no_new_privs the filter is loaded early (before caps are
    // dropped), with it just before Ready: both hand the fd over.
    for nnp in [false, true] {
        let id = unique("scnotify");
        let metadata = format!("agent-data-{id}");
        let dir = TempDir::new("agent");
        let sock = dir.path.join("agent.sock");
        // `exec` keeps init's pid: both mkdirs come from the container's init.
        let b = with_profile(
            &["sh", "-c", "exec mkdir /tmp/a /tmp/b 2>/tmp/err"],
            notify_profile(&sock, &metadata),
            nnp,
        );
        let deliveries = agent(&sock, 1);
        rt.ok(&["create", "--bundle", &b.path().to_string_lossy(), &id]);
        let d = deliveries
            .recv_timeout(Duration::from_secs(10))
            .expect("create delivered the listener before it returned");
        let state = rt.state(&id);
        let pid = state["pid"].as_i64().expect("state pid");
        check_process_state(&d, &id, pid, "creating", &metadata);
        assert_eq!(d.state["state"]["pid"], json!(pid));
        assert_eq!(d.state["state"]["bundle"], state["bundle"]);
        assert_eq!(rt.status(&id), "created");

        let listener = d.listener;
        let supervisor = std::thread::spawn(move || {
            // The first mkdir fails with EXDEV, the second "succeeds"
            // without a directory being made.
            let seen = supervise(&listener, &[Answer::Errno(libc::EXDEV), Answer::Value(0)]);
            (seen, listener)
        });
        rt.ok(&["start", &id]);
        rt.wait_status(&id, "stopped");
        let (seen, listener) = supervisor.join().expect("supervisor thread");
        assert_eq!(seen.len(), 2, "nnp={nnp}: notifications {seen:?}");
        for (n, want) in seen.iter().zip(["/tmp/a", "/tmp/b"]) {
            assert!(is_mkdir(n.nr), "nnp={nnp}: {n:?}");
            assert_eq!(n.arch, AUDIT_ARCH_X86_64, "{n:?}");
            assert_eq!(i64::from(n.pid), pid, "nnp={nnp}: {n:?}");
            assert_eq!(n.path, want, "nnp={nnp}: {n:?}");
        }
        assert!(!notification_pending(&listener));
        // The container saw the supervisor's answers, not the kernel's.
        let err = std::fs::read_to_string(b.rootfs().join("tmp/err")).unwrap_or_default();
        assert!(
            err.contains("/tmp/a") && err.contains("Invalid cross-device link"),
            "nnp={nnp}: {err:?}"
        );
        assert!(!err.contains("/tmp/b"), "nnp={nnp}: {err:?}");
        assert!(!b.rootfs().join("tmp/a").exists());
        assert!(
            !b.rootfs().join("tmp/b").exists(),
            "the fake success made nothing"
        );
        rt.ok(&["delete", &id]);
    }
}

#[test]
fn exec_delivers_its_own_listener() {
    let rt = Runtime::new();
    for nnp in [true, false] {
        let id = unique("scnotifyexec");
        let metadata = format!("exec-data-{id}");
        let dir = TempDir::new("agent");
        let sock = dir.path.join("agent.sock");
        let b = with_profile(&["sleep", "100"], notify_profile(&sock, &metadata), nnp);
        // One connection for init, one for the exec; then nobody listens.
        let deliveries = agent(&sock, 2);
        rt.ok(&["run", "-d", "--bundle", &b.path().to_string_lossy(), &id]);
        let init_pid = rt.state(&id)["pid"].as_i64().expect("state pid");
        let from_init = deliveries
            .recv_timeout(Duration::from_secs(10))
            .expect("init's listener");
        check_process_state(&from_init, &id, init_pid, "creating", &metadata);

        std::thread::scope(|s| {
            let exec = s.spawn(|| rt.run(&["exec", &id, "mkdir", "/tmp/e"]));
            let d = deliveries
                .recv_timeout(Duration::from_secs(10))
                .expect("the exec process's listener");
            let exec_pid = d.state["pid"].as_i64().expect("pid");
            assert_ne!(exec_pid, init_pid, "nnp={nnp}");
            check_process_state(&d, &id, exec_pid, "running", &metadata);
            assert_eq!(d.state["state"]["pid"], json!(init_pid));
            let seen = supervise(&d.listener, &[Answer::Errno(libc::EXDEV)]);
            assert_eq!(seen.len(), 1, "nnp={nnp}: {seen:?}");
            assert!(is_mkdir(seen[0].nr), "{seen:?}");
            assert_eq!(i64::from(seen[0].pid), exec_pid, "{seen:?}");
            assert_eq!(seen[0].path, "/tmp/e");
            let out = exec.join().expect("exec thread");
            assert_eq!(out.status.code(), Some(1), "nnp={nnp}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Invalid cross-device link"),
                "nnp={nnp}: {err}"
            );
        });
        assert!(!b.rootfs().join("tmp/e").exists());
        // The exec'd mkdir went to the exec's listener only.
        assert!(!notification_pending(&from_init.listener));

        // The agent is gone now: exec fails, naming the socket, and leaves
        // no process in the container.
        let err = rt.fails(&["exec", &id, "true"]);
        assert!(err.contains(&*sock.to_string_lossy()), "nnp={nnp}: {err}");
        let pids: Value =
            serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).expect("ps JSON");
        assert_eq!(pids, json!([init_pid]), "nnp={nnp}");
        rt.ok(&["delete", "--force", &id]);
    }
}

#[test]
fn notify_without_listener_path_is_refused() {
    let rt = Runtime::new();
    let b = with_profile(
        &["true"],
        json!({"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
        true,
    );
    let id = unique("scnolistener");
    let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(
        err.contains("linux.seccomp") && err.contains("listenerPath"),
        "{err}"
    );
    assert!(!rt.has_state(&id));
    assert!(cgroup_dirs_named(&id).iter().all(|d| !d.exists()));
    assert_eq!(processes_mentioning(&id), Vec::<String>::new());
}

#[test]
fn unreachable_agent_fails_create_and_leaves_nothing() {
    let rt = Runtime::new();
    let dir = TempDir::new("agent");
    // Nothing at the path, and a socket nobody listens on any more.
    let missing = dir.path.join("missing.sock");
    let stale = dir.path.join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind"));
    for (sock, nnp) in [(&missing, true), (&stale, false), (&stale, true)] {
        let b = with_profile(&["true"], notify_profile(sock, ""), nnp);
        let id = unique("scnoagent");
        let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
        assert!(
            err.contains("listenerPath") && err.contains(&*sock.to_string_lossy()),
            "{err}"
        );
        assert!(!rt.has_state(&id), "{}: state left behind", sock.display());
        let cgroups: Vec<_> = cgroup_dirs_named(&id)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
        assert_eq!(processes_mentioning(&id), Vec::<String>::new());
    }
}

/// Syscalls the runtime's own code makes once a filter is loaded (closing
/// the listener, clearing the parent-death signal, Ready, the exec fifo,
/// signals, execve, memory) may be notified too: the listener is already
/// with the agent by then, so the agent answers them and nothing deadlocks.
#[test]
fn runtime_syscalls_after_the_load_are_notified_without_deadlock() {
    let rt = Runtime::new();
    let notified = [
        "close",
        "prctl",
        "sendto",
        "read",
        "write",
        "fcntl",
        "rt_sigaction",
        "rt_sigprocmask",
        "capset",
        "setresuid",
        "setresgid",
        "setgroups",
        "chdir",
        "getcwd",
        "umask",
        "openat",
        "newfstatat",
        "execve",
        "brk",
        "mmap",
        "munmap",
        "futex",
        "exit_group",
    ];
    for nnp in [false, true] {
        let id = unique("scnotifyall");
        let dir = TempDir::new("agent");
        let sock = dir.path.join("agent.sock");
        let mut profile = notify_profile(&sock, "");
        profile["syscalls"] = json!([{"names": notified, "action": "SCMP_ACT_NOTIFY"}]);
        let b = with_profile(&["sh", "-c", "echo ran"], profile, nnp);
        let deliveries = agent(&sock, 1);
        let mut child = rt
            .cmd(&["run", "--bundle", &b.path().to_string_lossy(), &id])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn run");
        let d = deliveries
            .recv_timeout(Duration::from_secs(10))
            .expect("the listener reached the agent");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut answered = 0;
        while let Some(req) = next_notification(&d.listener, deadline) {
            respond(&d.listener, req.id, Answer::Continue);
            answered += 1;
        }
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                // The runtime and the container's init (which holds our
                // stdout pipe) both go, or reading stdout would hang.
                kill_processes_mentioning(&id);
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut out).expect("read stdout");
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "nnp={nnp}: run hung or failed ({status:?}) after {answered} answers"
        );
        assert_eq!(out, "ran\n", "nnp={nnp}");
        assert!(answered > 10, "nnp={nnp}: only {answered} notifications");
    }
}

/// The runtime compiles a profile once and keeps the program under its
/// state root (`@seccomp`, not a container); the next container with the
/// same profile loads the cached program, and the rule still bites.
#[test]
fn compiled_programs_are_cached_under_the_state_root() {
    use std::os::unix::fs::PermissionsExt;
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    let cache = rt.root.path.join("@seccomp");
    for round in 0..2 {
        let b = with_profile(
            &["sh", "-c", "mkdir /tmp/blocked 2>/dev/null; echo mkdir=$?"],
            profile.clone(),
            true,
        );
        let (code, out, err) = rt.run_bundle(&b, &unique("sccache"));
        assert_eq!(
            (code, out.as_str()),
            (0, "mkdir=1\n"),
            "round {round}: {err}"
        );
        let entries: Vec<_> = std::fs::read_dir(&cache)
            .expect("the cache directory exists")
            .flatten()
            .collect();
        assert_eq!(entries.len(), 1, "round {round}: one program per profile");
        let mode = entries[0].metadata().expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        rt.ok(&["list", "-q"]).trim(),
        "",
        "the cache is not a container"
    );
}
