//! The runtime-spec lifecycle through the runc-style CLI: create, start,
//! state, kill, delete, run, and their error paths.

mod common;

use common::wait_for_file;
use hako_tests::{cgroup_dirs_named, json, mount_count, unique, Bundle, Runtime};

#[test]
fn run_prints_output_and_returns_exit_status() {
    let rt = Runtime::new();
    let b = Bundle::new(&["sh", "-c", "echo hello from $(hostname); exit 3"]);
    let id = unique("run");
    let (code, out, err) = rt.run_bundle(&b, &id);
    assert_eq!(code, 3, "stderr: {err}");
    assert_eq!(out, "hello from hako\n");
    assert!(
        !rt.has_state(&id),
        "run must delete the container when it exits"
    );
}

#[test]
fn run_reports_a_signal_as_128_plus_n() {
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "100"]);
    let id = unique("sig");
    let mut child = rt
        .cmd(&["run", "--bundle", &b.path().to_string_lossy(), &id])
        .spawn()
        .expect("spawn run");
    rt.wait_status(&id, "running");
    rt.ok(&["kill", &id, "KILL"]);
    let status = child.wait().expect("wait run");
    assert_eq!(status.code(), Some(137));
    assert!(!rt.has_state(&id));
}

#[test]
fn run_forwards_signals_to_the_container() {
    let rt = Runtime::new();
    // pid 1 ignores signals it has no handler for, so install one.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 42' TERM; touch /tmp/ready; while :; do sleep 0.05; done",
    ]);
    // The default spec mounts the root read-only; the script marks readiness in it.
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let id = unique("fwd");
    let out = hako_tests::TempDir::new("fwd-out");
    let mut child = rt
        .cmd(&["run", "--bundle", &b.path().to_string_lossy(), &id])
        .stdout(std::fs::File::create(out.path.join("o")).expect("file"))
        .spawn()
        .expect("spawn run");
    wait_for_file(&b.rootfs().join("tmp/ready"));
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait run");
    assert_eq!(status.code(), Some(42));
    assert_eq!(
        std::fs::read_to_string(out.path.join("o")).expect("read"),
        "got-term\n"
    );
}

#[test]
fn create_start_state_kill_delete() {
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "100"]);
    let id = unique("life");
    let pid_file = b.path().join("pid");
    rt.ok(&[
        "create",
        "--bundle",
        &b.path().to_string_lossy(),
        "--pid-file",
        &pid_file.to_string_lossy(),
        &id,
    ]);
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], json!(id));
    assert_eq!(st["bundle"].as_str(), Some(&*b.path().to_string_lossy()));
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(st["pid"], json!(pid));
    // The user process has not run yet: init is still our runtime binary.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !cmdline.contains("sleep"),
        "process.args ran before start: {cmdline:?}"
    );

    rt.ok(&["start", &id]);
    rt.wait_status(&id, "running");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(cmdline.starts_with("sleep"), "{cmdline:?}");

    let err = rt.fails(&["start", &id]);
    assert!(err.contains("running"), "{err}");
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("running"), "{err}");

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    assert_eq!(rt.state(&id)["pid"], json!(0));
    rt.ok(&["delete", &id]);
    assert!(!rt.has_state(&id));
    for d in cgroup_dirs_named(&id) {
        assert!(!d.exists(), "cgroup {} survived delete", d.display());
    }
    let err = rt.fails(&["state", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn kill_accepts_names_and_numbers() {
    let rt = Runtime::new();
    // pid 1 ignores signals it has no handler for: trap the catchable ones.
    // The signal must not arrive before the trap is set, so the script marks
    // when it is.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "trap 'exit 1' TERM INT; touch /tmp/ready; while :; do sleep 0.05; done",
    ]);
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let ready = b.rootfs().join("tmp/ready");
    for (i, sig) in ["TERM", "SIGKILL", "9", "sigint", "15"].iter().enumerate() {
        let id = unique(&format!("kill{i}"));
        let _ = std::fs::remove_file(&ready);
        rt.ok(&[
            "run",
            "--detach",
            "--bundle",
            &b.path().to_string_lossy(),
            &id,
        ]);
        wait_for_file(&ready);
        rt.ok(&["kill", &id, sig]);
        rt.wait_status(&id, "stopped");
        rt.ok(&["delete", &id]);
    }
    let id = unique("killbad");
    rt.ok(&[
        "run",
        "--detach",
        "--bundle",
        &b.path().to_string_lossy(),
        &id,
    ]);
    let err = rt.fails(&["kill", &id, "NOSUCHSIG"]);
    assert!(err.contains("unknown signal"), "{err}");
    rt.ok(&["delete", "--force", &id]);
    assert!(!rt.has_state(&id));
}

#[test]
fn ids_are_checked() {
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let bp = b.path().to_string_lossy().into_owned();
    for bad in ["../escape", "a/b", "..", "with space"] {
        let err = rt.fails(&["create", "--bundle", &bp, bad]);
        assert!(err.contains("invalid"), "{bad}: {err}");
    }
    let id = unique("dup");
    rt.ok(&["create", "--bundle", &bp, &id]);
    let err = rt.fails(&["create", "--bundle", &bp, &id]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        rt.status(&id),
        "created",
        "a refused duplicate must not disturb the first"
    );
    let err = rt.fails(&["delete", &id]);
    assert!(
        err.contains("created"),
        "deleting a created container needs --force: {err}"
    );
    rt.ok(&["delete", "--force", &id]);
    for cmd in ["start", "state", "kill", "delete"] {
        let err = rt.fails(&[cmd, "no-such-container"]);
        assert!(err.contains("does not exist"), "{cmd}: {err}");
    }
}

type ConfigEdit = Box<dyn Fn(&mut hako_tests::Value)>;

#[test]
fn bad_config_leaves_nothing_behind() {
    let rt = Runtime::new();
    let mounts_before = mount_count();
    let cases: Vec<(&str, ConfigEdit)> = vec![
        ("ociVersion", Box::new(|c| c["ociVersion"] = json!("2.0.0"))),
        (
            "root.path",
            Box::new(|c| c["root"]["path"] = json!("missing-rootfs")),
        ),
        (
            "capability",
            Box::new(|c| c["process"]["capabilities"]["bounding"] = json!(["CAP_NOT_A_THING"])),
        ),
        (
            "process.cwd",
            Box::new(|c| c["process"]["cwd"] = json!("relative/dir")),
        ),
        (
            "namespaces",
            Box::new(|c| c["linux"]["namespaces"] = json!([{"type":"mount"},{"type":"mount"}])),
        ),
        (
            "hostname",
            Box::new(|c| {
                c["linux"]["namespaces"] = json!([{"type":"mount"}]);
                c["hostname"] = json!("needs-uts");
            }),
        ),
        (
            "executable",
            Box::new(|c| c["process"]["args"] = json!(["/no/such/program"])),
        ),
        (
            "mount",
            Box::new(|c| {
                c["mounts"].as_array_mut().expect("mounts").push(
            json!({"destination": "/mnt", "type": "bind", "source": "/no/such/source", "options": ["bind"]}))
            }),
        ),
        (
            "rlimit",
            Box::new(|c| {
                c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}])
            }),
        ),
    ];
    for (name, edit) in cases {
        let mut b = Bundle::new(&["true"]);
        b.edit(|c| edit(c));
        let id = unique(&format!("bad-{name}"));
        let err = rt.fails(&["create", "--bundle", &b.path().to_string_lossy(), &id]);
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{name}: want a one-line error, got {err}"
        );
        assert!(!rt.has_state(&id), "{name}: state directory left behind");
        for d in cgroup_dirs_named(&id) {
            assert!(!d.exists(), "{name}: cgroup {} left behind", d.display());
        }
    }
    let mut b = Bundle::new(&["true"]);
    std::fs::write(b.path().join("config.json"), "{ not json").expect("write");
    let err = rt.fails(&[
        "create",
        "--bundle",
        &b.path().to_string_lossy(),
        &unique("badjson"),
    ]);
    assert!(err.contains("config.json"), "{err}");
    b.save();
    assert_eq!(
        mount_count(),
        mounts_before,
        "a failed create leaked a mount"
    );
}

#[test]
fn accepts_every_1x_config_version() {
    let rt = Runtime::new();
    for v in ["1.0.0", "1.0.2", "1.1.0", "1.2.0", "1.3.0"] {
        let mut b = Bundle::new(&["true"]);
        b.edit(|c| c["ociVersion"] = json!(v));
        let (code, _, err) = rt.run_bundle(&b, &unique("ver"));
        assert_eq!(code, 0, "version {v}: {err}");
    }
}

#[test]
fn list_and_ps() {
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "100"]);
    let id = unique("list");
    rt.ok(&["run", "-d", "--bundle", &b.path().to_string_lossy(), &id]);
    let quiet = rt.ok(&["list", "-q"]);
    assert_eq!(quiet.trim(), id);
    let list: hako_tests::Value =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).expect("json");
    assert_eq!(list[0]["id"], json!(id));
    assert_eq!(list[0]["status"], json!("running"));
    let table = rt.ok(&["list"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(&id) && l.contains("running")),
        "{table}"
    );
    let pids: Vec<i64> =
        serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).expect("json");
    assert_eq!(pids, vec![rt.state(&id)["pid"].as_i64().expect("pid")]);
    let ps = rt.ok(&["ps", &id]);
    assert!(ps.lines().next().is_some_and(|h| h.contains("PID")), "{ps}");
    assert!(ps.contains("sleep 100"), "{ps}");
    rt.ok(&["delete", "-f", &id]);
}

#[test]
fn concurrent_runs() {
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let rt = Runtime::new();
                let b = Bundle::new(&["sh", "-c", &format!("echo {i}")]);
                let (code, out, err) = rt.run_bundle(&b, &unique("par"));
                assert_eq!((code, out.trim().to_string()), (0, i.to_string()), "{err}");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

#[test]
fn no_pivot_enters_the_rootfs_with_move_and_chroot() {
    let rt = Runtime::new();
    let b = Bundle::new(&[
        "sh",
        "-c",
        "ls /bin/busybox && cat /proc/self/mountinfo | wc -l",
    ]);
    let out = rt.run(&[
        "run",
        "--no-pivot",
        "--bundle",
        &b.path().to_string_lossy(),
        &unique("nopivot"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("/bin/busybox\n"), "{text}");
}

#[test]
fn run_keep_leaves_a_stopped_container_to_delete() {
    let rt = Runtime::new();
    let b = Bundle::new(&["sh", "-c", "exit 4"]);
    let id = unique("keep");
    let out = rt.run(&[
        "run",
        "--keep",
        "--bundle",
        &b.path().to_string_lossy(),
        &id,
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(rt.status(&id), "stopped");
    rt.ok(&["delete", &id]);
    assert!(!rt.has_state(&id));
}
