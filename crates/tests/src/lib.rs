//! Shared fixtures for hako's integration tests: a busybox rootfs built
//! from Debian's busybox-static, bundles with editable config.json, a
//! per-test state root, and helpers to run the `hako-runtime` binary.
//!
//! Every test gets its own temporary directory, state root and container
//! IDs, so tests run in parallel. Nothing here mocks the kernel: containers
//! are real.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub use serde_json::{json, Value};

/// The directory with the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of the hako-runtime binary (override with HAKO_RUNTIME).
pub fn runtime_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HAKO_RUNTIME") {
        return PathBuf::from(p);
    }
    let p = bin_dir().join("hako-runtime");
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace)",
        p.display()
    );
    p
}

/// Path of the hako-monitor binary (override with HAKO_MONITOR).
pub fn monitor_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HAKO_MONITOR") {
        return PathBuf::from(p);
    }
    let p = bin_dir().join("hako-monitor");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p hako-monitor)",
        p.display()
    );
    p
}

/// A directory removed on drop (tests unmount what they mounted below it).
pub struct TempDir {
    pub path: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique in this machine's current test runs.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::var("HAKO_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir());
        let path = base.join(unique(&format!("hako-test-{prefix}")));
        std::fs::create_dir_all(&path).expect("create temp dir");
        // Bundles must be traversable by mapped users in user-namespace tests.
        set_mode(&path, 0o755);
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A pristine busybox rootfs, built once per test process.
pub fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        // One copy beside the binaries, shared by every test process: built
        // under a private name, then renamed into place (first one wins).
        let dir = bin_dir().join("hako-test-rootfs");
        if !dir.join("bin/busybox").exists() {
            let tmp = bin_dir().join(format!("hako-test-rootfs.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            build_rootfs(&tmp);
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        dir
    })
}

/// Builds a minimal rootfs with busybox-static and all its applets.
pub fn build_rootfs(dir: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox is missing: install Debian's busybox-static");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    set_mode(&dir.join("tmp"), 0o1777);
    std::fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )
    .expect("group");
}

/// Copies a rootfs (symlinks kept) so a test may change it freely.
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp -a");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// A bundle: a directory with `rootfs/` and an editable `config.json`.
pub struct Bundle {
    pub dir: TempDir,
    pub config: Value,
}

impl Bundle {
    /// A bundle with the runtime's default config (`hako-runtime spec`),
    /// no terminal, running `args`.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = TempDir::new("bundle");
        copy_tree(busybox_rootfs(), &dir.path.join("rootfs"));
        let out = Command::new(runtime_bin())
            .args(["spec", "--bundle"])
            .arg(&dir.path)
            .output()
            .expect("run hako-runtime spec");
        assert!(
            out.status.success(),
            "spec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path.join("config.json")).expect("read config");
        let mut config: Value = serde_json::from_str(&text).expect("parse config");
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        let mut b = Bundle { dir, config };
        b.save();
        b
    }

    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path.join("rootfs")
    }

    /// Writes `config` to config.json.
    pub fn save(&mut self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialise");
        std::fs::write(self.dir.path.join("config.json"), text).expect("write config");
    }

    /// Edits the config and saves it.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) {
        f(&mut self.config);
        self.save();
    }
}

/// A state root for one test, with helpers to call the runtime.
pub struct Runtime {
    pub root: TempDir,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        Runtime {
            root: TempDir::new("root"),
        }
    }

    /// A command for `hako-runtime --root ROOT ARGS`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(runtime_bin());
        c.arg("--root").arg(&self.root.path).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `hako-runtime ARGS` and returns its output. stdout and stderr
    /// go through files, not pipes: a created or detached container
    /// inherits them and keeps them open long after the runtime exits.
    pub fn run(&self, args: &[&str]) -> Output {
        output_via_files(self.cmd(args))
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hako-runtime {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure, returning stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "hako-runtime {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `run --bundle B ID`, returning (exit code, stdout, stderr).
    pub fn run_bundle(&self, bundle: &Bundle, id: &str) -> (i32, String, String) {
        let out = self.run(&["run", "--bundle", &bundle.path().to_string_lossy(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `state ID` parsed.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }

    /// The `status` field of `state ID`.
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_string()
    }

    /// Polls `state ID` until it reports `want` (up to 10 s).
    pub fn wait_status(&self, id: &str, want: &str) {
        for _ in 0..1000 {
            let out = self.run(&["state", id]);
            let status = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_string));
            if status.as_deref() == Some(want) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "container {id} never reached status {want} (is {})",
            self.status(id)
        );
    }

    /// True when the state directory of `id` exists.
    pub fn has_state(&self, id: &str) -> bool {
        self.root.path.join(id).exists()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Best effort: remove whatever a failing test left behind.
        if let Ok(entries) = std::fs::read_dir(&self.root.path) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["delete", "--force", &id]);
            }
        }
    }
}

/// Runs `cmd` to completion with stdout and stderr captured in temporary
/// files (see [`Runtime::run`]).
pub fn output_via_files(mut cmd: Command) -> Output {
    let dir = TempDir::new("out");
    let out_path = dir.path.join("stdout");
    let err_path = dir.path.join("stderr");
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    let status = cmd
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .status()
        .expect("spawn command");
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

/// The cgroup directories a container id would have under the runtime's
/// own cgroup (the default, relative cgroupsPath).
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // On cgroup2-only hosts the runtime puts relative paths next to its own
    // cgroup (which holds it), not inside.
    let unified_only = own.lines().count() == 1 && own.starts_with("0::");
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = post.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let mount = pre.split(' ').nth(4).unwrap_or("");
        let opts = post.split(' ').nth(2).unwrap_or("");
        let own_path = own
            .lines()
            .find(|l| {
                let ctrls = l.split(':').nth(1).unwrap_or("");
                if fstype == "cgroup2" {
                    ctrls.is_empty()
                } else {
                    !ctrls.is_empty() && ctrls.split(',').all(|c| opts.split(',').any(|o| o == c))
                }
            })
            .and_then(|l| l.splitn(3, ':').nth(2))
            .unwrap_or("/");
        let base = if unified_only && own_path != "/" {
            Path::new(own_path).parent().unwrap_or(Path::new("/"))
        } else {
            Path::new(own_path)
        };
        out.push(
            Path::new(mount)
                .join(base.strip_prefix("/").unwrap_or(base))
                .join(name),
        );
    }
    out
}

/// Number of lines in /proc/self/mountinfo (to spot leaked mounts).
pub fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Receives one message on a unix socket and the fds sent along with it
/// (SCM_RIGHTS, close-on-exec): what a console socket or a seccomp agent
/// gets from the runtime. Panics on a socket error (tests only).
pub fn recv_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    max_len: usize,
) -> (Vec<u8>, Vec<std::os::fd::OwnedFd>) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut buf = vec![0u8; max_len];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    let n = msg.bytes;
    let mut fds = Vec::new();
    for c in msg.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: the kernel installed these fds for us; we own them.
            fds.extend(received.iter().map(|&f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    buf.truncate(n);
    (buf, fds)
}
