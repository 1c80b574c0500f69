//! linux.namespaces: new pid, uts, network, ipc, user and cgroup
//! namespaces, joining a namespace by path, and containers sharing the
//! runtime's mount namespace.

mod common;

use common::{drop_namespace, mounts_under, ns_link, run_detached, run_ok, set_namespaces, sh};
use hako_tests::{json, unique, Bundle, Runtime};

#[test]
fn pid_namespace_makes_the_process_pid_1() {
    let rt = Runtime::new();
    let script = "echo $$; readlink /proc/self/ns/pid; ls /proc | grep -c '^[0-9]'";
    let b = sh(script);
    let out = run_ok(&rt, &b, &unique("pid"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0], "1",
        "init of a new pid namespace must be pid 1: {out}"
    );
    assert_ne!(
        lines[1],
        ns_link("self", "pid"),
        "pid namespace shared with the host"
    );
    // sh, ls and grep at most: the host's processes are invisible.
    let n: usize = lines[2].parse().expect("count");
    assert!(n <= 3, "{n} processes visible in a new pid namespace");

    // Without a pid namespace the process sees the host's pids.
    let mut b = sh("echo $$; readlink /proc/self/ns/pid");
    b.edit(|c| drop_namespace(c, "pid"));
    let out = run_ok(&rt, &b, &unique("nopid"));
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "{out}");
    assert_eq!(lines[1], ns_link("self", "pid"), "{out}");
}

#[test]
fn uts_namespace_sets_hostname_and_domainname() {
    let rt = Runtime::new();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").expect("domainname");
    let name = unique("box");
    let mut b = sh("hostname; cat /proc/sys/kernel/domainname; readlink /proc/self/ns/uts");
    b.edit(|c| {
        c["hostname"] = json!(name);
        c["domainname"] = json!("hako.example");
    });
    let out = run_ok(&rt, &b, &unique("uts"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], [name.as_str(), "hako.example"], "{out}");
    assert_ne!(lines[2], ns_link("self", "uts"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname"),
        host_name
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").expect("domainname"),
        host_domain
    );
}

#[test]
fn new_network_namespace_has_only_loopback() {
    let rt = Runtime::new();
    let b = sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo --; ls /sys/class/net; readlink /proc/self/ns/net");
    let out = run_ok(&rt, &b, &unique("net"));
    let (ifaces, rest) = out.split_once("--\n").expect("separator");
    assert_eq!(ifaces, "lo\n", "interfaces in /proc/net/dev: {out}");
    let rest: Vec<&str> = rest.lines().collect();
    assert_eq!(rest, ["lo", rest[1]], "/sys/class/net: {out}");
    assert_ne!(rest[1], ns_link("self", "net"));
    // The host has more than loopback (this VM has a network card), so the
    // check above could fail.
    let host = std::fs::read_to_string("/proc/net/dev").expect("host /proc/net/dev");
    assert!(host.lines().count() > 3, "{host}");
}

#[test]
fn ipc_namespace_is_new_or_shared_as_configured() {
    let rt = Runtime::new();
    let b = sh("readlink /proc/self/ns/ipc");
    let inside = run_ok(&rt, &b, &unique("ipc"));
    assert!(inside.starts_with("ipc:["), "{inside}");
    assert_ne!(inside.trim(), ns_link("self", "ipc"));

    let mut b = sh("readlink /proc/self/ns/ipc");
    b.edit(|c| drop_namespace(c, "ipc"));
    let inside = run_ok(&rt, &b, &unique("noipc"));
    assert_eq!(inside.trim(), ns_link("self", "ipc"));
}

#[test]
fn joins_namespaces_by_path() {
    let rt = Runtime::new();
    let mut a = Bundle::new(&["sleep", "100"]);
    a.edit(|c| c["hostname"] = json!("container-a"));
    let id_a = unique("nsa");
    let pid = run_detached(&rt, &a, &id_a).to_string();
    let a_net = ns_link(&pid, "net");
    let a_uts = ns_link(&pid, "uts");
    assert_ne!(a_net, ns_link("self", "net"));

    let mut b = sh("for n in net uts ipc; do readlink /proc/self/ns/$n; done; hostname");
    b.edit(|c| {
        c["linux"]["namespaces"] = json!([
            {"type": "pid"}, {"type": "ipc"}, {"type": "mount"},
            {"type": "network", "path": format!("/proc/{pid}/ns/net")},
            {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
        ]);
        // The hostname belongs to the joined namespace's owner.
        c.as_object_mut().expect("config").remove("hostname");
    });
    let out = run_ok(&rt, &b, &unique("nsb"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], a_net, "{out}");
    assert_eq!(lines[1], a_uts, "{out}");
    assert_ne!(
        lines[2],
        ns_link(&pid, "ipc"),
        "ipc was not joined but is shared: {out}"
    );
    assert_eq!(lines[3], "container-a", "{out}");
    rt.ok(&["delete", "--force", &id_a]);

    // A path that is not a namespace of that type is refused.
    let mut bad = sh("true");
    bad.edit(|c| {
        c["linux"]["namespaces"] = json!([
            {"type": "mount"},
            {"type": "network", "path": "/proc/self/ns/uts"},
        ]);
        c.as_object_mut().expect("config").remove("hostname");
    });
    let id = unique("nsbad");
    let err = rt.fails(&["run", "--bundle", &bad.path().to_string_lossy(), &id]);
    assert!(err.contains("not a net namespace"), "{err}");
    assert!(!rt.has_state(&id));
}

#[test]
fn user_namespace_maps_ids() {
    let rt = Runtime::new();
    let mut b = sh(
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; touch /tmp/made-inside; \
         readlink /proc/self/ns/user",
    );
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["root"]["readonly"] = json!(false);
    });
    let status = std::process::Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(b.rootfs())
        .status()
        .expect("chown");
    assert!(status.success());
    let out = run_ok(&rt, &b, &unique("userns"));
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], ["0", "100000", "65536"], "uid_map: {out}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "gid_map: {out}");
    assert_eq!(lines[2], ["0"], "id -u: {out}");
    assert_eq!(lines[3], ["0"], "id -g: {out}");
    assert_ne!(
        lines[4],
        [ns_link("self", "user").as_str()],
        "user namespace shared: {out}"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(b.rootfs().join("tmp/made-inside")).expect("file made inside");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (100000, 100000),
        "container root is host 100000"
    );
}

#[test]
fn cgroup_namespace_hides_the_cgroup_path() {
    let rt = Runtime::new();
    let mut b = sh("cat /proc/self/cgroup");
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "cgroup"}));
    });
    let id = unique("cgns");
    let out = run_ok(&rt, &b, &id);
    let host = std::fs::read_to_string("/proc/self/cgroup").expect("host cgroups");
    assert_eq!(out.lines().count(), host.lines().count(), "{out}");
    for line in out.lines() {
        let path = line.splitn(3, ':').nth(2).expect("cgroup line");
        assert_eq!(path, "/", "inside a cgroup namespace: {out}");
    }

    // Without one, the container's own cgroup (named after its id) shows.
    let b = sh("cat /proc/self/cgroup");
    let id = unique("nocgns");
    let out = run_ok(&rt, &b, &id);
    assert!(out.lines().all(|l| l.ends_with(&format!("/{id}"))), "{out}");
}

#[test]
fn container_without_mount_namespace_leaves_no_mount_behind() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| set_namespaces(c, &["pid", "ipc", "uts", "network"]));
    let rootfs = b.rootfs();
    assert!(mounts_under(&rootfs).is_empty());
    let id = unique("nomnt");
    let pid = run_detached(&rt, &b, &id);
    assert_eq!(ns_link(&pid.to_string(), "mnt"), ns_link("self", "mnt"));
    // The container's mounts are in our namespace, below its rootfs.
    let during = mounts_under(&rootfs);
    assert!(during.contains(&rootfs.join("proc")), "{during:?}");
    assert!(during.contains(&rootfs.join("dev")), "{during:?}");
    // Its root is the rootfs (chroot), not the host's /.
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("root link");
    assert_eq!(root, rootfs);
    rt.ok(&["delete", "--force", &id]);
    assert_eq!(
        mounts_under(&rootfs),
        Vec::<std::path::PathBuf>::new(),
        "mounts leaked by delete"
    );
    assert!(!rt.has_state(&id));

    // The same through `run` in the foreground.
    let mut b = sh("echo ok");
    b.edit(|c| set_namespaces(c, &["pid", "uts"]));
    assert_eq!(run_ok(&rt, &b, &unique("nomnt2")), "ok\n");
    assert!(
        mounts_under(&b.rootfs()).is_empty(),
        "{:?}",
        mounts_under(&b.rootfs())
    );
}

#[test]
fn time_namespace_applies_offsets() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&["cat", "/proc/uptime"]);
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000, "nanosecs": 0}});
    });
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("host uptime");
    let (code, out, err) = rt.run_bundle(&b, &unique("timens"));
    assert_eq!(code, 0, "{err}");
    let inside: f64 = out
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("container uptime");
    let diff = inside - host;
    assert!(
        (864000.0..864060.0).contains(&diff),
        "boottime offset not applied: host {host}, container {inside}"
    );
}

/// A new user namespace together with namespaces joined by path (what a
/// pod with user namespaces needs): joins happen first, in the host's user
/// namespace, then the user namespace and the remaining new ones.
#[test]
fn new_user_namespace_with_a_joined_network_namespace() {
    let rt = Runtime::new();
    let holder = sh("sleep 100");
    let holder_id = unique("netholder");
    let holder_pid = run_detached(&rt, &holder, &holder_id).to_string();
    let mut b = sh("echo pid=$$; cat /proc/self/uid_map; readlink /proc/self/ns/net; id -u");
    b.edit(|c| {
        c["linux"]["namespaces"] = json!([
            {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "user"},
            {"type": "network", "path": format!("/proc/{holder_pid}/ns/net")}
        ]);
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        // sysfs belongs to the joined network namespace's owner (the host).
        let mounts = c["mounts"].as_array_mut().expect("mounts");
        mounts.retain(|m| m["destination"] != "/sys" && m["destination"] != "/sys/fs/cgroup");
    });
    let id = unique("userjoin");
    let out = run_ok(&rt, &b, &id);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"pid=1"), "{out}");
    assert_eq!(
        lines
            .get(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["0", "0", "65536"]),
        "{out}"
    );
    assert_eq!(
        lines.get(2).copied(),
        Some(ns_link(&holder_pid, "net").as_str()),
        "{out}"
    );
    assert_eq!(lines.get(3), Some(&"0"), "{out}");
    assert!(!rt.has_state(&id));
    rt.ok(&["delete", "-f", &holder_id]);
}

/// Without a mount namespace the container's root is a chroot; exec must
/// enter it too instead of running in the host's root.
#[test]
fn exec_enters_the_root_of_a_container_without_a_mount_namespace() {
    let rt = Runtime::new();
    let mut b = sh("sleep 100");
    b.edit(|c| {
        drop_namespace(c, "mount");
        c["mounts"] = json!([]);
        c["root"]["readonly"] = json!(false);
    });
    std::fs::write(b.rootfs().join("marker"), "inside\n").expect("marker");
    let id = unique("nomntexec");
    run_detached(&rt, &b, &id);
    let out = rt.run(&["exec", &id, "cat", "/marker"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "inside\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.ok(&["delete", "-f", &id]);
}
