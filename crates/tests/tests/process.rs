//! The container's process: capabilities, rlimits, user and groups, umask,
//! cwd, env, noNewPrivileges, oom_score_adj, `exec` into a running
//! container, and terminals through --console-socket.

mod common;

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use common::{run_detached, run_ok, sh, status_field};
use hako_tests::{json, output_via_files, unique, Bundle, Runtime, Value};

/// Capability numbers of include/uapi/linux/capability.h (kernel ABI).
fn cap_number(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_FOWNER" => 3,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_SETPCAP" => 8,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_CHROOT" => 18,
        "CAP_SYS_ADMIN" => 21,
        "CAP_MKNOD" => 27,
        "CAP_AUDIT_WRITE" => 29,
        other => panic!("add {other} to cap_number"),
    }
}

fn mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |m, n| m | 1u64 << cap_number(n))
}

/// The Cap* lines of the shell's own /proc/self/status, as masks.
const CAP_SCRIPT: &str =
    "while read k v; do case $k in Cap*) echo $k $v;; esac; done < /proc/self/status";

fn parse_caps(out: &str) -> std::collections::BTreeMap<String, u64> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| {
            let v =
                u64::from_str_radix(v.trim(), 16).unwrap_or_else(|e| panic!("{l:?}: {e}", l = v));
            (k.trim_end_matches(':').to_string(), v)
        })
        .collect()
}

fn set_caps(c: &mut Value, sets: [(&str, &[&str]); 5]) {
    for (set, names) in sets {
        c["process"]["capabilities"][set] = json!(names);
    }
}

#[test]
fn capabilities_of_a_non_root_process() {
    let rt = Runtime::new();
    let bounding = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
    ];
    let effective = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let permitted = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"];
    let inheritable = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT"];
    let ambient = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut b = sh(CAP_SCRIPT);
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        set_caps(
            c,
            [
                ("bounding", &bounding),
                ("effective", &effective),
                ("permitted", &permitted),
                ("inheritable", &inheritable),
                ("ambient", &ambient),
            ],
        );
    });
    let caps = parse_caps(&run_ok(&rt, &b, &unique("caps")));
    // execve of a file without capabilities by a non-root user keeps the
    // bounding and inheritable sets, and makes permitted = effective =
    // ambient.
    assert_eq!(caps["CapBnd"], mask(&bounding), "{caps:x?}");
    assert_eq!(caps["CapInh"], mask(&inheritable), "{caps:x?}");
    assert_eq!(caps["CapAmb"], mask(&ambient), "{caps:x?}");
    assert_eq!(caps["CapPrm"], mask(&ambient), "{caps:x?}");
    assert_eq!(caps["CapEff"], mask(&ambient), "{caps:x?}");
}

#[test]
fn capabilities_of_root() {
    let rt = Runtime::new();
    let bounding = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_AUDIT_WRITE",
    ];
    let some = ["CAP_CHOWN", "CAP_KILL"];
    let inheritable = ["CAP_NET_BIND_SERVICE"];
    for nnp in [true, false] {
        let mut b = sh(CAP_SCRIPT);
        b.edit(|c| {
            c["process"]["noNewPrivileges"] = json!(nnp);
            set_caps(
                c,
                [
                    ("bounding", &bounding),
                    ("effective", &some),
                    ("permitted", &some),
                    ("inheritable", &inheritable),
                    ("ambient", &[]),
                ],
            )
        });
        let caps = parse_caps(&run_ok(&rt, &b, &unique("rootcaps")));
        assert_eq!(caps["CapBnd"], mask(&bounding), "nnp {nnp}: {caps:x?}");
        assert_eq!(caps["CapInh"], mask(&inheritable), "nnp {nnp}: {caps:x?}");
        assert_eq!(caps["CapAmb"], 0, "nnp {nnp}: {caps:x?}");
        // execve by root grants bounding | inheritable, but with
        // no_new_privs the process keeps no more than it had: the config's
        // permitted set.
        let want = if nnp {
            mask(&some)
        } else {
            mask(&bounding) | mask(&inheritable)
        };
        assert_eq!(caps["CapPrm"], want, "nnp {nnp}: {caps:x?}");
        assert_eq!(caps["CapEff"], want, "nnp {nnp}: {caps:x?}");
    }

    // The default config's short list, checked against the host's full set.
    let b = sh(CAP_SCRIPT);
    let default: Vec<String> =
        serde_json::from_value(b.config["process"]["capabilities"]["bounding"].clone())
            .expect("caps");
    let default: Vec<&str> = default.iter().map(String::as_str).collect();
    let caps = parse_caps(&run_ok(&rt, &b, &unique("defcaps")));
    assert_eq!(caps["CapBnd"], mask(&default), "{caps:x?}");
    let host = std::fs::read_to_string("/proc/self/status").expect("status");
    let host_bnd = u64::from_str_radix(status_field(&host, "CapBnd"), 16).expect("hex");
    assert_ne!(caps["CapBnd"], host_bnd, "the bounding set was not reduced");

    // A capability needed by the script is really gone: chown fails
    // without CAP_CHOWN and works with it.
    let script = "touch /dev/shm/f; chown 1234 /dev/shm/f 2>/dev/null; echo chown=$?";
    for (caps, want) in [
        (&["CAP_KILL"][..], "chown=1\n"),
        (&["CAP_CHOWN"][..], "chown=0\n"),
    ] {
        let mut b = sh(script);
        b.edit(|c| {
            set_caps(
                c,
                [
                    ("bounding", caps),
                    ("effective", caps),
                    ("permitted", caps),
                    ("inheritable", &[]),
                    ("ambient", &[]),
                ],
            )
        });
        assert_eq!(run_ok(&rt, &b, &unique("chown")), want, "caps {caps:?}");
    }
}

#[test]
fn unknown_capability_fails_create() {
    let rt = Runtime::new();
    for set in ["bounding", "effective", "ambient"] {
        let mut b = sh("true");
        b.edit(|c| c["process"]["capabilities"][set] = json!(["CAP_KILL", "CAP_NOT_A_REAL_ONE"]));
        let id = unique("badcap");
        let err = rt.fails(&["create", "--bundle", &b.path().to_string_lossy(), &id]);
        assert!(err.contains("NOT_A_REAL_ONE"), "{set}: {err}");
        assert!(!rt.has_state(&id), "{set}");
    }
}

#[test]
fn rlimits_are_applied() {
    let rt = Runtime::new();
    let mut b = sh("ulimit -n; ulimit -Hn; cat /proc/self/limits");
    b.edit(|c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            {"type": "RLIMIT_CPU", "soft": 300, "hard": 400},
            {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600},
        ]);
    });
    let out = run_ok(&rt, &b, &unique("rlimit"));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("100"), "{out}");
    assert_eq!(lines.next(), Some("200"), "{out}");
    let limit = |name: &str| -> (String, String) {
        let l = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {out}"));
        let f: Vec<&str> = l[name.len()..].split_whitespace().collect();
        (f[0].to_string(), f[1].to_string())
    };
    assert_eq!(limit("Max open files"), ("100".into(), "200".into()));
    assert_eq!(limit("Max cpu time"), ("300".into(), "400".into()));
    assert_eq!(limit("Max processes"), ("500".into(), "600".into()));
    // Without rlimits, the runtime's own limit is inherited.
    let mut b = sh("ulimit -n");
    b.edit(|c| c["process"]["rlimits"] = json!([]));
    let out = run_ok(&rt, &b, &unique("norlimit"));
    assert_ne!(out, "100\n");
}

#[test]
fn user_and_groups() {
    let rt = Runtime::new();
    let mut b = sh("cat /proc/self/status; id -u; id -g");
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [5, 2000, 3000]});
    });
    let out = run_ok(&rt, &b, &unique("user"));
    assert_eq!(
        status_field(&out, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4],
        "{out}"
    );
    assert_eq!(
        status_field(&out, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1001"; 4],
        "{out}"
    );
    let mut groups: Vec<&str> = status_field(&out, "Groups").split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["2000", "3000", "5"], "{out}");
    assert!(out.ends_with("1000\n1001\n"), "{out}");

    // Without additionalGids, the runtime's own groups do not leak in.
    let mut b = sh("cat /proc/self/status");
    b.edit(|c| c["process"]["user"] = json!({"uid": 0, "gid": 0}));
    let out = run_ok(&rt, &b, &unique("nogroups"));
    assert_eq!(status_field(&out, "Groups"), "", "{out}");
}

#[test]
fn umask() {
    let rt = Runtime::new();
    let script = "umask; touch /dev/shm/f; mkdir /dev/shm/d; stat -c %a /dev/shm/f /dev/shm/d";
    let mut b = sh(script);
    b.edit(|c| c["process"]["user"]["umask"] = json!(0o027));
    assert_eq!(run_ok(&rt, &b, &unique("umask")), "0027\n640\n750\n");
    let mut b = sh(script);
    b.edit(|c| {
        c["process"]["user"]
            .as_object_mut()
            .expect("user")
            .remove("umask");
    });
    assert_eq!(run_ok(&rt, &b, &unique("umask0")), "0022\n644\n755\n");
}

#[test]
fn cwd_is_created_and_entered() {
    let rt = Runtime::new();
    let mut b = sh("pwd; ls -ld . | cut -c1");
    b.edit(|c| c["process"]["cwd"] = json!("/work/deep/dir"));
    assert!(!b.rootfs().join("work").exists());
    assert_eq!(run_ok(&rt, &b, &unique("cwd")), "/work/deep/dir\nd\n");
    assert!(b.rootfs().join("work/deep/dir").is_dir());

    let mut b = sh("pwd");
    b.edit(|c| c["process"]["cwd"] = json!("/etc"));
    assert_eq!(run_ok(&rt, &b, &unique("cwd2")), "/etc\n");
}

#[test]
fn env_is_exactly_the_configured_one() {
    let rt = Runtime::new();
    let mut b = sh("echo \"[$FOO]\" \"[${EMPTY-unset}]\" \"[${HAKO_HOST_SECRET-unset}]\"; env | grep -c '^HAKO_'");
    b.edit(|c| {
        c["process"]["env"] = json!(["PATH=/bin", "FOO=bar baz", "EMPTY=", "HAKO_ONE=1"]);
    });
    let id = unique("env");
    let mut cmd = rt.cmd(&["run", "--bundle", &b.path().to_string_lossy(), &id]);
    cmd.env("HAKO_HOST_SECRET", "leaked");
    let out = output_via_files(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "[bar baz] [] [unset]\n1\n");
}

#[test]
fn no_new_privileges() {
    let rt = Runtime::new();
    for (nnp, want) in [(true, "1"), (false, "0")] {
        let mut b = sh("cat /proc/self/status");
        b.edit(|c| c["process"]["noNewPrivileges"] = json!(nnp));
        let out = run_ok(&rt, &b, &unique("nnp"));
        assert_eq!(
            status_field(&out, "NoNewPrivs"),
            want,
            "noNewPrivileges {nnp}"
        );
    }
}

#[test]
fn oom_score_adj() {
    let rt = Runtime::new();
    for adj in [500, 123] {
        let mut b = sh("cat /proc/self/oom_score_adj");
        b.edit(|c| c["process"]["oomScoreAdj"] = json!(adj));
        assert_eq!(run_ok(&rt, &b, &unique("oom")), format!("{adj}\n"));
    }
}

/// A running `sleep` container with a writable /tmp.
fn sleeper(rt: &Runtime) -> (Bundle, String, i32) {
    let mut b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| {
        c["process"]["env"] = json!(["PATH=/bin", "FROM_CONFIG=yes"]);
    });
    let id = unique("exec");
    let pid = run_detached(rt, &b, &id);
    (b, id, pid)
}

fn exec_out(rt: &Runtime, args: &[&str]) -> (i32, String, String) {
    let out = rt.run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exec_runs_in_the_container() {
    let rt = Runtime::new();
    let (_b, id, pid) = sleeper(&rt);
    let (code, out, err) = exec_out(
        &rt,
        &["exec", &id, "sh", "-c", "for n in pid net ipc uts mnt; do readlink /proc/self/ns/$n; done; cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    for (i, n) in ["pid", "net", "ipc", "uts", "mnt"].iter().enumerate() {
        assert_eq!(
            lines[i],
            common::ns_link(&pid.to_string(), n),
            "{n} namespace: {out}"
        );
    }
    assert_eq!(lines[5].trim(), "sleep 100", "{out}");
    for l in &lines[6..] {
        assert!(
            l.ends_with(&format!("/{id}")),
            "exec'd process outside the container's cgroup: {out}"
        );
    }
    // The exit status comes back.
    let (code, _, _) = exec_out(&rt, &["exec", &id, "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    // --env adds to (and overrides) the config's env; --cwd; the config's env stays.
    let (code, out, err) = exec_out(
        &rt,
        &[
            "exec",
            "--env",
            "FOO=bar",
            "--env",
            "FROM_CONFIG=overridden",
            "--cwd",
            "/etc",
            &id,
            "sh",
            "-c",
            "echo $FOO $FROM_CONFIG; pwd",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "bar overridden\n/etc\n"), "{err}");
    let (_, out, _) = exec_out(&rt, &["exec", &id, "sh", "-c", "echo $FROM_CONFIG"]);
    assert_eq!(out, "yes\n");
    // --user: ids switch and the process is unprivileged.
    let (code, out, err) = exec_out(
        &rt,
        &[
            "exec",
            "--user",
            "1000:1000",
            &id,
            "cat",
            "/proc/self/status",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        status_field(&out, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(
        status_field(&out, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000");
    // The container's init is untouched.
    assert_eq!(rt.status(&id), "running");
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_with_process_json() {
    let rt = Runtime::new();
    let (b, id, _pid) = sleeper(&rt);
    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1001, "umask": 0o077},
        "args": ["sh", "-c", "echo $X; pwd; id -u; id -g; umask; exit 3"],
        "env": ["PATH=/bin", "X=from-json"],
        "cwd": "/dev",
    });
    let path = b.path().join("process.json");
    std::fs::write(&path, process.to_string()).expect("write process.json");
    let (code, out, err) = exec_out(&rt, &["exec", "--process", &path.to_string_lossy(), &id]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(out, "from-json\n/dev\n1000\n1001\n0077\n");
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_into_stopped_or_missing_container_fails() {
    let rt = Runtime::new();
    let b = sh("true");
    let id = unique("stopped");
    rt.ok(&[
        "run",
        "--detach",
        "--bundle",
        &b.path().to_string_lossy(),
        &id,
    ]);
    rt.wait_status(&id, "stopped");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(err.contains("stopped"), "{err}");
    rt.ok(&["delete", &id]);
    let err = rt.fails(&["exec", "no-such-container", "true"]);
    assert!(err.contains("does not exist"), "{err}");
    let (_b, id, _) = sleeper(&rt);
    let err = rt.fails(&["exec", &id, "/no/such/program"]);
    assert!(err.contains("/no/such/program"), "{err}");
    assert_eq!(rt.status(&id), "running");
    rt.ok(&["delete", "--force", &id]);
}

/// Accepts one connection on `listener` and receives the fd sent on it
/// with SCM_RIGHTS, and the message text.
fn receive_fd(listener: &UnixListener) -> (String, OwnedFd) {
    let (stream, _) = listener.accept().expect("accept");
    let (text, fds) = hako_tests::recv_with_fds(stream.as_fd(), 4096);
    let name = String::from_utf8_lossy(&text).into_owned();
    let fd = fds.into_iter().next();
    (name, fd.expect("no fd received over the console socket"))
}

/// Reads a pty master until the slave side is gone (EIO) or 10 s pass.
fn read_all_master(master: &OwnedFd) -> String {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut file = std::fs::File::from(master.try_clone().expect("dup"));
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(200u16)).expect("poll");
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading pty master: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn terminal_through_console_socket() {
    let rt = Runtime::new();
    let mut b = sh("tty; [ -t 0 ] && [ -t 1 ] && echo stdio-is-tty; stat -c '%F %t:%T' /dev/console; echo done");
    b.edit(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    });
    let sock = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind console socket");
    let id = unique("tty");
    let receiver = std::thread::spawn(move || receive_fd(&listener));
    rt.ok(&[
        "create",
        "--console-socket",
        &sock.to_string_lossy(),
        "--bundle",
        &b.path().to_string_lossy(),
        &id,
    ]);
    let (name, master) = receiver.join().expect("receiver thread");
    // The master is a pty master whose slave is the name that came with it.
    let mut ptn: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int to the valid pointer.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut ptn) };
    assert_eq!(r, 0, "the received fd is not a pty master");
    assert_eq!(name, format!("/dev/pts/{ptn}"));
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize to the valid pointer.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    assert_eq!((ws.ws_row, ws.ws_col), (30, 100), "consoleSize");
    rt.ok(&["start", &id]);
    let out = read_all_master(&master);
    // UNIX98 pty slaves have major 136 (0x88).
    let want = format!("{name}\r\nstdio-is-tty\r\ncharacter special file 88:{ptn:x}\r\ndone\r\n");
    assert_eq!(out, want);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

#[test]
fn terminal_without_console_socket_is_an_error() {
    let rt = Runtime::new();
    let mut b = sh("true");
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let id = unique("notty");
    let err = rt.fails(&["create", "--bundle", &b.path().to_string_lossy(), &id]);
    assert!(err.contains("--console-socket"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!rt.has_state(&id));
    // A console socket nobody listens on is an error too, naming the path.
    let missing = b.path().join("nobody.sock");
    let err = rt.fails(&[
        "create",
        "--console-socket",
        &missing.to_string_lossy(),
        "--bundle",
        &b.path().to_string_lossy(),
        &id,
    ]);
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    assert!(!rt.has_state(&id));
}
