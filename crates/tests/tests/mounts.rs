//! The container's filesystem: config mounts (tmpfs, bind, rbind, file
//! binds), masked and read-only paths, a read-only root, rootfs
//! propagation, /dev, linux.devices, symlinked mount destinations and
//! sysctls.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{add_mount, mounts_under, run_detached, run_ok, set_namespaces, sh};
use hako_tests::{json, unique, Bundle, Runtime, TempDir};

/// A tmpfs mounted on the host for the duration of a test.
struct HostMount(PathBuf);

impl HostMount {
    fn tmpfs(at: &Path) -> HostMount {
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs on the host");
        HostMount(at.to_path_buf())
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The line of /proc/self/mountinfo text whose mount point is `point`.
fn mountinfo_line<'a>(text: &'a str, point: &str) -> Option<&'a str> {
    text.lines().find(|l| l.split(' ').nth(4) == Some(point))
}

#[test]
fn tmpfs_with_size_and_mode() {
    let rt = Runtime::new();
    let mut b = sh(
        "grep ' /scratch ' /proc/self/mountinfo; stat -c '%a %u %g' /scratch; \
         df -k /scratch | tail -n 1 | awk '{print $2}'; echo hi > /scratch/f && cat /scratch/f",
    );
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "size=2m", "mode=1777", "uid=12", "gid=34"]}),
        )
    });
    let out = run_ok(&rt, &b, &unique("tmpfs"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let info = lines[0];
    assert!(info.contains(" - tmpfs "), "not a tmpfs: {info}");
    let opts = info.split(' ').nth(5).unwrap_or("");
    assert!(opts.split(',').any(|o| o == "nosuid"), "{info}");
    assert!(opts.split(',').any(|o| o == "nodev"), "{info}");
    assert!(info.contains("size=2048k"), "{info}");
    assert_eq!(lines[1], "1777 12 34", "{out}");
    assert_eq!(lines[2], "2048", "{out}");
    assert_eq!(lines[3], "hi", "{out}");
    assert!(
        !b.rootfs().join("scratch/f").exists(),
        "the write went to the rootfs, not the tmpfs"
    );
}

#[test]
fn read_only_and_read_write_bind_mounts() {
    let rt = Runtime::new();
    let host = TempDir::new("bindsrc");
    std::fs::write(host.path.join("hello"), "from the host\n").expect("write");
    let mut b = sh("cat /ro/hello; touch /ro/new 2>/dev/null; echo ro=$?; \
         echo written > /rw/new; echo rw=$?");
    let src = host.path.to_string_lossy().into_owned();
    b.edit(|c| {
        add_mount(c, json!({"destination": "/ro", "type": "bind", "source": src, "options": ["rbind", "ro"]}));
        add_mount(c, json!({"destination": "/rw", "type": "bind", "source": src, "options": ["rbind", "rw"]}));
    });
    let out = run_ok(&rt, &b, &unique("bind"));
    assert_eq!(out, "from the host\nro=1\nrw=0\n");
    assert_eq!(
        std::fs::read_to_string(host.path.join("new")).expect("rw write"),
        "written\n"
    );
    // The host's directory stays writable: ro applied to the container's mount only.
    std::fs::write(host.path.join("after"), "x").expect("host dir still writable");
    assert!(mounts_under(&host.path).is_empty());
}

#[test]
fn rbind_includes_submounts_and_bind_does_not() {
    let rt = Runtime::new();
    let host = TempDir::new("rbindsrc");
    let sub = host.path.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::write(sub.join("under"), "under the mount\n").expect("write");
    let _m = HostMount::tmpfs(&sub);
    std::fs::write(sub.join("onmount"), "on the submount\n").expect("write");
    let src = host.path.to_string_lossy().into_owned();
    let mut b = sh("cat /r/sub/onmount; echo --; ls /b/sub");
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/r", "type": "bind", "source": src, "options": ["rbind"]}),
        );
        add_mount(
            c,
            json!({"destination": "/b", "type": "bind", "source": src, "options": ["bind"]}),
        );
    });
    let out = run_ok(&rt, &b, &unique("rbind"));
    assert_eq!(out, "on the submount\n--\nunder\n");
}

#[test]
fn file_bind_mount() {
    let rt = Runtime::new();
    let host = TempDir::new("filesrc");
    let file = host.path.join("motd");
    std::fs::write(&file, "bound file\n").expect("write");
    let mut b = sh("[ -f /etc/motd ] && cat /etc/motd; [ -f /new/dir/file ] && cat /new/dir/file");
    let src = file.to_string_lossy().into_owned();
    b.edit(|c| {
        add_mount(c, json!({"destination": "/etc/motd", "type": "bind", "source": src, "options": ["bind", "ro"]}));
        add_mount(c, json!({"destination": "/new/dir/file", "type": "bind", "source": src, "options": ["bind"]}));
    });
    let out = run_ok(&rt, &b, &unique("filebind"));
    assert_eq!(out, "bound file\nbound file\n");
    let made = b.rootfs().join("new/dir/file");
    assert!(
        made.is_file(),
        "the destination file is created in the rootfs"
    );
    assert_eq!(
        std::fs::metadata(&made).expect("meta").len(),
        0,
        "the rootfs file itself is empty"
    );
}

#[test]
fn masked_paths() {
    let rt = Runtime::new();
    // Default masks (this kernel has no /proc/kcore): a file and a directory.
    let host_timer_list = std::fs::read("/proc/timer_list").expect("host /proc/timer_list");
    assert!(!host_timer_list.is_empty());
    assert!(
        std::fs::read_dir("/sys/firmware")
            .expect("host /sys/firmware")
            .count()
            > 0
    );
    let mut b = sh("wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; ls -A /secret | wc -l; ls -A /public; \
         wc -c < /etc/secret.txt; touch /secret/x 2>/dev/null; echo touch=$?");
    std::fs::create_dir(b.rootfs().join("secret")).expect("mkdir");
    std::fs::write(b.rootfs().join("secret/key"), "k").expect("write");
    std::fs::create_dir(b.rootfs().join("public")).expect("mkdir");
    std::fs::write(b.rootfs().join("public/file"), "p").expect("write");
    std::fs::write(b.rootfs().join("etc/secret.txt"), "top secret").expect("write");
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        let masked = c["linux"]["maskedPaths"]
            .as_array_mut()
            .expect("maskedPaths");
        for p in ["/proc/timer_list", "/sys/firmware"] {
            assert!(masked.contains(&json!(p)), "the default config masks {p}");
        }
        masked.push(json!("/secret"));
        masked.push(json!("/etc/secret.txt"));
        masked.push(json!("/does/not/exist"));
    });
    let out = run_ok(&rt, &b, &unique("mask"));
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["0", "0", "0", "file", "0", "touch=1"], "{out}");
    assert!(
        b.rootfs().join("secret/key").exists(),
        "masking must not delete"
    );

    // Unmasked, the same paths show their content.
    let mut b = sh("wc -c < /etc/secret.txt; ls -A /sys/firmware | wc -l");
    std::fs::write(b.rootfs().join("etc/secret.txt"), "top secret").expect("write");
    b.edit(|c| c["linux"]["maskedPaths"] = json!([]));
    let out = run_ok(&rt, &b, &unique("nomask"));
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "10", "{out}");
    assert_ne!(lines[1], "0", "{out}");
}

#[test]
fn readonly_paths() {
    let rt = Runtime::new();
    let script = "echo changed > /proc/sys/kernel/hostname 2>/dev/null; echo sys=$?; hostname; \
         touch /locked/x 2>/dev/null; echo locked=$?; touch /open/x; echo open=$?";
    let bundle = |extra_ro: bool| {
        let mut b = sh(script);
        std::fs::create_dir(b.rootfs().join("locked")).expect("mkdir");
        std::fs::create_dir(b.rootfs().join("open")).expect("mkdir");
        b.edit(|c| {
            c["root"]["readonly"] = json!(false);
            // Privileged enough that only the read-only mount can refuse.
            let caps = json!(["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"]);
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set] = caps.clone();
            }
            let ro = c["linux"]["readonlyPaths"]
                .as_array_mut()
                .expect("readonlyPaths");
            assert!(
                ro.contains(&json!("/proc/sys")),
                "the default config has /proc/sys read-only"
            );
            if extra_ro {
                ro.push(json!("/locked"));
                ro.push(json!("/not/there"));
            } else {
                ro.clear();
            }
        });
        b
    };
    let out = run_ok(&rt, &bundle(true), &unique("ro"));
    assert_eq!(out, "sys=1\nhako\nlocked=1\nopen=0\n");
    // Without readonlyPaths the same writes work (the hostname changes in
    // the container's own UTS namespace).
    let out = run_ok(&rt, &bundle(false), &unique("rw"));
    assert_eq!(out, "sys=0\nchanged\nlocked=0\nopen=0\n");
}

#[test]
fn readonly_root() {
    let rt = Runtime::new();
    let script = "touch /newfile 2>/dev/null; echo root=$?; echo ok > /dev/shm/f && cat /dev/shm/f";
    let mut b = sh(script);
    b.edit(|c| c["root"]["readonly"] = json!(true));
    let out = run_ok(&rt, &b, &unique("roroot"));
    assert_eq!(
        out, "root=1\nok\n",
        "mounts on a read-only root stay writable"
    );
    assert!(!b.rootfs().join("newfile").exists());
    // The host's rootfs directory is not made read-only.
    std::fs::write(b.rootfs().join("hostwrite"), "x").expect("rootfs writable on the host");

    let mut b = sh(script);
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let out = run_ok(&rt, &b, &unique("rwroot"));
    assert_eq!(out, "root=0\nok\n");
    assert!(b.rootfs().join("newfile").exists());
}

#[test]
fn rootfs_propagation() {
    let rt = Runtime::new();
    let root_line = |prop: Option<&str>| {
        let mut b = sh("awk '$5 == \"/\"' /proc/self/mountinfo");
        b.edit(|c| match prop {
            Some(p) => c["linux"]["rootfsPropagation"] = json!(p),
            None => {
                c["linux"]
                    .as_object_mut()
                    .expect("linux")
                    .remove("rootfsPropagation");
            }
        });
        let out = run_ok(&rt, &b, &unique("prop"));
        assert_eq!(out.lines().count(), 1, "{out}");
        // Optional fields sit between the mount options and " - ".
        let pre = out.split(" - ").next().unwrap_or("").to_string();
        pre.split(' ').skip(6).collect::<Vec<_>>().join(" ")
    };
    let shared = root_line(Some("shared"));
    assert!(shared.contains("shared:"), "shared: {shared:?}");
    let private = root_line(Some("private"));
    assert!(
        !private.contains("shared:") && !private.contains("master:"),
        "private: {private:?}"
    );
    let unbindable = root_line(Some("unbindable"));
    assert!(
        unbindable.contains("unbindable"),
        "unbindable: {unbindable:?}"
    );
    let default = root_line(None);
    assert!(
        !default.contains("shared:"),
        "default must not propagate to the host: {default:?}"
    );

    let mut b = sh("true");
    b.edit(|c| c["linux"]["rootfsPropagation"] = json!("sideways"));
    let id = unique("badprop");
    let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(err.contains("sideways"), "{err}");
    assert!(!rt.has_state(&id));
}

#[test]
fn dev_has_the_standard_nodes_and_links() {
    let rt = Runtime::new();
    let names = ["null", "zero", "full", "random", "urandom", "tty"];
    let mut script = String::new();
    for n in names {
        script.push_str(&format!("stat -c '%n %F %t:%T %a' /dev/{n}; "));
    }
    for l in ["fd", "stdin", "stdout", "stderr", "ptmx"] {
        script.push_str(&format!("echo /dev/{l} $(readlink /dev/{l}); "));
    }
    script.push_str(
        "[ -c /dev/pts/ptmx ] && echo ptmx-ok; head -c 5 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
         echo x > /dev/full 2>/dev/null || echo full-ok; head -c 4 /dev/urandom | wc -c; ls /dev/sda /dev/vda /dev/mem 2>&1 | grep -c 'No such'",
    );
    let b = sh(&script);
    let out = run_ok(&rt, &b, &unique("dev"));
    let mut want = String::new();
    for n in names {
        let host = std::fs::metadata(format!("/dev/{n}")).expect("host device");
        let (maj, min) = (libc::major(host.rdev()), libc::minor(host.rdev()));
        want.push_str(&format!(
            "/dev/{n} character special file {maj:x}:{min:x} 666\n"
        ));
    }
    want.push_str(
        "/dev/fd /proc/self/fd\n/dev/stdin /proc/self/fd/0\n/dev/stdout /proc/self/fd/1\n\
         /dev/stderr /proc/self/fd/2\n/dev/ptmx pts/ptmx\nptmx-ok\n5\nnull-ok\nfull-ok\n4\n3\n",
    );
    assert_eq!(out, want);
}

#[test]
fn linux_devices_creates_nodes() {
    let rt = Runtime::new();
    let mut b = sh(
        "stat -c '%n %F %t:%T %a %u:%g' /dev/hako-null /dev/sub/hako-blk /dev/hako-fifo; \
         echo data > /dev/hako-zero && head -c 3 /dev/hako-zero | wc -c",
    );
    b.edit(|c| {
        c["linux"]["devices"] = json!([
            {"path": "/dev/hako-null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1000, "gid": 1001},
            {"path": "/dev/sub/hako-blk", "type": "b", "major": 7, "minor": 200, "fileMode": 0o600, "uid": 0, "gid": 6},
            {"path": "/dev/hako-fifo", "type": "p", "fileMode": 0o620},
            // Usable: the devices cgroup must allow what linux.devices lists.
            {"path": "/dev/hako-zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
        ]);
    });
    let out = run_ok(&rt, &b, &unique("devices"));
    assert_eq!(
        out,
        "/dev/hako-null character special file 1:3 640 1000:1001\n\
         /dev/sub/hako-blk block special file 7:c8 600 0:6\n\
         /dev/hako-fifo fifo 0:0 620 0:0\n\
         3\n"
    );
}

#[test]
fn devices_cgroup_denies_nodes_not_allowed() {
    let rt = Runtime::new();
    // A node created in the rootfs image for the null device: the default
    // device rules (deny all, then the standard devices) must still allow
    // /dev/null but refuse a memory device.
    let mut b = sh("echo x > /dev/null && echo null-ok; head -c 1 /mem-node >/dev/null 2>&1 || echo mem-denied");
    let mem = b.rootfs().join("mem-node");
    nix::sys::stat::mknod(
        &mem,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        libc::makedev(1, 1),
    )
    .expect("mknod /dev/mem copy");
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let out = run_ok(&rt, &b, &unique("devcg"));
    assert_eq!(out, "null-ok\nmem-denied\n");
}

/// A victim directory on the host, and links in the rootfs pointing at it
/// (absolute and with enough `..` to climb out of the rootfs on the host).
fn plant_links(b: &Bundle, victim: &Path) {
    std::os::unix::fs::symlink(victim, b.rootfs().join("evil-abs")).expect("symlink");
    let depth = b.rootfs().components().count() + 3;
    let rel = format!(
        "{}{}",
        "../".repeat(depth),
        victim.to_string_lossy().trim_start_matches('/')
    );
    std::os::unix::fs::symlink(rel, b.rootfs().join("evil-rel")).expect("symlink");
    // From the host's point of view the relative link does reach the victim.
    assert_eq!(
        std::fs::canonicalize(b.rootfs().join("evil-rel")).expect("canonicalize"),
        std::fs::canonicalize(victim).expect("canonicalize")
    );
}

fn dir_names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name())
        .collect();
    v.sort();
    v
}

fn symlink_escape(with_mount_ns: bool) {
    let rt = Runtime::new();
    let victim = TempDir::new("victim");
    std::fs::write(victim.path.join("keep"), "x").expect("write");
    let mut b = Bundle::new(&["sleep", "100"]);
    plant_links(&b, &victim.path);
    // Resolved inside the rootfs, the links name this directory.
    let in_root = b
        .rootfs()
        .join(victim.path.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(&in_root).expect("mkdir in rootfs");
    std::os::unix::fs::symlink("/etc", b.rootfs().join("evil-etc")).expect("symlink");
    let etc_before = dir_names(Path::new("/etc"));
    let marker = unique("hako-escape");
    b.edit(|c| {
        if !with_mount_ns {
            set_namespaces(c, &["pid", "ipc", "uts", "network"]);
        }
        add_mount(c, json!({"destination": "/evil-abs", "type": "tmpfs", "source": "tmpfs"}));
        add_mount(c, json!({"destination": "/evil-rel/sub", "type": "tmpfs", "source": "tmpfs"}));
        add_mount(c, json!({"destination": format!("/evil-etc/{marker}"), "type": "tmpfs", "source": "tmpfs"}));
    });
    let id = unique("escape");
    let pid = run_detached(&rt, &b, &id);
    // Nothing was created or mounted in the victim or in the host's /etc.
    assert_eq!(
        dir_names(&victim.path),
        ["keep"],
        "the victim directory was written to"
    );
    assert!(
        mounts_under(&victim.path).is_empty(),
        "{:?}",
        mounts_under(&victim.path)
    );
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "created /etc/{marker} on the host"
    );
    assert_eq!(dir_names(Path::new("/etc")), etc_before);
    // The mounts are where the links point when resolved in the rootfs.
    // (mountinfo paths are relative to the container's root.)
    let info =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("container mountinfo");
    let etc_marker = format!("/etc/{marker}");
    let victim_sub = format!("{}/sub", victim.path.display());
    for point in [&*victim.path.to_string_lossy(), &victim_sub, &etc_marker] {
        let line =
            mountinfo_line(&info, point).unwrap_or_else(|| panic!("no mount at {point}:\n{info}"));
        assert!(line.contains(" - tmpfs "), "{line}");
    }
    assert!(b.rootfs().join("etc").join(&marker).is_dir());
    if !with_mount_ns {
        // Shared mount namespace: the mounts are visible here, in the rootfs.
        let here = mounts_under(&b.rootfs());
        assert!(here.contains(&in_root), "{here:?}");
        assert!(
            here.contains(&b.rootfs().join("etc").join(&marker)),
            "{here:?}"
        );
    }
    rt.ok(&["delete", "--force", &id]);
    assert!(
        mounts_under(&b.rootfs()).is_empty(),
        "{:?}",
        mounts_under(&b.rootfs())
    );
    assert!(mounts_under(&victim.path).is_empty());
    assert_eq!(dir_names(&victim.path), ["keep"]);
}

#[test]
fn symlinked_mount_destinations_stay_in_the_rootfs() {
    symlink_escape(true);
}

#[test]
fn symlinked_mount_destinations_stay_in_the_rootfs_without_mount_namespace() {
    symlink_escape(false);
}

#[test]
fn dangling_symlinked_destinations_never_reach_the_host() {
    // Links whose target does not exist inside the rootfs: the runtime may
    // create the target inside the rootfs or refuse, but never follow the
    // link on the host.
    for with_mount_ns in [true, false] {
        let rt = Runtime::new();
        let victim = TempDir::new("victim");
        let mut b = sh("true");
        plant_links(&b, &victim.path);
        let bind_src = TempDir::new("bindsrc");
        let src = bind_src.path.to_string_lossy().into_owned();
        b.edit(|c| {
            if !with_mount_ns {
                set_namespaces(c, &["pid", "ipc", "uts", "network"]);
            }
            add_mount(c, json!({"destination": "/evil-abs/a", "type": "tmpfs", "source": "tmpfs"}));
            add_mount(c, json!({"destination": "/evil-rel/b", "type": "bind", "source": src, "options": ["bind"]}));
            add_mount(c, json!({"destination": "/evil-abs", "type": "tmpfs", "source": "tmpfs"}));
        });
        let id = unique("dangling");
        let out = rt.run(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            dir_names(&victim.path).is_empty(),
            "mount ns {with_mount_ns}: the victim was written to ({err})"
        );
        assert!(
            mounts_under(&victim.path).is_empty(),
            "{:?}",
            mounts_under(&victim.path)
        );
        assert!(
            mounts_under(&b.rootfs()).is_empty(),
            "{:?}",
            mounts_under(&b.rootfs())
        );
        assert!(!rt.has_state(&id));
    }
}

#[test]
fn sysctl_in_new_network_namespace() {
    let rt = Runtime::new();
    let host_before =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host sysctl");
    let mut b = sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ip_default_ttl");
    b.edit(|c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "net.ipv4.ip_default_ttl": "42"});
    });
    let out = run_ok(&rt, &b, &unique("sysctl"));
    assert_eq!(out, "1\n42\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("host sysctl"),
        host_before,
        "the host's sysctl changed"
    );
    let b = sh("cat /proc/sys/net/ipv4/ip_default_ttl");
    assert_ne!(run_ok(&rt, &b, &unique("nosysctl")), "42\n");

    let mut b = sh("true");
    b.edit(|c| c["linux"]["sysctl"] = json!({"net.no.such.key": "1"}));
    let id = unique("badsysctl");
    let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(
        err.contains("net.no.such.key") || err.contains("net/no/such/key"),
        "{err}"
    );
    assert!(!rt.has_state(&id));
}

/// Sysctls that would change the host are refused: non-namespaced keys, and
/// namespaced ones when the container shares the host's namespace.
#[test]
fn sysctls_that_would_reach_the_host_are_refused() {
    let rt = Runtime::new();
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("read");
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("kernel.core_pattern", "|/tmp/pwned", None),
        ("vm.swappiness", "1", None),
        ("net.ipv4.ip_forward", "1", Some("network")),
        ("kernel.shmmax", "4096", Some("ipc")),
        ("kernel.hostname", "x", Some("uts")),
    ];
    for (key, value, shared) in cases {
        let mut b = sh("true");
        b.edit(|c| {
            c["linux"]["sysctl"] = json!({ key: value });
                        if shared == Some("uts") {
                // Else the hostname check refuses the config first.
                c.as_object_mut().expect("config").remove("hostname");
            }
            if let Some(ns) = shared {
                let list = c["linux"]["namespaces"].as_array_mut().expect("namespaces");
                list.retain(|n| n["type"] != ns);
                list.push(json!({"type": ns, "path": format!("/proc/self/ns/{}", if ns == "network" { "net" } else { ns })}));
            }
        });
        let id = unique("hostsysctl");
        let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
        assert!(
            err.contains("linux.sysctl") && err.contains(key),
            "{key}: {err}"
        );
        assert!(!rt.has_state(&id));
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("read"),
        core_pattern
    );
}

/// A source directory with files owned by 0:0 and 1:1, for id-mapped mounts.
fn idmap_source() -> TempDir {
    let src = TempDir::new("idmap-src");
    for (name, id) in [("zero", 0u32), ("one", 1)] {
        let f = src.path.join(name);
        std::fs::write(&f, name).expect("write");
        std::os::unix::fs::chown(&f, Some(id), Some(id)).expect("chown");
    }
    src
}

/// Runs `b`; None (with a note) when the source's filesystem or kernel
/// cannot id-map, the error otherwise.
fn run_idmapped(rt: &Runtime, b: &Bundle) -> Option<String> {
    let (code, out, err) = rt.run_bundle(b, &unique("idmap"));
    if code != 0 && err.contains("support id-mapped mounts") {
        eprintln!("skipped: no id-mapped mounts here: {err}");
        return None;
    }
    assert_eq!(code, 0, "{err}");
    Some(out)
}

/// Id-mapped bind mounts: on-disk owners appear shifted by the mount's
/// mapping; inside a user namespace with the same mapping the container
/// sees the on-disk owners and writes files the host sees as its own.
#[test]
fn idmapped_bind_mounts() {
    let rt = Runtime::new();
    let src = idmap_source();
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let stat = "stat -c '%n %u %g' /data/zero /data/one";

    // No user namespace: 0 -> 100000, 1 -> 100001.
    let mut b = sh(stat);
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/data", "type": "bind", "source": src.path,
                   "options": ["bind"], "uidMappings": map, "gidMappings": map}),
        )
    });
    let Some(out) = run_idmapped(&rt, &b) else {
        return;
    };
    assert_eq!(out, "/data/zero 100000 100000\n/data/one 100001 100001\n");

    // A user namespace mapping 0 -> 100000 and `idmap` without mappings of
    // its own: the container's mappings are used, the owners look as on
    // disk, and a file created as the container's root is root's on disk.
    let mut b = sh(&format!(
        "{stat}; touch /data/new && stat -c '%u' /data/new"
    ));
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map.clone();
        add_mount(
            c,
            json!({"destination": "/data", "type": "bind", "source": src.path,
                   "options": ["bind", "idmap"]}),
        )
    });
    // (The rootfs belongs to the host's root, unmapped in the container:
    // the mount point has to exist already.)
    std::fs::create_dir_all(b.rootfs().join("data")).expect("mkdir");
    let out = run_idmapped(&rt, &b).expect("supported above");
    assert_eq!(out, "/data/zero 0 0\n/data/one 1 1\n0\n");
    let meta = std::fs::metadata(src.path.join("new")).expect("new file");
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert!(mounts_under(&b.rootfs()).is_empty());
}

/// idmap on anything but a bind mount, or without any mappings, is a clear
/// error that leaves nothing behind.
#[test]
fn bad_idmapped_mounts_are_refused() {
    let rt = Runtime::new();
    let mut b = sh("true");
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}),
        )
    });
    let id = unique("badidmap");
    let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(err.contains("bind mounts only"), "{err}");
    assert!(!rt.has_state(&id));

    let src = idmap_source();
    let mut b = sh("true");
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/data", "type": "bind", "source": src.path,
                   "options": ["bind", "idmap"]}),
        )
    });
    let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(err.contains("uidMappings"), "{err}");
    assert!(!rt.has_state(&id));
    assert!(mounts_under(&b.rootfs()).is_empty());
}
