//! Helpers shared by the isolation test files (namespaces, mounts,
//! process, hooks, cgroups). Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hako_tests::{json, Bundle, Runtime, Value};

/// A bundle running `sh -c SCRIPT`.
pub fn sh(script: &str) -> Bundle {
    Bundle::new(&["sh", "-c", script])
}

/// `run`s the bundle in the foreground, asserts exit status 0 and returns stdout.
pub fn run_ok(rt: &Runtime, b: &Bundle, id: &str) -> String {
    let (code, out, err) = rt.run_bundle(b, id);
    assert_eq!(
        code, 0,
        "container {id} failed: stdout {out:?} stderr {err:?}"
    );
    out
}

/// `run --detach`es the bundle and returns the init's host pid.
pub fn run_detached(rt: &Runtime, b: &Bundle, id: &str) -> i32 {
    rt.ok(&[
        "run",
        "--detach",
        "--bundle",
        &b.path().to_string_lossy(),
        id,
    ]);
    let pid = rt.state(id)["pid"].as_i64().expect("state has a pid");
    assert!(pid > 0, "state pid of running {id} is {pid}");
    pid as i32
}

/// Sets `linux.namespaces` to new namespaces of the given types.
pub fn set_namespaces(c: &mut Value, types: &[&str]) {
    c["linux"]["namespaces"] = Value::Array(types.iter().map(|t| json!({ "type": t })).collect());
}

/// Removes one namespace type from `linux.namespaces`.
pub fn drop_namespace(c: &mut Value, typ: &str) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != typ);
}

/// Appends a mount to `mounts`.
pub fn add_mount(c: &mut Value, m: Value) {
    c["mounts"].as_array_mut().expect("mounts").push(m);
}

/// The `/proc/PID/ns/NAME` link text (e.g. `net:[4026531840]`).
pub fn ns_link(pid: &str, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{name}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Mount points (from this process's mountinfo) at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `secs` pass.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Polls until `path` exists (10 s).
pub fn wait_for_file(path: &std::path::Path) {
    assert!(
        wait_until(10, || path.exists()),
        "{} never appeared",
        path.display()
    );
}

/// The value of a `Key:\tvalue` line of /proc/PID/status text.
pub fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} line in {status}"))
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}
