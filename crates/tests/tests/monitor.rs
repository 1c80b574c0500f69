//! hako-monitor with real containers: logs, exit records, attach, stdin,
//! terminals, reaping, rotation, create failures and exit commands, driven
//! through hako-runtime and runc (and crun when this machine lets it run).
//!
//! Needs the binaries: `cargo build -p hako-runtime-cli -p hako-monitor`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hako_monitor::{
    join_partials, read_log, Attach, ExitRecord, Follow, Frame, LogRecord, MonitorError,
    MonitorOptions, Started, Stream,
};
use hako_tests::{json, monitor_bin, output_via_files, runtime_bin, unique, Bundle, TempDir};

/// An OCI runtime CLI with its own state root.
struct Rt {
    bin: PathBuf,
    root: TempDir,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Rt {
    fn hako() -> Rt {
        Rt::with(runtime_bin())
    }

    fn runc() -> Rt {
        Rt::with(PathBuf::from("/usr/sbin/runc"))
    }

    fn with(bin: PathBuf) -> Rt {
        Rt {
            bin,
            root: TempDir::new("mon-root"),
            ids: Default::default(),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root.path).args(args);
        c.stdin(std::process::Stdio::null());
        output_via_files(c)
    }

    fn start(&self, id: &str) {
        let out = self.run(&["start", id]);
        assert!(
            out.status.success(),
            "{} start {id}: {}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.run(&["delete", "--force", id]);
        }
    }
}

/// One container under a monitor: its run dir, log and options.
struct Ctr {
    id: String,
    run: TempDir,
    logs: TempDir,
    opts: MonitorOptions,
}

impl Ctr {
    fn new(rt: &Rt, bundle: &Bundle) -> Ctr {
        let id = unique("mon");
        rt.ids.borrow_mut().push(id.clone());
        let run = TempDir::new("mon-run");
        hako_tests::set_mode(&run.path, 0o700);
        let logs = TempDir::new("mon-log");
        let mut opts = MonitorOptions::new(
            monitor_bin(),
            &id,
            bundle.path(),
            &run.path,
            logs.path.join("ctr.log"),
        );
        opts.runtime = Some(rt.bin.clone());
        opts.runtime_args = vec!["--root".into(), rt.root.path.clone().into()];
        Ctr {
            id,
            run,
            logs,
            opts,
        }
    }

    fn spawn(&self) -> Started {
        match hako_monitor::spawn(&self.opts) {
            Ok(s) => s,
            Err(e) => panic!("spawn monitor for {}: {e}", self.id),
        }
    }

    fn log_path(&self) -> &Path {
        &self.opts.log_path
    }

    fn wait_exit(&self, secs: u64) -> ExitRecord {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(r) = ExitRecord::read(&self.run.path).expect("read exit record") {
                return r;
            }
            assert!(
                Instant::now() < end,
                "no exit record for {} after {secs} s",
                self.id
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn records(&self) -> Vec<LogRecord> {
        read_log(self.log_path(), Follow::No, None, None)
            .expect("open log")
            .map(|r| r.expect("log record"))
            .collect()
    }
}

fn sh(script: &str) -> Bundle {
    Bundle::new(&["sh", "-c", script])
}

/// Waits until the process is gone (or a zombie nobody reaps yet: false).
fn gone_within(pid: i32, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Fields 4-6 of /proc/PID/stat: (ppid, pgrp, session).
fn stat_ids(pid: i32) -> (i32, i32, i32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest: Vec<&str> = s
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let n = |i: usize| rest[i].parse().expect("number");
    (n(1), n(2), n(3))
}

/// All frames until the connection ends.
fn frames(a: &Attach) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = a.read_frame().expect("read frame") {
        out.push(f);
    }
    out
}

fn joined(frames: &[Frame], want: fn(&Frame) -> Option<&[u8]>) -> String {
    let bytes: Vec<u8> = frames.iter().filter_map(want).flatten().copied().collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn stdout_of(f: &Frame) -> Option<&[u8]> {
    match f {
        Frame::Stdout(d) => Some(d),
        _ => None,
    }
}

fn stderr_of(f: &Frame) -> Option<&[u8]> {
    match f {
        Frame::Stderr(d) => Some(d),
        _ => None,
    }
}

// --- logs and exit records ------------------------------------------------

fn logs_and_exit_code(rt: Rt) {
    let b = sh("echo one; echo two >&2; echo three; exit 3");
    let c = Ctr::new(&rt, &b);
    let started = c.spawn();
    assert!(started.container_pid > 0 && started.monitor_pid > 0);
    rt.start(&c.id);
    let exit = c.wait_exit(10);
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert!(
        exit.finished_at.ends_with('Z') && exit.finished_at.len() == 30,
        "finished_at {:?} is not RFC 3339 UTC with nanoseconds",
        exit.finished_at
    );

    let text = std::fs::read_to_string(c.log_path()).expect("read log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "log:\n{text}");
    for l in &lines {
        let (ts, rest) = l.split_once(' ').expect("timestamp");
        assert_eq!(ts.len(), 30, "timestamp {ts:?} in {l:?}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts:?}");
        assert!(rest.ends_with(" F one") || rest.ends_with(" F two") || rest.ends_with(" F three"));
    }
    let mut out: Vec<String> = Vec::new();
    for r in c.records() {
        assert!(!r.partial);
        out.push(format!(
            "{} {}",
            r.stream.as_str(),
            String::from_utf8_lossy(&r.content)
        ));
    }
    // stdout and stderr are separate pipes: order across them is not
    // guaranteed, order within one is.
    let so: Vec<&String> = out.iter().filter(|l| l.starts_with("stdout")).collect();
    let se: Vec<&String> = out.iter().filter(|l| l.starts_with("stderr")).collect();
    assert_eq!(so, ["stdout one", "stdout three"]);
    assert_eq!(se, ["stderr two"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.log_path())
        .expect("stat log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "log mode {mode:o}");
    assert!(
        gone_within(started.monitor_pid, 5),
        "monitor still running after exit"
    );
}

#[test]
fn logs_stdout_and_stderr_in_cri_format_and_records_the_exit_code() {
    logs_and_exit_code(Rt::hako());
}

#[test]
fn runc_logs_and_exit_code() {
    logs_and_exit_code(Rt::runc());
}

#[test]
fn exit_code_zero() {
    let rt = Rt::hako();
    let b = Bundle::new(&["true"]);
    let c = Ctr::new(&rt, &b);
    c.spawn();
    rt.start(&c.id);
    let exit = c.wait_exit(10);
    assert_eq!((exit.exit_code, exit.signal), (0, None));
}

#[test]
fn a_restarted_container_appends_to_its_log() {
    let rt = Rt::hako();
    let b = sh("echo run-$(cat /proc/sys/kernel/random/uuid | head -c 8)");
    let first = Ctr::new(&rt, &b);
    first.spawn();
    rt.start(&first.id);
    first.wait_exit(10);
    let mut again = Ctr::new(&rt, &b);
    again.opts.log_path = first.log_path().to_path_buf();
    again.spawn();
    rt.start(&again.id);
    again.wait_exit(10);
    let records = first.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_ne!(records[0].content, records[1].content);
    assert!(records[0].timestamp < records[1].timestamp);
}

fn killed_container(rt: Rt) {
    let b = Bundle::new(&["sleep", "100"]);
    let c = Ctr::new(&rt, &b);
    let started = c.spawn();
    rt.start(&c.id);
    let out = rt.run(&["kill", &c.id, "KILL"]);
    assert!(
        out.status.success(),
        "kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = c.wait_exit(10);
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert!(gone_within(started.container_pid, 5));
}

#[test]
fn a_sigkilled_container_exits_137_with_signal_9() {
    killed_container(Rt::hako());
}

#[test]
fn runc_sigkilled_container() {
    killed_container(Rt::runc());
}

#[test]
fn a_container_deleted_before_start_ends_the_monitor() {
    let rt = Rt::hako();
    let b = Bundle::new(&["echo", "never"]);
    let c = Ctr::new(&rt, &b);
    let started = c.spawn();
    let out = rt.run(&["delete", "--force", &c.id]);
    assert!(
        out.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = c.wait_exit(10);
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert!(
        gone_within(started.monitor_pid, 5),
        "monitor outlived its container"
    );
    assert!(
        c.records().is_empty(),
        "the container never ran: {:?}",
        c.records()
    );
}

// --- attach ---------------------------------------------------------------

fn attach_before_start(rt: Rt) {
    let b = sh("echo hello; echo oops >&2; echo bye; exit 7");
    let c = Ctr::new(&rt, &b);
    c.spawn();
    let a = Attach::connect(&c.run.path).expect("attach");
    let a2 = Attach::connect(&c.run.path).expect("second attach");
    // A follower started before the container: it ends once RUN/exit exists.
    let log = c.log_path().to_path_buf();
    let run = c.run.path.clone();
    let follower = std::thread::spawn(move || {
        read_log(&log, Follow::UntilExit { run_dir: run }, None, None)
            .expect("follow")
            .map(|r| r.expect("record"))
            .collect::<Vec<_>>()
    });
    rt.start(&c.id);
    for a in [a, a2] {
        let f = frames(&a);
        assert_eq!(joined(&f, stdout_of), "hello\nbye\n", "frames {f:?}");
        assert_eq!(joined(&f, stderr_of), "oops\n", "frames {f:?}");
        assert_eq!(f.last(), Some(&Frame::Exit(7)), "frames {f:?}");
    }
    let followed = follower.join().expect("follower");
    let texts: Vec<String> = followed
        .iter()
        .map(|r| String::from_utf8_lossy(&r.content).into_owned())
        .collect();
    assert_eq!(texts.len(), 3, "followed {texts:?}");
    assert!(texts.contains(&"oops".to_string()) && texts.contains(&"bye".to_string()));
}

#[test]
fn an_attach_client_connected_before_start_gets_output_and_exit() {
    attach_before_start(Rt::hako());
}

#[test]
fn runc_attach_before_start() {
    attach_before_start(Rt::runc());
}

fn stdin_forwarding(rt: Rt) {
    let b = sh("cat; echo cat-done");
    let mut c = Ctr::new(&rt, &b);
    c.opts.stdin = true;
    c.spawn();
    let a = Attach::connect(&c.run.path).expect("attach");
    rt.start(&c.id);
    a.send_stdin(b"hello\n").expect("stdin");
    a.send_stdin(b"world\n").expect("stdin");
    a.close_stdin().expect("close stdin");
    let f = frames(&a);
    assert_eq!(
        joined(&f, stdout_of),
        "hello\nworld\ncat-done\n",
        "frames {f:?}"
    );
    assert_eq!(f.last(), Some(&Frame::Exit(0)));
}

#[test]
fn stdin_is_forwarded_and_closed() {
    stdin_forwarding(Rt::hako());
}

#[test]
fn runc_stdin_is_forwarded_and_closed() {
    stdin_forwarding(Rt::runc());
}

#[test]
fn stdin_without_the_flag_gets_an_error_frame() {
    let rt = Rt::hako();
    let b = sh("sleep 0.5; echo done");
    let c = Ctr::new(&rt, &b);
    c.spawn();
    let a = Attach::connect(&c.run.path).expect("attach");
    a.send_stdin(b"x").expect("stdin");
    rt.start(&c.id);
    let f = frames(&a);
    assert!(
        f.iter()
            .any(|f| matches!(f, Frame::Error(t) if t.contains("--stdin"))),
        "frames {f:?}"
    );
    assert_eq!(joined(&f, stdout_of), "done\n");
}

/// The child half of the next test: attach_stdio owns fds 0-2 here.
#[test]
fn attach_stdio_child() {
    let Ok(run) = std::env::var("HAKO_TEST_ATTACH_STDIO") else {
        return;
    };
    let how = hako_monitor::AttachStdio {
        stdin: true,
        tty: false,
        detach_keys: Vec::new(),
    };
    let code = hako_monitor::attach_stdio(Path::new(&run), how).expect("attach_stdio");
    std::process::exit(code);
}

#[test]
fn attach_stdio_pumps_the_callers_stdio_and_returns_the_exit_code() {
    let rt = Rt::hako();
    // Output only after the first stdin line: it comes through the client.
    let b = sh("read l; echo got:$l; cat; echo to-err >&2; exit 6");
    let mut c = Ctr::new(&rt, &b);
    c.opts.stdin = true;
    c.spawn();
    let input = c.logs.path.join("input");
    std::fs::write(&input, "piped-in\nmore\n").expect("input");
    let mut child = Command::new(std::env::current_exe().expect("test binary"));
    child
        .args([
            "--exact",
            "attach_stdio_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HAKO_TEST_ATTACH_STDIO", &c.run.path)
        .stdin(std::fs::File::open(&input).expect("open input"));
    let (run_rt, id) = (&rt, c.id.clone());
    let handle = std::thread::scope(|s| {
        let t = s.spawn(|| output_via_files(child));
        run_rt.start(&id);
        t.join().expect("child")
    });
    let out = String::from_utf8_lossy(&handle.stdout);
    let err = String::from_utf8_lossy(&handle.stderr);
    assert_eq!(
        handle.status.code(),
        Some(6),
        "stdout {out:?} stderr {err:?}"
    );
    assert!(out.contains("got:piped-in\nmore\n"), "stdout {out:?}");
    assert!(err.contains("to-err"), "stderr {err:?}");
}

fn terminal(rt: Rt, long_run_dir: bool) {
    let mut b = sh("tty; sleep 0.3; stty size; read line; echo got:$line");
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let mut c = Ctr::new(&rt, &b);
    c.opts.terminal = true;
    if long_run_dir {
        // RUN/console.sock longer than a socket address holds.
        let deep = c.run.path.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).expect("mkdir");
        c.opts.run_dir = deep;
    }
    let run = c.opts.run_dir.clone();
    c.spawn();
    assert!(!run.join("console.sock").exists());
    let a = Attach::connect(&run).expect("attach");
    a.resize(33, 101).expect("resize");
    rt.start(&c.id);
    std::thread::sleep(Duration::from_millis(100));
    a.send_stdin(b"typed\r").expect("stdin");
    let f = frames(&a);
    let out = joined(&f, stdout_of);
    assert!(out.contains("/dev/pts/"), "tty output {out:?}");
    assert!(out.contains("33 101"), "stty size after resize: {out:?}");
    assert!(out.contains("got:typed"), "stdin through the pty: {out:?}");
    assert_eq!(joined(&f, stderr_of), "", "a pty is one stream");
    assert_eq!(f.last(), Some(&Frame::Exit(0)));
    let records = c.records();
    assert!(records.iter().all(|r| r.stream == Stream::Stdout));
    assert!(
        records
            .iter()
            .any(|r| String::from_utf8_lossy(&r.content).contains("/dev/pts/")),
        "{records:?}"
    );
}

#[test]
fn terminal_mode_gives_a_pty_and_applies_resize() {
    terminal(Rt::hako(), false);
}

#[test]
fn terminal_mode_with_a_run_dir_path_too_long_for_a_socket_address() {
    terminal(Rt::hako(), true);
}

#[test]
fn runc_terminal_mode_with_a_long_run_dir() {
    terminal(Rt::runc(), true);
}

#[test]
fn runc_terminal_mode() {
    terminal(Rt::runc(), false);
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_others_lose_nothing() {
    let rt = Rt::hako();
    // 4 MiB of numbered lines: far more than socket buffers hold.
    let b = sh("i=0; while [ $i -lt 40000 ]; do echo line-$i-padding-padding-padding-padding-padding-padding-padding-padding; i=$((i+1)); done");
    let c = Ctr::new(&rt, &b);
    c.spawn();
    let stalled = Attach::connect(&c.run.path).expect("stalled attach");
    let reader = Attach::connect(&c.run.path).expect("attach");
    let started = Instant::now();
    rt.start(&c.id);
    let f = frames(&reader);
    let out = joined(&f, stdout_of);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 40000, "lines through a reading client");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("line-{i}-")), "line {i} is {l:?}");
    }
    assert_eq!(f.last(), Some(&Frame::Exit(0)));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // The stalled client got at most what fitted before it was dropped.
    let mut stalled_bytes = 0;
    let mut stalled_exit = false;
    while let Ok(Some(f)) = stalled.read_frame() {
        match f {
            Frame::Stdout(d) => stalled_bytes += d.len(),
            Frame::Exit(_) => stalled_exit = true,
            _ => {}
        }
    }
    assert!(!stalled_exit, "a dropped client gets no exit frame");
    assert!(
        stalled_bytes < out.len(),
        "stalled client read {stalled_bytes} bytes"
    );
}

// --- process model --------------------------------------------------------

#[test]
fn the_monitor_outlives_its_spawner_in_its_own_session() {
    let rt = Rt::hako();
    let b = sh("sleep 1; echo late");
    let c = Ctr::new(&rt, &b);
    let started = c.spawn();
    let m = started.monitor_pid;
    let (ppid, pgrp, sid) = stat_ids(m);
    assert_eq!((pgrp, sid), (m, m), "monitor {m} is not a session leader");
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "the monitor must be reparented"
    );
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{m}/fd/{fd}")).expect("readlink");
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", started.container_pid))
        .expect("container status");
    assert!(
        status.lines().any(|l| l == format!("PPid:\t{m}")),
        "the container's init is the monitor's child:\n{status}"
    );
    let pidfile = std::fs::read_to_string(c.run.path.join("monitor.pid")).expect("monitor.pid");
    assert_eq!(pidfile.trim(), m.to_string());
    rt.start(&c.id);
    assert_eq!(c.wait_exit(10).exit_code, 0);
    let texts: Vec<Vec<u8>> = c.records().into_iter().map(|r| r.content).collect();
    assert_eq!(texts, [b"late".to_vec()]);
}

#[test]
fn the_monitor_does_not_keep_its_spawners_stray_fds() {
    use std::os::fd::AsFd;
    // Inheritable on purpose, like a shell's descriptors or a caller's
    // captured pipe: the monitor must not hold it for the container's life.
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let rt = Rt::hako();
    let b = Bundle::new(&["sleep", "5"]);
    let c = Ctr::new(&rt, &b);
    let started = c.spawn();
    drop(w);
    let mut fds = [nix::poll::PollFd::new(
        r.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    // Other tests' short-lived children may hold it for a moment too.
    let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(3000u16)).expect("poll");
    let hup = fds[0]
        .revents()
        .is_some_and(|e| e.contains(nix::poll::PollFlags::POLLHUP));
    assert!(n == 1 && hup, "the spawner's pipe is still open after 3 s");
    assert!(Path::new(&format!("/proc/{}", started.monitor_pid)).exists());
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    let rt = Rt::hako();
    // No pid namespace: an orphan goes to the nearest subreaper, the monitor.
    let mut b = sh("sh -c 'sleep 0.5 & echo $! > /tmp/orphan'; sleep 3");
    b.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != "pid");
        c["root"]["readonly"] = json!(false);
    });
    let c = Ctr::new(&rt, &b);
    let started = c.spawn();
    rt.start(&c.id);
    let orphan_file = b.rootfs().join("tmp/orphan");
    let end = Instant::now() + Duration::from_secs(5);
    let orphan: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&orphan_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < end, "no orphan pid written");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (ppid, _, _) = stat_ids(orphan);
    assert_eq!(ppid, started.monitor_pid, "the orphan went to the monitor");
    assert!(gone_within(orphan, 3), "the orphan {orphan} was not reaped");
    // Still running: no zombie children of the monitor.
    assert!(Path::new(&format!("/proc/{}", started.container_pid)).exists());
    let zombies: Vec<String> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                let rest: Vec<&str> = s
                    .rsplit_once(')')
                    .map(|x| x.1)
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                rest.first() == Some(&"Z")
                    && rest.get(1) == Some(&started.monitor_pid.to_string().as_str())
            })
        })
        .map(|p| p.to_string())
        .collect();
    assert!(zombies.is_empty(), "zombies under the monitor: {zombies:?}");
    assert_eq!(c.wait_exit(10).exit_code, 0);
}

// --- log rotation and partial lines ---------------------------------------

#[test]
fn the_log_rotates_past_its_max_size() {
    let rt = Rt::hako();
    let b = sh("i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done");
    let mut c = Ctr::new(&rt, &b);
    c.opts.log_max_size = 2000;
    c.spawn();
    rt.start(&c.id);
    assert_eq!(c.wait_exit(10).exit_code, 0);
    let old = c.logs.path.join("ctr.log.1");
    let old_size = std::fs::metadata(&old).expect("ctr.log.1 exists").len();
    let cur_size = std::fs::metadata(c.log_path()).expect("ctr.log").len();
    // One batch of records may overshoot before the rotation.
    assert!(
        old_size > 2000 && old_size < 2000 + 20000,
        "ctr.log.1 is {old_size} bytes"
    );
    assert!(cur_size <= 2000 + 20000, "ctr.log is {cur_size} bytes");
    let lines: Vec<String> = c
        .records()
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.content).into_owned())
        .collect();
    assert_eq!(lines.last().map(String::as_str), Some("line-299"));
    // How much was rotated away depends on how the output was batched.
    let first: usize = lines[0]
        .trim_start_matches("line-")
        .parse()
        .expect("number");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l,
            &format!("line-{}", first + i),
            "ctr.log.1 then ctr.log, in order"
        );
    }
    // --tail across the two files.
    let tail: Vec<LogRecord> = read_log(c.log_path(), Follow::No, None, Some(2))
        .expect("tail")
        .map(|r| r.expect("record"))
        .collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0].content, b"line-298");
}

#[test]
fn following_the_log_crosses_rotations() {
    let rt = Rt::hako();
    let b = sh("i=0; while [ $i -lt 150 ]; do echo line-$i; i=$((i+1)); sleep 0.01; done");
    let mut c = Ctr::new(&rt, &b);
    c.opts.log_max_size = 1500;
    c.spawn();
    let (log, run) = (c.log_path().to_path_buf(), c.run.path.clone());
    let follower = std::thread::spawn(move || {
        read_log(&log, Follow::UntilExit { run_dir: run }, None, None)
            .expect("follow")
            .map(|r| String::from_utf8_lossy(&r.expect("record").content).into_owned())
            .collect::<Vec<_>>()
    });
    rt.start(&c.id);
    assert_eq!(c.wait_exit(20).exit_code, 0);
    let lines = follower.join().expect("follower");
    let want: Vec<String> = (0..150).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, want);
    assert!(
        c.logs.path.join("ctr.log.1").exists(),
        "the log never rotated"
    );
}

#[test]
fn long_lines_become_partial_records_and_are_joined_again() {
    let rt = Rt::hako();
    let b = sh("head -c 20000 /dev/zero | tr '\\0' b; echo; head -c 40000 /dev/zero | tr '\\0' a");
    let c = Ctr::new(&rt, &b);
    c.spawn();
    rt.start(&c.id);
    assert_eq!(c.wait_exit(10).exit_code, 0);
    let records = c.records();
    assert!(
        records.iter().all(|r| r.content.len() <= 16 * 1024),
        "record above 16 KiB"
    );
    let kinds: String = records
        .iter()
        .map(|r| if r.partial { 'P' } else { 'F' })
        .collect();
    // 20000 b: P + F; 40000 a without a newline: P P P (the last at exit).
    assert_eq!(
        kinds,
        "PFPPP",
        "records {:?}",
        records.iter().map(|r| r.content.len()).collect::<Vec<_>>()
    );
    let lines: Vec<_> = join_partials(read_log(c.log_path(), Follow::No, None, None).expect("log"))
        .map(|l| l.expect("line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].content, vec![b'b'; 20000]);
    assert!(lines[0].complete);
    assert_eq!(lines[1].content, vec![b'a'; 40000]);
    assert!(!lines[1].complete, "output ended without a newline");
    let since = lines[1].timestamp.to_system_time() + Duration::from_secs(3600);
    let none: Vec<_> = read_log(c.log_path(), Follow::No, Some(since), None)
        .expect("log")
        .collect();
    assert!(none.is_empty(), "--since in the future selects nothing");
}

// --- failures and the exit command ------------------------------------------

fn create_failure(rt: Rt, bundle: Bundle, expect_in_message: &str) {
    let c = Ctr::new(&rt, &bundle);
    let err = hako_monitor::spawn(&c.opts).expect_err("create must fail");
    let MonitorError::Create { message, .. } = &err else {
        panic!("not a create error: {err}");
    };
    assert!(
        message.contains(expect_in_message),
        "the runtime's message is missing {expect_in_message:?}: {message}"
    );
    let monitor: i32 = std::fs::read_to_string(c.run.path.join("monitor.pid"))
        .expect("monitor.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        gone_within(monitor, 5),
        "the monitor {monitor} is still running"
    );
    if let Some(pid) = std::fs::read_to_string(c.run.path.join("pid"))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    {
        assert!(gone_within(pid, 5), "the container {pid} is still running");
    }
    let state = rt.run(&["state", &c.id]);
    assert!(!state.status.success(), "the runtime still knows {}", c.id);
    assert!(ExitRecord::read(&c.run.path).expect("read").is_none());
}

fn bad_namespace() -> Bundle {
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["linux"]["namespaces"] = json!([{ "type": "bogus" }]));
    b
}

#[test]
fn a_create_failure_carries_the_runtime_message_and_leaves_nothing() {
    create_failure(
        Rt::hako(),
        Bundle::new(&["/no/such/binary"]),
        "/no/such/binary",
    );
}

#[test]
fn a_bad_config_fails_with_the_runtime_message() {
    create_failure(Rt::hako(), bad_namespace(), "bogus");
}

#[test]
fn runc_create_failure() {
    create_failure(
        Rt::runc(),
        Bundle::new(&["/no/such/binary"]),
        "/no/such/binary",
    );
}

#[test]
fn the_json_runtime_log_is_part_of_the_error() {
    let rt = Rt::hako();
    let b = bad_namespace();
    let mut c = Ctr::new(&rt, &b);
    let log = c.logs.path.join("runtime.json");
    c.opts.runtime_args.extend([
        "--log".into(),
        log.clone().into(),
        "--log-format".into(),
        "json".into(),
    ]);
    let err = hako_monitor::spawn(&c.opts).expect_err("create must fail");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("bogus"), "runtime JSON log: {text:?}");
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn bad_monitor_arguments_are_reported() {
    let rt = Rt::hako();
    let b = Bundle::new(&["true"]);
    let mut c = Ctr::new(&rt, &b);
    c.opts.bundle = c.run.path.join("missing");
    let err = hako_monitor::spawn(&c.opts).expect_err("must fail");
    assert!(matches!(err, MonitorError::Start { .. }), "{err}");
    assert!(err.to_string().contains("--bundle"), "{err}");
}

#[test]
fn the_exit_command_runs_after_the_exit_file_exists() {
    let rt = Rt::hako();
    let b = sh("exit 5");
    let mut c = Ctr::new(&rt, &b);
    let seen = c.run.path.join("seen");
    c.opts.exit_command = Some("/bin/sh".into());
    c.opts.exit_args = vec![
        "-c".into(),
        format!(
            "cat {0}/exit > {0}/seen.tmp && mv {0}/seen.tmp {0}/seen",
            c.run.path.display()
        )
        .into(),
    ];
    c.spawn();
    rt.start(&c.id);
    let exit = c.wait_exit(10);
    let end = Instant::now() + Duration::from_secs(10);
    while !seen.exists() {
        assert!(Instant::now() < end, "the exit command did not run");
        std::thread::sleep(Duration::from_millis(10));
    }
    let copy: ExitRecord =
        serde_json::from_str(&std::fs::read_to_string(&seen).expect("seen")).expect("exit JSON");
    assert_eq!(copy, exit);
    assert_eq!(copy.exit_code, 5);
}

// --- crun, when this machine lets it run ------------------------------------

#[test]
fn crun_when_it_works() {
    let rt = Rt::with(PathBuf::from("/usr/bin/crun"));
    let mut probe = Bundle::new(&["true"]);
    probe.edit(|c| c["ociVersion"] = json!("1.0.2"));
    let id = unique("crun-probe");
    let out = rt.run(&["run", "--bundle", &probe.path().to_string_lossy(), &id]);
    if !out.status.success() {
        eprintln!(
            "skipping: crun cannot run here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let mut b = sh("echo via-crun; exit 4");
    b.edit(|c| c["ociVersion"] = json!("1.0.2"));
    let c = Ctr::new(&rt, &b);
    c.spawn();
    let a = Attach::connect(&c.run.path).expect("attach");
    rt.start(&c.id);
    let f = frames(&a);
    assert_eq!(joined(&f, stdout_of), "via-crun\n");
    assert_eq!(f.last(), Some(&Frame::Exit(4)));
    assert_eq!(c.wait_exit(10).exit_code, 4);
}
