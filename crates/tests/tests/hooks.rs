//! Lifecycle hooks: every kind runs, in order, in the right namespaces,
//! with the state on stdin; failures and timeouts of create-time hooks
//! abort create cleanly; poststart and poststop failures only warn.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{add_mount, ns_link, wait_until};
use hako_tests::{cgroup_dirs_named, json, unique, Bundle, Runtime, TempDir, Value};

/// A hook running `sh -c SCRIPT` (the host's /bin/sh, or the container's
/// for startContainer, which runs after the pivot).
fn hook(script: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", script], "env": ["PATH=/usr/bin:/bin"]})
}

/// A hook that saves its stdin as DIR/NAME.json, its mount and network
/// namespaces, and appends NAME to DIR/order.
fn recording_hook(dir: &str, name: &str) -> Value {
    hook(&format!(
        "cat > {dir}/{name}.json; readlink /proc/self/ns/mnt > {dir}/{name}.mnt; \
         readlink /proc/self/ns/net > {dir}/{name}.net; echo {name} >> {dir}/order"
    ))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn state_of(dir: &Path, name: &str) -> Value {
    let text = read(dir, &format!("{name}.json"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} hook stdin is not JSON ({e}): {text:?}"))
}

fn bundle_path(b: &Bundle) -> String {
    b.path().to_string_lossy().into_owned()
}

#[test]
fn every_hook_runs_in_order_with_the_state() {
    let rt = Runtime::new();
    let marks = TempDir::new("marks");
    let m = marks.path.to_string_lossy().into_owned();
    let mut b = Bundle::new(&["sh", "-c", "sleep 100"]);
    b.edit(|c| {
        add_mount(c, json!({"destination": "/marks", "type": "bind", "source": m, "options": ["bind", "rw"]}));
        c["annotations"] = json!({"org.hako.test": "annotated"});
        let mut prestart = recording_hook(&m, "prestart");
        prestart["args"][0] = json!("hook-argv0");
        prestart["args"][2] = json!(format!(
            "{}; env > {m}/prestart.env; tr '\\0' ' ' < /proc/$$/cmdline > {m}/prestart.argv",
            prestart["args"][2].as_str().expect("script")
        ));
        prestart["env"] = json!(["PATH=/usr/bin:/bin", "HOOK_VAR=42"]);
        // startContainer runs inside the container: container paths, and
        // slow enough that a runtime not waiting for it before poststart
        // gets caught.
        let start = json!({"path": "/bin/sh", "args": ["sh", "-c",
            "cat > /marks/startContainer.json; readlink /proc/self/ns/mnt > /marks/startContainer.mnt; \
             sleep 0.5; echo startContainer >> /marks/order"], "env": ["PATH=/bin"]});
        // poststart records what the container's init is running by then.
        let poststart = hook(&format!(
            "cat > {m}/poststart.json; pid=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' {m}/poststart.json); \
             tr '\\0' ' ' < /proc/$pid/cmdline > {m}/poststart.cmdline; echo poststart >> {m}/order"
        ));
        c["hooks"] = json!({
            "prestart": [prestart],
            "createRuntime": [recording_hook(&m, "createRuntime")],
            "createContainer": [recording_hook(&m, "createContainer")],
            "startContainer": [start],
            "poststart": [poststart],
            "poststop": [recording_hook(&m, "poststop")],
        });
    });
    let id = unique("hooks");
    rt.ok(&["create", "--bundle", &bundle_path(&b), &id]);
    let pid = rt.state(&id)["pid"].as_i64().expect("pid");
    assert_eq!(
        read(&marks.path, "order"),
        "prestart\ncreateRuntime\ncreateContainer\n"
    );

    for name in ["prestart", "createRuntime", "createContainer"] {
        let st = state_of(&marks.path, name);
        assert_eq!(st["id"], json!(id), "{name}: {st}");
        assert_eq!(st["pid"], json!(pid), "{name}: {st}");
        assert_eq!(st["bundle"], json!(bundle_path(&b)), "{name}: {st}");
        assert_eq!(st["status"], json!("created"), "{name}: {st}");
        assert_eq!(
            st["ociVersion"].as_str().map(|v| v.starts_with("1.")),
            Some(true),
            "{name}: {st}"
        );
        assert_eq!(
            st["annotations"]["org.hako.test"],
            json!("annotated"),
            "{name}: {st}"
        );
    }
    // prestart and createRuntime run in the runtime's namespaces,
    // createContainer in the container's.
    let pid_s = pid.to_string();
    for name in ["prestart", "createRuntime"] {
        assert_eq!(
            read(&marks.path, &format!("{name}.mnt")).trim(),
            ns_link("self", "mnt"),
            "{name}"
        );
        assert_eq!(
            read(&marks.path, &format!("{name}.net")).trim(),
            ns_link("self", "net"),
            "{name}"
        );
    }
    assert_eq!(
        read(&marks.path, "createContainer.mnt").trim(),
        ns_link(&pid_s, "mnt")
    );
    assert_eq!(
        read(&marks.path, "createContainer.net").trim(),
        ns_link(&pid_s, "net")
    );
    assert_ne!(ns_link(&pid_s, "mnt"), ns_link("self", "mnt"));
    // The hook's env is exactly its own, and args[0] is its argv[0].
    let env = read(&marks.path, "prestart.env");
    assert!(env.lines().any(|l| l == "HOOK_VAR=42"), "{env}");
    assert!(
        !env.contains("CARGO"),
        "the runtime's environment leaked into the hook: {env}"
    );
    assert!(read(&marks.path, "prestart.argv").starts_with("hook-argv0 -c "));

    rt.ok(&["start", &id]);
    assert_eq!(
        read(&marks.path, "order"),
        "prestart\ncreateRuntime\ncreateContainer\nstartContainer\npoststart\n",
        "startContainer must finish before the process runs, poststart after"
    );
    let st = state_of(&marks.path, "startContainer");
    assert_eq!(
        (st["id"].clone(), st["pid"].clone()),
        (json!(id), json!(pid)),
        "{st}"
    );
    assert_eq!(
        read(&marks.path, "startContainer.mnt").trim(),
        ns_link(&pid_s, "mnt"),
        "startContainer runs in the container"
    );
    let st = state_of(&marks.path, "poststart");
    assert_eq!(st["status"], json!("running"), "{st}");
    assert_eq!(st["pid"], json!(pid), "{st}");
    let cmdline = read(&marks.path, "poststart.cmdline");
    // busybox sh may exec its last command, so init is sh or sleep by now,
    // never the runtime still waiting to exec.
    assert!(
        cmdline.starts_with("sh -c sleep 100") || cmdline.starts_with("sleep 100"),
        "poststart ran before the user process was executed (init ran {cmdline:?})"
    );
    assert!(!marks.path.join("poststop.json").exists());

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert_eq!(
        read(&marks.path, "order"),
        "prestart\ncreateRuntime\ncreateContainer\nstartContainer\npoststart\npoststop\n"
    );
    let st = state_of(&marks.path, "poststop");
    assert_eq!(st["id"], json!(id), "{st}");
    assert_eq!(st["status"], json!("stopped"), "{st}");
    assert_eq!(
        read(&marks.path, "poststop.mnt").trim(),
        ns_link("self", "mnt")
    );
}

/// Asserts that `create` of a bundle fails, naming `want`, and leaves no
/// state, cgroup, mount or process behind.
fn create_fails_cleanly(rt: &Runtime, b: &Bundle, want: &str) -> Duration {
    let id = unique("hookfail");
    let started = Instant::now();
    let err = rt.fails(&["create", "--bundle", &bundle_path(b), &id]);
    let took = started.elapsed();
    assert!(err.contains(want), "want {want:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!rt.has_state(&id), "state left behind");
    for d in cgroup_dirs_named(&id) {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    assert!(common::mounts_under(&b.rootfs()).is_empty());
    took
}

#[test]
fn failing_create_time_hooks_abort_create() {
    let rt = Runtime::new();
    let marks = TempDir::new("marks");
    let m = marks.path.to_string_lossy().into_owned();
    let later = hook(&format!("echo ran > {m}/later"));
    for (kind, next) in [
        ("prestart", "createContainer"),
        ("createRuntime", "createContainer"),
        ("createContainer", "startContainer"),
    ] {
        let mut b = Bundle::new(&["sh", "-c", &format!("touch {m}/container-ran")]);
        b.edit(|c| {
            c["hooks"] = json!({ kind: [hook("exit 3"), later.clone()], next: [later.clone()] });
        });
        create_fails_cleanly(&rt, &b, kind);
        assert!(
            !marks.path.join("later").exists(),
            "{kind}: hooks after a failing one ran"
        );
    }
    // A hook that cannot be executed at all.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["hooks"] = json!({"prestart": [{"path": "/no/such/hook"}]}));
    create_fails_cleanly(&rt, &b, "/no/such/hook");
}

#[test]
fn hook_timeout_kills_it_and_fails_create() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        let mut h = hook("sleep 10");
        h["timeout"] = json!(1);
        c["hooks"] = json!({"prestart": [h]});
    });
    let took = create_fails_cleanly(&rt, &b, "timed out");
    assert!(
        took < Duration::from_secs(5),
        "create took {took:?} with a 1 s hook timeout"
    );
    assert!(
        took >= Duration::from_millis(900),
        "create failed after {took:?}, before the timeout"
    );

    // A hook finishing within its timeout is fine.
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        let mut h = hook("sleep 0.1");
        h["timeout"] = json!(5);
        c["hooks"] = json!({"createRuntime": [h]});
    });
    let (code, _, err) = rt.run_bundle(&b, &unique("hookok"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn failing_poststart_and_poststop_hooks_only_warn() {
    let rt = Runtime::new();
    let marks = TempDir::new("marks");
    let m = marks.path.to_string_lossy().into_owned();
    let mut b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| {
        c["hooks"] = json!({
            "poststart": [hook("exit 1"), hook(&format!("echo ok > {m}/poststart-after"))],
            "poststop": [hook("exit 2"), hook(&format!("echo ok > {m}/poststop-after"))],
        });
    });
    let id = unique("warn");
    rt.ok(&["create", "--bundle", &bundle_path(&b), &id]);
    let out = rt.run(&["start", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("poststart"),
        "a failed poststart hook must be reported: {err:?}"
    );
    assert!(
        marks.path.join("poststart-after").exists(),
        "later poststart hooks must run"
    );
    assert_eq!(rt.status(&id), "running");
    let out = rt.run(&["delete", "--force", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("poststop"),
        "a failed poststop hook must be reported: {err:?}"
    );
    assert!(
        marks.path.join("poststop-after").exists(),
        "later poststop hooks must run"
    );
    assert!(!rt.has_state(&id));
}

#[test]
fn failing_start_container_hook_keeps_the_process_from_running() {
    let rt = Runtime::new();
    let marks = TempDir::new("marks");
    let m = marks.path.to_string_lossy().into_owned();
    let mut b = Bundle::new(&["sh", "-c", "echo ran > /marks/process-ran"]);
    b.edit(|c| {
        add_mount(c, json!({"destination": "/marks", "type": "bind", "source": m, "options": ["bind", "rw"]}));
        c["hooks"] = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}]});
    });
    let id = unique("startfail");
    rt.ok(&["create", "--bundle", &bundle_path(&b), &id]);
    let _ = rt.run(&["start", &id]);
    assert!(
        wait_until(5, || rt.status(&id) == "stopped"),
        "container still {}",
        rt.status(&id)
    );
    assert!(
        !marks.path.join("process-ran").exists(),
        "the process ran although startContainer failed"
    );
    rt.ok(&["delete", &id]);
}

#[test]
fn a_failing_start_container_hook_fails_start() {
    let rt = hako_tests::Runtime::new();
    let mut b = hako_tests::Bundle::new(&["sleep", "100"]);
    b.edit(|c| {
        c["hooks"] = json!({"startContainer": [{"path": "/bin/false", "args": ["false"]}]});
    });
    let id = hako_tests::unique("startfail");
    rt.ok(&["create", "--bundle", &b.path().to_string_lossy(), &id]);
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("startContainer"), "{err}");
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert!(!rt.has_state(&id));
}

/// A state larger than a pipe's buffer must not stall create when a hook
/// does not read its stdin.
#[test]
fn a_hook_ignoring_a_large_state_does_not_stall_create() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["annotations"] = json!({ "big": "x".repeat(256 * 1024) });
        c["hooks"] =
            json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "0.2"], "timeout": 5}]});
    });
    let started = Instant::now();
    let (code, _, err) = rt.run_bundle(&b, &unique("bigstate"));
    assert_eq!(code, 0, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "create stalled: {:?}",
        started.elapsed()
    );
}
