//! Unpacked layers, each once, keyed by chain ID.
//!
//! Two layouts, chosen per [`Snapshotter`]:
//!
//! - [`SnapshotKind::Overlay`]: `<root>/<chain-id hex>/` holds one layer's
//!   tar applied alone, its whiteouts as overlayfs whiteouts; an overlay
//!   mount with these directories as lower dirs (top-most first) is the
//!   image's rootfs.
//! - [`SnapshotKind::Flat`]: `<root>/<chain-id hex>/` is the whole image up
//!   to that layer: a copy of the parent's directory (owners, modes,
//!   xattrs, hardlinks, devices kept; reflinked where the filesystem can)
//!   with the layer applied on top, whiteouts deleting what they name. For
//!   filesystems or kernels without overlayfs.
//!
//! A layer is made in `<root>/tmp-*` and renamed to its chain ID only once
//! complete, so nothing half-made is ever visible; the rename never
//! replaces (RENAME_NOREPLACE), so when two processes unpack the same layer
//! the first one's stays and the second one's is deleted.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::sys::{check, cpath, dir_names, fstat, lstat_at, open_at, remove_tree};
use crate::unpack::{LayerStats, UnpackError, WhiteoutMode};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
    #[error("layer {layer}: its content has diff ID {got}, the image config says {expected}")]
    DiffId {
        layer: Digest,
        expected: Digest,
        got: Digest,
    },
    #[error("snapshot {chain_id}: its parent {parent} is not unpacked")]
    MissingParent { chain_id: Digest, parent: Digest },
    #[error("rootfs in {}: layer {chain_id} is not unpacked", dir.display())]
    MissingLayer { dir: PathBuf, chain_id: Digest },
    #[error(
        "rootfs in {}: {layers} layers are more than an overlay mount takes ({max})",
        dir.display()
    )]
    TooManyLayers {
        dir: PathBuf,
        layers: usize,
        max: usize,
    },
    #[error("choosing a snapshotter: {reason}")]
    Choice { reason: String },
    #[error("rootfs in {}: mounting overlay ({options}): {source}", dir.display())]
    Mount {
        dir: PathBuf,
        options: String,
        source: std::io::Error,
    },
    #[error("rootfs in {}: unmounting {}: {source}", dir.display(), target.display())]
    Unmount {
        dir: PathBuf,
        target: PathBuf,
        source: std::io::Error,
    },
}

/// ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// How layers are kept and combined into a container's rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// One directory per layer, combined by an overlay mount.
    Overlay,
    /// One fully applied directory per chain ID, copied for a container.
    Flat,
}

impl SnapshotKind {
    /// The directory of a store that holds snapshots of this kind: the two
    /// kinds live side by side, so switching never mixes them.
    pub fn store_dir(self) -> &'static str {
        match self {
            SnapshotKind::Overlay => "snapshots",
            SnapshotKind::Flat => "snapshots-flat",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SnapshotKind::Overlay => "overlay",
            SnapshotKind::Flat => "flat",
        }
    }

    /// How a layer's whiteouts are to be unpacked for this kind.
    pub fn whiteouts(self) -> WhiteoutMode {
        match self {
            SnapshotKind::Overlay => WhiteoutMode::Overlay,
            SnapshotKind::Flat => WhiteoutMode::Apply,
        }
    }
}

/// An unpack's result as a snapshot's: its content must have `expected`
/// as diff ID.
fn checked(
    layer: &Digest,
    expected: &Digest,
    unpacked: Result<LayerStats, UnpackError>,
) -> Result<LayerStats, SnapshotError> {
    match unpacked {
        Ok(stats) if &stats.diff_id == expected => Ok(stats),
        Ok(stats) => Err(SnapshotError::DiffId {
            layer: layer.clone(),
            expected: expected.clone(),
            got: stats.diff_id,
        }),
        Err(source) => Err(SnapshotError::Unpack {
            layer: layer.clone(),
            source,
        }),
    }
}

/// Whether overlay mounts work under `root` (an existing directory): the
/// kernel knows overlay, and a test mount in a temporary directory there
/// succeeds (overlay on some filesystems, overlay itself among them on
/// older kernels, or without privileges, fails).
pub fn overlay_supported(root: &Path) -> bool {
    let known = std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if !known {
        return false;
    }
    let probe = root.join(format!("tmp-probe-{}", unique_suffix()));
    let ok = (|| -> io::Result<bool> {
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir_all(probe.join(d))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            probe.join("lower").display(),
            probe.join("upper").display(),
            probe.join("work").display()
        );
        let merged = probe.join("merged");
        if mount_overlay(&merged, &opts).is_err() {
            return Ok(false);
        }
        let _ = unmount(&merged);
        Ok(true)
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_dir_all(&probe);
    ok
}

impl std::str::FromStr for SnapshotKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "overlay" | "overlayfs" | "overlay2" => Ok(SnapshotKind::Overlay),
            "flat" | "vfs" | "native" => Ok(SnapshotKind::Flat),
            _ => Err(format!(
                "unknown snapshotter {s:?} (overlay or flat; vfs and native mean flat)"
            )),
        }
    }
}

/// The variable that chooses a store's snapshotter (overlay or flat).
pub const SNAPSHOTTER_ENV: &str = "HAKO_SNAPSHOTTER";

/// Which snapshots a store at `store_root` uses: `$HAKO_SNAPSHOTTER` when
/// set, else overlay if a probe mount under the store works. The probe's
/// answer is kept in `<store_root>/snapshotter` so it runs once per store
/// (delete the file to probe again).
pub fn store_kind(store_root: &Path) -> Result<SnapshotKind, SnapshotError> {
    if let Some(v) = std::env::var_os(SNAPSHOTTER_ENV) {
        let v = v.to_string_lossy();
        return v.parse().map_err(|e| SnapshotError::Choice {
            reason: format!("{SNAPSHOTTER_ENV}: {e}"),
        });
    }
    let marker = store_root.join("snapshotter");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        if let Ok(kind) = text.trim().parse() {
            return Ok(kind);
        }
    }
    std::fs::create_dir_all(store_root).map_err(|source| SnapshotError::Io {
        path: store_root.to_path_buf(),
        what: "creating the store",
        source,
    })?;
    let kind = if overlay_supported(store_root) {
        SnapshotKind::Overlay
    } else {
        crate::debug("overlay mounts do not work here: using flat snapshots");
        SnapshotKind::Flat
    };
    // Written beside and renamed, so a reader never sees half a word.
    let tmp = store_root.join(format!("snapshotter.tmp-{}", unique_suffix()));
    if std::fs::write(&tmp, format!("{}\n", kind.name())).is_ok()
        && std::fs::rename(&tmp, &marker).is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(kind)
}

/// A container's root filesystem made by [`Snapshotter::prepare_rootfs`].
#[derive(Debug, Clone)]
pub struct PreparedRootfs {
    /// The directory to use as the bundle's rootfs.
    pub rootfs: PathBuf,
    /// Whether `rootfs` is an overlay mount (else a plain copy).
    pub mounted: bool,
}

pub struct Snapshotter {
    root: PathBuf,
    kind: SnapshotKind,
}

/// The most lower dirs overlayfs stacks (OVL_MAX_STACK).
const MAX_OVERLAY_LAYERS: usize = 500;

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Snapshotter {
    /// The store's overlay snapshots, `<store_root>/snapshots`.
    pub fn new(store_root: &Path) -> Snapshotter {
        Snapshotter {
            root: store_root.join("snapshots"),
            kind: SnapshotKind::Overlay,
        }
    }

    /// The store's snapshots of `kind` (see [`SnapshotKind::store_dir`]).
    pub fn for_store(store_root: &Path, kind: SnapshotKind) -> Snapshotter {
        Snapshotter {
            root: store_root.join(kind.store_dir()),
            kind,
        }
    }

    /// The store's snapshots of the kind [`store_kind`] chooses.
    pub fn chosen(store_root: &Path) -> Result<Snapshotter, SnapshotError> {
        Ok(Snapshotter::for_store(store_root, store_kind(store_root)?))
    }

    /// Makes every missing snapshot of an image, bottom layer first:
    /// `layers` pairs each layer blob with its diff ID from the config,
    /// `open` opens a (verified) blob. Each snapshot is published only if
    /// the unpacked content has its diff ID. Flat snapshots need their
    /// parent, so they are made in order; overlay ones stand alone.
    pub fn ensure_chain(
        &self,
        layers: &[(Digest, Digest)],
        mut open: impl FnMut(&Digest) -> io::Result<File>,
    ) -> Result<(), SnapshotError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|(_, d)| d.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let opts = crate::unpack::UnpackOptions {
            whiteouts: self.kind.whiteouts(),
        };
        for (i, ((blob, diff_id), chain)) in layers.iter().zip(&chains).enumerate() {
            if self.has_layer(chain) {
                continue;
            }
            let file = open(blob).map_err(|source| SnapshotError::Io {
                path: PathBuf::from(blob.to_string()),
                what: "opening the layer blob",
                source,
            })?;
            let parent = i.checked_sub(1).map(|p| &chains[p]);
            self.make_layer(chain, parent, |dir| {
                checked(
                    blob,
                    diff_id,
                    crate::unpack::apply_layer_file(dir, file, &opts),
                )
            })?;
        }
        Ok(())
    }

    /// Snapshots of `kind` kept directly in `root` (created if missing).
    pub fn open(root: &Path, kind: SnapshotKind) -> Result<Snapshotter, SnapshotError> {
        std::fs::create_dir_all(root).map_err(|source| SnapshotError::Io {
            path: root.to_path_buf(),
            what: "creating the snapshot directory",
            source,
        })?;
        Ok(Snapshotter {
            root: root.to_path_buf(),
            kind,
        })
    }

    pub fn kind(&self) -> SnapshotKind {
        self.kind
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.encoded())
    }

    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).is_dir()
    }

    /// Runs `unpack` on a fresh directory and publishes it as `chain_id`
    /// when it succeeds with `expected_diff_id`; removes it otherwise.
    /// For overlay snapshots (a flat one needs its parent: use
    /// [`Snapshotter::unpack_layer`]).
    pub fn add_layer(
        &self,
        chain_id: &Digest,
        layer: &Digest,
        expected_diff_id: &Digest,
        unpack: impl FnOnce(&Path) -> Result<LayerStats, UnpackError>,
    ) -> Result<(), SnapshotError> {
        self.make_layer(chain_id, None, |dir| {
            checked(layer, expected_diff_id, unpack(dir))
        })
        .map(|_| ())
    }

    /// Makes the snapshot `chain_id` unless it exists (then `Ok(None)`,
    /// and `unpack` is not called): `unpack` applies the layer to a fresh
    /// directory (with [`SnapshotKind::whiteouts`]); for a flat snapshot
    /// that directory already holds a copy of `parent`. The directory is
    /// published only if `unpack` succeeds, and removed otherwise.
    pub fn unpack_layer(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        unpack: impl FnOnce(&Path) -> Result<LayerStats, UnpackError>,
    ) -> Result<Option<LayerStats>, SnapshotError> {
        self.make_layer(chain_id, parent, |dir| {
            unpack(dir).map_err(|source| SnapshotError::Unpack {
                layer: chain_id.clone(),
                source,
            })
        })
    }

    fn make_layer(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        unpack: impl FnOnce(&Path) -> Result<LayerStats, SnapshotError>,
    ) -> Result<Option<LayerStats>, SnapshotError> {
        if self.has_layer(chain_id) {
            return Ok(None);
        }
        let io_at = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { path, what, source }
        };
        std::fs::create_dir_all(&self.root).map_err(io_at("creating", &self.root))?;
        let tmp = self.root.join(format!(
            "tmp-{}-{}",
            &chain_id.encoded()[..12],
            unique_suffix()
        ));
        let result = (|| {
            match (self.kind, parent) {
                (SnapshotKind::Flat, Some(p)) => {
                    let from = self.layer_dir(p);
                    if !from.is_dir() {
                        return Err(SnapshotError::MissingParent {
                            chain_id: chain_id.clone(),
                            parent: p.clone(),
                        });
                    }
                    copy_tree(&from, &tmp).map_err(|e| SnapshotError::Io {
                        path: e.path,
                        what: e.what,
                        source: e.source,
                    })?;
                }
                _ => std::fs::create_dir(&tmp).map_err(io_at("creating", &tmp))?,
            }
            let stats = unpack(&tmp)?;
            publish(&tmp, &self.layer_dir(chain_id)).map_err(io_at("publishing", &tmp))?;
            Ok(stats)
        })();
        if result.is_err() || tmp.exists() {
            // Failed, or someone else published the same layer first:
            // theirs is as good.
            let _ = remove_tree(&tmp);
        }
        result.map(Some)
    }

    /// Removes the snapshot `chain_id`; false if there was none.
    pub fn remove_layer(&self, chain_id: &Digest) -> Result<bool, SnapshotError> {
        let dir = self.layer_dir(chain_id);
        if !dir.is_dir() {
            return Ok(false);
        }
        // Renamed away first, so a half-removed layer is never visible
        // under its name.
        let doomed = self.root.join(format!("tmp-rm-{}", unique_suffix()));
        std::fs::rename(&dir, &doomed).map_err(|source| SnapshotError::Io {
            path: dir.clone(),
            what: "removing",
            source,
        })?;
        remove_tree(&doomed).map_err(|source| SnapshotError::Io {
            path: doomed,
            what: "removing",
            source,
        })?;
        Ok(true)
    }

    /// The chain IDs unpacked here (leftovers of failed unpacks aside).
    pub fn list_layers(&self) -> Result<Vec<Digest>, SnapshotError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: self.root.clone(),
                    what: "listing",
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let alg = match name.len() {
                64 => "sha256",
                128 => "sha512",
                _ => continue,
            };
            if let Ok(d) = format!("{alg}:{name}").parse::<Digest>() {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes layers no chain in `keep` uses, and leftovers of failed
    /// unpacks; returns how many.
    pub fn prune(&self, keep: &std::collections::HashSet<String>) -> usize {
        let mut n = 0;
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) && remove_tree(&e.path()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// A container's rootfs in `container_dir` from the snapshots of
    /// `chain` (bottom layer first, all unpacked).
    ///
    /// Overlay: `container_dir/{upper,work,merged}`, `merged` mounted with
    /// the layers as lower dirs. Their paths go into the mount options when
    /// they fit in a page (the limit of mount(2)); otherwise each layer is
    /// passed as `/proc/self/fd/N` of an O_PATH fd held during the mount,
    /// which fits up to overlayfs' own limit of 500 layers without
    /// changing the working directory of a threaded process.
    ///
    /// Flat: `container_dir/rootfs`, a copy of the top snapshot.
    ///
    /// On error nothing is left: no mount, and no directory made here.
    pub fn prepare_rootfs(
        &self,
        chain: &[Digest],
        container_dir: &Path,
    ) -> Result<PreparedRootfs, SnapshotError> {
        for c in chain {
            if !self.has_layer(c) {
                return Err(SnapshotError::MissingLayer {
                    dir: container_dir.to_path_buf(),
                    chain_id: c.clone(),
                });
            }
        }
        let io_at = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { path, what, source }
        };
        let made_container_dir = !container_dir.exists();
        std::fs::create_dir_all(container_dir).map_err(io_at("creating", container_dir))?;
        let mut made: Vec<PathBuf> = Vec::new();
        let result = (|| match self.kind {
            SnapshotKind::Flat => {
                let rootfs = container_dir.join("rootfs");
                match chain.last() {
                    Some(top) => {
                        // copy_tree makes rootfs itself: remove it on error.
                        made.push(rootfs.clone());
                        copy_tree(&self.layer_dir(top), &rootfs).map_err(|e| {
                            SnapshotError::Io {
                                path: e.path,
                                what: e.what,
                                source: e.source,
                            }
                        })?;
                    }
                    None => {
                        std::fs::create_dir(&rootfs).map_err(io_at("creating", &rootfs))?;
                        made.push(rootfs.clone());
                    }
                }
                Ok(PreparedRootfs {
                    rootfs,
                    mounted: false,
                })
            }
            SnapshotKind::Overlay => {
                if chain.len() > MAX_OVERLAY_LAYERS {
                    return Err(SnapshotError::TooManyLayers {
                        dir: container_dir.to_path_buf(),
                        layers: chain.len(),
                        max: MAX_OVERLAY_LAYERS,
                    });
                }
                let mut lowers: Vec<PathBuf> =
                    chain.iter().rev().map(|c| self.layer_dir(c)).collect();
                if lowers.is_empty() {
                    // No layer: an empty lower dir.
                    let empty = container_dir.join("empty");
                    std::fs::create_dir(&empty).map_err(io_at("creating", &empty))?;
                    made.push(empty.clone());
                    lowers.push(empty);
                }
                let upper = container_dir.join("upper");
                let work = container_dir.join("work");
                let merged = container_dir.join("merged");
                for d in [&upper, &work, &merged] {
                    std::fs::create_dir(d).map_err(io_at("creating", d))?;
                    made.push(d.clone());
                }
                mount_layers(&lowers, &upper, &work, &merged, container_dir)?;
                Ok(PreparedRootfs {
                    rootfs: merged,
                    mounted: true,
                })
            }
        })();
        if result.is_err() {
            for d in made.iter().rev() {
                let _ = remove_tree(d);
            }
            if made_container_dir {
                let _ = std::fs::remove_dir(container_dir);
            }
        }
        result
    }

    /// Mounts a rootfs [`Snapshotter::prepare_rootfs`] made again, with
    /// its upper dir as it was (after [`Snapshotter::unmount_rootfs`] or
    /// a reboot); already mounted is fine. Flat rootfs need nothing.
    pub fn remount_rootfs(
        &self,
        chain: &[Digest],
        container_dir: &Path,
    ) -> Result<PreparedRootfs, SnapshotError> {
        if self.kind == SnapshotKind::Flat {
            return Ok(PreparedRootfs {
                rootfs: container_dir.join("rootfs"),
                mounted: false,
            });
        }
        let merged = container_dir.join("merged");
        if is_mount_point(&merged) {
            return Ok(PreparedRootfs {
                rootfs: merged,
                mounted: true,
            });
        }
        for c in chain {
            if !self.has_layer(c) {
                return Err(SnapshotError::MissingLayer {
                    dir: container_dir.to_path_buf(),
                    chain_id: c.clone(),
                });
            }
        }
        let mut lowers: Vec<PathBuf> = chain.iter().rev().map(|c| self.layer_dir(c)).collect();
        if lowers.is_empty() {
            lowers.push(container_dir.join("empty"));
        }
        mount_layers(
            &lowers,
            &container_dir.join("upper"),
            &container_dir.join("work"),
            &merged,
            container_dir,
        )?;
        Ok(PreparedRootfs {
            rootfs: merged,
            mounted: true,
        })
    }

    /// Unmounts a prepared overlay rootfs (lazily if busy), keeping its
    /// upper dir; not mounted is fine.
    pub fn unmount_rootfs(container_dir: &Path) -> Result<(), SnapshotError> {
        let merged = container_dir.join("merged");
        if is_mount_point(&merged) {
            unmount(&merged).map_err(|source| SnapshotError::Unmount {
                dir: container_dir.to_path_buf(),
                target: merged.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Undoes [`Snapshotter::prepare_rootfs`]: unmounts `merged` (lazily if
    /// busy) and removes `container_dir`. Nothing is deleted while a mount
    /// is still there.
    pub fn release_rootfs(container_dir: &Path) -> Result<(), SnapshotError> {
        let merged = container_dir.join("merged");
        if is_mount_point(&merged) {
            unmount(&merged).map_err(|source| SnapshotError::Unmount {
                dir: container_dir.to_path_buf(),
                target: merged.clone(),
                source,
            })?;
        }
        match remove_tree(container_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SnapshotError::Io {
                path: container_dir.to_path_buf(),
                what: "removing",
                source,
            }),
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Mounts overlay on `merged` with `lowers` (top-most first) and
/// `upper`/`work`.
fn mount_layers(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
    container_dir: &Path,
) -> Result<(), SnapshotError> {
    let io_at = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, what, source }
    };
    let tail = format!(
        ",upperdir={},workdir={}",
        escape_overlay_path(upper),
        escape_overlay_path(work)
    );
    let joined = lowers
        .iter()
        .map(|l| escape_overlay_path(l))
        .collect::<Vec<_>>()
        .join(":");
    let page = 4096 - 1;
    let mut held: Vec<File> = Vec::new();
    let options = if "lowerdir=".len() + joined.len() + tail.len() <= page {
        format!("lowerdir={joined}{tail}")
    } else {
        crate::debug(&format!(
            "overlay: {} lower dirs are too long for one page of options: \
             passing them as /proc/self/fd paths",
            lowers.len()
        ));
        let mut names = Vec::with_capacity(lowers.len());
        for l in lowers {
            let f = File::options()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(l)
                .map_err(io_at("opening a layer", l))?;
            names.push(format!("/proc/self/fd/{}", f.as_raw_fd()));
            held.push(f);
        }
        format!("lowerdir={}{tail}", names.join(":"))
    };
    mount_overlay(merged, &options).map_err(|source| SnapshotError::Mount {
        dir: container_dir.to_path_buf(),
        options: if options.len() > 300 {
            // Cut at a character boundary: store paths need
            // not be ASCII.
            let cut = (0..=300).rev().find(|i| options.is_char_boundary(*i));
            format!("{}…", &options[..cut.unwrap_or(0)])
        } else {
            options.clone()
        },
        source,
    })?;
    drop(held);
    Ok(())
}

/// Overlay option values separate lower dirs with ':' and options with
/// ','; a backslash escapes them.
fn escape_overlay_path(p: &Path) -> String {
    let mut out = String::new();
    for ch in p.to_string_lossy().chars() {
        if matches!(ch, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Renames `tmp` to `dest` unless `dest` exists (then `tmp` stays).
fn publish(tmp: &Path, dest: &Path) -> io::Result<()> {
    let from = cpath(tmp)?;
    let to = cpath(dest)?;
    // SAFETY: valid C strings; AT_FDCWD with absolute or cwd-relative paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match check(r) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

fn mount_overlay(target: &Path, options: &str) -> io::Result<()> {
    hako_runtime::sys::mount(
        Some("overlay"),
        path_str(target)?,
        Some("overlay"),
        0,
        Some(options),
    )
}

/// umount2, then a lazy detach if the mount is busy.
fn unmount(target: &Path) -> io::Result<()> {
    let t = path_str(target)?;
    match hako_runtime::sys::umount2(t, libc::UMOUNT_NOFOLLOW) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            hako_runtime::sys::umount2(t, libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW)
        }
        other => other,
    }
}

/// The runtime's mount wrappers take UTF-8 paths.
fn path_str(p: &Path) -> io::Result<&str> {
    p.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not UTF-8", p.display()),
        )
    })
}

/// Whether `path` is the root of a mount (a different device than its
/// parent directory, or the same inode: a bind mount of itself).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(Ok(p))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    if m.dev() != p.dev() {
        return true;
    }
    // Same device: look for it in mountinfo (a bind mount from the same fs).
    let Ok(canon) = std::fs::canonicalize(path) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines().any(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|mp| unescape_mountinfo(mp) == canon.as_os_str().as_bytes())
            })
        })
        .unwrap_or(false)
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// What failed while copying a tree.
struct CopyError {
    path: PathBuf,
    what: &'static str,
    source: io::Error,
}

/// Copies the directory tree `from` to `to` (which must not exist) as it
/// is: owners, modes (setuid included), xattrs, mtimes, symlinks (never
/// followed), hardlinks (linked again in the copy), devices, fifos and
/// sockets; file data is reflinked when the filesystem can, else copied
/// in the kernel (copy_file_range).
fn copy_tree(from: &Path, to: &Path) -> Result<(), CopyError> {
    let err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CopyError { path, what, source }
    };
    let cfrom = cpath(from).map_err(err("opening", from))?;
    let src = open_at(
        libc::AT_FDCWD,
        &cfrom,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .map_err(err("opening", from))?;
    let cto = cpath(to).map_err(err("creating", to))?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(libc::AT_FDCWD, cto.as_ptr(), 0o700) })
        .map_err(err("creating", to))?;
    let dst = open_at(
        libc::AT_FDCWD,
        &cto,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .map_err(err("opening", to))?;
    let mut copier = TreeCopy {
        dst_root: dst.try_clone().map_err(err("dup", to))?,
        links: HashMap::new(),
        buf: Vec::new(),
    };
    copier
        .dir(&src, &dst, Path::new(""))
        .map_err(|(rel, what, source)| CopyError {
            path: from.join(rel),
            what,
            source,
        })?;
    let st = fstat(src.as_raw_fd()).map_err(err("stat", from))?;
    metadata(src.as_raw_fd(), dst.as_raw_fd(), &st).map_err(err("metadata", to))
}

type CopyResult = Result<(), (PathBuf, &'static str, io::Error)>;

struct TreeCopy {
    dst_root: OwnedFd,
    /// (dev, ino) of a multiply linked source → its path in the copy.
    links: HashMap<(u64, u64), CString>,
    buf: Vec<u8>,
}

impl TreeCopy {
    fn dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> CopyResult {
        let names = dir_names(src.as_raw_fd()).map_err(|e| (rel.to_path_buf(), "listing", e))?;
        for name in names {
            let child = rel.join(OsStr::from_bytes(name.to_bytes()));
            let at = |what: &'static str| {
                let child = child.clone();
                move |e: io::Error| (child, what, e)
            };
            let Some(st) = lstat_at(src.as_raw_fd(), &name).map_err(at("stat"))? else {
                continue;
            };
            let fmt = st.st_mode & libc::S_IFMT;
            if fmt == libc::S_IFDIR {
                // SAFETY: valid fd and C string.
                check(unsafe { libc::mkdirat(dst.as_raw_fd(), name.as_ptr(), 0o700) })
                    .map_err(at("mkdir"))?;
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                let s = open_at(src.as_raw_fd(), &name, flags).map_err(at("opening"))?;
                let d = open_at(dst.as_raw_fd(), &name, flags).map_err(at("opening the copy"))?;
                self.dir(&s, &d, &child)?;
                metadata(s.as_raw_fd(), d.as_raw_fd(), &st).map_err(at("metadata"))?;
                continue;
            }
            if st.st_nlink > 1 {
                if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) {
                    // SAFETY: valid fds and C strings; flags 0: no follow.
                    check(unsafe {
                        libc::linkat(
                            self.dst_root.as_raw_fd(),
                            first.as_ptr(),
                            dst.as_raw_fd(),
                            name.as_ptr(),
                            0,
                        )
                    })
                    .map_err(at("hardlink"))?;
                    continue;
                }
            }
            match fmt {
                libc::S_IFREG => {
                    let s = open_at(src.as_raw_fd(), &name, libc::O_RDONLY | libc::O_NOFOLLOW)
                        .map_err(at("opening"))?;
                    let d = open_at(
                        dst.as_raw_fd(),
                        &name,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    )
                    .map_err(at("creating"))?;
                    let (s, d) = (File::from(s), File::from(d));
                    copy_data(&s, &d).map_err(at("copying"))?;
                    metadata(s.as_raw_fd(), d.as_raw_fd(), &st).map_err(at("metadata"))?;
                }
                libc::S_IFLNK => {
                    self.buf.resize(libc::PATH_MAX as usize + 1, 0);
                    // SAFETY: valid fd, C string and buffer of that length.
                    let n = unsafe {
                        libc::readlinkat(
                            src.as_raw_fd(),
                            name.as_ptr(),
                            self.buf.as_mut_ptr().cast(),
                            self.buf.len(),
                        )
                    };
                    let n = usize::try_from(n)
                        .map_err(|_| io::Error::last_os_error())
                        .map_err(at("readlink"))?;
                    let target = CString::new(&self.buf[..n])
                        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
                        .map_err(at("readlink"))?;
                    // SAFETY: valid C strings and fd.
                    check(unsafe {
                        libc::symlinkat(target.as_ptr(), dst.as_raw_fd(), name.as_ptr())
                    })
                    .map_err(at("symlink"))?;
                    special_metadata(src, dst, &name, &st, false).map_err(at("metadata"))?;
                }
                _ => {
                    // Devices, fifos, sockets.
                    // SAFETY: valid fd and C string.
                    check(unsafe {
                        libc::mknodat(dst.as_raw_fd(), name.as_ptr(), fmt | 0o600, st.st_rdev)
                    })
                    .map_err(at("mknod"))?;
                    special_metadata(src, dst, &name, &st, true).map_err(at("metadata"))?;
                }
            }
            if st.st_nlink > 1 {
                let path = CString::new(child.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
                    .map_err(at("hardlink"))?;
                self.links.insert((st.st_dev, st.st_ino), path);
            }
        }
        Ok(())
    }
}

fn times_of(st: &libc::stat) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

/// Owner, mode, xattrs and times of a directory or regular file, by fd
/// (chown first: it clears setuid bits and file capabilities).
fn metadata(src: RawFd, dst: RawFd, st: &libc::stat) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchown(dst, st.st_uid, st.st_gid) })?;
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(dst, st.st_mode & 0o7777) })?;
    copy_xattrs(&Node::Fd(src), &Node::Fd(dst))?;
    let times = times_of(st);
    // SAFETY: valid fd and two timespecs.
    check(unsafe { libc::futimens(dst, times.as_ptr()) })
}

/// The same for a symlink, device, fifo or socket `name` in `dst_dir`.
fn special_metadata(
    src_dir: &OwnedFd,
    dst_dir: &OwnedFd,
    name: &CStr,
    st: &libc::stat,
    chmod: bool,
) -> io::Result<()> {
    let d = dst_dir.as_raw_fd();
    // SAFETY: valid fd and C string; NOFOLLOW changes a symlink itself.
    check(unsafe {
        libc::fchownat(
            d,
            name.as_ptr(),
            st.st_uid,
            st.st_gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    if chmod {
        // SAFETY: valid fd and C string: a node (not a symlink) just made
        // in a directory only this copy writes to.
        check(unsafe { libc::fchmodat(d, name.as_ptr(), st.st_mode & 0o7777, 0) })?;
    }
    copy_xattrs(
        &Node::At(src_dir.as_raw_fd(), name),
        &Node::At(dst_dir.as_raw_fd(), name),
    )?;
    let times = times_of(st);
    // SAFETY: valid fd, C string and two timespecs.
    check(unsafe { libc::utimensat(d, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// A file whose xattrs are read or written: by fd, or (for symlinks and
/// special files, which cannot be opened for that) by name in a
/// directory fd, through /proc/self/fd without following the last
/// component.
enum Node<'a> {
    Fd(RawFd),
    At(RawFd, &'a CStr),
}

impl Node<'_> {
    fn path(&self) -> io::Result<CString> {
        match self {
            Node::Fd(fd) => CString::new(format!("/proc/self/fd/{fd}")),
            Node::At(dir, name) => {
                let mut p = format!("/proc/self/fd/{dir}/").into_bytes();
                p.extend_from_slice(name.to_bytes());
                CString::new(p)
            }
        }
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn list(&self, buf: &mut [u8]) -> isize {
        match self {
            // SAFETY: valid fd and buffer of that length.
            Node::Fd(fd) => unsafe { libc::flistxattr(*fd, buf.as_mut_ptr().cast(), buf.len()) },
            Node::At(..) => match self.path() {
                // SAFETY: valid C string and buffer of that length.
                Ok(p) => unsafe {
                    libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                },
                Err(_) => -1,
            },
        }
    }

    fn get(&self, name: &CStr, buf: &mut [u8]) -> isize {
        let ptr = buf.as_mut_ptr().cast();
        match self {
            // SAFETY: valid fd, C string and buffer of that length.
            Node::Fd(fd) => unsafe { libc::fgetxattr(*fd, name.as_ptr(), ptr, buf.len()) },
            Node::At(..) => match self.path() {
                // SAFETY: valid C strings and buffer of that length.
                Ok(p) => unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), ptr, buf.len()) },
                Err(_) => -1,
            },
        }
    }

    fn set(&self, name: &CStr, value: &[u8]) -> io::Result<()> {
        let ptr = value.as_ptr().cast();
        let r = match self {
            // SAFETY: valid fd, C string and buffer.
            Node::Fd(fd) => unsafe { libc::fsetxattr(*fd, name.as_ptr(), ptr, value.len(), 0) },
            Node::At(..) => {
                let p = self.path()?;
                // SAFETY: valid C strings and buffer.
                unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), ptr, value.len(), 0) }
            }
        };
        check(r)
    }
}

fn copy_xattrs(src: &Node<'_>, dst: &Node<'_>) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        let n = src.list(&mut names);
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(()),
            Some(libc::ERANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
            _ => return Err(e),
        }
    };
    let mut value = vec![0u8; 64 << 10];
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let len = src.get(&cname, &mut value);
        let Ok(len) = usize::try_from(len) else {
            return Err(io::Error::last_os_error());
        };
        if let Err(e) = dst.set(&cname, &value[..len]) {
            if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) {
                crate::debug(&format!(
                    "copy: xattr {} not copied: {e}",
                    String::from_utf8_lossy(name)
                ));
                continue;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// File data: a reflink when the filesystem shares extents, else a copy
/// (std uses copy_file_range, then read/write).
fn copy_data(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: two valid fds; FICLONE takes the source fd as its argument.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        return Ok(());
    }
    let mut s = src;
    let mut d = dst;
    io::copy(&mut s, &mut d).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_image_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }
}
