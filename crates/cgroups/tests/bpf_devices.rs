//! The eBPF device filter on a real cgroup2 directory (runs as root).
//!
//! A device program attached to a cgroup2 directory is enforced for the
//! processes in it on hybrid hosts too, so this test works wherever a
//! cgroup2 hierarchy is mounted (`/sys/fs/cgroup/unified` or
//! `/sys/fs/cgroup`): it makes its own directory there, attaches rules,
//! forks a child that joins the directory and tries device accesses, and
//! reads the outcome from the child's exit status.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hako_cgroups::devices::{self, DeviceRule};
use hako_cgroups::{cgroup::CgroupDir, Cgroup, Layout, Mode};

/// A cgroup2 directory of this test, removed on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The child has been reaped; the kernel may need a moment to let
        // go of the cgroup.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

fn cgroup2_mount() -> Option<PathBuf> {
    let layout = Layout::detect().ok()?;
    layout
        .hierarchies
        .into_iter()
        .find(|h| h.unified)
        .map(|h| h.mount)
}

/// One device access the child tries.
enum Probe {
    /// `open(path, flags)`.
    Open(&'static str, libc::c_int),
    /// `mknod` of a char device node `major:minor` in a scratch directory.
    Mknod(u32, u32),
}

/// Runs `probes` in a child placed in the cgroup `dir`: "ok" or "EPERM"
/// for each (any other failure fails the test).
fn probe_in(dir: &Path, probes: &[Probe]) -> Vec<&'static str> {
    assert!(probes.len() <= 6, "the exit status holds six results");
    let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in path");
    let procs = cstr(&dir.join("cgroup.procs"));
    let scratch = std::env::temp_dir().join(format!("hako-devtest-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let prepared: Vec<(CString, Option<libc::dev_t>, libc::c_int)> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Probe::Open(path, flags) => (cstr(Path::new(path)), None, *flags),
            Probe::Mknod(major, minor) => (
                cstr(&scratch.join(format!("node{i}"))),
                Some(libc::makedev(*major, *minor)),
                0,
            ),
        })
        .collect();

    // SAFETY: the child only makes async-signal-safe calls (open, write,
    // mknod, unlink, close, _exit) on memory prepared before the fork, so
    // the other threads of the test harness cannot leave it stuck.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: see above; every pointer is a NUL-terminated string or a
        // buffer that outlives the calls.
        unsafe {
            let mut digits = [0u8; 20];
            let mut n = libc::getpid();
            let mut at = digits.len();
            while {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                n > 0
            } {}
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let len = digits.len() - at;
            if fd < 0 || libc::write(fd, digits[at..].as_ptr().cast(), len) != len as isize {
                libc::_exit(120);
            }
            libc::close(fd);
            let mut passed = 0;
            for (i, (path, dev, flags)) in prepared.iter().enumerate() {
                let ok = match dev {
                    Some(dev) => {
                        let r = libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, *dev);
                        if r == 0 {
                            libc::unlink(path.as_ptr());
                        }
                        r == 0
                    }
                    None => {
                        let fd = libc::open(path.as_ptr(), *flags | libc::O_CLOEXEC);
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        fd >= 0
                    }
                };
                if ok {
                    passed |= 1 << i;
                } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                    libc::_exit(100 + i as i32);
                }
            }
            libc::_exit(passed);
        }
    }
    let mut status = 0;
    // SAFETY: `pid` is our child and `status` a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    assert_ne!(code, 120, "the child could not join {}", dir.display());
    assert!(
        code < 100,
        "probe {} failed with an error other than EPERM",
        code - 100
    );
    (0..probes.len())
        .map(|i| if code & (1 << i) != 0 { "ok" } else { "EPERM" })
        .collect()
}

fn rules(text: &[&str]) -> Vec<DeviceRule> {
    text.iter()
        .map(|t| {
            let (verb, rule) = t.split_once(' ').expect("'allow RULE' or 'deny RULE'");
            DeviceRule::parse_v1(verb == "allow", rule).expect("valid rule")
        })
        .collect()
}

#[test]
fn device_filter_is_enforced_and_replaced() {
    let Some(mount) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup2 hierarchy is mounted");
        return;
    };
    let dir = mount.join(format!("hako-devtest-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .unwrap_or_else(|e| panic!("mkdir {} (needs root): {e}", dir.display()));
    let cg_dir = TestCgroup(dir.clone());

    // Without a filter the child may use /dev/zero: the denials below are
    // the program's.
    let got = probe_in(&dir, &[Probe::Open("/dev/zero", libc::O_RDONLY)]);
    assert_eq!(got, ["ok"]);

    // Everything except /dev/zero, and /dev/full read-only.
    let first = rules(&["allow a *:* rwm", "deny c 1:5 rwm", "deny c 1:7 w"]);
    devices::attach_bpf(&dir, &first).expect("attach the first rules");
    let attached = devices::attached_programs(&dir).expect("query");
    assert_eq!(attached.len(), 1, "{attached:?}");
    let got = probe_in(
        &dir,
        &[
            Probe::Open("/dev/null", libc::O_RDWR),
            Probe::Open("/dev/zero", libc::O_RDONLY),
            Probe::Open("/dev/full", libc::O_RDONLY),
            Probe::Open("/dev/full", libc::O_WRONLY),
            Probe::Open("/dev/urandom", libc::O_RDONLY),
            Probe::Mknod(1, 5),
        ],
    );
    assert_eq!(got, ["ok", "EPERM", "ok", "EPERM", "ok", "EPERM"]);

    // Replace them through `apply` on a cgroup whose only directory is the
    // cgroup2 one (as on a pure cgroup2 host): reading /dev/zero and
    // making /dev/null nodes, nothing else.
    let cg = Cgroup {
        mode: Mode::Unified,
        dirs: vec![CgroupDir {
            path: dir.clone(),
            controllers: Vec::new(),
            unified: true,
        }],
        created_parents: Vec::new(),
        systemd_unit: None,
    };
    let second = rules(&["allow c 1:5 r", "allow c 1:3 m"]);
    let warnings = devices::apply(&cg, &second).expect("replace the rules");
    assert!(warnings.is_empty(), "{warnings:?}");
    let now = devices::attached_programs(&dir).expect("query");
    assert_eq!(now.len(), 1, "the old program must be detached: {now:?}");
    assert_ne!(now, attached, "a new program is attached");
    let got = probe_in(
        &dir,
        &[
            Probe::Open("/dev/null", libc::O_RDWR),
            Probe::Open("/dev/zero", libc::O_RDONLY),
            Probe::Open("/dev/zero", libc::O_WRONLY),
            Probe::Open("/dev/full", libc::O_RDONLY),
            Probe::Mknod(1, 3),
            Probe::Mknod(1, 5),
        ],
    );
    assert_eq!(got, ["EPERM", "ok", "EPERM", "EPERM", "ok", "EPERM"]);

    // An empty list denies everything.
    devices::attach_bpf(&dir, &[]).expect("attach the empty list");
    assert_eq!(devices::attached_programs(&dir).expect("query").len(), 1);
    let got = probe_in(&dir, &[Probe::Open("/dev/null", libc::O_RDONLY)]);
    assert_eq!(got, ["EPERM"]);
    drop(cg_dir);
}
