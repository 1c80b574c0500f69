//! A container's cgroup: one directory per mounted hierarchy.

use std::path::{Path, PathBuf};

use crate::error::{CgroupError, Result};
use crate::fs::{join_under, read_file, read_pids, write_file};
use crate::layout::{own_cgroups, Hierarchy, Layout, Mode};
use crate::systemd::{self, UnitLimits, UnitPath};

/// Where in the hierarchies a container's cgroup lives, resolved from
/// `linux.cgroupsPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPath {
    /// An absolute path, the same in every hierarchy.
    Absolute(String),
    /// Relative to the cgroup the runtime itself is in (per hierarchy).
    Relative(String),
}

impl CgroupPath {
    /// Resolves `linux.cgroupsPath` (absent: the container ID, relative).
    pub fn from_config(path: Option<&Path>, id: &str) -> Result<CgroupPath> {
        let raw = match path {
            None => return Ok(CgroupPath::Relative(id.to_string())),
            Some(p) => p.to_string_lossy().into_owned(),
        };
        if raw.is_empty() {
            return Ok(CgroupPath::Relative(id.to_string()));
        }
        if raw.split('/').any(|c| c == "..") {
            return Err(CgroupError::InvalidPath {
                path: raw,
                reason: "must not contain '..'",
            });
        }
        if !raw.starts_with('/') && raw.contains(':') {
            return Err(CgroupError::InvalidPath {
                path: raw,
                reason: "looks like a systemd slice:prefix:name path, which needs --systemd-cgroup",
            });
        }
        let cleaned: Vec<&str> = raw
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if cleaned.is_empty() {
            return Err(CgroupError::InvalidPath {
                path: raw,
                reason: "must name a cgroup below the root",
            });
        }
        let joined = cleaned.join("/");
        if raw.starts_with('/') {
            Ok(CgroupPath::Absolute(format!("/{joined}")))
        } else {
            Ok(CgroupPath::Relative(joined))
        }
    }
}

/// One directory of a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupDir {
    pub path: PathBuf,
    /// v1 controllers of the hierarchy; empty for cgroup2.
    pub controllers: Vec<String>,
    pub unified: bool,
}

/// A container's cgroup across all hierarchies of the host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cgroup {
    pub mode: Mode,
    pub dirs: Vec<CgroupDir>,
    /// Parent directories this cgroup's creation made (for `/a/b/c`: `/a`
    /// and `/a/b` when they were new), removed with it when empty.
    #[serde(default)]
    pub created_parents: Vec<PathBuf>,
    /// The systemd unit that owns this cgroup (`--systemd-cgroup`), stopped
    /// by [`Cgroup::destroy`]. Absent from state files that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
}

impl Cgroup {
    /// No cgroup at all: what a rootless container gets when the user has
    /// no delegated, writable cgroup. Placing processes and removing it do
    /// nothing; limits, pause and statistics are unavailable.
    pub fn none(mode: Mode) -> Cgroup {
        Cgroup {
            mode,
            dirs: Vec::new(),
            created_parents: Vec::new(),
            systemd_unit: None,
        }
    }

    /// True for [`Cgroup::none`].
    pub fn is_none(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Computes the directories for `path` without creating anything.
    pub fn locate(layout: &Layout, path: &CgroupPath) -> Cgroup {
        let mut own = match path {
            CgroupPath::Relative(_) => own_cgroups(),
            CgroupPath::Absolute(_) => Vec::new(),
        };
        // On cgroup2-only hosts our own cgroup holds us, so under the "no
        // internal processes" rule it cannot have children with controllers
        // (a systemd session scope or service, say): relative paths go next
        // to it instead, as runc does for scopes.
        if layout.mode == Mode::Unified {
            for (ctrls, p) in own.iter_mut() {
                if ctrls.is_empty() && p != "/" {
                    *p = Path::new(p.as_str())
                        .parent()
                        .map(|d| d.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "/".into());
                }
            }
        }
        let dirs = layout
            .hierarchies
            .iter()
            .map(|h| CgroupDir {
                path: dir_in_hierarchy(h, path, &own),
                controllers: h.controllers.clone(),
                unified: h.unified,
            })
            .collect();
        Cgroup {
            mode: layout.mode,
            dirs,
            created_parents: Vec::new(),
            systemd_unit: None,
        }
    }

    /// Where the cgroup of a systemd unit will be, computed before the
    /// unit exists (the container's init is told before it is made).
    pub fn locate_systemd(layout: &Layout, unit: &UnitPath) -> Cgroup {
        let mut cg = Self::locate(layout, &CgroupPath::Absolute(unit.cgroup.clone()));
        cg.systemd_unit = Some(unit.unit.clone());
        cg
    }

    /// Has systemd start `unit` as a transient unit holding `pid` and waits
    /// until `pid` is in its cgroup. Directories of v1 hierarchies systemd
    /// does not manage are made here, as for cgroupfs. On failure the unit
    /// is stopped again.
    pub fn create_systemd(
        layout: &Layout,
        unit: &UnitPath,
        pid: i32,
        description: &str,
        limits: UnitLimits,
    ) -> Result<Cgroup> {
        let mut cg = Self::locate_systemd(layout, unit);
        systemd::start_unit(unit, pid, description, limits)?;
        if let Err(e) = cg.join_systemd_unit(layout, unit, pid) {
            if let Err(cleanup) = cg.destroy() {
                return Err(CgroupError::SystemdCleanup {
                    unit: unit.unit.clone(),
                    error: Box::new(e),
                    cleanup: Box::new(cleanup),
                });
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// Waits for systemd's job to take effect, then places `pid` in the
    /// directories systemd left to us.
    fn join_systemd_unit(&mut self, layout: &Layout, unit: &UnitPath, pid: i32) -> Result<()> {
        let timeout = |what: String| CgroupError::SystemdTimeout {
            unit: unit.unit.clone(),
            what,
        };
        if unit.is_slice() {
            // A slice holds no process of its own: we move pid in below.
            let dir = self
                .systemd_dir()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            if !systemd::wait_for(|| dir.is_dir()) {
                return Err(timeout(format!(
                    "its cgroup {} did not appear",
                    dir.display()
                )));
            }
        } else if !systemd::wait_for(|| systemd::pid_in_cgroup(pid, &unit.cgroup)) {
            return Err(timeout(format!(
                "process {pid} was not moved into cgroup {}",
                unit.cgroup
            )));
        }
        let mut created = Vec::new();
        let mut result = Ok(());
        for (dir, h) in self.dirs.iter().zip(&layout.hierarchies) {
            if !h.unified && !h.has("name=systemd") {
                result = create_dir_chain(h, &dir.path, &mut created, false);
                if result.is_err() {
                    break;
                }
            }
        }
        let leaves: Vec<&PathBuf> = self.dirs.iter().map(|d| &d.path).collect();
        self.created_parents = created
            .iter()
            .filter(|p| !leaves.contains(p))
            .cloned()
            .collect();
        result?;
        self.add_process(pid)
    }

    /// The directory systemd itself manages: cgroup2's, or the v1
    /// `name=systemd` hierarchy's on legacy hosts.
    fn systemd_dir(&self) -> Option<&Path> {
        self.unified_dir().or_else(|| self.dir_for("name=systemd"))
    }

    /// Creates every directory. On failure, whatever this call created is
    /// removed again.
    /// A leaf that already exists and holds processes belongs to someone
    /// else: it is refused rather than adopted (and later killed).
    pub fn create(layout: &Layout, path: &CgroupPath) -> Result<Cgroup> {
        let mut cg = Self::locate(layout, path);
        let mut created: Vec<PathBuf> = Vec::new();
        let undo = |created: &[PathBuf]| {
            for p in created.iter().rev() {
                let _ = std::fs::remove_dir(p);
            }
        };
        // On a cgroup2-only host every controller is delegated down to the
        // container. On a hybrid one the controllers are v1's and whatever
        // sits on the cgroup2 mount (hugetlb on some hosts) is enabled only
        // when a limit needs it (see `enable_on_unified`): turning it on
        // along the path from the root changes the host for every other
        // tool (crun refuses to run while the hybrid cgroup2 root delegates
        // any controller).
        let delegate = layout.mode == Mode::Unified;
        for (dir, h) in cg.dirs.iter().zip(&layout.hierarchies) {
            if let Err(e) = create_dir_chain(h, &dir.path, &mut created, delegate) {
                undo(&created);
                return Err(e);
            }
            if !created.contains(&dir.path) && !read_pids(&dir.path)?.is_empty() {
                undo(&created);
                return Err(CgroupError::InvalidPath {
                    path: dir.path.display().to_string(),
                    reason: "this cgroup already exists and has processes in it",
                });
            }
        }
        let leaves: Vec<&PathBuf> = cg.dirs.iter().map(|d| &d.path).collect();
        cg.created_parents = created
            .iter()
            .filter(|p| !leaves.contains(p))
            .cloned()
            .collect();
        Ok(cg)
    }

    /// The directory of the v1 hierarchy with `controller`, or the cgroup2
    /// directory when `controller` lives there.
    pub fn dir_for(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| !d.unified && d.controllers.iter().any(|c| c == controller))
            .map(|d| d.path.as_path())
    }

    /// The cgroup2 directory, if the host has the unified hierarchy.
    /// Makes `controller` of the cgroup2 hierarchy available in this
    /// cgroup's directory there, enabling it in the `cgroup.subtree_control`
    /// of every ancestor up to the mount's root: what a hybrid host needs
    /// for a limit of a controller that lives on cgroup2 (on a
    /// cgroup2-only host `create` delegated everything already). True
    /// when the directory has it afterwards.
    pub fn enable_on_unified(&self, controller: &str) -> bool {
        let Some(leaf) = self.unified_dir() else {
            return false;
        };
        let has = |d: &Path| {
            read_file(d, "cgroup.controllers")
                .is_ok_and(|c| c.split_whitespace().any(|x| x == controller))
        };
        if has(leaf) {
            return true;
        }
        let mut chain: Vec<&Path> = leaf
            .ancestors()
            .skip(1)
            .take_while(|a| a.join("cgroup.controllers").exists())
            .collect();
        chain.reverse();
        for dir in chain {
            let enabled = read_file(dir, "cgroup.subtree_control").unwrap_or_default();
            if !enabled.split_whitespace().any(|e| e == controller) {
                let _ = write_file(dir, "cgroup.subtree_control", &format!("+{controller}"));
            }
        }
        has(leaf)
    }

    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.unified)
            .map(|d| d.path.as_path())
    }

    /// Places `pid` in every directory.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        let value = pid.to_string();
        for d in &self.dirs {
            write_file(&d.path, "cgroup.procs", &value)?;
        }
        Ok(())
    }

    /// The processes in the cgroup, including its sub-cgroups.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let preferred = ["pids", "freezer", "memory", "cpu", "devices"];
        let dir = match self.mode {
            Mode::Unified => self.unified_dir(),
            _ => preferred
                .iter()
                .find_map(|c| self.dir_for(c))
                .or_else(|| self.dirs.first().map(|d| d.path.as_path())),
        };
        let mut pids = Vec::new();
        if let Some(d) = dir {
            for sub in subtree(d) {
                match read_pids(&sub) {
                    Ok(p) => pids.extend(p),
                    // A sub-cgroup can vanish while we walk.
                    Err(_) if sub != d => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(pids)
    }

    /// Freezes (true) or thaws (false) every process of the cgroup.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        if let Some(d) = self.dir_for("freezer") {
            let state = if frozen { "FROZEN" } else { "THAWED" };
            write_file(d, "freezer.state", state)?;
            // The freezer moves through FREEZING; wait until it settles.
            for _ in 0..1000 {
                if read_file(d, "freezer.state")?.trim() == state {
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            return Ok(());
        }
        if let Some(d) = self.unified_dir() {
            return write_file(d, "cgroup.freeze", if frozen { "1" } else { "0" });
        }
        Err(CgroupError::Unsupported {
            field: "freezer",
            reason: "no freezer controller is mounted".into(),
        })
    }

    /// Removes every directory that still exists. Retries briefly while the
    /// kernel finishes releasing exited processes.
    /// A systemd unit is stopped first; systemd removes its cgroup.
    pub fn destroy(&self) -> Result<()> {
        if let Some(unit) = &self.systemd_unit {
            systemd::stop_unit(unit)?;
            if let Some(dir) = self.systemd_dir() {
                // What is left after the wait is removed below (or reported).
                systemd::wait_for(|| !dir.exists());
            }
        }
        let mut first_err = None;
        for d in self.dirs.iter().rev() {
            // Sub-cgroups made inside the container go first, deepest first.
            for sub in subtree(&d.path).into_iter().rev() {
                if let Err(e) = remove_dir_retrying(&sub) {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Parents this container created, if nothing else uses them now.
        for p in self.created_parents.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// `dir` and every cgroup below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn dir_in_hierarchy(h: &Hierarchy, path: &CgroupPath, own: &[(Vec<String>, String)]) -> PathBuf {
    let full = match path {
        CgroupPath::Absolute(p) => p.clone(),
        CgroupPath::Relative(rel) => {
            let base = own
                .iter()
                .find(|(ctrls, _)| {
                    if h.unified {
                        ctrls.is_empty()
                    } else {
                        *ctrls == h.controllers
                    }
                })
                .map(|(_, p)| p.as_str())
                .unwrap_or("/");
            format!("{}/{}", base.trim_end_matches('/'), rel)
        }
    };
    // A hierarchy mounted with a non-root cgroup shows that cgroup at its
    // mount point: strip it from the path.
    let inside = match full.strip_prefix(h.root.trim_end_matches('/')) {
        Some(rest) if h.root != "/" && (rest.is_empty() || rest.starts_with('/')) => {
            rest.to_string()
        }
        _ => full,
    };
    join_under(&h.mount, &inside)
}

/// Starts, in a background thread, the wait that the first cgroup v1
/// migration of a container's init would otherwise pay in full.
///
/// Moving a process between cgroups takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, and the first writer after a
/// quiet spell waits for an RCU grace period (6-25 ms on these machines)
/// before it gets it; writers within about one grace period after that
/// get it at once. A migration of ourselves into the cgroup we are
/// already in changes nothing but starts that wait now, so a runtime's
/// `create` that moves its init a few milliseconds later finds the lock
/// ready (or shares the wait already under way). Callers call this as
/// they begin preparing a container; cgroup2-only hosts are left alone
/// (a self-migration there may be refused, and their migrations can
/// avoid the lock with `CLONE_INTO_CGROUP`). Every failure is ignored:
/// this only saves time.
pub fn start_migration_grace_period() {
    let _ = std::thread::Builder::new()
        .name("cgroup-warm".into())
        .spawn(|| {
            let Ok(layout) = Layout::detect() else {
                return;
            };
            if layout.mode == Mode::Unified {
                return;
            }
            let own = own_cgroups();
            let Some((h, path)) = layout.hierarchies.iter().find_map(|h| {
                if h.unified || h.controllers.iter().all(|c| c.starts_with("name=")) {
                    return None;
                }
                let (_, p) = own.iter().find(|(ctrls, _)| *ctrls == h.controllers)?;
                Some((h, p.clone()))
            }) else {
                return;
            };
            let dir = dir_in_hierarchy(h, &CgroupPath::Absolute(path), &own);
            let _ = write_file(&dir, "cgroup.procs", &std::process::id().to_string());
        });
}

/// Creates `dir` and any missing parents, recording what it created. v1
/// cpuset directories start empty and must inherit cpus and mems before a
/// process can join; cgroup2 parents delegate their controllers when
/// `delegate`.
fn create_dir_chain(
    h: &Hierarchy,
    dir: &Path,
    created: &mut Vec<PathBuf>,
    delegate: bool,
) -> Result<()> {
    let mut chain: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| a.starts_with(&h.mount) && *a != h.mount)
        .collect();
    chain.reverse();
    for p in chain {
        if h.unified && delegate {
            if let Some(parent) = p.parent() {
                enable_subtree_controllers(parent);
            }
        }
        match std::fs::create_dir(p) {
            Ok(()) => created.push(p.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Create {
                    path: p.to_path_buf(),
                    source,
                })
            }
        }
        // Also when the directory was there: another process may have
        // made it a moment ago and not yet filled it in, and a child
        // copied from an empty parent refuses every process (ENOSPC).
        if h.has("cpuset") {
            inherit_cpuset(p)?;
        }
    }
    Ok(())
}

/// Copies `cpuset.cpus` and `cpuset.mems` from the parent when empty.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = read_file(dir, file)?;
        if own.trim().is_empty() {
            let value = read_file(parent, file)?;
            write_file(dir, file, value.trim())?;
        }
    }
    Ok(())
}

/// Enables in `dir`'s `cgroup.subtree_control` every controller it has, so
/// its children can use them. Refusals (a busy or threaded cgroup) are left
/// for the resource writes to report.
fn enable_subtree_controllers(dir: &Path) {
    let Ok(avail) = read_file(dir, "cgroup.controllers") else {
        return;
    };
    let enabled = read_file(dir, "cgroup.subtree_control").unwrap_or_default();
    for c in avail.split_whitespace() {
        if !enabled.split_whitespace().any(|e| e == c) {
            // One write per controller so one refusal does not block the rest.
            let _ = write_file(dir, "cgroup.subtree_control", &format!("+{c}"));
        }
    }
}

fn remove_dir_retrying(path: &Path) -> Result<()> {
    let mut delay = std::time::Duration::from_micros(200);
    for attempt in 0..40 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 39 => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(50));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_from_config() {
        assert_eq!(
            CgroupPath::from_config(None, "c1").ok(),
            Some(CgroupPath::Relative("c1".into()))
        );
        assert_eq!(
            CgroupPath::from_config(Some(Path::new("/a//b/")), "c1").ok(),
            Some(CgroupPath::Absolute("/a/b".into()))
        );
        assert_eq!(
            CgroupPath::from_config(Some(Path::new("x/y")), "c1").ok(),
            Some(CgroupPath::Relative("x/y".into()))
        );
        assert!(CgroupPath::from_config(Some(Path::new("/a/../../etc")), "c1").is_err());
        assert!(CgroupPath::from_config(Some(Path::new("/")), "c1").is_err());
        assert!(CgroupPath::from_config(Some(Path::new("system.slice:hako:c1")), "c1").is_err());
    }

    #[test]
    fn state_without_a_systemd_unit_still_loads() {
        let old = r#"{"mode":"unified","dirs":[{"path":"/sys/fs/cgroup/c1","controllers":[],"unified":true}]}"#;
        let cg: Cgroup = serde_json::from_str(old).expect("old state loads");
        assert_eq!(cg.systemd_unit, None);
        let mut cg = cg;
        cg.systemd_unit = Some("hako-c1.scope".into());
        let json = serde_json::to_string(&cg).expect("serializes");
        let back: Cgroup = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.systemd_unit.as_deref(), Some("hako-c1.scope"));
    }

    #[test]
    fn paths_follow_mount_root() {
        let h = Hierarchy {
            mount: "/sys/fs/cgroup/memory".into(),
            root: "/outer".into(),
            controllers: vec!["memory".into()],
            unified: false,
        };
        let p = dir_in_hierarchy(&h, &CgroupPath::Absolute("/outer/c1".into()), &[]);
        assert_eq!(p, PathBuf::from("/sys/fs/cgroup/memory/c1"));
        let own = vec![(vec!["memory".to_string()], "/outer/me".to_string())];
        let p = dir_in_hierarchy(&h, &CgroupPath::Relative("c2".into()), &own);
        assert_eq!(p, PathBuf::from("/sys/fs/cgroup/memory/me/c2"));
    }
}
