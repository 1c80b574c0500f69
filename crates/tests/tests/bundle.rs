//! Image config → bundle: the config.json hako writes runs the image's
//! command as the image's user, with its environment and working
//! directory, under hako-runtime, runc and crun alike.

use std::path::{Path, PathBuf};
use std::process::Command;

use hako_image::bundle::{oci_runtime_spec, write_bundle, BundleOptions};
use hako_tests::{busybox_rootfs, copy_tree, output_via_files, runtime_bin, unique, TempDir};
use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      app:x:1000:1000:app:/home/app:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/:/bin/sh\n";
const GROUP: &str = "root:x:0:\n\
                     app:x:1000:\n\
                     staff:x:50:app\n\
                     web:x:60:other,app\n\
                     nogroup:x:65534:\n";

/// A bundle directory with a busybox rootfs, the users above and
/// /srv/work.
fn bundle_dir() -> TempDir {
    let t = TempDir::new("imgbundle");
    let rootfs = t.path.join("rootfs");
    copy_tree(busybox_rootfs(), &rootfs);
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).expect("passwd");
    std::fs::write(rootfs.join("etc/group"), GROUP).expect("group");
    std::fs::create_dir_all(rootfs.join("srv/work")).expect("workdir");
    t
}

fn image_config(user: &str) -> ImageConfiguration {
    serde_json::from_value(json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": user,
            "Env": ["GREETING=hello", "PATH=/bin:/usr/bin", "REPLACED=image"],
            "Entrypoint": ["sh", "-c"],
            "Cmd": ["echo env=$GREETING,$REPLACED; id -u; id -G; pwd"],
            "WorkingDir": "/srv/work",
            "Labels": {"org.example.team": "images"},
            "StopSignal": "SIGQUIT",
            "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
            "Volumes": {"/data": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .expect("image config")
}

fn write(dir: &Path, user: &str, opts: &BundleOptions) -> Value {
    let spec =
        oci_runtime_spec(&image_config(user), &dir.join("rootfs"), opts).expect("runtime spec");
    write_bundle(dir, &spec).expect("write bundle");
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config.json"))
        .expect("json")
}

/// Runs the bundle with `runtime` (hako-runtime's command line, which is
/// runc's) and a state root of its own: (success, stdout, stderr).
fn run_with(runtime: &Path, bundle: &Path) -> (bool, String, String) {
    let state = TempDir::new("bundle-state");
    let mut cmd = Command::new(runtime);
    cmd.arg("--root")
        .arg(&state.path)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(unique("img"));
    let out = output_via_files(cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// hako-runtime, and runc and crun when installed.
fn runtimes() -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![("hako-runtime", runtime_bin())];
    for name in ["runc", "crun"] {
        let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists());
        match found {
            Some(p) => v.push((name, p)),
            None => eprintln!("{name} is not installed (apt-get install -y {name}): skipped"),
        }
    }
    v
}

#[test]
fn image_config_becomes_a_bundle_every_runtime_runs() {
    let cases = [
        // An explicit group: that gid and no supplementary groups, as
        // docker, podman and runc's user lookup do.
        ("app:web", "1000\n60\n"),
        // A name alone: its primary group and the groups listing it.
        ("app", "1000\n1000 50 60\n"),
        // A numeric uid without a passwd entry: gid 0.
        ("4321", "4321\n0\n"),
        ("1000:staff", "1000\n50\n"),
    ];
    for (user, ids) in cases {
        let t = bundle_dir();
        let opts = BundleOptions {
            env: vec!["REPLACED=by-option".into()],
            ..Default::default()
        };
        let config = write(&t.path, user, &opts);
        assert_eq!(config["root"]["path"], "rootfs");
        assert_eq!(config["process"]["terminal"], false);
        assert_eq!(config["process"]["cwd"], "/srv/work");
        let ann = &config["annotations"];
        assert_eq!(ann["org.example.team"], "images");
        assert_eq!(ann["org.opencontainers.image.stopSignal"], "SIGQUIT");
        assert_eq!(
            ann["org.opencontainers.image.exposedPorts"],
            "443/tcp,80/tcp"
        );
        assert_eq!(ann["org.opencontainers.image.volumes"], "/data");
        let want = format!("env=hello,by-option\n{ids}/srv/work\n");
        for (name, bin) in runtimes() {
            if name == "crun" {
                // crun 1.8 knows only runtime-spec 1.0.x ("unknown version
                // specified"); the rest of the config is the same.
                let mut c = config.clone();
                c["ociVersion"] = json!("1.0.2");
                let text = serde_json::to_vec(&c).expect("json");
                std::fs::write(t.path.join("config.json"), text).expect("write");
            }
            let (ok, out, err) = run_with(&bin, &t.path);
            if !ok && name == "crun" && err.contains("hybrid") {
                eprintln!(
                    "crun refuses this machine's hybrid cgroups ({}): skipped",
                    err.trim()
                );
                continue;
            }
            assert!(ok, "{name} with User {user:?} failed: {out}{err}");
            assert_eq!(out, want, "{name} with User {user:?}: {err}");
        }
    }
}

#[test]
fn entrypoint_and_command_overrides_and_the_hardened_profile() {
    let t = bundle_dir();
    let opts = BundleOptions {
        entrypoint: Some(vec!["/bin/echo".into()]),
        command: Some(vec!["overridden".into()]),
        hardened: true,
        ..Default::default()
    };
    let config = write(&t.path, "", &opts);
    assert_eq!(
        config["process"]["args"],
        json!(["/bin/echo", "overridden"])
    );
    assert!(
        config["linux"]["seccomp"].is_object(),
        "hardened has seccomp"
    );
    let (ok, out, err) = run_with(&runtime_bin(), &t.path);
    assert!(ok, "{err}");
    assert_eq!(out, "overridden\n");

    // --entrypoint without a command drops the image's Cmd, as docker.
    let opts = BundleOptions {
        entrypoint: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    let config = write(&t.path, "", &opts);
    assert_eq!(config["process"]["args"], json!(["/bin/true"]));
}

#[test]
fn users_are_looked_up_inside_the_rootfs_only() {
    let t = bundle_dir();
    // The host side: a passwd that knows "evil".
    let host = t.path.join("host-passwd");
    std::fs::write(&host, "evil:x:4242:4242::/:/bin/sh\n").expect("host passwd");
    let passwd = t.path.join("rootfs/etc/passwd");
    std::fs::remove_file(&passwd).expect("rm");
    std::os::unix::fs::symlink(&host, &passwd).expect("symlink");
    let e = oci_runtime_spec(
        &image_config("evil"),
        &t.path.join("rootfs"),
        &BundleOptions::default(),
    )
    .expect_err("the host's passwd must not be read");
    let msg = e.to_string();
    assert!(msg.contains("evil") && msg.contains("passwd"), "{msg}");

    // An unknown group name is an error that names it.
    std::fs::remove_file(&passwd).expect("rm");
    std::fs::write(&passwd, PASSWD).expect("passwd");
    let e = oci_runtime_spec(
        &image_config("app:nosuch"),
        &t.path.join("rootfs"),
        &BundleOptions::default(),
    )
    .expect_err("unknown group");
    assert!(e.to_string().contains("nosuch"), "{e}");
}
