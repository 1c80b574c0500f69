//! Which cgroup hierarchies are mounted where, read from
//! `/proc/self/mountinfo`, and which cgroup the current process is in.

use std::path::{Path, PathBuf};

use crate::error::{CgroupError, Result};

/// How the host organises its cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only cgroup v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (which may hold some controllers).
    Hybrid,
    /// Only the cgroup2 unified hierarchy.
    Unified,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount: PathBuf,
    /// The cgroup the mount shows at its root (`/` unless bind-mounted).
    pub root: String,
    /// v1 controllers (`memory`, `cpu`, `name=systemd`, …); empty for cgroup2.
    pub controllers: Vec<String>,
    /// True for the cgroup2 hierarchy.
    pub unified: bool,
}

impl Hierarchy {
    /// True when this v1 hierarchy carries `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// All hierarchies of the host.
#[derive(Debug, Clone)]
pub struct Layout {
    pub mode: Mode,
    pub hierarchies: Vec<Hierarchy>,
}

impl Layout {
    /// Reads the layout from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|source| CgroupError::MountInfo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_mountinfo(&text)
    }

    /// Builds the layout from the text of a mountinfo file.
    pub fn from_mountinfo(text: &str) -> Result<Layout> {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for line in text.lines() {
            let Some(h) = parse_mountinfo_line(line) else {
                continue;
            };
            // The same hierarchy can be mounted twice (bind mounts); keep the first.
            if hierarchies
                .iter()
                .any(|o| o.unified == h.unified && o.controllers == h.controllers)
            {
                continue;
            }
            hierarchies.push(h);
        }
        let has_v1 = hierarchies.iter().any(|h| !h.unified);
        let has_v2 = hierarchies.iter().any(|h| h.unified);
        let mode = match (has_v1, has_v2) {
            (true, true) => Mode::Hybrid,
            (true, false) => Mode::Legacy,
            (false, true) => Mode::Unified,
            (false, false) => return Err(CgroupError::NoHierarchy),
        };
        Ok(Layout { mode, hierarchies })
    }

    /// The cgroup2 hierarchy, if mounted.
    pub fn unified(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.unified)
    }

    /// The v1 hierarchy carrying `controller`, if mounted.
    pub fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| !h.unified && h.has(controller))
    }

    /// Controllers enabled at the root of the cgroup2 hierarchy.
    pub fn unified_controllers(&self) -> Vec<String> {
        self.unified()
            .and_then(|h| std::fs::read_to_string(h.mount.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// Parses one mountinfo line, returning a hierarchy for cgroup mounts.
fn parse_mountinfo_line(line: &str) -> Option<Hierarchy> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let mut post = post.split(' ');
    let fstype = post.next()?;
    let _source = post.next()?;
    let super_opts = post.next().unwrap_or("");
    let root = unescape(pre.get(3)?);
    let mount = PathBuf::from(unescape(pre.get(4)?));
    match fstype {
        "cgroup2" => Some(Hierarchy {
            mount,
            root,
            controllers: Vec::new(),
            unified: true,
        }),
        "cgroup" => {
            let mut controllers: Vec<String> = super_opts
                .split(',')
                .filter(|o| is_v1_controller(o))
                .map(str::to_string)
                .collect();
            if controllers.is_empty() {
                return None;
            }
            controllers.sort();
            Some(Hierarchy {
                mount,
                root,
                controllers,
                unified: false,
            })
        }
        _ => None,
    }
}

/// Mount options of a v1 cgroup mount that name controllers (rather than
/// generic options like `rw` or `relatime`).
fn is_v1_controller(opt: &str) -> bool {
    const KNOWN: &[&str] = &[
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "net_cls",
        "net_prio",
        "perf_event",
        "hugetlb",
        "rdma",
        "misc",
    ];
    opt.starts_with("name=") || KNOWN.contains(&opt)
}

/// Decodes the octal escapes (`\040`) mountinfo uses for spaces and such.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The current process's cgroup in each hierarchy, from `/proc/self/cgroup`:
/// pairs of (controllers of the line, path). cgroup2's line has no controllers.
pub fn own_cgroups() -> Vec<(Vec<String>, String)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    parse_proc_cgroup(&text)
}

/// Parses the text of a `/proc/PID/cgroup` file.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let ctrls = parts.next()?;
            let path = parts.next()?;
            let mut controllers: Vec<String> = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            controllers.sort();
            Some((controllers, path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/net\\040cls rw,relatime - cgroup cgroup rw,net_cls,net_prio
";

    #[test]
    fn detects_hybrid() {
        let l = Layout::from_mountinfo(HYBRID).expect("layout");
        assert_eq!(l.mode, Mode::Hybrid);
        assert_eq!(l.hierarchies.len(), 5);
        assert_eq!(
            l.v1("memory").map(|h| h.mount.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            l.v1("net_prio").map(|h| h.mount.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/net cls"))
        );
        assert!(l.v1("name=systemd").is_some());
        assert_eq!(
            l.unified().map(|h| h.mount.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn detects_unified_and_none() {
        let l = Layout::from_mountinfo("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
            .expect("layout");
        assert_eq!(l.mode, Mode::Unified);
        assert!(matches!(
            Layout::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            Err(CgroupError::NoHierarchy)
        ));
    }

    #[test]
    fn parses_proc_cgroup() {
        let v = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x\n");
        assert_eq!(v[0], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(v[1].0, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(v[2], (vec![], "/x".to_string()));
    }
}
