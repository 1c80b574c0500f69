//! Rootless mode: hako-runtime run by a freshly created unprivileged user
//! with `spec --rootless` configs. State lives under $XDG_RUNTIME_DIR, ids
//! are mapped (the user's own id directly, more through newuidmap and
//! /etc/subuid), and no cgroup is touched without delegation.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hako_tests::{
    busybox_rootfs, cgroup_dirs_named, copy_tree, json, output_via_files, runtime_bin, set_mode,
    unique, TempDir, Value,
};

/// An unprivileged user made for one test (and removed after it), with a
/// runtime directory and a copy of the runtime it can execute (the build
/// tree may not be reachable for other users).
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: TempDir,
    runtime: PathBuf,
}

impl User {
    fn new() -> User {
        // useradd names: at most 32 characters.
        let name = format!("hkrl{}", unique("").replace('-', ""));
        let status = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {name}");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let home = TempDir::new("rootless");
        let runtime = home.path.join("hako-runtime");
        std::fs::copy(runtime_bin(), &runtime).expect("copy the runtime");
        set_mode(&runtime, 0o755);
        let xdg = home.path.join("xdg");
        std::fs::create_dir(&xdg).expect("mkdir xdg");
        chown(&xdg, uid, gid);
        set_mode(&xdg, 0o700);
        User {
            name,
            uid,
            gid,
            home,
            runtime,
        }
    }

    fn xdg(&self) -> PathBuf {
        self.home.path.join("xdg")
    }

    /// `hako-runtime ARGS` as this user, in `cwd`, without --root.
    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut c = Command::new("runuser");
        c.args(["-u", &self.name, "--", "env"])
            .arg(format!("XDG_RUNTIME_DIR={}", self.xdg().display()))
            .arg(&self.runtime)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null());
        output_via_files(c)
    }

    fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args);
        assert!(
            out.status.success(),
            "hako-runtime {args:?} as {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first subordinate id range of this user in /etc/subuid or /etc/subgid.
    fn sub_range(&self, file: &str) -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.split(':');
            if f.next()? != self.name {
                return None;
            }
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // Containers left by a failing test first, then the user.
        if let Ok(entries) = std::fs::read_dir(self.xdg().join("hako-runtime")) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&self.home.path, &["delete", "-f", &id]);
            }
        }
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

/// A bundle the user owns, with the config `spec --rootless` writes for
/// that user, running `args`.
fn rootless_bundle(user: &User, args: &[&str]) -> (PathBuf, Value) {
    let dir = user.home.path.join(unique("bundle"));
    std::fs::create_dir(&dir).expect("mkdir bundle");
    copy_tree(busybox_rootfs(), &dir.join("rootfs"));
    chown(&dir, user.uid, user.gid);
    user.ok(&dir, &["spec", "--rootless"]);
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let mut config: Value = serde_json::from_str(&text).expect("json");
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(args);
    save(&dir, &config);
    (dir, config)
}

fn save(dir: &Path, config: &Value) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).expect("json"),
    )
    .expect("write config");
}

#[test]
fn a_fresh_unprivileged_user_runs_a_container() {
    let user = User::new();
    let (dir, _) = rootless_bundle(
        &user,
        &[
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map /proc/self/gid_map; echo hi > /dev/shm/x && cat /dev/shm/x",
        ],
    );
    let id = unique("rl");
    let out = user.ok(&dir, &["run", &id]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "{out}");
    let map: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(map, ["0", &user.gid.to_string(), "1"], "{out}");
    assert_eq!(lines[3], "hi");
    // State went to the user's runtime directory and is gone after run.
    assert!(user.xdg().join("hako-runtime").is_dir());
    assert!(!user.xdg().join("hako-runtime").join(&id).exists());
    // No cgroup was made: this user has no delegated one.
    for d in cgroup_dirs_named(&id) {
        assert!(!d.exists(), "{} was created", d.display());
    }
}

#[test]
fn rootless_lifecycle_exec_ps_kill_delete() {
    let user = User::new();
    let (dir, _) = rootless_bundle(&user, &["sleep", "100"]);
    let id = unique("rlcycle");
    user.ok(&dir, &["run", "-d", &id]);
    let state: Value = serde_json::from_str(&user.ok(&dir, &["state", &id])).expect("state");
    assert_eq!(state["status"], "running");
    let pid = state["pid"].as_i64().expect("pid") as i32;
    // The container's init runs as the user on the host.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = common::status_field(&status, "Uid");
    assert!(
        uid_line.starts_with(&user.uid.to_string()),
        "init runs as {uid_line}"
    );
    let pids: Vec<i32> =
        serde_json::from_str(&user.ok(&dir, &["ps", "--format", "json", &id])).expect("ps");
    assert_eq!(pids, vec![pid]);
    assert_eq!(user.ok(&dir, &["exec", &id, "id", "-u"]), "0\n");
    // Limits, pause and statistics need a cgroup: clear errors.
    let err = user.run(&dir, &["pause", &id]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("no cgroup"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    user.ok(&dir, &["kill", &id, "KILL"]);
    assert!(common::wait_until(5, || !common::alive(pid)));
    user.ok(&dir, &["delete", &id]);
    assert!(!user.xdg().join("hako-runtime").join(&id).exists());
}

/// More than the user's own id goes through newuidmap/newgidmap and the
/// ranges /etc/subuid and /etc/subgid grant.
#[test]
fn subordinate_ids_are_mapped_through_newuidmap() {
    let user = User::new();
    let (Some((sub_uid, _)), Some((sub_gid, _))) =
        (user.sub_range("/etc/subuid"), user.sub_range("/etc/subgid"))
    else {
        panic!("useradd gave {} no subordinate ids", user.name);
    };
    let (dir, mut config) = rootless_bundle(&user, &["sh", "-c", "cat /proc/self/uid_map"]);
    config["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": sub_uid, "size": 1000},
    ]);
    config["linux"]["gidMappings"] = json!([
        {"containerID": 0, "hostID": user.gid, "size": 1},
        {"containerID": 1, "hostID": sub_gid, "size": 1000},
    ]);
    save(&dir, &config);
    let out = user.ok(&dir, &["run", &unique("rlsub")]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["0", &user.uid.to_string(), "1"],
            vec!["1", &sub_uid.to_string(), "1000"]
        ],
        "{out}"
    );
    // Someone else's ids are refused by newuidmap, with a clear error.
    config["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": 0, "size": 1},
    ]);
    save(&dir, &config);
    let id = unique("rlbad");
    let out = user.run(&dir, &["run", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newuidmap"), "{err}");
    assert!(!user.xdg().join("hako-runtime").join(&id).exists());
}

/// Without cgroup delegation, limits are refused up front; a network
/// namespace needs no privileges (only loopback in it).
#[test]
fn rootless_limits_need_delegation_and_netns_works() {
    let user = User::new();
    let (dir, mut config) = rootless_bundle(&user, &["true"]);
    config["linux"]["resources"] = json!({"pids": {"limit": 10}});
    save(&dir, &config);
    let id = unique("rllimit");
    let out = user.run(&dir, &["run", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    let delegated = cgroup_dirs_named(&id).iter().any(|d| {
        d.parent()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == user.uid)
    });
    if !delegated {
        assert!(!out.status.success(), "limits applied without a cgroup");
        assert!(err.contains("delegated cgroup"), "{err}");
    }
    assert!(!user.xdg().join("hako-runtime").join(&id).exists());

    config["linux"]["resources"] = json!(null);
    config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "network"}));
    config["process"]["args"] = json!(["sh", "-c", "ls /sys/class/net"]);
    // sysfs of the new network namespace: mount it fresh rather than the
    // host's bind (which would show the host's links).
    for m in config["mounts"].as_array_mut().expect("mounts") {
        if m["destination"] == "/sys" {
            *m = json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                        "options": ["nosuid", "noexec", "nodev", "ro"]});
        }
    }
    save(&dir, &config);
    assert_eq!(user.ok(&dir, &["run", &unique("rlnet")]), "lo\n");
}
