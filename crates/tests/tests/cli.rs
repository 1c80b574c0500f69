//! The runc-compatible command line: global flags, spec, features,
//! --preserve-fds, JSON logs, single-dash long flags.

use std::process::Command;

use hako_tests::{output_via_files, runtime_bin, unique, Bundle, Runtime, TempDir, Value};

#[test]
fn version_names_the_spec_version() {
    let out = output_via_files({
        let mut c = Command::new(runtime_bin());
        c.arg("--version");
        c
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("hako-runtime version "), "{text}");
    assert!(text.contains("spec: 1."), "{text}");
}

#[test]
fn features_document() {
    let rt = Runtime::new();
    let f: Value = serde_json::from_str(&rt.ok(&["features"])).expect("features JSON");
    assert_eq!(f["ociVersionMin"], "1.0.0");
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
    ] {
        assert!(ns.contains(&want), "{want} missing from {ns:?}");
    }
    let caps = f["linux"]["capabilities"].as_array().expect("caps");
    assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    assert!(f["mountOptions"]
        .as_array()
        .expect("mount options")
        .iter()
        .any(|o| o == "rro"));
}

#[test]
fn spec_refuses_to_overwrite_and_writes_a_rootless_variant() {
    let rt = Runtime::new();
    let dir = TempDir::new("spec");
    let d = dir.path.to_string_lossy().into_owned();
    rt.ok(&["spec", "--bundle", &d]);
    let err = rt.fails(&["spec", "--bundle", &d]);
    assert!(err.contains("exists"), "{err}");
    std::fs::remove_file(dir.path.join("config.json")).expect("rm");
    rt.ok(&["spec", "--rootless", "--bundle", &d]);
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path.join("config.json")).expect("read"))
            .expect("json");
    assert!(c["linux"]["namespaces"]
        .as_array()
        .expect("ns")
        .iter()
        .any(|n| n["type"] == "user"));
    assert_eq!(c["linux"]["uidMappings"][0]["size"], 1);
}

#[test]
fn systemd_cgroup_without_systemd_is_a_clear_error() {
    if std::path::Path::new("/run/systemd/system").exists() {
        // systemd runs here: tests/cgroups.rs covers the driver itself.
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let id = unique("sysd");
    let out = output_via_files({
        let mut c = Command::new(runtime_bin());
        c.arg("--root")
            .arg(&rt.root.path)
            .arg("--systemd-cgroup")
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg(&id);
        c
    });
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd"));
    assert!(!rt.has_state(&id));
}

#[test]
fn json_log_lines_and_single_dash_flags() {
    let rt = Runtime::new();
    let logdir = TempDir::new("log");
    let log = logdir.path.join("log.json");
    let out = output_via_files({
        let mut c = Command::new(runtime_bin());
        // urfave/cli style, as some callers still spell global flags.
        c.arg("-root")
            .arg(&rt.root.path)
            .arg("-log")
            .arg(&log)
            .args(["--log-format", "json", "state", "missing"]);
        c
    });
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).expect("log written");
    let line: Value =
        serde_json::from_str(text.lines().last().expect("a line")).expect("JSON line");
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{line}"
    );
    assert!(
        line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
}

#[test]
fn preserve_fds_passes_extra_descriptors() {
    let rt = Runtime::new();
    let b = Bundle::new(&["sh", "-c", "cat <&3; ls /proc/self/fd | wc -l"]);
    let data = TempDir::new("fd");
    let file = data.path.join("payload");
    std::fs::write(&file, "through fd 3\n").expect("write");
    let script = format!(
        "exec 3<{f} 4<{f}; exec {bin} --root {root} run --preserve-fds 1 --bundle {b} {id}",
        f = file.display(),
        bin = runtime_bin().display(),
        root = rt.root.path.display(),
        b = b.path().display(),
        id = unique("fds"),
    );
    let out = output_via_files({
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("through fd 3"));
    // 0, 1, 2, the preserved 3 and ls's own directory fd: fd 4 is not passed.
    assert_eq!(lines.next().map(str::trim), Some("5"), "{text}");
}
