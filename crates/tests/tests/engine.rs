//! The engine end to end: `hako run/create/start/stop/kill/rm/ps/logs/
//! exec/wait` on a busybox image, with a monitor per container, real
//! namespaces, mounts and cgroups. Each test has its own store and run
//! dir, and checks that what it made is gone afterwards: no record,
//! directory, mount, monitor or cgroup.

mod images;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hako_tests::{json, TempDir};
use images::*;

/// A test's hako: on drop (a failed test too) its pods, containers and
/// networks go, so no bridge, veth or iptables rule outlives the test.
struct TestHako(Hako);

impl std::ops::Deref for TestHako {
    type Target = Hako;
    fn deref(&self) -> &Hako {
        &self.0
    }
}

impl Drop for TestHako {
    fn drop(&mut self) {
        let list = |args: &[&str]| -> Vec<String> {
            self.0
                .cmd(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        for p in list(&["pod", "ps", "-q"]) {
            let _ = self.0.cmd(&["pod", "rm", "-f", &p]).output();
        }
        for c in list(&["ps", "-aq"]) {
            let _ = self.0.cmd(&["rm", "-f", &c]).output();
        }
        for n in list(&["network", "ls", "-q"]) {
            let _ = self.0.cmd(&["network", "rm", "-f", &n]).output();
        }
    }
}

/// A store with the busybox image as `localhost/busybox:latest`.
fn hako_with_busybox() -> TestHako {
    let h = TestHako(Hako::new());
    let t = TempDir::new("img");
    let layout = t.path.join("busybox");
    make_layout(
        &layout,
        &test_rootfs(&t.path),
        json!({"Cmd": ["sh"], "Env": ["FROM_IMAGE=yes"]}),
        &["amd64"],
    );
    h.ok(&["pull", "-q", &format!("oci:{}:latest", layout.display())]);
    h
}

const IMG: &str = "localhost/busybox:latest";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hako(h: &Hako, args: &[&str]) -> Out {
    let o = h.cmd(args).stdin(Stdio::null()).output().expect("hako");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Nothing of any container is left: no record, directory, mount or
/// monitor process for this store, no cgroup named after `ids`.
fn assert_clean(h: &Hako, ids: &[String]) {
    let rules = std::process::Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for id in ids {
        assert!(!rules.contains(id.as_str()), "iptables rules left for {id}");
        assert!(
            !h.root.path.join("run/netns").join(id).exists(),
            "netns left for {id}"
        );
    }
    let o = hako(h, &["ps", "-aq"]);
    assert_eq!(o.stdout, "", "containers left: {}", o.stdout);
    for d in ["lib/containers", "run/containers"] {
        let left: Vec<_> = std::fs::read_dir(h.root.path.join(d))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = h.root.path.to_string_lossy().into_owned();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(leaked.is_empty(), "mounts left: {leaked:#?}");
    assert!(monitors(h).is_empty(), "monitors left: {:?}", monitors(h));
    for id in ids {
        for ctrl in ["memory", "pids", "cpu", "unified"] {
            let p = Path::new("/sys/fs/cgroup").join(ctrl).join("hako").join(id);
            assert!(!p.exists(), "cgroup left: {}", p.display());
        }
    }
}

/// hako-monitor processes of this store.
fn monitors(h: &Hako) -> Vec<i32> {
    let run = h.root.path.join("run").to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if comm.trim() == "hako-monitor" && String::from_utf8_lossy(&cmdline).contains(&run) {
            out.push(pid);
        }
    }
    out
}

fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn inspect(h: &Hako, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["inspect", name])).expect("inspect json");
    v[0].clone()
}

#[test]
fn run_gives_output_and_exit_status_and_cleans_up_with_rm() {
    let h = hako_with_busybox();
    let o = hako(
        &h,
        &[
            "run",
            "--rm",
            IMG,
            "sh",
            "-c",
            "echo out; echo err >&2; echo $FROM_IMAGE $HOSTNAME; exit 3",
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "out");
    assert!(lines[1].starts_with("yes "), "{}", o.stdout);
    assert_eq!(o.stderr, "err\n");
    assert_clean(&h, &[]);

    // The engine's own failures: 127 not found, 126 not executable, 125
    // for bad flags; none leaves anything.
    let o = hako(&h, &["run", "--rm", IMG, "/no/such/program"]);
    assert_eq!(o.code, 127, "{}", o.stderr);
    let o = hako(&h, &["run", "--rm", IMG, "/etc/passwd"]);
    assert_eq!(o.code, 126, "{}", o.stderr);
    let o = hako(&h, &["run", "--rm", IMG, "/etc"]);
    assert_eq!(o.code, 126, "{}", o.stderr);
    // Flags the parser refuses are engine errors too, as in docker.
    for bad in [
        vec!["run", "--rm", "--no-such-flag", IMG, "true"],
        vec!["run", "--rm", "--cpus", "many", IMG, "true"],
        vec!["no-such-command"],
    ] {
        let o = hako(&h, &bad);
        assert_eq!(o.code, 125, "{bad:?}: {}", o.stderr);
    }
    assert_eq!(hako(&h, &["run", "--help"]).code, 0);
    for bad in [
        vec!["run", "--rm", "--memory", "lots", IMG, "true"],
        vec!["run", "--rm", "-v", "rel:/x:bogus", IMG, "true"],
        vec!["run", "--rm", "--cap-add", "CAP_NOPE", IMG, "true"],
        vec!["run", "--rm", "--ulimit", "nofile=9:1", IMG, "true"],
        vec![
            "run",
            "--rm",
            "--security-opt",
            "seccomp=/nonexistent.json",
            IMG,
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--pull",
            "never",
            "localhost/absent:1",
            "true",
        ],
        vec!["run", "--rm", "--name", "bad/name", IMG, "true"],
        vec!["run", "--rm", "--hostname", "a\n6.6.6.6 evil", IMG, "true"],
        vec!["run", "--rm", "--hostname", "bad host", IMG, "true"],
        // The local image is amd64: not run as the arm64 one asked for.
        vec![
            "run",
            "--rm",
            "--pull",
            "never",
            "--platform",
            "linux/arm64",
            IMG,
            "true",
        ],
    ] {
        let o = hako(&h, &bad);
        assert_eq!(o.code, 125, "{bad:?}: {}", o.stderr);
        assert!(o.stderr.starts_with("hako: "), "{bad:?}: {}", o.stderr);
    }
    // A reader that goes away (`hako ps | head -0`) ends hako quietly by
    // SIGPIPE, as it ends C and Go tools; no panic.
    for args in [&["ps", "-a"][..], &["images"], &["inspect", IMG]] {
        let mut c = h
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(c.stdout.take());
        let o = c.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&o.status),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
    assert_clean(&h, &[]);
}

#[test]
fn detached_containers_logs_exec_stop_kill_and_rm() {
    let h = hako_with_busybox();
    let o = hako(
        &h,
        &[
            "run", "-d", "--name", "web", IMG, "sh", "-c",
            "echo hello; echo oops >&2; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = o.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(wait_for(5, || hako(&h, &["logs", "web"]).stdout == "hello\n"));
    let o = hako(&h, &["logs", "web"]);
    assert_eq!(o.stderr, "oops\n");
    let ps = hako(&h, &["ps"]).stdout;
    assert!(ps.contains("web") && ps.contains("Up "), "{ps}");
    // Columns never run together ("Less than a second ago" is long): each
    // cell starts under its title.
    let mut lines = ps.lines();
    let header = lines.next().expect("a header");
    let titles = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let starts: Vec<usize> = titles
        .iter()
        .map(|t| header.find(t).expect("a title"))
        .collect();
    let row: Vec<char> = lines.next().expect("a row").chars().collect();
    let cell = |i: usize| -> String {
        let end = starts
            .get(i + 1)
            .copied()
            .unwrap_or(row.len())
            .min(row.len());
        assert!(starts[i] == 0 || row[starts[i] - 1] == ' ', "{ps}");
        row[starts[i]..end]
            .iter()
            .collect::<String>()
            .trim()
            .to_string()
    };
    assert_eq!(cell(0), id[..12], "{ps}");
    assert!(cell(3).ends_with("ago"), "{ps}");
    assert!(cell(4).starts_with("Up "), "{ps}");
    assert_eq!(cell(6), "web", "{ps}");
    assert_eq!(inspect(&h, "web")["State"]["Status"], "running");
    // --format takes docker's Go templates.
    let doc = inspect(&h, "web");
    let pid = doc["State"]["Pid"].as_i64().expect("pid");
    assert_eq!(
        h.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.Name}} {{.State.Pid}}",
            "web"
        ]),
        format!("running web {pid}\n")
    );
    let ip = h.ok(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        "web",
    ]);
    assert!(ip.trim().parse::<std::net::Ipv4Addr>().is_ok(), "{ip:?}");
    assert_eq!(doc["NetworkSettings"]["IPAddress"], ip.trim());
    assert_eq!(
        h.ok(&["ps", "--format", "{{.Names}}\\t{{.State}}"]),
        "web\trunning\n"
    );
    assert_eq!(
        h.ok(&["ps", "--format", "table {{.Names}}\\t{{.Image}}"]),
        format!("NAMES   IMAGE\nweb     {IMG}\n")
    );
    let o = hako(&h, &["inspect", "-f", "{{.State.Pid", "web"]);
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(o.stderr.contains("template"), "{}", o.stderr);
    // By ID prefix too.
    assert_eq!(inspect(&h, &id[..8])["Name"], "web");

    // exec of what cannot run: 127 not found, 126 not runnable, as podman;
    // a process's own status passes through, 127 included.
    assert_eq!(hako(&h, &["exec", "web", "no-such-cmd"]).code, 127);
    assert_eq!(hako(&h, &["exec", "web", "/etc"]).code, 126);
    assert_eq!(hako(&h, &["exec", "web", "sh", "-c", "exit 127"]).code, 127);
    assert_eq!(hako(&h, &["exec", "web", "sh", "-c", "exit 1"]).code, 1);
    // exec: output, status, env, user and workdir.
    let o = hako(
        &h,
        &[
            "exec",
            "-e",
            "X=1",
            "-u",
            "app",
            "-w",
            "/srv",
            "web",
            "sh",
            "-c",
            "echo $X $(id -u) $(pwd); exit 4",
        ],
    );
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert_eq!(o.stdout, "1 1234 /srv\n");

    // top and stats see its processes and cgroup.
    let top = hako(&h, &["top", "web"]);
    assert!(
        top.stdout.contains("PID") && top.stdout.contains("sleep"),
        "{}{}",
        top.stdout,
        top.stderr
    );
    let stats = hako(&h, &["stats", "--no-stream", "web"]);
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let row = stats
        .stdout
        .lines()
        .find(|l| l.contains("web"))
        .unwrap_or_default()
        .to_string();
    assert!(
        row.contains("MiB") || row.contains("KiB"),
        "{}",
        stats.stdout
    );
    // A second name is refused while the first is in use.
    let o = hako(&h, &["run", "-d", "--name", "web", IMG, "true"]);
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("already in use"), "{}", o.stderr);

    // stop: the trap runs, the exit is 0.
    let o = hako(&h, &["stop", "-t", "5", "web"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(inspect(&h, "web")["State"]["ExitCode"], 0);
    assert!(hako(&h, &["logs", "web"]).stdout.ends_with("bye\n"));
    assert!(hako(&h, &["ps"]).stdout.lines().count() == 1);
    assert!(hako(&h, &["ps", "-a"]).stdout.contains("Exited (0)"));

    // start again, then kill: 137.
    assert_eq!(hako(&h, &["start", "web"]).code, 0);
    assert!(wait_for(5, || inspect(&h, "web")["State"]["Running"] == true));
    assert_eq!(hako(&h, &["kill", "web"]).code, 0);
    let o = hako(&h, &["wait", "web"]);
    assert_eq!(o.stdout, "137\n", "{}", o.stderr);
    // The log kept both runs.
    assert_eq!(
        hako(&h, &["logs", "web"]).stdout.matches("hello").count(),
        2
    );

    // rm of a running container needs -f.
    let o = hako(&h, &["run", "-d", IMG, "sleep", "100"]);
    let id2 = o.stdout.trim().to_string();
    let o = hako(&h, &["rm", &id2]);
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("running"), "{}", o.stderr);
    assert_eq!(hako(&h, &["rm", "-f", &id2, "web"]).code, 0);
    assert_clean(&h, &[id, id2]);
}

#[test]
fn signals_reach_the_container_and_stdin_is_forwarded() {
    let h = hako_with_busybox();
    let mut child = h
        .cmd(&[
            "run",
            "--rm",
            IMG,
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hako run");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).expect("ready");
    assert_eq!(&buf, b"ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("rest");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7));
    assert_eq!(rest, "got-term\n");

    // -i: stdin goes in and its end closes the container's.
    let mut child = h
        .cmd(&["run", "--rm", "-i", IMG, "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hako run -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"line one\nline two\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "line one\nline two\ndone\n"
    );
    assert_clean(&h, &[]);
}

#[test]
fn a_tty_session_through_a_pty_follows_resizes() {
    let h = hako_with_busybox();
    let (mut child, master, rx) = spawn_on_pty(h.cmd(&["run", "--rm", "-it", IMG, "sh"]));
    let mut seen = String::new();
    let mut m = &master;
    // 30 rows, 100 columns to start with (set before hako reads it).
    m.write_all(b"tty; stty size\n").expect("write");
    expect_output(&rx, "/dev/pts/", &mut seen);
    expect_output(&rx, "30 100", &mut seen);
    // A resize of our terminal reaches the container's.
    set_size(master.as_raw_fd(), 40, 120);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGWINCH) };
    std::thread::sleep(Duration::from_millis(200));
    m.write_all(b"stty size; exit 5\n").expect("write");
    expect_output(&rx, "40 120", &mut seen);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(5), "{seen}");
    assert_clean(&h, &[]);
}

fn set_size(fd: i32, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

#[test]
fn volumes_survive_their_containers() {
    let h = hako_with_busybox();
    let host = TempDir::new("bind");
    std::fs::write(host.path.join("from-host"), "h\n").expect("write");
    let bind = format!("{}:/host:ro", host.path.display());
    let o = hako(
        &h,
        &[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "-v",
            &bind,
            IMG,
            "sh",
            "-c",
            "cat /host/from-host; echo kept > /data/f; touch /host/x 2>/dev/null || echo ro",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "h\nro\n");
    let o = hako(
        &h,
        &["run", "--rm", "-v", "data:/data", IMG, "cat", "/data/f"],
    );
    assert_eq!(o.stdout, "kept\n", "{}", o.stderr);
    let ls = h.ok(&["volume", "ls", "-q"]);
    assert_eq!(ls, "data\n");
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["volume", "inspect", "data"])).expect("json");
    assert_eq!(v[0]["Name"], "data");
    // A volume in use cannot go.
    let o = hako(
        &h,
        &["create", "--name", "user", "-v", "data:/data", IMG, "true"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = hako(&h, &["volume", "rm", "data"]);
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("in use"), "{}", o.stderr);
    h.ok(&["rm", "user"]);
    h.ok(&["volume", "rm", "data"]);
    assert_eq!(h.ok(&["volume", "ls", "-q"]), "");
    // An anonymous volume goes with its container; an image's directory
    // is copied into a new volume.
    let o = hako(&h, &["run", "--rm", "-v", "/etc", IMG, "cat", "/etc/group"]);
    assert!(o.stdout.contains("staff:x:50"), "{}{}", o.stdout, o.stderr);
    assert_eq!(h.ok(&["volume", "ls", "-q"]), "");
    assert_clean(&h, &[]);
}

#[test]
fn concurrent_runs() {
    let h = hako_with_busybox();
    let children: Vec<_> = (0..8)
        .map(|i| {
            h.cmd(&[
                "run",
                "--rm",
                IMG,
                "sh",
                "-c",
                &format!("echo n{i}; exit {i}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().expect("wait");
        assert_eq!(
            o.status.code(),
            Some(i as i32),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("n{i}\n"));
    }
    assert_clean(&h, &[]);
}

#[test]
fn a_killed_hako_leaves_state_that_ps_shows_and_prune_cleans() {
    let h = hako_with_busybox();
    let mut ids = Vec::new();
    // Killed at different moments of `run`: before, during and after the
    // container's create and start.
    for delay_ms in [0u64, 5, 15, 30, 60, 120, 250, 500] {
        let mut c = h
            .cmd(&["run", IMG, "sleep", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = c.kill();
        let _ = c.wait();
    }
    // And once the container surely runs (it has printed).
    let mut c = h
        .cmd(&["run", IMG, "sh", "-c", "echo up; sleep 100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut up = [0u8; 3];
    if let Err(e) = c.stdout.take().expect("stdout").read_exact(&mut up) {
        let mut err = String::new();
        let _ = c.stderr.take().expect("stderr").read_to_string(&mut err);
        panic!("run after the kills: {e}: {err}");
    }
    let _ = c.kill();
    let _ = c.wait();
    // Whatever got made is listed, each with a status it really has.
    let list: serde_json::Value =
        serde_json::from_str(&h.ok(&["ps", "-a", "--format", "json"])).expect("json");
    for c in list.as_array().expect("array") {
        ids.push(c["Id"].as_str().expect("id").to_string());
        let state = c["State"].as_str().expect("state");
        if state == "running" {
            let pid = c["Pid"].as_i64().expect("pid");
            assert!(
                pid > 0 && Path::new(&format!("/proc/{pid}")).exists(),
                "{c}"
            );
        }
    }
    // The monitors outlived their hako: the running ones still run.
    let running = hako(&h, &["ps", "-q"]).stdout.lines().count();
    assert!(running >= 1, "{list}");
    for id in hako(&h, &["ps", "-q"]).stdout.lines() {
        assert_eq!(hako(&h, &["stop", "-t", "0", id]).code, 0);
    }
    let o = hako(&h, &["system", "prune", "-f"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_clean(&h, &ids);
}

/// The host's own address (not loopback), for published-port checks.
fn host_ip() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.contains(" hako") && !l.contains("cni") && !l.contains("docker"))
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "inet")?;
            Some(w.get(i + 1)?.split('/').next()?.to_string())
        })
        .expect("a global IPv4 address")
}

fn curl(url: &str) -> String {
    let o = std::process::Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn published_ports_are_answered_over_curl() {
    let h = hako_with_busybox();
    let web = "echo served-by-$HOSTNAME > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    let o = hako(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "80",
            "-p",
            "127.0.0.1::80",
            IMG,
            "sh",
            "-c",
            web,
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = o.stdout.trim().to_string();
    let ports = h.ok(&["port", "web"]);
    let host_ports: Vec<String> = ports
        .lines()
        .map(|l| l.rsplit(':').next().expect("port").to_string())
        .collect();
    assert_eq!(host_ports.len(), 2, "{ports}");
    assert!(ports.contains("127.0.0.1:"), "{ports}");
    let want = format!("served-by-{}\n", &id[..12]);
    assert!(
        wait_for(10, || curl(&format!(
            "http://127.0.0.1:{}/index.html",
            host_ports[0]
        )) == want),
        "127.0.0.1:{} did not answer",
        host_ports[0]
    );
    assert_eq!(
        curl(&format!(
            "http://{}:{}/index.html",
            host_ip(),
            host_ports[0]
        )),
        want
    );
    assert_eq!(
        curl(&format!("http://127.0.0.1:{}/index.html", host_ports[1])),
        want
    );
    // The container has its address in /etc/hosts and a default route.
    let o = hako(
        &h,
        &[
            "exec",
            "web",
            "sh",
            "-c",
            "grep $HOSTNAME /etc/hosts; ip route | grep default",
        ],
    );
    assert!(
        o.stdout.contains("10.") && o.stdout.contains("default via"),
        "{}",
        o.stdout
    );
    // Two containers on one network reach each other by address.
    let ip = o.stdout.split_whitespace().next().expect("ip").to_string();
    let o = hako(
        &h,
        &[
            "run",
            "--rm",
            IMG,
            "wget",
            "-qO-",
            &format!("http://{ip}/index.html"),
        ],
    );
    assert_eq!(o.stdout, want, "{}", o.stderr);
    // A port already published is refused, and leaves nothing.
    let o = hako(
        &h,
        &[
            "run",
            "-d",
            "-p",
            &format!("{}:80", host_ports[0]),
            IMG,
            "true",
        ],
    );
    assert_eq!(o.code, 125, "{}", o.stdout);
    // So is one another store on this host published (its DNAT rules
    // are the same host's).
    let other = hako_with_busybox();
    let o = hako(
        &other,
        &[
            "run",
            "--rm",
            "-p",
            &format!("{}:80", host_ports[0]),
            IMG,
            "true",
        ],
    );
    assert_eq!(o.code, 125, "{}", o.stdout);
    assert!(o.stderr.contains("already published"), "{}", o.stderr);
    // Stopped, the port no longer answers; removed, nothing is left.
    h.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(
        curl(&format!("http://127.0.0.1:{}/index.html", host_ports[0])),
        ""
    );
    // Its host port kept across a restart: a host process that took it
    // meanwhile makes the start fail, naming it, until it lets go.
    let port: u16 = host_ports[0].parse().expect("port");
    let squatter = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind the freed port");
    let o = hako(&h, &["start", "web"]);
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("0.0.0.0:{port}/tcp is already in use")),
        "{}",
        o.stderr
    );
    drop(squatter);
    h.ok(&["start", "web"]);
    assert!(
        wait_for(10, || curl(&format!("http://127.0.0.1:{port}/index.html"))
            == want),
        "no answer after the restart"
    );
    h.ok(&["stop", "-t", "1", "web"]);
    h.ok(&["rm", "web"]);
    assert_clean(&h, &[id]);
}

#[test]
fn two_containers_of_a_pod_talk_over_localhost() {
    let h = hako_with_busybox();
    let pod = h
        .ok(&["pod", "create", "--name", "pod1", "-p", "8080"])
        .trim()
        .to_string();
    assert_eq!(pod.len(), 64);
    let web = "echo from-a > /tmp/index.html; exec httpd -f -p 127.0.0.1:8081 -h /tmp";
    let o = hako(
        &h,
        &[
            "run", "-d", "--pod", "pod1", "--name", "a", IMG, "sh", "-c", web,
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let a = o.stdout.trim().to_string();
    // b reaches a on 127.0.0.1: one network namespace; one hostname.
    let mut got = String::new();
    assert!(
        wait_for(10, || {
            let o = hako(
                &h,
                &[
                    "run",
                    "--rm",
                    "--pod",
                    "pod1",
                    IMG,
                    "sh",
                    "-c",
                    "wget -qO- http://127.0.0.1:8081/index.html; hostname",
                ],
            );
            got = o.stdout + &o.stderr;
            got == "from-a\npod1\n"
        }),
        "{got}"
    );
    // The pod's published port reaches a server of a member.
    let o = hako(
        &h,
        &[
            "run",
            "-d",
            "--pod",
            "pod1",
            "--name",
            "b",
            IMG,
            "sh",
            "-c",
            "echo from-b > /tmp/index.html; exec httpd -f -p 8080 -h /tmp",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let b = o.stdout.trim().to_string();
    let port = h.ok(&["port", "b"]);
    let hp = port.trim().rsplit(':').next().expect("port").to_string();
    assert!(
        wait_for(10, || curl(&format!("http://127.0.0.1:{hp}/index.html"))
            == "from-b\n"),
        "{port}"
    );
    // Shared IPC too: a's /dev/shm... (not tmpfs-shared), so check the ns.
    let ns = |c: &str| hako(&h, &["exec", c, "readlink", "/proc/self/ns/ipc"]).stdout;
    assert_eq!(ns("a"), ns("b"));
    let list: serde_json::Value =
        serde_json::from_str(&h.ok(&["pod", "ps", "--format", "json"])).expect("json");
    assert_eq!(list[0]["Name"], "pod1");
    assert_eq!(list[0]["State"], "Running");
    assert_eq!(list[0]["Members"], 2);
    // Members cannot be given their own network or ports.
    let o = hako(
        &h,
        &["run", "--rm", "--pod", "pod1", "-p", "9999", IMG, "true"],
    );
    assert_eq!(o.code, 125);
    // rm without -f refuses running members; stop then rm works.
    let o = hako(&h, &["pod", "rm", "pod1"]);
    assert_eq!(o.code, 125, "{}", o.stdout);
    h.ok(&["pod", "stop", "-t", "1", "pod1"]);
    let list: serde_json::Value =
        serde_json::from_str(&h.ok(&["pod", "ps", "--format", "json"])).expect("json");
    assert_eq!(list[0]["State"], "Exited");
    h.ok(&["pod", "start", "pod1"]);
    assert!(wait_for(10, || curl(&format!(
        "http://127.0.0.1:{hp}/index.html"
    )) == "from-b\n"));
    h.ok(&["pod", "rm", "-f", "pod1"]);
    assert_eq!(h.ok(&["pod", "ps", "-q"]), "");
    // A pod that never ran goes with `system prune`, its infra too.
    let pod2 = h
        .ok(&["pod", "create", "--name", "pod2", "--network", "none"])
        .trim()
        .to_string();
    h.ok(&["system", "prune"]);
    assert_eq!(h.ok(&["pod", "ps", "-q"]), "");
    let infra = list[0]["InfraContainerID"]
        .as_str()
        .expect("infra")
        .to_string();
    assert_clean(&h, &[a, b, infra, pod, pod2]);
}

#[test]
fn init_reaps_zombies_and_forwards_stop_signals() {
    let h = hako_with_busybox();
    let o = hako(&h, &["run", "--rm", "--init", "--network", "none", IMG, "sh", "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; (sleep 0.2 &); sleep 0.6; ps -o stat | grep -c '^Z' || true"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines[0].starts_with("/run/hako-init -- sh"), "{}", o.stdout);
    assert_eq!(lines[1], "0", "zombies left: {}", o.stdout);
    // sleep as process 1 ignores SIGTERM; under hako-init it gets it.
    let id = h
        .ok(&[
            "run",
            "-d",
            "--init",
            "--network",
            "none",
            IMG,
            "sleep",
            "100",
        ])
        .trim()
        .to_string();
    let t = Instant::now();
    h.ok(&["stop", "-t", "20", &id]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(inspect(&h, &id)["State"]["ExitCode"], 143);
    h.ok(&["rm", &id]);
    assert_clean(&h, &[id]);
}

#[test]
fn cp_copies_both_ways_and_stays_inside_the_container() {
    let h = hako_with_busybox();
    let id = h
        .ok(&["run", "-d", "--network", "none", "-v", "cpvol:/vol", IMG, "sh", "-c",
              "echo in-vol > /vol/v; mkdir -p /d/sub; echo deep > /d/sub/f; ln -s / /escape; sleep 100"])
        .trim()
        .to_string();
    assert!(wait_for(5, || hako(
        &h,
        &["exec", &id, "test", "-L", "/escape"]
    )
    .code
        == 0));
    let out = TempDir::new("cp");
    // Out: a directory (a volume's: the container's view), a file renamed.
    h.ok(&["cp", &format!("{id}:/d"), &out.path.to_string_lossy()]);
    assert_eq!(
        std::fs::read_to_string(out.path.join("d/sub/f")).expect("f"),
        "deep\n"
    );
    h.ok(&[
        "cp",
        &format!("{id}:/vol/v"),
        &out.path.join("renamed").to_string_lossy(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.path.join("renamed")).expect("v"),
        "in-vol\n"
    );
    // In: into a directory, and through the container's symlink to "/",
    // which is the container's root, never the host's.
    let host_file = out.path.join("hostfile");
    std::fs::write(&host_file, "from-host\n").expect("write");
    h.ok(&["cp", &host_file.to_string_lossy(), &format!("{id}:/tmp/")]);
    assert_eq!(
        hako(&h, &["exec", &id, "cat", "/tmp/hostfile"]).stdout,
        "from-host\n"
    );
    let marker = format!("hako-cp-escape-{}", std::process::id());
    h.ok(&[
        "cp",
        &host_file.to_string_lossy(),
        &format!("{id}:/escape/tmp/{marker}"),
    ]);
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "cp wrote through to the host"
    );
    assert_eq!(
        hako(&h, &["exec", &id, "cat", &format!("/tmp/{marker}")]).stdout,
        "from-host\n"
    );
    // A directory in under a new name; a destination whose parent is
    // missing is an error that names it.
    let host_dir = out.path.join("hostdir");
    std::fs::create_dir_all(host_dir.join("in")).expect("mkdir");
    std::fs::write(host_dir.join("in/f"), "nested\n").expect("write");
    h.ok(&["cp", &host_dir.to_string_lossy(), &format!("{id}:/newdir")]);
    assert_eq!(
        hako(&h, &["exec", &id, "cat", "/newdir/in/f"]).stdout,
        "nested\n"
    );
    let o = hako(
        &h,
        &[
            "cp",
            &host_file.to_string_lossy(),
            &format!("{id}:/no/such/x"),
        ],
    );
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(o.stderr.contains("/no/such"), "{}", o.stderr);
    // Stopped: the same, in its rootfs.
    h.ok(&["stop", "-t", "0", &id]);
    h.ok(&[
        "cp",
        &host_file.to_string_lossy(),
        &format!("{id}:/escape/etc/{marker}"),
    ]);
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "cp wrote through to the host"
    );
    h.ok(&[
        "cp",
        &format!("{id}:/escape/etc/{marker}"),
        &out.path.join("back").to_string_lossy(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.path.join("back")).expect("back"),
        "from-host\n"
    );
    let o = hako(
        &h,
        &["cp", &format!("{id}:/no/such"), &out.path.to_string_lossy()],
    );
    assert_eq!(o.code, 125);
    h.ok(&["rm", &id]);
    h.ok(&["volume", "rm", "cpvol"]);
    assert_clean(&h, &[id]);
}

/// The cgroup v1 directory (or the cgroup2 one) of `pid` for `controller`.
fn cgroup_dir(pid: i64, controller: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of pid");
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        if ctrls.split(',').any(|c| c == controller) {
            return Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(&path[1..]);
        }
    }
    // cgroup2 ("0::/path"), mounted at /sys/fs/cgroup or .../unified.
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line");
    let unified = Path::new("/sys/fs/cgroup/unified");
    let base = if unified.join("cgroup.controllers").exists() {
        unified
    } else {
        Path::new("/sys/fs/cgroup")
    };
    base.join(&path[1..])
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// --memory, --cpus, --pids-limit, --sysctl and --device end up where
/// the kernel enforces them, and --memory is enforced: a container that
/// needs more is OOM-killed (exit 137).
#[test]
fn resource_sysctl_and_device_flags_reach_the_kernel() {
    let h = hako_with_busybox();
    let o = hako(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "lim",
            "--network",
            "none",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--device",
            "/dev/null:/dev/xnull",
            IMG,
            "sleep",
            "100",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = o.stdout.trim().to_string();
    let pid = inspect(&h, "lim")["State"]["Pid"].as_i64().expect("pid");
    assert!(pid > 0);
    let mem = cgroup_dir(pid, "memory");
    let limit = if mem.join("memory.max").exists() {
        read_trim(&mem.join("memory.max"))
    } else {
        read_trim(&mem.join("memory.limit_in_bytes"))
    };
    assert_eq!(limit, (64u64 << 20).to_string());
    let cpu = cgroup_dir(pid, "cpu");
    if cpu.join("cpu.max").exists() {
        assert_eq!(read_trim(&cpu.join("cpu.max")), "50000 100000");
    } else {
        assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "100000");
    }
    assert_eq!(read_trim(&cgroup_dir(pid, "pids").join("pids.max")), "50");
    let o = hako(&h, &["exec", "lim", "cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(o.stdout, "1\n", "{}", o.stderr);
    // The device node, and the device cgroup lets it be opened.
    let o = hako(
        &h,
        &[
            "exec",
            "lim",
            "sh",
            "-c",
            "stat -c '%F %t:%T' /dev/xnull && echo x > /dev/xnull && echo written",
        ],
    );
    assert_eq!(
        o.stdout, "character special file 1:3\nwritten\n",
        "{}",
        o.stderr
    );
    h.ok(&["rm", "-f", "lim"]);
    // 64 MiB of shell variable in a 32 MiB container.
    let o = hako(
        &h,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--memory",
            "32m",
            IMG,
            "sh",
            "-c",
            "a=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived ${#a}",
        ],
    );
    assert_eq!(o.code, 137, "stdout {} stderr {}", o.stdout, o.stderr);
    assert!(!o.stdout.contains("survived"), "{}", o.stdout);
    assert_clean(&h, &[id]);
}

/// A pod sharing its pid namespace: a member sees the others' processes
/// (and the infra's init as pid 1); without it, each has its own.
#[test]
fn a_pod_can_share_its_pid_namespace() {
    let h = hako_with_busybox();
    let pod = h
        .ok(&[
            "pod",
            "create",
            "--name",
            "pp",
            "--network",
            "none",
            "--share",
            "pid,ipc,uts",
        ])
        .trim()
        .to_string();
    let o = hako(
        &h,
        &[
            "run", "-d", "--pod", "pp", "--name", "s", IMG, "sleep", "123",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let s = o.stdout.trim().to_string();
    let o = hako(
        &h,
        &["run", "--rm", "--pod", "pp", IMG, "ps", "-o", "pid,args"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("sleep 123"), "{}", o.stdout);
    let first = o.stdout.lines().nth(1).unwrap_or("").trim().to_string();
    assert!(
        first.starts_with("1 "),
        "pid 1 is not the infra's: {}",
        o.stdout
    );
    // A pod's own hostname is its members' (the kernel's and /etc/hostname);
    // one that is not a hostname is refused and leaves no pod.
    h.ok(&[
        "pod",
        "create",
        "--name",
        "hn_pod",
        "--hostname",
        "pod-host",
        "--network",
        "none",
    ]);
    let o = hako(
        &h,
        &[
            "run",
            "--rm",
            "--pod",
            "hn_pod",
            IMG,
            "sh",
            "-c",
            "hostname; cat /etc/hostname; grep -c pod-host /etc/hosts",
        ],
    );
    assert_eq!(o.stdout, "pod-host\npod-host\n1\n", "{}", o.stderr);
    h.ok(&["pod", "rm", "-f", "hn_pod"]);
    let o = hako(
        &h,
        &[
            "pod",
            "create",
            "--name",
            "bad",
            "--hostname",
            "a\n6.6.6.6 evil",
        ],
    );
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(o.stderr.contains("--hostname"), "{}", o.stderr);
    assert_eq!(hako(&h, &["pod", "ps", "-q"]).stdout.lines().count(), 1);
    // A pod without pid sharing: the member sees only itself.
    h.ok(&["pod", "create", "--name", "np", "--network", "none"]);
    h.ok(&[
        "run", "-d", "--pod", "np", "--name", "t", IMG, "sleep", "124",
    ]);
    let o = hako(&h, &["run", "--rm", "--pod", "np", IMG, "ps", "-o", "args"]);
    assert!(!o.stdout.contains("sleep 124"), "{}", o.stdout);
    let list: serde_json::Value =
        serde_json::from_str(&h.ok(&["pod", "ps", "--format", "json"])).expect("json");
    let infras: Vec<String> = list
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p["InfraContainerID"].as_str().expect("infra").to_string())
        .collect();
    let t = inspect(&h, "t")["Id"].as_str().expect("id").to_string();
    h.ok(&["pod", "rm", "-f", "pp"]);
    h.ok(&["pod", "rm", "-f", "np"]);
    let mut ids = vec![s, t, pod];
    ids.extend(infras);
    assert_clean(&h, &ids);
}

/// `cmd` on a new pty as its controlling terminal: the child, the master
/// and a channel of what the master reads.
fn spawn_on_pty(
    mut cmd: std::process::Command,
) -> (
    std::process::Child,
    std::fs::File,
    std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    set_size(pty.master.as_raw_fd(), 30, 100);
    let slave = pty.slave;
    cmd.stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave.try_clone().expect("dup"));
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn on a pty");
    drop(slave);
    let master = std::fs::File::from(pty.master);
    let reader = master.try_clone().expect("dup");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut r = reader;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (child, master, rx)
}

fn expect_output(rx: &std::sync::mpsc::Receiver<Vec<u8>>, what: &str, seen: &mut String) {
    let end = Instant::now() + Duration::from_secs(10);
    while !seen.contains(what) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => panic!("no {what:?} in {seen:?}"),
        }
    }
}

fn wait_child(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// ctrl-p ctrl-q (and --detach-keys) end a terminal session and leave the
/// container running; `attach` reaches it again; a --rm container detached
/// from is still removed when it exits.
#[test]
fn detach_keys_leave_the_container_running() {
    let h = hako_with_busybox();
    let (mut child, master, rx) =
        spawn_on_pty(h.cmd(&["run", "--rm", "-it", "--name", "dk", IMG, "sh"]));
    let mut seen = String::new();
    let mut m = &master;
    m.write_all(b"echo one-$((20+3))\n").expect("write");
    expect_output(&rx, "one-23", &mut seen);
    // A ctrl-p that is not followed by ctrl-q still reaches the shell.
    m.write_all(b"\x10echo two-$((30+4))\n").expect("write");
    expect_output(&rx, "two-34", &mut seen);
    m.write_all(b"\x10\x11").expect("write");
    let status = wait_child(&mut child, 10).expect("hako run did not detach");
    assert_eq!(status.code(), Some(0), "{seen}");
    drop(master);
    let id = inspect(&h, "dk")["Id"].as_str().expect("id").to_string();
    assert_eq!(inspect(&h, "dk")["State"]["Status"], "running");
    // attach with keys of our own.
    let (mut child, master, rx) =
        spawn_on_pty(h.cmd(&["attach", "--detach-keys", "ctrl-a,d", "dk"]));
    let mut seen = String::new();
    let mut m = &master;
    m.write_all(b"echo three-$((40+5))\n").expect("write");
    expect_output(&rx, "three-45", &mut seen);
    m.write_all(b"\x01d").expect("write");
    let status = wait_child(&mut child, 10).expect("attach did not detach");
    assert_eq!(status.code(), Some(0), "{seen}");
    drop(master);
    assert_eq!(inspect(&h, "dk")["State"]["Status"], "running");
    // Bad keys are refused before anything runs.
    let o = hako(
        &h,
        &[
            "run",
            "--rm",
            "-it",
            "--detach-keys",
            "ctrl-12",
            IMG,
            "true",
        ],
    );
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(o.stderr.contains("detach-keys"), "{}", o.stderr);
    // It exits: --rm still removes it (the monitor's exit command).
    h.ok(&["kill", "dk"]);
    assert!(
        wait_for(10, || hako(&h, &["ps", "-aq"]).stdout.is_empty()),
        "the detached --rm container was not removed"
    );
    assert_clean(&h, &[id]);
}

/// Attach clients that vanish while the container floods output (their
/// sockets fail mid-write, in the same poll round as their hang-up) leave
/// the monitor running, and a later attach still sees the output.
#[test]
fn attach_clients_vanishing_mid_output_leave_the_monitor_running() {
    let h = hako_with_busybox();
    let script = "while :; do echo flood-line; done";
    h.ok(&["run", "-d", "--name", "fl", IMG, "sh", "-c", script]);
    let id = inspect(&h, "fl")["Id"].as_str().expect("id").to_string();
    for round in 0..30 {
        let mut c = h
            .cmd(&["attach", "--no-stdin", "fl"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn attach");
        let mut got = [0u8; 64];
        let read = c.stdout.take().expect("stdout").read_exact(&mut got);
        let _ = c.kill();
        let _ = c.wait();
        assert!(read.is_ok(), "round {round}: attach saw no output");
        assert_eq!(
            inspect(&h, "fl")["State"]["Status"],
            "running",
            "round {round}: the monitor died with its attach client"
        );
    }
    h.ok(&["rm", "-f", "fl"]);
    assert_clean(&h, &[id]);
}

/// `--runtime` runc and crun (Debian's) run hako's containers as its own
/// runtime does: output and exit status, exec, stop and removal. crun is
/// skipped where it refuses this machine's hybrid cgroups.
#[test]
fn runc_and_crun_run_the_same_containers() {
    let h = hako_with_busybox();
    for rt in ["/usr/sbin/runc", "/usr/bin/crun"] {
        let o = hako(
            &h,
            &[
                "run",
                "--rm",
                "--runtime",
                rt,
                "--network",
                "none",
                IMG,
                "sh",
                "-c",
                "echo via-$0; exit 6",
            ],
        );
        if rt.ends_with("crun") && o.stderr.contains("hybrid") {
            eprintln!(
                "crun refuses this machine's hybrid cgroups: skipped ({})",
                o.stderr.trim()
            );
            continue;
        }
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (6, "via-sh\n"),
            "{rt}: {}",
            o.stderr
        );
        let id = h.ok(&[
            "run",
            "-d",
            "--runtime",
            rt,
            "--network",
            "none",
            IMG,
            "sleep",
            "100",
        ]);
        let id = id.trim().to_string();
        assert_eq!(h.ok(&["exec", &id, "echo", "in-exec"]), "in-exec\n", "{rt}");
        assert_eq!(
            hako(&h, &["exec", &id, "sh", "-c", "exit 4"]).code,
            4,
            "{rt}"
        );
        h.ok(&["stop", "-t", "1", &id]);
        assert_eq!(inspect(&h, &id)["State"]["Status"], "exited", "{rt}");
        h.ok(&["rm", &id]);
        assert_clean(&h, &[id]);
    }
}

fn ns_of(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.to_string_lossy().into_owned())
        .expect("ns link")
}

/// The host's namespaces (--pid/--ipc/--uts host), /dev/shm's size,
/// groups, cpusets, CPU shares, memory reservation and swap, DNS search
/// and options, --mount, --cidfile and -P reach the kernel and the
/// container's files; bad values are refused and leave nothing.
#[test]
fn host_namespaces_mounts_groups_and_cpusets_reach_the_container() {
    let h = hako_with_busybox();
    let run = |args: &[&str]| -> Out {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend_from_slice(args);
        hako(&h, &all)
    };
    let o = run(&[
        "--pid",
        "host",
        "--ipc",
        "host",
        "--uts",
        "host",
        IMG,
        "sh",
        "-c",
        "for n in pid ipc uts; do readlink /proc/self/ns/$n; done; hostname; cat /etc/hostname",
    ]);
    let host_name = nix::unistd::gethostname()
        .expect("hostname")
        .to_string_lossy()
        .into_owned();
    let me = std::process::id().to_string();
    assert_eq!(
        o.stdout,
        format!(
            "{}\n{}\n{}\n{host_name}\n{host_name}\n",
            ns_of(&me, "pid"),
            ns_of(&me, "ipc"),
            ns_of(&me, "uts")
        ),
        "{}",
        o.stderr
    );
    // Without them: namespaces of its own.
    let o = run(&[IMG, "readlink", "/proc/self/ns/pid"]);
    assert_ne!(o.stdout.trim(), ns_of(&me, "pid"), "{}", o.stderr);
    let o = run(&[
        "--shm-size",
        "1m",
        "--group-add",
        "1234",
        "--group-add",
        "5",
        IMG,
        "sh",
        "-c",
        "grep ' /dev/shm ' /proc/self/mountinfo; grep Groups /proc/self/status",
    ]);
    assert!(o.stdout.contains("size=1024k"), "{}{}", o.stdout, o.stderr);
    let groups: Vec<&str> = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(
        groups.contains(&"5") && groups.contains(&"1234"),
        "{}",
        o.stdout
    );
    let o = run(&[
        "--dns-search",
        "example.org",
        "--dns-option",
        "ndots:2",
        IMG,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(o.stdout.starts_with("search example.org\n"), "{}", o.stdout);
    assert!(o.stdout.contains("options ndots:2\n"), "{}", o.stdout);
    // --mount: a bind (read-only), a named volume and a tmpfs.
    let o = run(&[
        "--mount", "type=bind,source=/etc,target=/h,readonly",
        "--mount", "type=volume,source=mvol,target=/v",
        "--mount", "type=tmpfs,target=/t,tmpfs-size=1m",
        IMG, "sh", "-c",
        "test -f /h/hostname && ! touch /h/x 2>/dev/null && echo hi > /v/f && grep ' /t ' /proc/self/mountinfo",
    ]);
    assert!(o.stdout.contains("size=1024k"), "{}{}", o.stdout, o.stderr);
    assert_eq!(h.ok(&["volume", "ls", "-q"]), "mvol\n");
    let pruned = h.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(pruned.contains("Deleted volumes: 1\nmvol\n"), "{pruned}");
    assert_eq!(h.ok(&["volume", "ls", "-q"]), "");
    // Cgroup settings, and --cidfile.
    let cid = TempDir::new("cid");
    let cidfile = cid.path.join("cid");
    let id = h
        .ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--cidfile",
            &cidfile.to_string_lossy(),
            "--cpuset-cpus",
            "0",
            "--cpu-shares",
            "512",
            "--memory",
            "64m",
            "--memory-reservation",
            "32m",
            IMG,
            "sleep",
            "100",
        ])
        .trim()
        .to_string();
    assert_eq!(std::fs::read_to_string(&cidfile).expect("cidfile"), id);
    let pid = inspect(&h, &id)["State"]["Pid"].as_i64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(status.contains("Cpus_allowed_list:\t0\n"), "{status}");
    let cpu = cgroup_dir(pid, "cpu");
    if cpu.join("cpu.weight").exists() {
        // cgroup2: shares 512 are weight 20 (runc's conversion).
        assert_ne!(read_trim(&cpu.join("cpu.weight")), "100");
    } else {
        assert_eq!(read_trim(&cpu.join("cpu.shares")), "512");
    }
    let mem = cgroup_dir(pid, "memory");
    let soft = if mem.join("memory.low").exists() {
        read_trim(&mem.join("memory.low"))
    } else {
        read_trim(&mem.join("memory.soft_limit_in_bytes"))
    };
    assert_eq!(soft, (32u64 << 20).to_string());
    // The cidfile exists now: another container may not take it.
    let o = hako(
        &h,
        &[
            "run",
            "-d",
            "--cidfile",
            &cidfile.to_string_lossy(),
            IMG,
            "true",
        ],
    );
    assert_eq!(o.code, 125, "{}", o.stderr);
    h.ok(&["rm", "-f", &id]);
    // -P publishes what --expose (or the image) exposes, on free ports.
    let web = "echo p-all > /tmp/index.html; exec httpd -f -p 8080 -h /tmp";
    let id = h
        .ok(&["run", "-d", "-P", "--expose", "8080", IMG, "sh", "-c", web])
        .trim()
        .to_string();
    let port = h.ok(&["port", &id]);
    let host_port = port.trim().rsplit(':').next().expect("port").to_string();
    assert!(port.starts_with("8080/tcp -> 0.0.0.0:"), "{port}");
    assert!(
        wait_for(10, || curl(&format!(
            "http://127.0.0.1:{host_port}/index.html"
        )) == "p-all\n"),
        "-P port {host_port} did not answer"
    );
    h.ok(&["rm", "-f", &id]);
    // Refused before anything is made.
    for bad in [
        vec!["--pid", "container:x", IMG, "true"],
        vec!["--uts", "host", "--hostname", "x", IMG, "true"],
        vec!["--shm-size", "lots", IMG, "true"],
        vec!["--cpuset-cpus", "1-0", IMG, "true"],
        vec!["--cpu-shares", "1", IMG, "true"],
        vec!["--memory-swap", "1g", IMG, "true"],
        vec!["--memory", "64m", "--memory-swap", "32m", IMG, "true"],
        vec!["--dns-search", "a\nnameserver 6.6.6.6", IMG, "true"],
        vec!["--group-add", "nosuchgroup", IMG, "true"],
        vec![
            "--mount",
            "type=bind,source=/no/such/dir,target=/x",
            IMG,
            "true",
        ],
        vec!["--mount", "type=nfs,target=/x", IMG, "true"],
        vec!["--mount", "source=/etc", IMG, "true"],
        vec!["-P", "--expose", "70000", IMG, "true"],
    ] {
        let o = run(&bad);
        assert_eq!(o.code, 125, "{bad:?}: {}", o.stderr);
        assert!(o.stderr.starts_with("hako: "), "{bad:?}: {}", o.stderr);
    }
    assert_clean(&h, &[]);
}

/// pause freezes the container (its output stops; exec is refused),
/// unpause thaws it, stop works on a paused one; restart runs it again;
/// rename moves its name, refusing one in use.
#[test]
fn pause_unpause_restart_and_rename() {
    let h = hako_with_busybox();
    let id = h
        .ok(&[
            "run",
            "-d",
            "--name",
            "tick",
            "--network",
            "none",
            IMG,
            "sh",
            "-c",
            "while :; do echo t; sleep 0.1; done",
        ])
        .trim()
        .to_string();
    let lines = || hako(&h, &["logs", "tick"]).stdout.lines().count();
    assert!(wait_for(5, || lines() > 0));
    h.ok(&["pause", "tick"]);
    assert_eq!(inspect(&h, "tick")["State"]["Status"], "paused");
    assert_eq!(inspect(&h, "tick")["State"]["Paused"], true);
    assert!(h.ok(&["ps"]).contains("(Paused)"));
    std::thread::sleep(Duration::from_millis(300));
    let frozen = lines();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lines(), frozen, "output while paused");
    let o = hako(&h, &["exec", "tick", "true"]);
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(o.stderr.contains("paused"), "{}", o.stderr);
    assert_eq!(hako(&h, &["pause", "tick"]).code, 125);
    h.ok(&["unpause", "tick"]);
    assert_eq!(inspect(&h, "tick")["State"]["Status"], "running");
    assert!(wait_for(5, || lines() > frozen), "no output after unpause");
    assert_eq!(hako(&h, &["unpause", "tick"]).code, 125);
    // A paused container stops (it is thawed for its stop signal).
    h.ok(&["pause", "tick"]);
    h.ok(&["stop", "-t", "1", "tick"]);
    assert_eq!(inspect(&h, "tick")["State"]["Status"], "exited");
    // kill of a paused one: it dies (thawed for the SIGKILL).
    h.ok(&["start", "tick"]);
    h.ok(&["pause", "tick"]);
    h.ok(&["kill", "tick"]);
    assert!(
        wait_for(5, || inspect(&h, "tick")["State"]["ExitCode"] == 137),
        "{}",
        inspect(&h, "tick")["State"]
    );
    // restart: running again, with a new pid.
    h.ok(&["start", "tick"]);
    let pid = inspect(&h, "tick")["State"]["Pid"].as_i64().expect("pid");
    h.ok(&["restart", "-t", "1", "tick"]);
    let st = inspect(&h, "tick");
    assert_eq!(st["State"]["Status"], "running");
    assert_ne!(st["State"]["Pid"].as_i64().expect("pid"), pid);
    // rename.
    h.ok(&[
        "create",
        "--name",
        "other",
        "--network",
        "none",
        IMG,
        "true",
    ]);
    let o = hako(&h, &["rename", "tick", "other"]);
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert_eq!(hako(&h, &["rename", "tick", "bad/name"]).code, 125);
    h.ok(&["rename", "tick", "tock"]);
    assert_eq!(inspect(&h, "tock")["Id"], id.as_str());
    assert_eq!(hako(&h, &["inspect", "tick"]).code, 125);
    h.ok(&["rm", "-f", "tock", "other"]);
    assert_clean(&h, &[id]);
}

/// `ps --filter`, `-n` and `-l`, as docker takes them.
#[test]
fn ps_filters_last_and_latest() {
    let h = hako_with_busybox();
    h.ok(&[
        "run",
        "-d",
        "--name",
        "fa",
        "-l",
        "app=web",
        "--network",
        "none",
        IMG,
        "sleep",
        "100",
    ]);
    let o = hako(
        &h,
        &[
            "run",
            "--name",
            "fb",
            "--network",
            "none",
            IMG,
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    h.ok(&["create", "--name", "fc", "--network", "none", IMG, "true"]);
    let names = |args: &[&str]| -> String {
        let mut all = vec!["ps", "--format", "{{.Names}}"];
        all.extend_from_slice(args);
        h.ok(&all).lines().collect::<Vec<_>>().join(",")
    };
    assert_eq!(names(&[]), "fa");
    assert_eq!(names(&["-a"]), "fc,fb,fa");
    assert_eq!(names(&["-a", "-f", "name=f", "-f", "label=app=web"]), "fa");
    assert_eq!(names(&["-a", "-f", "label=app"]), "fa");
    assert_eq!(names(&["-a", "-f", "label=app=db"]), "");
    assert_eq!(names(&["-f", "status=exited"]), "fb");
    assert_eq!(names(&["-f", "exited=3"]), "fb");
    assert_eq!(
        names(&["-f", "status=created", "-f", "status=running"]),
        "fc,fa"
    );
    assert_eq!(names(&["-a", "-f", &format!("ancestor={IMG}")]), "fc,fb,fa");
    let fb = inspect(&h, "fb")["Id"].as_str().expect("id").to_string();
    assert_eq!(names(&["-a", "-f", &format!("id={}", &fb[..8])]), "fb");
    assert_eq!(names(&["-n", "2"]), "fc,fb");
    assert_eq!(names(&["-l"]), "fc");
    // info counts them.
    assert_eq!(
        h.ok(&[
            "info",
            "-f",
            "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}}"
        ]),
        "3 1 2\n"
    );
    assert!(h.ok(&["version"]).starts_with("hako version "));
    assert_eq!(
        h.ok(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.PIDs}}",
            "fa"
        ]),
        "fa 1\n"
    );
    for bad in ["bogus=1", "status=weird", "exited=x", "noeq"] {
        assert_eq!(hako(&h, &["ps", "-f", bad]).code, 125, "{bad}");
    }
    h.ok(&["rm", "-f", "fa", "fb", "fc"]);
    assert_clean(&h, &[]);
}

/// --restart: on-failure restarts a failing container up to its count and
/// not one that succeeded; always restarts until `stop`, which it
/// respects; `rm -f` ends it all, leaving nothing.
#[test]
fn restart_policies_start_exited_containers_again() {
    let h = hako_with_busybox();
    let state = |n: &str| -> (String, i64) {
        let d = inspect(&h, n);
        (
            d["State"]["Status"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            d["RestartCount"].as_i64().unwrap_or(-1),
        )
    };
    h.ok(&[
        "run",
        "-d",
        "--name",
        "fail",
        "--restart",
        "on-failure:2",
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    h.ok(&[
        "run",
        "-d",
        "--name",
        "ok",
        "--restart",
        "on-failure",
        "--network",
        "none",
        IMG,
        "true",
    ]);
    h.ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "echo up; sleep 0.2",
    ]);
    assert!(
        wait_for(15, || state("fail") == ("exited".into(), 2)
            && hako(&h, &["logs", "fail"]).stdout == "run\nrun\nrun\n"),
        "{:?} {:?}",
        state("fail"),
        hako(&h, &["logs", "fail"]).stdout
    );
    assert_eq!(
        inspect(&h, "fail")["HostConfig"]["RestartPolicy"]["MaximumRetryCount"],
        2
    );
    assert_eq!(state("ok"), ("exited".into(), 0));
    assert!(wait_for(15, || state("loop").1 >= 2), "{:?}", state("loop"));
    h.ok(&["stop", "-t", "0", "loop"]);
    let stopped = state("loop");
    assert_eq!(stopped.0, "exited");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state("loop"), stopped, "restarted after stop");
    // A start makes the policy apply again.
    h.ok(&["start", "loop"]);
    assert!(wait_for(15, || state("loop").1 >= 1), "{:?}", state("loop"));
    h.ok(&["rm", "-f", "loop", "fail", "ok"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_clean(&h, &[]);
    for bad in [
        vec!["run", "--rm", "--restart", "always", IMG, "true"],
        vec!["run", "--restart", "sometimes", IMG, "true"],
        vec!["run", "--restart", "on-failure:x", IMG, "true"],
    ] {
        assert_eq!(hako(&h, &bad).code, 125, "{bad:?}");
    }
    assert_clean(&h, &[]);
}

/// On a user network, containers find each other by name (and pods by
/// theirs), both ways, through /etc/hosts kept current as they come and
/// go; on the default network names are not shared, as docker's default
/// bridge.
#[test]
fn containers_on_a_user_network_find_each_other_by_name() {
    let h = hako_with_busybox();
    h.ok(&["network", "create", "names"]);
    let web = "echo from-$HOSTNAME > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    let db = h
        .ok(&[
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "names",
            IMG,
            "sh",
            "-c",
            web,
        ])
        .trim()
        .to_string();
    let app = h
        .ok(&[
            "run",
            "-d",
            "--name",
            "app",
            "--network",
            "names",
            IMG,
            "sleep",
            "100",
        ])
        .trim()
        .to_string();
    // The name as /etc/hosts maps it (what a libc resolver reads; the
    // static busybox of the test image cannot resolve names itself).
    let fetch = |from: &str, name: &str| -> String {
        let script = format!(
            "ip=$(awk '{{for (i = 2; i <= NF; i++) if ($i == \"{name}\") {{print $1; exit}}}}' /etc/hosts); \
             [ -n \"$ip\" ] && wget -qO- http://$ip/index.html"
        );
        hako(&h, &["exec", from, "sh", "-c", &script]).stdout
    };
    let want = format!("from-{}\n", &db[..12]);
    assert!(
        wait_for(10, || fetch("app", "db") == want),
        "app did not reach db by name: {}",
        hako(&h, &["exec", "app", "cat", "/etc/hosts"]).stdout
    );
    // The earlier container learned the later one's name.
    let hosts = hako(&h, &["exec", "db", "cat", "/etc/hosts"]).stdout;
    let app_ip = inspect(&h, "app")["NetworkSettings"]["IPAddress"]
        .as_str()
        .expect("ip")
        .to_string();
    assert!(
        hosts.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&app_ip.as_str()) && w.contains(&"app")
        }),
        "{hosts}"
    );
    // Gone when it stops; back when it starts again.
    h.ok(&["stop", "-t", "0", "db"]);
    // (By word: a hex container ID may well hold "db".)
    let named_db = || {
        hako(&h, &["exec", "app", "cat", "/etc/hosts"])
            .stdout
            .split_whitespace()
            .any(|w| w == "db")
    };
    assert!(
        wait_for(5, || !named_db()),
        "db still named after it stopped"
    );
    h.ok(&["start", "db"]);
    assert!(wait_for(10, || fetch("app", "db") == want));
    // A pod on the network: its name and its members' are its address,
    // and its members see the others.
    h.ok(&["pod", "create", "--name", "pp", "--network", "names"]);
    h.ok(&[
        "run", "-d", "--pod", "pp", "--name", "member", IMG, "sleep", "100",
    ]);
    let words = |c: &str| -> Vec<Vec<String>> {
        hako(&h, &["exec", c, "cat", "/etc/hosts"])
            .stdout
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    };
    assert!(
        wait_for(5, || words("app").iter().any(|l| l
            .contains(&"pp".to_string())
            && l.contains(&"member".to_string()))),
        "{:?}",
        words("app")
    );
    assert!(
        words("member")
            .iter()
            .any(|l| l.contains(&"db".to_string())),
        "{:?}",
        words("member")
    );
    h.ok(&["pod", "rm", "-f", "pp"]);
    assert!(
        wait_for(5, || !words("app")
            .iter()
            .any(|l| l.contains(&"member".to_string()))),
        "{:?}",
        words("app")
    );
    // The default network shares no names.
    let other = h
        .ok(&["run", "-d", "--name", "lonely", IMG, "sleep", "100"])
        .trim()
        .to_string();
    let o = hako(&h, &["run", "--rm", IMG, "cat", "/etc/hosts"]);
    assert!(
        !o.stdout.split_whitespace().any(|w| w == "lonely"),
        "{}",
        o.stdout
    );
    // In use, a network is not pruned; unused, it is (the default never).
    assert_eq!(h.ok(&["network", "prune", "-f"]), "");
    h.ok(&["rm", "-f", "db", "app", "lonely"]);
    assert_eq!(h.ok(&["network", "prune", "-f"]), "names\n");
    assert!(h.ok(&["network", "ls", "-q"]).lines().all(|n| n != "names"));
    assert_clean(&h, &[db, app, other]);
}
