//! The container's root filesystem: config mounts, device nodes, the
//! pivot into the rootfs, masked and read-only paths, and sysctls.
//!
//! Every path inside the rootfs is resolved with `openat2(RESOLVE_IN_ROOT)`
//! against an fd of the rootfs, and mounts target that fd through
//! `/proc/self/fd/N`: a symlink or `..` planted in the image cannot redirect a
//! mount or a created node to the host, even if it is swapped in a race.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use hako_cgroups::{Cgroup, Layout, Mode};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use crate::mount_options::MountOptions;
use crate::sys::{self, fd_path, openat2, RESOLVE_IN_ROOT};

/// A failure while building the root filesystem, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(
    what: &'static str,
    path: impl AsRef<Path>,
) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.as_ref().display().to_string();
    move |source| RootfsError::Io { what, path, source }
}

type Result<T> = std::result::Result<T, RootfsError>;

/// A path relative to the rootfs, without leading `/`, `.` or empty parts.
/// `..` parts are kept: openat2 resolves them inside the root.
fn relative(dest: &Path) -> PathBuf {
    dest.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

/// What kind of node to create at a mount destination.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
}

/// An open rootfs in which paths are resolved safely.
pub struct Root {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = sys::open(path, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(io_err("opening rootfs", path))?;
        Ok(Root {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Opens `dest` (a container path) as an O_PATH fd, resolved in the root.
    pub fn open_path(&self, dest: &Path) -> std::io::Result<OwnedFd> {
        let rel = relative(dest);
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        openat2(self.fd.as_raw_fd(), &rel, libc::O_PATH, 0, RESOLVE_IN_ROOT)
    }

    /// Makes sure `dest` exists inside the root as a directory or file,
    /// creating missing parents, and returns an O_PATH fd to it.
    pub fn ensure(&self, dest: &Path, kind: NodeKind) -> Result<OwnedFd> {
        if let Ok(fd) = self.open_path(dest) {
            return Ok(fd);
        }
        let rel = relative(dest);
        let mut done = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let parent_fd = self
                .open_path(&done)
                .map_err(io_err("resolving", self.path.join(&done)))?;
            let next = done.join(comp);
            if self.open_path(&next).is_err() {
                let name = CString::new(comp.as_os_str().as_bytes()).map_err(|_| {
                    RootfsError::Invalid(format!("{} has a NUL byte", dest.display()))
                })?;
                // Reopen the parent as a real directory fd for *at calls.
                let dir = openat2(
                    parent_fd.as_raw_fd(),
                    Path::new("."),
                    libc::O_DIRECTORY | libc::O_RDONLY,
                    0,
                    0,
                )
                .map_err(io_err("opening directory", self.path.join(&done)))?;
                let ret = if last && kind == NodeKind::File {
                    // SAFETY: valid dir fd and C string; O_NOFOLLOW|O_EXCL refuse links.
                    let fd = unsafe {
                        libc::openat(
                            dir.as_raw_fd(),
                            name.as_ptr(),
                            libc::O_CREAT
                                | libc::O_EXCL
                                | libc::O_WRONLY
                                | libc::O_NOFOLLOW
                                | libc::O_CLOEXEC,
                            0o755,
                        )
                    };
                    if fd >= 0 {
                        // SAFETY: fd was just opened by us.
                        unsafe { libc::close(fd) };
                        0
                    } else {
                        -1
                    }
                } else {
                    // SAFETY: valid dir fd and C string.
                    unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }
                };
                if ret < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(RootfsError::Io {
                            what: "creating",
                            path: self.path.join(&next).display().to_string(),
                            source: e,
                        });
                    }
                }
            }
            done = next;
        }
        self.open_path(dest)
            .map_err(io_err("resolving", self.path.join(rel)))
    }
}

/// Everything the mount phase needs to know beyond the mounts themselves.
pub struct MountContext<'a> {
    pub bundle: &'a Path,
    pub cgroup: Option<&'a Cgroup>,
    pub cgroup_layout: Option<&'a Layout>,
    pub new_cgroupns: bool,
    pub new_netns: bool,
    pub in_userns: bool,
    pub mount_label: Option<&'a str>,
    /// Id-mapped mounts the runtime prepared, by mount index.
    pub idmapped: &'a [Option<OwnedFd>],
}

/// Makes the host's mounts invisible to propagation from the container:
/// `/` becomes rslave, then the rootfs is
/// bind-mounted onto itself so it can be pivoted to.
pub fn prepare_root(rootfs: &Path, private_ns: bool) -> Result<()> {
    if !private_ns {
        // Shared mount namespace: never touch its propagation; the rootfs
        // bind mount is made so a read-only root does not remount the host's.
        let r = rootfs.to_string_lossy();
        return sys::mount(Some(&r), &r, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(io_err("bind-mounting rootfs", rootfs));
    }
    // Everything becomes a recursive slave first, whatever the config asks:
    // a non-recursive mode would leave the rootfs's own mount shared, so
    // container mounts would propagate to the host. The configured mode is
    // applied to the new root after pivot (apply_root_propagation).
    sys::mount(None, "/", None, libc::MS_SLAVE | libc::MS_REC, None)
        .map_err(io_err("setting propagation of", "/"))?;
    let r = rootfs.to_string_lossy();
    sys::mount(Some(&r), &r, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(io_err("bind-mounting rootfs", rootfs))?;
    Ok(())
}

/// Performs every config mount in order.
pub fn mount_all(root: &Root, mounts: &[Mount], ctx: &MountContext) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let idmapped = ctx.idmapped.get(i).and_then(Option::as_ref);
        mount_one(root, m, ctx, idmapped).map_err(|e| match e {
            RootfsError::Io { what, path, source } => RootfsError::Io {
                what,
                path: format!(
                    "{path} (mounts[{i}], destination {})",
                    m.destination().display()
                ),
                source,
            },
            other => other,
        })?;
    }
    Ok(())
}

/// Files under /proc a mount may cover (what lxcfs provides), as runc
/// allows. Anything else mounted inside /proc could hide or redirect what
/// the runtime and the kernel's protections rely on (CVE-2019-19921,
/// CVE-2023-27561).
const PROC_MOUNTS_ALLOWED: &[&str] = &[
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "proc/loadavg",
    "proc/slabinfo",
    "proc/net/dev",
    "proc/sys/kernel/ns_last_pid",
];

/// Refuses a mount whose resolved target lies on a procfs, unless it is
/// one of [`PROC_MOUNTS_ALLOWED`] or the source is itself on procfs.
fn check_not_inside_proc(target: &OwnedFd, dest: &Path, source_on_proc: bool) -> Result<()> {
    let on_proc = sys::fs_type(target).map_err(io_err("checking", dest))? == libc::PROC_SUPER_MAGIC;
    if !on_proc || source_on_proc {
        return Ok(());
    }
    let rel = relative(dest);
    if PROC_MOUNTS_ALLOWED.iter().any(|a| rel == Path::new(a)) {
        return Ok(());
    }
    Err(RootfsError::Invalid(format!(
        "mount destination {} is inside /proc; only {} may be mounted over",
        dest.display(),
        PROC_MOUNTS_ALLOWED
            .iter()
            .map(|a| format!("/{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A proc or sysfs mount must land exactly where it says: its destination
/// may not be (or go through) a symlink the image planted (CVE-2023-28642).
fn check_no_symlink(root: &Root, dest: &Path, typ: &str) -> Result<()> {
    let rel = relative(dest);
    if rel.as_os_str().is_empty() {
        return Ok(());
    }
    match openat2(
        root.fd.as_raw_fd(),
        &rel,
        libc::O_PATH,
        0,
        RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(RootfsError::Invalid(format!(
            "mount destination {} of a {typ} mount is a symlink in the rootfs; refusing to follow it",
            dest.display()
        ))),
        _ => Ok(()),
    }
}

fn mount_one(root: &Root, m: &Mount, ctx: &MountContext, idmapped: Option<&OwnedFd>) -> Result<()> {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = m.destination();
    if let Some(tree) = idmapped {
        return idmapped_mount(root, m, &opts, tree);
    }
    if opts.idmap {
        return Err(RootfsError::Invalid(format!(
            "mount {}: idmap was not prepared (bind mounts only)",
            dest.display()
        )));
    }
    if typ == "bind" || opts.bind {
        return bind_mount(root, m, &opts, ctx);
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(root, dest, &opts, ctx);
    }
    if typ == "proc" || typ == "sysfs" {
        check_no_symlink(root, dest, typ)?;
    }
    let target = root.ensure(dest, NodeKind::Dir)?;
    check_not_inside_proc(&target, dest, false)?;
    let tpath = fd_path(&target);
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned());
    let fstype = if typ.is_empty() { None } else { Some(typ) };
    let mut data = opts.data.clone();
    if let Some(label) = ctx
        .mount_label
        .filter(|l| !l.is_empty() && selinux_enabled())
    {
        if !data.is_empty() {
            data.push(',');
        }
        data.push_str(&format!("context=\"{label}\""));
    }
    let flags = opts.flags & !libc::MS_REMOUNT;
    let result = sys::mount(source.as_deref(), &tpath, fstype, flags, Some(&data));
    match result {
        Ok(()) => {}
        // sysfs cannot be mounted without owning the network namespace;
        // fall back to a recursive bind of the host's /sys like runc.
        Err(e) if typ == "sysfs" && (e.raw_os_error() == Some(libc::EPERM)) && !ctx.new_netns => {
            sys::mount(
                Some("/sys"),
                &tpath,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(io_err("bind-mounting /sys at", dest))?;
            if flags & libc::MS_RDONLY != 0 {
                let t = root.open_path(dest).map_err(io_err("resolving", dest))?;
                sys::mount_setattr_recursive(&t, sys::MOUNT_ATTR_RDONLY, 0)
                    .map_err(io_err("making read-only", dest))?;
            }
        }
        Err(e) if typ == "mqueue" && e.raw_os_error() == Some(libc::EPERM) && ctx.in_userns => {
            sys::mount(
                Some("/dev/mqueue"),
                &tpath,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(io_err("bind-mounting /dev/mqueue at", dest))?;
        }
        Err(e) => {
            return Err(RootfsError::Io {
                what: "mounting",
                path: format!("{} ({typ})", dest.display()),
                source: e,
            })
        }
    }
    after_mount(root, dest, &opts)
}

/// Propagation and recursive attributes, applied to the new mount.
fn after_mount(root: &Root, dest: &Path, opts: &MountOptions) -> Result<()> {
    if opts.propagation.is_empty() && opts.rec_set == 0 && opts.rec_clear == 0 {
        return Ok(());
    }
    let target = root.open_path(dest).map_err(io_err("resolving", dest))?;
    for p in &opts.propagation {
        sys::mount(None, &fd_path(&target), None, *p, None)
            .map_err(io_err("changing propagation of", dest))?;
    }
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        sys::mount_setattr_recursive(&target, opts.rec_set, opts.rec_clear)
            .map_err(io_err("setting recursive mount attributes on", dest))?;
    }
    Ok(())
}

fn bind_mount(root: &Root, m: &Mount, opts: &MountOptions, ctx: &MountContext) -> Result<()> {
    let dest = m.destination();
    let src = m.source().as_ref().ok_or_else(|| {
        RootfsError::Invalid(format!("bind mount {} has no source", dest.display()))
    })?;
    let src = if src.is_absolute() {
        src.clone()
    } else {
        ctx.bundle.join(src)
    };
    let meta = std::fs::metadata(&src).map_err(io_err("bind mount source", &src))?;
    let kind = if meta.is_dir() {
        NodeKind::Dir
    } else {
        NodeKind::File
    };
    let target = root.ensure(dest, kind)?;
    let source_on_proc = sys::open(&src, libc::O_PATH, 0)
        .and_then(|fd| sys::fs_type(&fd))
        .map(|t| t == libc::PROC_SUPER_MAGIC)
        .unwrap_or(false);
    check_not_inside_proc(&target, dest, source_on_proc)?;
    let tpath = fd_path(&target);
    let mut flags = libc::MS_BIND;
    if opts.recursive_bind {
        flags |= libc::MS_REC;
    }
    sys::mount(Some(&src.to_string_lossy()), &tpath, None, flags, None).map_err(io_err(
        "bind-mounting",
        format!("{} to {}", src.display(), dest.display()),
    ))?;
    let extra = opts.flags & !(libc::MS_REC | libc::MS_REMOUNT | libc::MS_BIND);
    if extra != 0 || opts.cleared != 0 {
        let mounted = root.open_path(dest).map_err(io_err("resolving", dest))?;
        remount_bind(&mounted, extra, opts.cleared).map_err(io_err("remounting", dest))?;
    }
    after_mount(root, dest, opts)
}

/// Puts a prepared id-mapped bind mount in place, then applies the mount's
/// other options as a bind mount would.
fn idmapped_mount(root: &Root, m: &Mount, opts: &MountOptions, tree: &OwnedFd) -> Result<()> {
    let dest = m.destination();
    let st = sys::fstat(tree).map_err(io_err("checking id-mapped source of", dest))?;
    let kind = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        NodeKind::Dir
    } else {
        NodeKind::File
    };
    let target = root.ensure(dest, kind)?;
    check_not_inside_proc(&target, dest, false)?;
    crate::idmap::move_into_place(tree, &target)
        .map_err(io_err("moving the id-mapped mount to", dest))?;
    let extra = opts.flags & !(libc::MS_REC | libc::MS_REMOUNT | libc::MS_BIND);
    if extra != 0 || opts.cleared != 0 {
        let mounted = root.open_path(dest).map_err(io_err("resolving", dest))?;
        remount_bind(&mounted, extra, opts.cleared).map_err(io_err("remounting", dest))?;
    }
    after_mount(root, dest, opts)
}

/// Remounts a bind mount with `flags`, keeping the flags the kernel locks on
/// mounts that came from a more privileged namespace (nosuid, nodev,
/// noexec, atime) unless `cleared` asks for them to go.
pub fn remount_bind(
    mounted: &OwnedFd,
    flags: libc::c_ulong,
    cleared: libc::c_ulong,
) -> std::io::Result<()> {
    let current = sys::mount_flags(mounted).unwrap_or(0);
    let mut keep: libc::c_ulong = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if current & st != 0 && cleared & ms == 0 {
            keep |= ms;
        }
    }
    let all = libc::MS_BIND | libc::MS_REMOUNT | flags | keep;
    match sys::mount(None, &fd_path(mounted), None, all, None) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && keep != 0 => {
            // Retry without the atime flags we merely preserved.
            let all = libc::MS_BIND
                | libc::MS_REMOUNT
                | flags
                | (keep & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC));
            sys::mount(None, &fd_path(mounted), None, all, None)
        }
        other => other,
    }
}

/// A `cgroup` mount: on cgroup2 the container's own cgroup (a fresh cgroup2
/// mount in a cgroup namespace, a bind mount otherwise); on v1 and hybrid
/// hosts a tmpfs with one directory per hierarchy, like runc.
fn mount_cgroup(root: &Root, dest: &Path, opts: &MountOptions, ctx: &MountContext) -> Result<()> {
    let (Some(cg), Some(layout)) = (ctx.cgroup, ctx.cgroup_layout) else {
        return Err(RootfsError::Invalid(format!(
            "mount {}: a cgroup mount needs the container's cgroup",
            dest.display()
        )));
    };
    let ro = opts.flags & libc::MS_RDONLY != 0;
    let base_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME;
    let target = root.ensure(dest, NodeKind::Dir)?;
    if layout.mode == Mode::Unified {
        let tpath = fd_path(&target);
        let unified = cg.unified_dir().map(Path::to_path_buf);
        if ctx.new_cgroupns {
            sys::mount(
                Some("cgroup2"),
                &tpath,
                Some("cgroup2"),
                base_flags | (opts.flags & libc::MS_RDONLY),
                None,
            )
            .map_err(io_err("mounting cgroup2 at", dest))?;
        } else if let Some(dir) = unified {
            sys::mount(
                Some(&dir.to_string_lossy()),
                &tpath,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(io_err("bind-mounting cgroup at", dest))?;
            if ro {
                let t = root.open_path(dest).map_err(io_err("resolving", dest))?;
                remount_bind(&t, libc::MS_RDONLY | base_flags, 0)
                    .map_err(io_err("remounting", dest))?;
            }
        }
        return Ok(());
    }
    sys::mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        base_flags,
        Some("mode=755"),
    )
    .map_err(io_err("mounting tmpfs for cgroups at", dest))?;
    for (h, dir) in layout.hierarchies.iter().zip(&cg.dirs) {
        let name = h
            .mount
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| h.controllers.join(","));
        let sub = dest.join(&name);
        let t = root.ensure(&sub, NodeKind::Dir)?;
        let tpath = fd_path(&t);
        let result = if ctx.new_cgroupns {
            if h.unified {
                sys::mount(Some("cgroup2"), &tpath, Some("cgroup2"), base_flags, None)
            } else {
                let data = h
                    .controllers
                    .iter()
                    .map(|c| {
                        if c.starts_with("name=") {
                            format!("none,{c}")
                        } else {
                            c.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                sys::mount(
                    Some("cgroup"),
                    &tpath,
                    Some("cgroup"),
                    base_flags,
                    Some(&data),
                )
            }
        } else {
            sys::mount(
                Some(&dir.path.to_string_lossy()),
                &tpath,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
        };
        result.map_err(io_err("mounting cgroup hierarchy at", &sub))?;
        if ro {
            let t = root.open_path(&sub).map_err(io_err("resolving", &sub))?;
            remount_bind(&t, libc::MS_RDONLY | base_flags, 0)
                .map_err(io_err("remounting", &sub))?;
        }
        // co-mounted controllers (cpu,cpuacct) get a link per controller.
        if h.controllers.len() > 1 && name.contains(',') {
            let dir_fd = root.ensure(dest, NodeKind::Dir)?;
            for c in &h.controllers {
                let link = dest.join(c);
                if root.open_path(&link).is_err() {
                    symlink_in(&dir_fd, &name, c).map_err(io_err("linking", &link))?;
                }
            }
        }
    }
    if ro {
        let t = root.open_path(dest).map_err(io_err("resolving", dest))?;
        remount_bind(&t, libc::MS_RDONLY | base_flags, 0).map_err(io_err("remounting", dest))?;
    }
    Ok(())
}

fn symlink_in(dir: &OwnedFd, target: &str, name: &str) -> std::io::Result<()> {
    let dirfd = openat2(
        dir.as_raw_fd(),
        Path::new("."),
        libc::O_DIRECTORY | libc::O_RDONLY,
        0,
        0,
    )?;
    let t =
        CString::new(target).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let n =
        CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: valid dir fd and C strings.
    let ret = unsafe { libc::symlinkat(t.as_ptr(), dirfd.as_raw_fd(), n.as_ptr()) };
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// True when `/dev` is bind-mounted from the host by the config, in which
/// case runc (and we) leave device nodes alone.
pub fn dev_is_bind_mounted(mounts: &[Mount]) -> bool {
    mounts.iter().any(|m| {
        relative(m.destination()) == Path::new("dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    })
}

/// The device nodes every container gets.
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Creates the default device nodes, the config's `linux.devices`, and the
/// standard links in /dev. In a user namespace, where mknod is refused,
/// the host's node is bind-mounted instead.
pub fn create_devices(root: &Root, devices: &[LinuxDevice], in_userns: bool) -> Result<()> {
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = PathBuf::from("/dev").join(name);
        if devices.iter().any(|d| d.path() == &path) {
            continue;
        }
        make_device(
            root,
            &path,
            libc::S_IFCHR,
            *major,
            *minor,
            0o666,
            0,
            0,
            in_userns,
        )?;
    }
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(RootfsError::Invalid(format!(
                    "linux.devices: {} has type 'a', which is only valid in cgroup rules",
                    d.path().display()
                )))
            }
        };
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        make_device(
            root,
            d.path(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            mode,
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
            in_userns,
        )?;
    }
    let dev = root.ensure(Path::new("/dev"), NodeKind::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        symlink_in(&dev, target, name).map_err(io_err("linking", format!("/dev/{name}")))?;
    }
    if root.open_path(Path::new("/dev/ptmx")).is_err() {
        symlink_in(&dev, "pts/ptmx", "ptmx").map_err(io_err("linking", "/dev/ptmx"))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    root: &Root,
    path: &Path,
    kind: libc::mode_t,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    in_userns: bool,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let name = path.file_name().ok_or_else(|| {
        RootfsError::Invalid(format!("device path {} has no name", path.display()))
    })?;
    let pfd = root.ensure(parent, NodeKind::Dir)?;
    let dir = openat2(
        pfd.as_raw_fd(),
        Path::new("."),
        libc::O_DIRECTORY | libc::O_RDONLY,
        0,
        0,
    )
    .map_err(io_err("opening", parent))?;
    let cname = CString::new(name.as_bytes())
        .map_err(|_| RootfsError::Invalid("NUL in device name".into()))?;
    if in_userns {
        // Bind the host's node onto an empty file.
        let target = root.ensure(path, NodeKind::File)?;
        return sys::mount(
            Some(&path.to_string_lossy()),
            &fd_path(&target),
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(io_err("bind-mounting device", path));
    }
    // Replace whatever the image has there (but never follow it).
    // SAFETY: valid dir fd and C string; unlinkat does not follow links.
    unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) };
    let dev = libc::makedev(major as u32, minor as u32);
    // SAFETY: valid dir fd and C string.
    let ret = unsafe { libc::mknodat(dir.as_raw_fd(), cname.as_ptr(), kind | mode, dev) };
    if ret < 0 {
        return Err(RootfsError::Io {
            what: "creating device",
            path: path.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: valid dir fd and C string; AT_SYMLINK_NOFOLLOW acts on the node itself.
    let ret = unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret < 0 {
        return Err(RootfsError::Io {
            what: "chown of device",
            path: path.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: valid dir fd and C string; the node was just created by us.
    let ret = unsafe { libc::fchmodat(dir.as_raw_fd(), cname.as_ptr(), mode, 0) };
    if ret < 0 {
        return Err(RootfsError::Io {
            what: "chmod of device",
            path: path.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// How to make the rootfs the process's root.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EnterMode {
    /// pivot_root (the default, in a new mount namespace).
    Pivot,
    /// MS_MOVE onto / and chroot (`--no-pivot`, for ramfs roots).
    MoveChroot,
    /// chroot alone: the mount namespace is shared with others, whose root
    /// must not change.
    Chroot,
}

/// Switches the process's root to `rootfs`.
pub fn enter(rootfs: &Path, mode: EnterMode) -> Result<()> {
    std::env::set_current_dir(rootfs).map_err(io_err("entering", rootfs))?;
    if mode == EnterMode::Pivot {
        sys::pivot_root(".", ".").map_err(io_err("pivot_root into", rootfs))?;
        // The old root is now stacked under "."; detach it without letting
        // the unmount propagate to the host.
        sys::mount(None, ".", None, libc::MS_SLAVE | libc::MS_REC, None)
            .map_err(io_err("making old root a slave", "/"))?;
        sys::umount2(".", libc::MNT_DETACH).map_err(io_err("detaching old root", "/"))?;
    } else {
        if mode == EnterMode::MoveChroot {
            let r = rootfs.to_string_lossy();
            sys::mount(Some(&r), "/", None, libc::MS_MOVE, None)
                .map_err(io_err("moving rootfs to /", rootfs))?;
        }
        let dot = c".";
        // SAFETY: valid C string.
        if unsafe { libc::chroot(dot.as_ptr()) } < 0 {
            return Err(RootfsError::Io {
                what: "chroot into",
                path: rootfs.display().to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    std::env::set_current_dir("/").map_err(io_err("entering", "/"))?;
    Ok(())
}

/// Applies `linux.rootfsPropagation` once inside the rootfs.
pub fn apply_root_propagation(propagation: Option<&str>) -> Result<()> {
    if let Some(flag) = propagation.and_then(crate::mount_options::rootfs_propagation) {
        sys::mount(None, "/", None, flag, None)
            .map_err(io_err("setting rootfs propagation of", "/"))?;
    }
    Ok(())
}

/// Masks each path: /dev/null over files, an empty read-only tmpfs over
/// directories. /dev/null is checked to really be the null device, so an
/// image cannot turn the mask into a bind mount of something else.
pub fn mask_paths(paths: &[String], label: Option<&str>) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = Root::open(Path::new("/"))?;
    let null = sys::open(Path::new("/dev/null"), libc::O_PATH | libc::O_NOFOLLOW, 0)
        .map_err(io_err("opening", "/dev/null"))?;
    let st = sys::fstat(&null).map_err(io_err("checking", "/dev/null"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
        return Err(RootfsError::Invalid(
            "/dev/null in the container is not the null device (1:3); refusing to use it for masking".into(),
        ));
    }
    for p in paths {
        let target = match root.open_path(Path::new(p)) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io_err("resolving masked path", p)(e)),
        };
        let st = sys::fstat(&target).map_err(io_err("checking masked path", p))?;
        let tpath = fd_path(&target);
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let data = match label.filter(|l| !l.is_empty() && selinux_enabled()) {
                Some(l) => format!("context=\"{l}\""),
                None => String::new(),
            };
            sys::mount(
                Some("tmpfs"),
                &tpath,
                Some("tmpfs"),
                libc::MS_RDONLY,
                Some(&data),
            )
            .map_err(io_err("masking", p))?;
        } else {
            sys::mount(Some(&fd_path(&null)), &tpath, None, libc::MS_BIND, None)
                .map_err(io_err("masking", p))?;
        }
    }
    Ok(())
}

/// Makes each path read-only (bind onto itself, remount ro).
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = Root::open(Path::new("/"))?;
    for p in paths {
        let target = match root.open_path(Path::new(p)) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io_err("resolving read-only path", p)(e)),
        };
        let tpath = fd_path(&target);
        sys::mount(
            Some(&tpath),
            &tpath,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(io_err("bind-mounting read-only path", p))?;
        let mounted = root
            .open_path(Path::new(p))
            .map_err(io_err("resolving", p))?;
        remount_bind(&mounted, libc::MS_RDONLY | libc::MS_REC, 0)
            .map_err(io_err("remounting read-only", p))?;
    }
    Ok(())
}

/// Remounts `/` read-only.
pub fn readonly_root() -> Result<()> {
    let root = sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(io_err("opening", "/"))?;
    remount_bind(&root, libc::MS_RDONLY, 0).map_err(io_err("remounting read-only", "/"))
}

/// Opens the container's procfs, checking it really is procfs (an image
/// could put a directory or a symlink at /proc).
pub fn open_procfs() -> Result<OwnedFd> {
    let fd = sys::open(
        Path::new("/proc"),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(io_err("opening", "/proc"))?;
    let t = sys::fs_type(&fd).map_err(io_err("checking", "/proc"))?;
    if t != libc::PROC_SUPER_MAGIC {
        return Err(RootfsError::Invalid(
            "/proc in the container is not a procfs mount".into(),
        ));
    }
    Ok(fd)
}

/// Checks that an opened file lives on procfs itself, not on something
/// mounted over part of /proc.
pub fn check_on_procfs(fd: &OwnedFd, what: &str) -> Result<()> {
    let t = sys::fs_type(fd).map_err(io_err("checking", what))?;
    if t != libc::PROC_SUPER_MAGIC {
        return Err(RootfsError::Invalid(format!(
            "{what} is not on procfs (something is mounted over it); refusing to write to it"
        )));
    }
    Ok(())
}

/// Writes `linux.sysctl` through the container's verified procfs.
pub fn write_sysctls(sysctls: &[(String, String)]) -> Result<()> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let proc = open_procfs()?;
    for (key, value) in sysctls {
        let rel = PathBuf::from("sys").join(key.replace('.', "/"));
        let fd = openat2(
            proc.as_raw_fd(),
            &rel,
            libc::O_WRONLY | libc::O_TRUNC,
            0,
            sys::RESOLVE_STRICT | sys::RESOLVE_PROC,
        )
        .map_err(io_err("opening sysctl", format!("/proc/{}", rel.display())))?;
        check_on_procfs(&fd, &format!("/proc/{}", rel.display()))?;
        let mut f = std::fs::File::from(fd);
        std::io::Write::write_all(&mut f, value.as_bytes())
            .map_err(io_err("writing sysctl", format!("{key}={value}")))?;
    }
    Ok(())
}

/// True when SELinux is enabled on the host.
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Unmounts every mount at or below `dir` (deepest first). Used to clean up
/// after containers without a private mount namespace, whose mounts were
/// made in a shared namespace.
pub fn unmount_below(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = sys::umount2(&p.to_string_lossy(), libc::MNT_DETACH);
    }
}
