//! Device rules of a running container: the config's rules, the default
//! devices and `linux.devices` at create, and `update` replacing the rules
//! while keeping the defaults and the container's own device nodes. On
//! hosts with a v1 devices controller the runtime writes them there, on
//! pure cgroup2 hosts it attaches an eBPF program; the outcome must be the
//! same.
//!
//! The probed nodes are char devices 240:N (a range reserved for local
//! use, with no driver here): an allowed open fails with ENXIO or ENODEV
//! from the missing driver, a denied one with EPERM from the cgroup, and
//! nothing is ever read or written.

mod common;

use common::run_detached;
use hako_tests::{json, unique, Bundle, Runtime};

const MAJOR: u64 = 240;

/// "EPERM" when the container may not open `path` for reading (`<`) or
/// writing (`>`), else "allowed".
fn probe(rt: &Runtime, id: &str, redirect: &str, path: &str) -> &'static str {
    let out = rt.run(&["exec", id, "sh", "-c", &format!(": {redirect} {path}")]);
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Operation not permitted") {
        "EPERM"
    } else {
        assert!(
            out.status.success() || err.contains("No such device"),
            "{redirect} {path}: unexpected {}: {err}",
            out.status
        );
        "allowed"
    }
}

fn update_devices(rt: &Runtime, id: &str, devices: serde_json::Value) {
    let mut child = rt
        .cmd(&["update", "--resources", "-", id])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn update");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        let doc = json!({ "devices": devices }).to_string();
        stdin.write_all(doc.as_bytes()).expect("write resources");
    }
    assert!(child.wait().expect("wait").success(), "update {id}");
}

#[test]
fn update_replaces_device_rules_and_keeps_defaults_and_nodes() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    // A node the image brings (not in linux.devices) and one the config
    // lists in linux.devices.
    nix::sys::stat::mknod(
        &b.rootfs().join("image-node"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        libc::makedev(MAJOR as u32, 0),
    )
    .expect("mknod in the rootfs");
    b.edit(|c| {
        c["linux"]["devices"] = json!([
            {"path": "/dev/hako-listed", "type": "c", "major": MAJOR, "minor": 1, "fileMode": 0o666},
        ]);
    });
    let id = unique("devupd");
    run_detached(&rt, &b, &id);

    // The default config denies everything but the standard devices and
    // linux.devices.
    assert_eq!(probe(&rt, &id, "<", "/image-node"), "EPERM");
    assert_eq!(probe(&rt, &id, "<", "/dev/hako-listed"), "allowed");
    assert_eq!(probe(&rt, &id, ">", "/dev/null"), "allowed");

    // Reading the image's node, not writing it.
    update_devices(
        &rt,
        &id,
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": MAJOR, "minor": 0, "access": "r"},
        ]),
    );
    assert_eq!(probe(&rt, &id, "<", "/image-node"), "allowed");
    assert_eq!(probe(&rt, &id, ">", "/image-node"), "EPERM");
    assert_eq!(probe(&rt, &id, "<", "/dev/hako-listed"), "allowed");
    assert_eq!(probe(&rt, &id, ">", "/dev/null"), "allowed");

    // A new list replaces the previous one.
    update_devices(&rt, &id, json!([]));
    assert_eq!(probe(&rt, &id, "<", "/image-node"), "EPERM");
    assert_eq!(probe(&rt, &id, ">", "/dev/hako-listed"), "allowed");

    // A malformed rule is refused with its place in the document.
    let mut child = rt
        .cmd(&["update", "--resources", "-", &id])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn update");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(br#"{"devices": [{"allow": true, "access": "rwx"}]}"#)
            .expect("write resources");
    }
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("linux.resources.devices[0]") && err.contains("\"rwx\""),
        "{err}"
    );

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}
