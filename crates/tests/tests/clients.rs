//! Real clients driving hako-runtime as their OCI runtime:
//!
//! - podman (through conmon), with `--runtime <hako-runtime>`;
//! - containerd (through its own runc v2 shim), with
//!   `ctr run --runc-binary <hako-runtime>` against a containerd each test
//!   starts in a temp dir.
//!
//! Images are made locally from the busybox fixture; nothing is pulled. Each
//! test has its own podman storage or its own containerd, and cleans up even
//! when it panics. The runtime is reached through a wrapper script that logs
//! every argv it gets, so a failure shows exactly what the client asked for.
//!
//! These tests fail (they never skip) when podman, conmon, containerd, ctr or
//! containerd-shim-runc-v2 are missing: CI installs them.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hako_tests::{busybox_rootfs, json, runtime_bin, set_mode, unique, TempDir};

/// How long one client command may take before it counts as a hang.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The image name podman sees.
const PODMAN_IMAGE: &str = "localhost/hako-busybox:test";
/// The image name containerd sees.
const CTR_IMAGE: &str = "docker.io/library/hako-busybox:test";
/// The containerd namespace the tests use.
const NS: &str = "hako-test";
/// hako-runtime's state root when the client passes no `--root`.
const DEFAULT_RUNTIME_ROOT: &str = "/run/hako-runtime";
/// podman flags every machine here needs: no CAP_SYS_RESOURCE (so podman's
/// default ulimits fail) and no network setup.
const PODMAN_RUN_FLAGS: &[&str] = &[
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

/// Panics unless `tool` is on PATH.
fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: install Debian's {package} (CI does); these tests never skip"
    );
}

/// Runs `cmd` (stdin from /dev/null) and collects its output, or fails with a
/// message when it has not exited after `timeout`.
fn try_output(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn {what}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    for (n, pipe) in [
        (
            0,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            1,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send((n, buf));
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| format!("wait for {what}: {e}"))?
        {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("HANG: {what} did not exit within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut bufs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let (n, buf) = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| {
            format!("{what} exited but a process it left behind holds its stdout/stderr open")
        })?;
        bufs[n] = buf;
    }
    let [stdout, stderr] = bufs;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// [`try_output`] with the default timeout, panicking on a hang.
fn output(cmd: &mut Command) -> Output {
    try_output(cmd, TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` and panics (with `context`) unless it succeeds; returns stdout.
fn ok(cmd: &mut Command, context: &dyn Fn() -> String) -> String {
    let what = format!("{cmd:?}");
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        context()
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Pids of processes whose command line contains `needle`.
fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| text(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Polls until no process has `needle` in its command line (up to 10 s).
fn wait_no_process_with(needle: &str) -> Result<(), Vec<i32>> {
    for _ in 0..1000 {
        let pids = pids_with_cmdline(needle);
        if pids.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(pids_with_cmdline(needle))
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

// ---------------------------------------------------------------------------
// The runtime as clients see it, and a local image
// ---------------------------------------------------------------------------

/// A `hako-runtime` script in `dir/bin` that appends its argv to
/// `dir/runtime-argv.log` and execs the real runtime.
struct Wrapper {
    path: PathBuf,
    log: PathBuf,
}

impl Wrapper {
    fn new(dir: &Path) -> Wrapper {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).expect("mkdir bin");
        let path = bin.join("hako-runtime");
        let log = dir.join("runtime-argv.log");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            runtime_bin().display()
        );
        fs::write(&path, script).expect("write runtime wrapper");
        set_mode(&path, 0o755);
        Wrapper { path, log }
    }

    /// Every argv the runtime got, one per line.
    fn calls(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (state root, container id) of the `create` the client ran.
    fn created(&self) -> (PathBuf, String) {
        let calls = self.calls();
        let line = calls
            .lines()
            .find(|l| l.split(' ').any(|w| w == "create"))
            .unwrap_or_else(|| {
                panic!("the client never ran `hako-runtime create`; calls:\n{calls}")
            });
        let words: Vec<&str> = line.split(' ').collect();
        let root = words
            .iter()
            .position(|&w| w == "--root")
            .and_then(|i| words.get(i + 1))
            .map(PathBuf::from)
            .or_else(|| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix("--root="))
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_ROOT));
        let id = words.last().expect("argv").to_string();
        (root, id)
    }
}

/// The busybox rootfs as one uncompressed layer tar: `dir/layer.tar`.
fn layer_tar(dir: &Path) -> PathBuf {
    let tar = dir.join("layer.tar");
    ok(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(busybox_rootfs())
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        &String::new,
    );
    tar
}

/// Hex sha256 of a file.
fn sha256(path: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(path), &String::new);
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Moves `file` into `layout/blobs/sha256/` and returns its descriptor.
fn add_blob(layout: &Path, file: &Path, media_type: &str) -> hako_tests::Value {
    let digest = sha256(file);
    let size = fs::metadata(file).expect("stat blob").len();
    fs::rename(file, layout.join("blobs/sha256").join(&digest)).expect("move blob");
    json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": size})
}

/// An OCI image archive (`dir/image.tar`) of the busybox rootfs, named
/// [`CTR_IMAGE`] for containerd.
fn oci_archive(dir: &Path) -> PathBuf {
    let layout = dir.join("oci-layout");
    fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir layout");
    let layer = layer_tar(dir);
    let diff_id = format!("sha256:{}", sha256(&layer));
    let layer = add_blob(&layout, &layer, "application/vnd.oci.image.layer.v1.tar");
    let config_file = dir.join("config.json");
    let config = json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    fs::write(&config_file, config.to_string()).expect("write image config");
    let config = add_blob(
        &layout,
        &config_file,
        "application/vnd.oci.image.config.v1+json",
    );
    let manifest_file = dir.join("manifest.json");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    fs::write(&manifest_file, manifest.to_string()).expect("write manifest");
    let mut manifest = add_blob(
        &layout,
        &manifest_file,
        "application/vnd.oci.image.manifest.v1+json",
    );
    manifest["annotations"] = json!({"io.containerd.image.name": CTR_IMAGE});
    let index = json!({"schemaVersion": 2, "manifests": [manifest]});
    fs::write(layout.join("index.json"), index.to_string()).expect("write index");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let archive = dir.join("image.tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
        &String::new,
    );
    archive
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

/// podman with its own storage, run root and tmp dir, using hako-runtime.
struct Podman {
    dir: TempDir,
    runtime: Wrapper,
}

impl Podman {
    /// Private podman storage holding [`PODMAN_IMAGE`].
    fn new() -> Podman {
        require("podman", "podman");
        require("conmon", "conmon");
        let dir = TempDir::new("podman");
        let runtime = Wrapper::new(&dir.path);
        let podman = Podman { dir, runtime };
        let layer = layer_tar(&podman.dir.path);
        ok(
            podman.cmd(&["import"]).arg(&layer).arg(PODMAN_IMAGE),
            &|| podman.diagnostics(),
        );
        podman
    }

    /// `podman <isolating global flags> ARGS`.
    fn cmd(&self, args: &[&str]) -> Command {
        let d = &self.dir.path;
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("libpod-tmp"))
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--runtime",
            ])
            .arg(&self.runtime.path)
            .args(args);
        c
    }

    /// `podman run --rm ... IMAGE CMD...`.
    fn run_rm(&self, cmd: &[&str]) -> Output {
        output(
            self.cmd(&["run", "--rm"])
                .args(PODMAN_RUN_FLAGS)
                .arg(PODMAN_IMAGE)
                .args(cmd),
        )
    }

    fn diagnostics(&self) -> String {
        format!("runtime calls:\n{}", self.runtime.calls())
    }

    /// The container is gone: from podman, from the runtime's state root,
    /// and its conmon has exited.
    fn assert_no_leftovers(&self) {
        let listed = ok(&mut self.cmd(&["ps", "-a", "-q"]), &|| self.diagnostics());
        assert_eq!(
            listed.trim(),
            "",
            "podman still lists containers\n{}",
            self.diagnostics()
        );
        let (root, id) = self.runtime.created();
        assert!(
            !root.join(&id).exists(),
            "hako-runtime state {} is left behind\n{}",
            root.join(&id).display(),
            self.diagnostics()
        );
        if let Err(pids) = wait_no_process_with(&id) {
            panic!(
                "processes of container {id} are left: {pids:?}\n{}",
                self.diagnostics()
            );
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = try_output(
            &mut self.cmd(&["rm", "--all", "--force", "--time", "0"]),
            Duration::from_secs(30),
        );
        // The overlay driver bind-mounts its own directory.
        unmount_below(&self.dir.path);
    }
}

#[test]
fn podman_run_prints_output_and_returns_exit_status() {
    let podman = Podman::new();
    let out = podman.run_rm(&["sh", "-c", "echo hi from podman; exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}\n{}",
        text(&out.stderr),
        podman.diagnostics()
    );
    assert_eq!(
        text(&out.stdout),
        "hi from podman\n",
        "stderr: {}",
        text(&out.stderr)
    );
    podman.assert_no_leftovers();
}

#[test]
fn podman_run_exit_zero_with_stdout_and_stderr() {
    let podman = Podman::new();
    let out = podman.run_rm(&["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\n{}",
        text(&out.stderr),
        podman.diagnostics()
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).contains("err\n"),
        "stderr: {}",
        text(&out.stderr)
    );
    podman.assert_no_leftovers();
}

#[test]
fn podman_maps_a_missing_command_to_127() {
    // podman recognises "executable file not found" in the runtime's error
    // and exits 127, like a shell.
    let podman = Podman::new();
    let out = podman.run_rm(&["no-such-command"]);
    assert_eq!(
        out.status.code(),
        Some(127),
        "stderr: {}\n{}",
        text(&out.stderr),
        podman.diagnostics()
    );
    assert!(
        text(&out.stderr).contains("no-such-command"),
        "stderr: {}",
        text(&out.stderr)
    );
    podman.assert_no_leftovers();
}

// ---------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------

/// A containerd of our own: root, state and sockets in a temp dir, CRI off.
/// Dropping it kills what it left running, stops it and unmounts.
struct Containerd {
    dir: TempDir,
    daemon: Child,
    sock: PathBuf,
    runtime: Wrapper,
}

impl Containerd {
    /// Starts containerd, waits for its socket and imports [`CTR_IMAGE`].
    fn start() -> Containerd {
        require("containerd", "containerd");
        require("ctr", "containerd");
        require("containerd-shim-runc-v2", "containerd");
        let dir = TempDir::new("containerd");
        let d = dir.path.clone();
        let sock = d.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = sock.display(),
            opt = d.join("opt").display(),
        );
        fs::write(d.join("config.toml"), config).expect("write containerd config");
        let log = fs::File::create(d.join("containerd.log")).expect("create containerd log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let runtime = Wrapper::new(&d);
        let mut ctd = Containerd {
            dir,
            daemon,
            sock,
            runtime,
        };
        ctd.wait_ready();
        let archive = oci_archive(&ctd.dir.path);
        ok(ctd.ctr(&["images", "import"]).arg(&archive), &|| {
            ctd.diagnostics()
        });
        ctd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.daemon.try_wait() {
                panic!(
                    "containerd exited ({st}) while starting\n{}",
                    self.diagnostics()
                );
            }
            if self.sock.exists() {
                let probe = try_output(&mut self.ctr(&["version"]), Duration::from_secs(10));
                if probe.is_ok_and(|o| o.status.success()) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd never came up\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctr --address SOCK --namespace NS ARGS`.
    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.sock)
            .args(["--namespace", NS])
            .args(args);
        c
    }

    /// `ctr run --rm --runc-binary WRAPPER ... IMAGE ID CMD...`.
    fn run_rm(&self, id: &str, cmd: &[&str]) -> Output {
        let d = &self.dir.path;
        output(
            self.ctr(&["run", "--rm", "--runc-binary"])
                .arg(&self.runtime.path)
                .arg("--runc-root")
                .arg(d.join("runc-root"))
                .arg("--fifo-dir")
                .arg(d.join("fifo"))
                .args([CTR_IMAGE, id])
                .args(cmd),
        )
    }

    fn diagnostics(&self) -> String {
        let log = fs::read_to_string(self.dir.path.join("containerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "runtime calls:\n{}\ncontainerd log (tail):\n{}",
            self.runtime.calls(),
            tail.join("\n")
        )
    }

    /// Container `id` is gone: no container or task in containerd, no state
    /// in the runtime's root, no shim or container process left.
    fn assert_no_leftovers(&self, id: &str) {
        let containers = ok(&mut self.ctr(&["containers", "ls", "-q"]), &|| {
            self.diagnostics()
        });
        assert_eq!(
            containers.trim(),
            "",
            "containerd still lists containers\n{}",
            self.diagnostics()
        );
        let tasks = ok(&mut self.ctr(&["tasks", "ls", "-q"]), &|| {
            self.diagnostics()
        });
        assert_eq!(
            tasks.trim(),
            "",
            "containerd still lists tasks\n{}",
            self.diagnostics()
        );
        let (root, created) = self.runtime.created();
        assert_eq!(created, id);
        assert!(
            !root.join(id).exists(),
            "hako-runtime state {} is left behind\n{}",
            root.join(id).display(),
            self.diagnostics()
        );
        // The shim is started with `-address SOCK -id ID`.
        if let Err(pids) = wait_no_process_with(&self.sock.to_string_lossy()) {
            panic!("shim processes are left: {pids:?}\n{}", self.diagnostics());
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let short = Duration::from_secs(20);
        // Whatever a failing test left: kill and delete tasks and containers.
        if let Ok(out) = try_output(&mut self.ctr(&["tasks", "ls", "-q"]), short) {
            for id in text(&out.stdout).split_whitespace() {
                let _ = try_output(
                    &mut self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]),
                    short,
                );
                let _ = try_output(&mut self.ctr(&["tasks", "delete", "--force", id]), short);
            }
        }
        if let Ok(out) = try_output(&mut self.ctr(&["containers", "ls", "-q"]), short) {
            for id in text(&out.stdout).split_whitespace() {
                let _ = try_output(&mut self.ctr(&["containers", "delete", id]), short);
            }
        }
        // Shims of this containerd (they outlive it by design).
        for pid in pids_with_cmdline(&self.sock.to_string_lossy()) {
            if pid != self.daemon.id() as i32 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        let daemon = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        let _ = nix::sys::signal::kill(daemon, nix::sys::signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        unmount_below(&self.dir.path);
    }
}

#[test]
fn ctr_run_prints_output_and_returns_exit_status() {
    let ctd = Containerd::start();
    let id = unique("ctr-exit");
    let out = ctd.run_rm(&id, &["sh", "-c", "echo hi; exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}\n{}",
        text(&out.stderr),
        ctd.diagnostics()
    );
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    ctd.assert_no_leftovers(&id);
}

#[test]
fn ctr_run_exit_zero_with_stdout_and_stderr() {
    let ctd = Containerd::start();
    let id = unique("ctr-ok");
    let out = ctd.run_rm(&id, &["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\n{}",
        text(&out.stderr),
        ctd.diagnostics()
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).contains("err\n"),
        "stderr: {}",
        text(&out.stderr)
    );
    ctd.assert_no_leftovers(&id);
}

#[test]
fn ctr_reports_a_missing_command() {
    // The shim reads the runtime's --log (JSON) and passes its last error on.
    let ctd = Containerd::start();
    let id = unique("ctr-missing");
    let out = ctd.run_rm(&id, &["no-such-command"]);
    assert!(
        !out.status.success(),
        "ctr run of a missing command succeeded\n{}",
        ctd.diagnostics()
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("no-such-command") && err.contains("executable file not found"),
        "ctr did not pass the runtime's error on: {err}\n{}",
        ctd.diagnostics()
    );
    // `ctr run --rm` deletes the container when its task cannot be created.
    ctd.assert_no_leftovers(&id);
}
