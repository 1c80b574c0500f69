//! hako-init (crates/init): the static init of `hako run --init` and the
//! pause process of pods, run as process 1 of busybox containers (a rootfs
//! without any libc) and directly on the host as a subreaper.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{alive, status_field, wait_for_file, wait_until};
use hako_tests::{bin_dir, json, unique, Bundle, Runtime, TempDir};

/// Where the tests bind-mount hako-init in the container.
const INIT: &str = "/run/hako-init";

/// The hako-init build.rs installed beside the other binaries.
fn init_bin() -> PathBuf {
    let p = bin_dir().join("hako-init");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        p.display()
    );
    p
}

/// A busybox bundle whose process 1 is `hako-init ARGS`, bind-mounted
/// read-only like the engine does it.
fn init_bundle(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(&[]);
    b.edit(|c| {
        let mut argv = vec![INIT];
        argv.extend_from_slice(args);
        c["process"]["args"] = json!(argv);
        // The scripts leave files in /tmp for the test to read.
        c["root"]["readonly"] = json!(false);
        common::add_mount(
            c,
            json!({
                "destination": INIT,
                "type": "bind",
                "source": init_bin(),
                "options": ["bind", "ro"],
            }),
        );
    });
    b
}

/// Waits up to `secs` for `child`; kills it and panics on timeout.
fn wait_for(child: &mut Child, secs: u64, what: &str) -> ExitStatus {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines of `/proc/*/stat` in state Z, as a busybox shell sees them.
const LIST_ZOMBIES: &str = r#"for f in /proc/[0-9]*/stat; do read -r l < $f 2>/dev/null || continue; case "$l" in *") Z "*) echo "zombie: $l";; esac; done"#;

#[test]
fn binary_is_static_and_small() {
    let path = init_bin();
    let elf = std::fs::read(&path).expect("read hako-init");
    assert_eq!(elf.get(..4), Some(&b"\x7fELF"[..]), "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes"));
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    assert!(phnum > 0, "no program headers");
    let types: Vec<u32> = (0..phnum).map(|i| u32_at(phoff + i * phentsize)).collect();
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    assert!(
        !types.contains(&PT_INTERP) && !types.contains(&PT_DYNAMIC),
        "{} has an interpreter or a dynamic section: program header types {types:?}",
        path.display()
    );
    assert!(
        elf.len() < 64 * 1024,
        "hako-init is {} bytes: meant to be tiny",
        elf.len()
    );
    // The copy beside the binaries is the one built with the library.
    let built = std::fs::read(hako_init::BUILT_BINARY).expect("read the built hako-init");
    assert!(built == elf, "{} is stale", path.display());
    if let Ok(out) = Command::new("file").arg(&path).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("statically linked"), "file says: {text}");
    }
}

#[test]
fn exit_status_passes_through_in_a_rootfs_without_libc() {
    let rt = Runtime::new();
    // The fixture is busybox-static alone: nothing for a dynamic binary.
    let probe = init_bundle(&["true"]);
    for dir in ["lib", "lib64", "usr/lib", "lib/x86_64-linux-gnu"] {
        assert!(!probe.rootfs().join(dir).exists(), "rootfs has /{dir}");
    }
    drop(probe);

    // Process 1 is hako-init, and the shell is its child.
    let b = init_bundle(&[
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo; echo sh=$$; exit 3",
    ]);
    let (code, out, err) = rt.run_bundle(&b, &unique("init-exit"));
    assert_eq!(code, 3, "stdout {out:?} stderr {err:?}");
    let mut lines = out.lines();
    let cmdline = lines.next().unwrap_or("");
    assert!(
        cmdline.starts_with("/run/hako-init sh -c "),
        "process 1 is {cmdline:?}"
    );
    let sh = lines.next().unwrap_or("");
    assert!(sh.starts_with("sh=") && sh != "sh=1", "the shell is {sh:?}");

    let cases: &[(&[&str], i32, &str)] = &[
        (&["true"], 0, ""),
        (&["--", "false"], 1, ""),
        (
            &["no-such-command"],
            127,
            "hako-init: no-such-command: not found",
        ),
        (
            &["/bin/no-such-file"],
            127,
            "hako-init: /bin/no-such-file: not found",
        ),
        (
            &["/etc/passwd"],
            126,
            "hako-init: /etc/passwd: permission denied",
        ),
        (&["sh", "-c", "kill -TERM $$"], 143, ""),
        (&["sh", "-c", "kill -KILL $$"], 137, ""),
    ];
    for (args, want, message) in cases {
        let b = init_bundle(args);
        let (code, out, err) = rt.run_bundle(&b, &unique("init-exit"));
        assert_eq!(code, *want, "{args:?}: stdout {out:?} stderr {err:?}");
        assert!(err.contains(message), "{args:?}: stderr {err:?}");
    }
}

#[test]
fn sigterm_to_the_container_reaches_the_child() {
    let rt = Runtime::new();
    let b = init_bundle(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 7' TERM; echo $$ > /tmp/ready; while :; do sleep 0.05; done",
    ]);
    let id = unique("init-term");
    let out = TempDir::new("init-term-out");
    let mut run = rt
        .cmd(&["run", "--bundle", &b.path().to_string_lossy(), &id])
        .stdout(std::fs::File::create(out.path.join("o")).expect("stdout file"))
        .spawn()
        .expect("spawn run");
    let ready = b.rootfs().join("tmp/ready");
    wait_for_file(&ready);
    assert!(
        wait_until(5, || std::fs::read_to_string(&ready)
            .is_ok_and(|s| s.ends_with('\n'))),
        "ready file incomplete"
    );
    let sh_pid = std::fs::read_to_string(&ready).expect("read ready");
    assert_ne!(sh_pid.trim(), "1", "the trapping shell must not be pid 1");
    // `hako-runtime kill` signals the container's process 1: hako-init.
    rt.ok(&["kill", &id, "TERM"]);
    let status = wait_for(&mut run, 10, "container after SIGTERM");
    assert_eq!(status.code(), Some(7));
    assert_eq!(
        std::fs::read_to_string(out.path.join("o")).expect("read stdout"),
        "got-term\n"
    );
}

#[test]
fn orphans_are_reaped_in_the_container() {
    let rt = Runtime::new();
    // Three subshells each leave a sleep behind; the orphans reparent to
    // process 1, die, and must not stay zombies.
    let script = format!(
        "for i in 1 2 3; do (sleep 0.2 & echo $! > /tmp/orphan$i); done; \
         for i in 1 2 3; do read -r p < /tmp/orphan$i; set -- $(cat /proc/$p/stat); echo ppid=$4; done; \
         sleep 1; \
         for i in 1 2 3; do read -r p < /tmp/orphan$i; [ -e /proc/$p ] && echo left: $(cat /proc/$p/stat); done; \
         {LIST_ZOMBIES}; echo done"
    );
    let b = init_bundle(&["sh", "-c", &script]);
    let (code, out, err) = rt.run_bundle(&b, &unique("init-reap"));
    assert_eq!(code, 0, "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "ppid=1\nppid=1\nppid=1\ndone\n", "stderr {err:?}");
}

#[test]
fn pause_survives_until_sigterm_and_reaps() {
    let rt = Runtime::new();
    let b = init_bundle(&["--pause"]);
    let id = unique("init-pause");
    let mut run = rt
        .cmd(&["run", "--bundle", &b.path().to_string_lossy(), &id])
        .spawn()
        .expect("spawn run");
    rt.wait_status(&id, "running");
    let pid = rt.state(&id)["pid"].as_i64().expect("state pid") as i32;

    // Signals other than TERM and INT are taken and ignored.
    for sig in ["HUP", "USR1", "USR2", "QUIT"] {
        rt.ok(&["kill", &id, sig]);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid), "--pause died of a signal it should ignore");
    assert!(run.try_wait().expect("try_wait").is_none());

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kb: u64 = status_field(&status, "VmRSS")
        .trim_end_matches(" kB")
        .parse()
        .expect("VmRSS kB");
    eprintln!("hako-init --pause VmRSS: {rss_kb} kB");
    assert!(rss_kb < 1024, "--pause uses {rss_kb} kB");

    // A process exec'd into the pod leaves orphans behind: they reparent
    // to the pause process (the pid namespace's init), which reaps them.
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "(sleep 0.2 & echo $! > /tmp/orphan); read -r p < /tmp/orphan; set -- $(cat /proc/$p/stat); echo ppid=$4",
    ]);
    assert_eq!(out, "ppid=1\n");
    std::thread::sleep(Duration::from_millis(600));
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        &format!("read -r p < /tmp/orphan; [ -e /proc/$p ] && echo left: $(cat /proc/$p/stat); {LIST_ZOMBIES}; echo done"),
    ]);
    assert_eq!(out, "done\n");

    rt.ok(&["kill", &id, "TERM"]);
    let status = wait_for(&mut run, 10, "--pause after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// `hako-init ARGS` on the host, with stdout captured.
fn host_init(args: &[&str]) -> Command {
    let mut c = Command::new(init_bin());
    c.args(args).stdin(Stdio::null());
    c
}

#[test]
fn usage_and_version() {
    let out = host_init(&[]).output().expect("run hako-init");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: hako-init"));
    let out = host_init(&["--bogus", "x"])
        .output()
        .expect("run hako-init");
    assert_eq!(out.status.code(), Some(2));
    let out = host_init(&["--version"]).output().expect("run hako-init");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hako-init {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn on_the_host_it_reaps_orphans_as_a_subreaper() {
    let dir = TempDir::new("init-subreaper");
    let script = "(sleep 0.3 & echo $! > \"$D/orphan\"); read -r p < \"$D/orphan\"; \
                  set -- $(cat /proc/$p/stat); echo ppid=$4 init=$PPID; \
                  sleep 0.8; [ -e /proc/$p ] && echo left: $(cat /proc/$p/stat); exit 5";
    let out = host_init(&["/bin/sh", "-c", script])
        .env("D", &dir.path)
        .output()
        .expect("run hako-init");
    assert_eq!(
        out.status.code(),
        Some(5),
        "stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("");
    let (ppid, init) = first
        .strip_prefix("ppid=")
        .and_then(|r| r.split_once(" init="))
        .unwrap_or_else(|| panic!("output {text:?}"));
    assert_eq!(ppid, init, "the orphan was not reparented to hako-init");
    assert_eq!(text.lines().count(), 1, "output {text:?}");
}

/// Kills a process group on drop: hako-init puts its child in a group of
/// its own, so a failing test leaves nothing of it running.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: signalling the group of a shell this test started.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

/// Starts `hako-init FLAGS sh -c SCRIPT` on the host; SCRIPT writes its
/// pid (and `$!` if it starts a background job) to $D/ready when set up.
fn host_child(dir: &Path, flags: &[&str], script: &str) -> (Child, Vec<i32>, KillGroup) {
    let mut args = flags.to_vec();
    args.extend(["/bin/sh", "-c", script]);
    let child = host_init(&args)
        .env("D", dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hako-init");
    let ready = dir.join("ready");
    wait_for_file(&ready);
    let mut pids = Vec::new();
    assert!(wait_until(5, || {
        pids = std::fs::read_to_string(&ready)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        std::fs::read_to_string(&ready).is_ok_and(|s| s.ends_with('\n'))
    }));
    let group = KillGroup(pids[0]);
    (child, pids, group)
}

fn sigterm(pid: u32) {
    // SAFETY: signalling a process this test spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
}

#[test]
fn on_the_host_signals_go_to_the_child_or_its_group() {
    // Default: the child gets SIGTERM (and traps it); hako-init survives
    // to report the status.
    let dir = TempDir::new("init-fwd");
    let (mut init, pids, _group) = host_child(
        &dir.path,
        &[],
        "trap 'echo got-term; exit 7' TERM; echo $$ > \"$D/ready\"; while :; do sleep 0.05; done",
    );
    assert_eq!(pids.len(), 1);
    sigterm(init.id());
    let status = wait_for(&mut init, 10, "hako-init after SIGTERM");
    assert_eq!(status.code(), Some(7));

    // Default again: only the child is signalled, its background job is
    // not (it stays behind, orphaned, until the test kills it).
    let dir = TempDir::new("init-fwd-one");
    let script = "sleep 30 & echo $$ $! > \"$D/ready\"; wait";
    let (mut init, pids, _group) = host_child(&dir.path, &[], script);
    assert_eq!(pids.len(), 2);
    sigterm(init.id());
    let status = wait_for(&mut init, 10, "hako-init after SIGTERM");
    assert_eq!(status.code(), Some(143));
    assert!(
        alive(pids[1]),
        "without -g the background job was signalled too"
    );

    // -g: the whole process group of the child is signalled.
    let dir = TempDir::new("init-fwd-group");
    let (mut init, pids, _group) = host_child(&dir.path, &["-g"], script);
    sigterm(init.id());
    let status = wait_for(&mut init, 10, "hako-init -g after SIGTERM");
    assert_eq!(status.code(), Some(143));
    assert!(
        wait_until(5, || !alive(pids[1])),
        "with -g the background job survived"
    );
}
