//! Known container escapes, each attempted for real and expected to fail:
//! the attack patterns behind runc, crun and youki CVEs.

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{add_mount, mounts_under, run_detached, run_ok, sh, status_field, wait_until};
use hako_tests::{
    busybox_rootfs, copy_tree, json, output_via_files, runtime_bin, unique, Bundle, Runtime,
    TempDir,
};

/// CVE-2019-5736: a container gets a runtime process to execute
/// `/proc/self/exe` (here through `exec`), opens that process's
/// `/proc/PID/exe`, and after it exits rewrites the file through the fd.
/// The runtime runs from a sealed copy, so the write fails and the binary
/// on the host (a copy made for this test, so a failure breaks nothing
/// else) stays as it was.
#[test]
fn cve_2019_5736_the_runtime_binary_cannot_be_overwritten() {
    let bin_dir = TempDir::new("bin");
    let runtime = bin_dir.path.join("hako-runtime");
    std::fs::copy(runtime_bin(), &runtime).expect("copy the runtime");
    let original = std::fs::read(&runtime).expect("read the runtime");
    let rt = Runtime::new();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&runtime);
        c.arg("--root").arg(&rt.root.path).args(args);
        c
    };
    let mut b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let id = unique("cve5736");
    let out = output_via_files({
        let mut c = cmd(&["run", "-d", "--bundle", &b.path().to_string_lossy(), &id]);
        c.stdin(Stdio::null());
        c
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The victim: the runtime's binary running inside the container,
    // blocked reading a resources document from stdin.
    let mut victim = cmd(&[
        "exec",
        &id,
        "/proc/self/exe",
        "update",
        "--resources",
        "-",
        "none",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn the victim exec");

    // The attacker: finds it, holds its exe open, waits for it to exit,
    // then writes through the held file.
    let script = r#"
        for i in $(seq 100); do
            for p in /proc/[0-9]*; do
                if [ "$(head -c 14 "$p/cmdline" 2>/dev/null)" = /proc/self/exe ]; then victim=$p; break 2; fi
            done
            sleep 0.1
        done
        [ -n "$victim" ] || { echo no-victim; exit 1; }
        exec 3< "$victim/exe" || { echo cannot-open; exit 1; }
        echo "opened $(readlink "$victim/exe")"
        while [ -e "$victim/exe" ]; do sleep 0.05; done
        # The file stays busy while any runtime process runs it: keep trying.
        for i in $(seq 50); do
            if printf '#!/bin/sh\necho pwned\n' 2>/dev/null > /proc/self/fd/3; then echo wrote; exit 0; fi
            sleep 0.1
        done
        echo write-refused
    "#;
    // Detached, with its output in the container's /tmp: no runtime
    // process on the host stays alive (and keeps the binary busy) for it.
    let script = format!("exec > /tmp/attacker.out 2>&1; {script}");
    let attacker_out = b.rootfs().join("tmp/attacker.out");
    let out = output_via_files({
        let mut c = cmd(&["exec", "-d", &id, "sh", "-c", &script]);
        c.stdin(Stdio::null());
        c
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read_out = || std::fs::read_to_string(&attacker_out).unwrap_or_default();
    assert!(
        wait_until(20, || read_out().contains("opened")
            || read_out().contains("no-victim")),
        "attacker: {}",
        read_out()
    );
    // Let the victim exit.
    drop(victim.stdin.take());
    let _ = victim.wait();
    assert!(
        wait_until(20, || read_out().contains("wrote")
            || read_out().contains("write-refused")),
        "attacker: {}",
        read_out()
    );
    let out = read_out();
    assert!(out.contains("opened"), "attacker: {out}");
    // It runs from a read-only detached mount of the binary (or a sealed
    // memfd), which readlink may still name like the file: what matters is
    // that writing fails and the file on the host is unchanged.
    assert!(out.contains("write-refused"), "attacker: {out}");
    assert!(
        std::fs::read(&runtime).expect("read the runtime") == original,
        "the runtime binary on the host was modified"
    );
    let _ = output_via_files(cmd(&["delete", "-f", &id]));
}

/// CVE-2024-21626: a working directory of `/proc/self/fd/N` naming a
/// directory fd leaked from the runtime would put the process outside the
/// rootfs. No fd beyond stdio reaches the container, and a cwd that
/// resolves outside the root is refused, for init and for exec.
#[test]
fn cve_2024_21626_no_leaked_fds_and_no_cwd_outside_the_root() {
    let rt = Runtime::new();
    // Only stdio is open in the container (ls's own directory fd aside).
    // (ls runs as a child while the shell holds only what it was given.)
    let fds = "ls -l /proc/$$/fd";
    let b = sh(fds);
    let out = run_ok(&rt, &b, &unique("fds"));
    for line in out.lines().filter(|l| l.contains(" -> ")) {
        let (left, _) = line.split_once(" -> ").expect("link line");
        let n: u32 = left
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("fd number");
        assert!(n <= 2, "fd leaked into the container: {line}\n{out}");
    }

    let secret = unique("host-secret");
    let mut b = sh("cat /dev/null");
    std::fs::write(b.path().join("outside-marker"), &secret).expect("marker");
    // From an outside cwd, enough ".." reaches the host's root, from where
    // the bundle's marker file is at its absolute path.
    let escape = format!(
        "cd ../../../../../../../../../../..; cat .{}/outside-marker 2>/dev/null; pwd",
        b.path().display()
    );
    for n in 3..=12 {
        b.edit(|c| {
            c["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
            c["process"]["args"] = json!(["sh", "-c", escape]);
        });
        let id = unique("cwdfd");
        let (_, out, _) = rt.run_bundle(&b, &id);
        assert!(
            !out.contains(&secret),
            "process.cwd /proc/self/fd/{n} reached the host: {out}"
        );
        let _ = rt.run(&["delete", "-f", &id]);
    }

    // A directory fd handed over on purpose (--preserve-fds) is the
    // surest way to have one: the cwd check must still refuse it.
    let mut b = sh(&escape);
    std::fs::write(b.path().join("outside-marker"), &secret).expect("marker");
    b.edit(|c| c["process"]["cwd"] = json!("/proc/self/fd/3"));
    let id = unique("cwdpreserved");
    let dir = std::fs::File::open(b.path()).expect("open the bundle dir");
    let mut cmd = rt.cmd(&[
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        &b.path().to_string_lossy(),
        &id,
    ]);
    with_fd3(&mut cmd, &dir);
    let out = output_via_files(cmd);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.contains(&secret),
        "a preserved fd as cwd reached the host: {stdout}"
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("outside the container's root"), "{stderr}");
    assert!(!rt.has_state(&id));

    // exec --cwd, likewise.
    let b = Bundle::new(&["sleep", "100"]);
    std::fs::write(b.path().join("outside-marker"), &secret).expect("marker");
    let id = unique("execcwd");
    run_detached(&rt, &b, &id);
    let escape = format!(
        "cd ../../../../../../../../../../..; cat .{}/outside-marker 2>/dev/null; pwd",
        b.path().display()
    );
    for n in 3..=12 {
        let out = rt.run(&[
            "exec",
            "--cwd",
            &format!("/proc/self/fd/{n}"),
            &id,
            "sh",
            "-c",
            &escape,
        ]);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(&secret),
            "exec --cwd /proc/self/fd/{n} reached the host"
        );
    }
    let mut cmd = rt.cmd(&[
        "exec",
        "--preserve-fds",
        "1",
        "--cwd",
        "/proc/self/fd/3",
        &id,
        "sh",
        "-c",
        &escape,
    ]);
    with_fd3(&mut cmd, &dir);
    let out = output_via_files(cmd);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.contains(&secret),
        "exec with a preserved fd as cwd reached the host: {stdout}"
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("process.cwd"), "{stderr}");
    rt.ok(&["delete", "-f", &id]);
}

/// Makes `fd` the child's fd 3.
fn with_fd3(cmd: &mut Command, fd: &std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: dup2 between valid fds in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Swaps `a` and `b` (both in `dir`) atomically, as fast as it can, until
/// `stop` is set.
fn keep_swapping(dir: &Path, a: &str, b: &str, stop: &std::sync::atomic::AtomicBool) {
    let dir = std::fs::File::open(dir).expect("open dir");
    let a = std::ffi::CString::new(a).expect("name");
    let b = std::ffi::CString::new(b).expect("name");
    use std::os::fd::AsRawFd;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: valid dir fd and C strings.
        unsafe {
            libc::renameat2(
                dir.as_raw_fd(),
                a.as_ptr(),
                dir.as_raw_fd(),
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
    }
}

/// CVE-2021-30465 and CVE-2024-45310: while containers are created, a
/// directory on a mount destination's path is swapped back and forth with
/// a symlink to a host directory. Nothing may be created or mounted there.
#[test]
fn cve_2021_30465_symlink_swaps_during_mount_stay_inside() {
    let rt = Runtime::new();
    let outside = TempDir::new("outside");
    let mut b = sh("true");
    let mnt = b.rootfs().join("mnt");
    std::fs::create_dir_all(mnt.join("dir")).expect("mkdir");
    std::os::unix::fs::symlink(&outside.path, mnt.join("link")).expect("symlink");
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/mnt/dir/made/here", "type": "tmpfs", "source": "tmpfs"}),
        );
        add_mount(
            c,
            json!({"destination": "/mnt/dir", "type": "bind", "source": "/etc", "options": ["bind", "ro"]}),
        );
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let mnt = mnt.clone();
        std::thread::spawn(move || keep_swapping(&mnt, "dir", "link", &stop))
    };
    for _ in 0..40 {
        let id = unique("race");
        let _ = rt.run_bundle(&b, &id);
        let _ = rt.run(&["delete", "-f", &id]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().expect("swapper");
    let entries: Vec<_> = std::fs::read_dir(&outside.path)
        .expect("read outside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "created outside the rootfs: {entries:?}"
    );
    assert!(
        mounts_under(&outside.path).is_empty(),
        "mounted outside the rootfs: {:?}",
        mounts_under(&outside.path)
    );
}

/// CVE-2023-28642, CVE-2019-19921, CVE-2023-27561: /proc as a symlink, and
/// mounts over parts of /proc that would redirect the runtime's writes,
/// are refused with a clear error.
#[test]
fn proc_tricks_are_refused() {
    let rt = Runtime::new();
    // /proc in the image is a symlink.
    let b = sh("true");
    std::fs::remove_dir(b.rootfs().join("proc")).expect("rmdir proc");
    std::fs::create_dir_all(b.rootfs().join("tmp/fakeproc")).expect("mkdir");
    std::os::unix::fs::symlink("/tmp/fakeproc", b.rootfs().join("proc")).expect("symlink");
    let id = unique("procsym");
    let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(err.contains("symlink"), "{err}");
    assert!(!rt.has_state(&id));
    assert!(mounts_under(&b.rootfs()).is_empty());

    // A volume mounted over /proc/sys (a sysctl would be written there).
    let fake = TempDir::new("fakesys");
    std::fs::create_dir_all(fake.path.join("kernel")).expect("mkdir");
    std::fs::write(fake.path.join("kernel/domainname"), "").expect("file");
    let mut b = sh("cat /proc/sys/kernel/domainname");
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/proc/sys", "type": "bind", "source": fake.path, "options": ["rbind"]}),
        );
        c["linux"]["sysctl"] = json!({"kernel.domainname": "evil"});
    });
    let id = unique("procsys");
    let err = rt.fails(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(err.contains("inside /proc"), "{err}");
    assert!(!rt.has_state(&id));
    assert!(mounts_under(&b.rootfs()).is_empty());
    assert_eq!(
        std::fs::read_to_string(fake.path.join("kernel/domainname")).expect("read"),
        ""
    );

    // The lxcfs files stay mountable.
    let mut b = sh("cat /proc/uptime");
    let fake_uptime = b.path().join("uptime");
    std::fs::write(&fake_uptime, "12345.00 1.00\n").expect("file");
    b.edit(|c| {
        add_mount(
            c,
            json!({"destination": "/proc/uptime", "type": "bind", "source": fake_uptime, "options": ["bind"]}),
        )
    });
    assert_eq!(run_ok(&rt, &b, &unique("lxcfs")), "12345.00 1.00\n");
}

/// A bundle whose /dev comes from the image (no /dev tmpfs in the config),
/// so the image decides what /dev/null and /dev/console are.
fn with_image_dev(script: &str) -> Bundle {
    let mut b = sh(script);
    b.edit(|c| {
        c["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| m["destination"] != "/dev");
    });
    b
}

/// CVE-2025-31133: masked paths are covered by binding /dev/null over
/// them; an image whose /dev/null is a symlink to a sensitive file must
/// not get that file bind-mounted (writable) instead.
#[test]
fn cve_2025_31133_a_fake_dev_null_is_not_used_for_masking() {
    let rt = Runtime::new();
    // If the mask were the symlink's target, /proc/keys would be a
    // writable bind mount of the host's core_pattern.
    let b = with_image_dev(
        "wc -c < /proc/keys; echo '|/tmp/evil' > /proc/keys 2>/dev/null; echo write=$?",
    );
    std::fs::create_dir_all(b.rootfs().join("dev")).expect("mkdir dev");
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", b.rootfs().join("dev/null"))
        .expect("symlink");
    let host_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("host");
    let id = unique("fakenull");
    let (code, out, err) = rt.run_bundle(&b, &id);
    if code == 0 {
        // The runtime replaced the image's /dev/null with the real device
        // and masked with that: /proc/keys reads as empty.
        assert_eq!(out, "0\nwrite=0\n", "{err}");
        let st = std::fs::symlink_metadata(b.rootfs().join("dev/null")).expect("stat");
        use std::os::unix::fs::FileTypeExt;
        assert!(st.file_type().is_char_device(), "{st:?}");
    } else {
        assert!(err.contains("/dev/null"), "{err}");
        assert!(!rt.has_state(&id));
    }
    assert!(mounts_under(&b.rootfs()).is_empty());
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("host"),
        host_pattern
    );
}

/// CVE-2025-52565: the console is bound over /dev/console; a symlink the
/// image put there must not redirect that mount.
#[test]
fn cve_2025_52565_a_symlinked_dev_console_is_refused() {
    let rt = Runtime::new();
    let mut b = with_image_dev("true");
    std::fs::create_dir_all(b.rootfs().join("dev/pts")).expect("mkdir dev");
    std::os::unix::fs::symlink(
        "/proc/sys/kernel/core_pattern",
        b.rootfs().join("dev/console"),
    )
    .expect("symlink");
    b.edit(|c| {
        c["process"]["terminal"] = json!(true);
        add_mount(
            c,
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        );
    });
    let sock = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind console socket");
    // Accept and hold whatever connects, so the runtime never blocks.
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(held);
    });
    let id = unique("fakeconsole");
    let err = rt.fails(&[
        "create",
        "--console-socket",
        &sock.to_string_lossy(),
        "--bundle",
        &b.path().to_string_lossy(),
        &id,
    ]);
    assert!(err.contains("/dev/console"), "{err}");
    assert!(!rt.has_state(&id));
    assert!(mounts_under(&b.rootfs()).is_empty());
}

/// CVE-2022-29162: `exec --cap` adds to the bounding, effective, permitted
/// and ambient sets, never to the inheritable one.
#[test]
fn cve_2022_29162_exec_cap_leaves_no_inheritable_capabilities() {
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "100"]);
    let id = unique("execcap");
    run_detached(&rt, &b, &id);
    let status = rt.ok(&[
        "exec",
        "--cap",
        "CAP_SYS_ADMIN",
        &id,
        "cat",
        "/proc/self/status",
    ]);
    assert_eq!(status_field(&status, "CapInh"), "0000000000000000");
    let eff = u64::from_str_radix(status_field(&status, "CapEff"), 16).expect("CapEff");
    assert_ne!(eff & (1 << 21), 0, "CAP_SYS_ADMIN was not added: {status}");
    rt.ok(&["delete", "-f", &id]);
}

/// `spec --hardened`: Docker's default capabilities and a seccomp
/// allowlist. Ordinary work goes on; what the allowlist leaves out fails
/// with EPERM even where the capabilities would allow it.
#[test]
fn the_hardened_profile_allows_ordinary_work_and_denies_the_rest() {
    let rt = Runtime::new();
    let dir = TempDir::new("hardened");
    copy_tree(busybox_rootfs(), &dir.path.join("rootfs"));
    rt.ok(&[
        "spec",
        "--hardened",
        "--bundle",
        &dir.path.to_string_lossy(),
    ]);
    let read = || -> hako_tests::Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.path.join("config.json")).expect("config"),
        )
        .expect("json")
    };
    let script = "ls / > /dev/null && echo ls-ok; \
                  echo x > /dev/shm/f && cat /dev/shm/f; \
                  sleep 0 & wait && echo fork-ok; \
                  chroot / true && echo chroot-ok; \
                  unshare -U true 2>/dev/null; echo unshare=$?; \
                  grep CapEff /proc/self/status";
    let write = |config: &hako_tests::Value| {
        std::fs::write(
            dir.path.join("config.json"),
            serde_json::to_string(config).expect("json"),
        )
        .expect("write")
    };
    let mut config = read();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sh", "-c", script]);
    write(&config);
    let run = |id: &str| {
        let out = rt.run(&["run", "--bundle", &dir.path.to_string_lossy(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&unique("hardened"));
    assert_eq!(code, 0, "{err}");
    // Docker's default set, by capability number.
    let docker: [(&str, u32); 14] = [
        ("CAP_CHOWN", 0),
        ("CAP_DAC_OVERRIDE", 1),
        ("CAP_FOWNER", 3),
        ("CAP_FSETID", 4),
        ("CAP_KILL", 5),
        ("CAP_SETGID", 6),
        ("CAP_SETUID", 7),
        ("CAP_SETPCAP", 8),
        ("CAP_NET_BIND_SERVICE", 10),
        ("CAP_NET_RAW", 13),
        ("CAP_SYS_CHROOT", 18),
        ("CAP_MKNOD", 27),
        ("CAP_AUDIT_WRITE", 29),
        ("CAP_SETFCAP", 31),
    ];
    let mut bounding: Vec<String> =
        serde_json::from_value(config["process"]["capabilities"]["bounding"].clone())
            .expect("bounding set");
    bounding.sort();
    let mut want: Vec<String> = docker.iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(bounding, want);
    let want_caps: u64 = docker.iter().map(|(_, n)| 1u64 << n).sum();
    assert_eq!(
        out,
        format!("ls-ok\nx\nfork-ok\nchroot-ok\nunshare=1\nCapEff:\t{want_caps:016x}\n"),
        "{err}"
    );
    // The same capabilities without the profile: unshare(CLONE_NEWUSER)
    // needs no capability, so only seccomp stopped it above.
    config["linux"]
        .as_object_mut()
        .expect("linux")
        .remove("seccomp");
    write(&config);
    let (code, out, err) = run(&unique("unhardened"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unshare=0"), "{out}");
}
