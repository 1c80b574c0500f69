//! The content store and image metadata.
//!
//! ```text
//! <root>/blobs/<alg>/<hex>     content, immutable, verified
//! <root>/ingest/<random>       being written; renamed into blobs/ once its
//!                              size and digest are checked
//! <root>/snapshots/…           unpacked layers (see crate::snapshot);
//! <root>/snapshots-flat/…      flat ones, where overlayfs does not work
//! <root>/snapshotter           which kind this store uses (probed once)
//! <root>/hako.db               SQLite (hako-records): images by ID,
//!                              names → image ID (and its -wal, -shm)
//! <root>/hako.db.lock          flock held by the database's writers
//! <root>/store.lock            shared by pulls, pushes and unpacks;
//!                              exclusive for garbage collection
//! <root>/ingest/locks/<alg>-<hex>  flock held while one blob downloads
//! ```
//!
//! A blob becomes visible only by rename after verification (and fsync),
//! so a reader never sees half a blob or wrong content; two writers of one
//! blob both end with the same file.
//!
//! Several hako processes share one root: every operation opens the
//! database for one transaction (a pull writes it only to record the
//! image, not while it downloads). A download takes the blob's lock, so a second
//! process pulling the same blob waits and then finds it present instead
//! of fetching it again. Garbage collection takes `store.lock`
//! exclusively: it never deletes a blob a running pull has just fetched
//! but not yet recorded.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hako_records::{Database, RecordsError};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Digester};
use crate::snapshot::SnapshotKind;

/// The records' kind (and their names').
const IMAGE: &str = "image";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("blob {expected}: {problem}")]
    Verify { expected: Digest, problem: String },
    #[error("image {0}")]
    Db(#[from] RecordsError),
    #[error("image record {key} in {}: {source}", path.display())]
    Decode {
        key: String,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("locking {}: {source}", path.display())]
    Lock { path: PathBuf, source: nix::Error },
    #[error("no image matches {0:?}")]
    NotFound(String),
    #[error("{0:?} matches several images; give more of the ID")]
    Ambiguous(String),
}

/// An image in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The config digest (docker's and podman's image ID).
    pub id: Digest,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The index or manifest list the manifest was chosen from (its blob
    /// is kept too, so `repo@<index digest>` finds the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub names: Vec<String>,
    /// RFC 3339, from the config's `created` or the pull time.
    pub created: String,
    /// Sum of the compressed layers and the config.
    pub size: u64,
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    pub platform: String,
}

impl ImageRecord {
    /// The store's record of an image with manifest `m` and `config`.
    pub fn new(
        m: &crate::manifest::Manifest,
        config: &crate::manifest::ImageConfig,
        manifest_digest: &Digest,
        index_digest: Option<Digest>,
        names: Vec<String>,
    ) -> ImageRecord {
        let os = if config.os.is_empty() {
            "linux"
        } else {
            &config.os
        };
        ImageRecord {
            id: m.config.digest.clone(),
            manifest_digest: manifest_digest.clone(),
            index_digest,
            manifest_media_type: m.media_type.clone(),
            names,
            created: config.created.clone().unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                crate::store::rfc3339(now)
            }),
            size: m.config.size + m.layers.iter().map(|(l, _)| l.size).sum::<u64>(),
            layers: m.layers.iter().map(|(l, _)| l.digest.clone()).collect(),
            diff_ids: config.rootfs.diff_ids.clone(),
            platform: format!("{os}/{}", config.architecture),
        }
    }
}

pub struct Store {
    root: PathBuf,
    db: Database,
}

/// `store.lock` held shared: garbage collection waits until it is dropped.
pub struct StoreLock {
    _lock: Flock<File>,
}

/// `store.lock` held exclusively: no pull, push or unpack is running.
pub struct GcLock {
    _lock: Flock<File>,
}

/// A blob's download lock. Dropping it removes the lock file (while still
/// holding it), so none accumulate. After a download that worked, every
/// later holder finds the blob; after one that failed, a process waiting
/// on the removed file and one arriving later may both download it, which
/// costs a second download, never a wrong blob.
pub struct BlobLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for d in ["blobs/sha256", "blobs/sha512", "ingest", "snapshots"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|source| StoreError::Io {
                what: "creating",
                path: p,
                source,
            })?;
        }
        let store = Store {
            root: root.to_path_buf(),
            db: Database::new(&root.join("hako.db")),
        };
        // Create the database now, so a bad root fails here (an existing
        // one is opened when used: `hako run` reads it once).
        if !root.join("hako.db").exists() {
            store.db.read(|_| Ok::<_, StoreError>(()))?;
        }
        Ok(store)
    }

    /// Locks `path` (creating it); `None` when a non-blocking lock is held
    /// elsewhere.
    fn lock_file(&self, path: &Path, arg: FlockArg) -> Result<Option<Flock<File>>, StoreError> {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| StoreError::Io {
                what: "opening lock",
                path: path.to_path_buf(),
                source,
            })?;
        loop {
            match Flock::lock(file, arg) {
                Ok(l) => return Ok(Some(l)),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, source)) => {
                    return Err(StoreError::Lock {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }

    fn must_lock(&self, path: &Path, arg: FlockArg) -> Result<Flock<File>, StoreError> {
        self.lock_file(path, arg)?.ok_or_else(|| StoreError::Lock {
            path: path.to_path_buf(),
            source: nix::errno::Errno::EWOULDBLOCK,
        })
    }

    /// Holds off garbage collection until the returned lock is dropped.
    pub fn shared_lock(&self) -> Result<StoreLock, StoreError> {
        let lock = self.must_lock(&self.root.join("store.lock"), FlockArg::LockShared)?;
        Ok(StoreLock { _lock: lock })
    }

    /// The lock garbage collection needs: waits for running pulls, pushes
    /// and unpacks when `wait`, else `None` if one is running.
    pub fn gc_lock(&self, wait: bool) -> Result<Option<GcLock>, StoreError> {
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        Ok(self
            .lock_file(&self.root.join("store.lock"), arg)?
            .map(|l| GcLock { _lock: l }))
    }

    /// Waits until no other process downloads blob `d`.
    pub fn lock_blob(&self, d: &Digest) -> Result<BlobLock, StoreError> {
        let dir = self.root.join("ingest/locks");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{}-{}", d.algorithm().name(), d.encoded()));
        let lock = self.must_lock(&path, FlockArg::LockExclusive)?;
        Ok(BlobLock { _lock: lock, path })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().name())
            .join(d.encoded())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|source| StoreError::Io {
            what: "opening blob",
            path: p,
            source,
        })
    }

    pub fn read_blob(&self, d: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let mut v = Vec::new();
        self.open_blob(d)?
            .take(max + 1)
            .read_to_end(&mut v)
            .map_err(|source| StoreError::Io {
                what: "reading blob",
                path: p,
                source,
            })?;
        Ok(v)
    }

    /// A writer for blob `expected` of `size` bytes (None: unknown).
    pub fn ingest(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest<'_>, StoreError> {
        let path = self.root.join("ingest").join(format!(
            "{}-{}-{}",
            expected.encoded(),
            std::process::id(),
            unique()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                what: "creating",
                path: path.clone(),
                source,
            })?;
        Ok(Ingest {
            store: self,
            expected: expected.clone(),
            size,
            path,
            file: Some(file),
            digester: Digester::new(expected.algorithm()),
        })
    }

    /// Stores `data` as blob `expected`, verified.
    pub fn put_bytes(&self, expected: &Digest, data: &[u8]) -> Result<(), StoreError> {
        let mut w = self.ingest(expected, Some(data.len() as u64))?;
        w.write_all(data).map_err(|source| StoreError::Io {
            what: "writing",
            path: w.path.clone(),
            source,
        })?;
        w.commit()
    }

    fn encode(&self, rec: &ImageRecord) -> Vec<u8> {
        // An ImageRecord has string keys and plain values only.
        serde_json::to_vec(rec).unwrap_or_default()
    }

    fn decode(&self, key: &str, v: &[u8]) -> Result<ImageRecord, StoreError> {
        serde_json::from_slice(v).map_err(|source| StoreError::Decode {
            key: key.to_string(),
            path: self.db.path().to_path_buf(),
            source,
        })
    }

    /// Adds or replaces an image record, and points each of its names at it
    /// (taking them from other images).
    pub fn put_image(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let id = rec.id.to_string();
        self.db.write(|w| {
            // Merge names with an existing record of the same image.
            let mut merged = match w.get(IMAGE, &id)? {
                Some(v) => self.decode(&id, &v).map(|r| r.names).unwrap_or_default(),
                None => Vec::new(),
            };
            for n in &rec.names {
                if !merged.contains(n) {
                    merged.push(n.clone());
                }
            }
            for n in &rec.names {
                let previous = w.set_name(IMAGE, n, &id)?;
                if let Some(prev) = previous.filter(|p| p != &id) {
                    // The name moves: drop it from the other image.
                    let old = w
                        .get(IMAGE, &prev)?
                        .and_then(|v| self.decode(&prev, &v).ok());
                    if let Some(mut old) = old {
                        old.names.retain(|x| x != n);
                        w.put(IMAGE, &prev, &self.encode(&old))?;
                    }
                }
            }
            let mut r = rec.clone();
            r.names = merged;
            w.put(IMAGE, &id, &self.encode(&r))?;
            Ok(())
        })
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let rows = self.db.read(|r| r.all(IMAGE).map_err(StoreError::from))?;
        let mut out: Vec<ImageRecord> = rows
            .iter()
            .filter_map(|(k, v)| self.decode(k, v).ok())
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    /// Finds an image by name (normalised like a reference), `repo@digest`
    /// of its manifest or index under a repository it has a name in, full
    /// ID, manifest digest, or an ID prefix of at least 3 hex digits.
    pub fn resolve(&self, what: &str) -> Result<ImageRecord, StoreError> {
        let all = self.images()?;
        let parsed = crate::reference::Reference::parse(what).ok();
        let normalised = parsed.as_ref().map(|r| r.to_string());
        let by_digest = |r: &ImageRecord| {
            let Some(p) = &parsed else { return false };
            let Some(d) = &p.digest else { return false };
            (d == &r.manifest_digest || Some(d) == r.index_digest.as_ref())
                && r.names.iter().any(|n| {
                    crate::reference::Reference::parse(n).is_ok_and(|n| n.name() == p.name())
                })
        };
        if let Some(r) = all.iter().find(|r| {
            r.names
                .iter()
                .any(|n| Some(n) == normalised.as_ref() || n == what)
                || r.id.to_string() == what
                || r.manifest_digest.to_string() == what
        }) {
            return Ok(r.clone());
        }
        if let Some(r) = all.iter().find(|r| by_digest(r)) {
            return Ok(r.clone());
        }
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if hex.len() >= 3 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<_> = all
                .iter()
                .filter(|r| r.id.encoded().starts_with(hex))
                .collect();
            match hits.len() {
                1 => return Ok(hits[0].clone()),
                0 => {}
                _ => return Err(StoreError::Ambiguous(what.into())),
            }
        }
        Err(StoreError::NotFound(what.into()))
    }

    /// Removes an image record and its names.
    pub fn remove_image(&self, id: &Digest) -> Result<(), StoreError> {
        let id = id.to_string();
        self.db.write(|w| {
            w.delete(IMAGE, &id)?;
            w.remove_names_of(IMAGE, &id)?;
            Ok(())
        })
    }

    /// Removes a name from an image (keeping the image).
    pub fn untag(&self, rec: &ImageRecord, name: &str) -> Result<(), StoreError> {
        let mut r = rec.clone();
        r.names.retain(|n| n != name);
        self.db.write(|w| {
            w.remove_name(IMAGE, name)?;
            w.put(IMAGE, &r.id.to_string(), &self.encode(&r))?;
            Ok(())
        })
    }

    /// Images, blobs and unpacked layers, and what pruning would free.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let images = self.images()?;
        let mut used = std::collections::HashSet::new();
        for r in images.iter().filter(|r| !r.names.is_empty()) {
            used.insert(r.id.clone());
            used.insert(r.manifest_digest.clone());
            used.extend(r.index_digest.iter().cloned());
            used.extend(r.layers.iter().cloned());
        }
        let mut u = DiskUsage {
            images: images.len(),
            dangling: images.iter().filter(|r| r.names.is_empty()).count(),
            ..Default::default()
        };
        for alg in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(alg);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let bytes = e.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
                u.blobs += 1;
                u.blob_bytes += bytes;
                let name = format!("{alg}:{}", e.file_name().to_string_lossy());
                if !name.parse::<Digest>().is_ok_and(|d| used.contains(&d)) {
                    u.reclaimable_bytes += bytes;
                }
            }
        }
        for kind in [SnapshotKind::Overlay, SnapshotKind::Flat] {
            let snapshots = self.root.join(kind.store_dir());
            for e in std::fs::read_dir(&snapshots)
                .into_iter()
                .flatten()
                .flatten()
            {
                u.layers += 1;
                u.layer_bytes += allocated_bytes(&e.path());
            }
        }
        Ok(u)
    }

    /// Deletes blobs no image refers to and what interrupted downloads
    /// left in `ingest/`; returns (count, bytes). The lock proves no pull
    /// is between fetching blobs and recording its image.
    pub fn gc_blobs(&self, _held: &GcLock) -> Result<(u64, u64), StoreError> {
        let mut keep = std::collections::HashSet::new();
        for r in self.images()? {
            keep.insert(self.blob_path(&r.id));
            keep.insert(self.blob_path(&r.manifest_digest));
            if let Some(i) = &r.index_digest {
                keep.insert(self.blob_path(i));
            }
            for l in &r.layers {
                keep.insert(self.blob_path(l));
            }
        }
        let (mut n, mut bytes) = (0, 0);
        for dir in [self.root.join("ingest"), self.root.join("ingest/locks")] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for alg in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(alg);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if !keep.contains(&p) {
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                    if std::fs::remove_file(&p).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        Ok((n, bytes))
    }
}

/// Seconds since the epoch → `YYYY-MM-DDTHH:MM:SSZ`, the form of
/// [`ImageRecord::created`] when an image config has no date.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest.get(1..)?.split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days since the epoch from a civil date (inverse of the above).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss - offset)
}

/// What [`Store::disk_usage`] counts (bytes are allocated blocks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    pub images: usize,
    /// Images without a name (`image prune` removes them).
    pub dangling: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Bytes of blobs only dangling images or no image at all use.
    pub reclaimable_bytes: u64,
    /// Unpacked layers (see crate::snapshot).
    pub layers: usize,
    pub layer_bytes: u64,
}

/// Allocated bytes under `p`, symlinks not followed.
fn allocated_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if let Ok(m) = e.path().symlink_metadata() {
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    total += m.blocks() * 512;
                }
            }
        }
    }
    total
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

/// A blob being written; [`Ingest::commit`] verifies and publishes it. Dropped
/// without commit, the temporary file is removed.
pub struct Ingest<'a> {
    store: &'a Store,
    expected: Digest,
    size: Option<u64>,
    path: PathBuf,
    file: Option<File>,
    digester: Digester,
}

impl Ingest<'_> {
    pub fn written(&self) -> u64 {
        self.digester.len()
    }

    /// Starts over (a server that ignored a Range request).
    pub fn restart(&mut self) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            f.set_len(0)?;
            std::io::Seek::seek(f, io::SeekFrom::Start(0))?;
        }
        self.digester = Digester::new(self.expected.algorithm());
        Ok(())
    }

    /// Checks size and digest, then renames into place.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let verify = |problem: String| StoreError::Verify {
            expected: self.expected.clone(),
            problem,
        };
        let n = self.digester.len();
        if let Some(s) = self.size {
            if n != s {
                return Err(verify(format!("got {n} bytes, the descriptor says {s}")));
            }
        }
        let got = std::mem::replace(&mut self.digester, Digester::new(self.expected.algorithm()))
            .finish();
        if got != self.expected {
            return Err(verify(format!("content has digest {got}")));
        }
        // Durable before it is visible: a crash must not leave a short
        // file under a verified name. (On error, drop removes the file.)
        if let Some(f) = &self.file {
            f.sync_all().map_err(|source| StoreError::Io {
                what: "syncing",
                path: self.path.clone(),
                source,
            })?;
        }
        let dest = self.store.blob_path(&self.expected);
        std::fs::rename(&self.path, &dest).map_err(|source| StoreError::Io {
            what: "publishing blob",
            path: dest,
            source,
        })?;
        self.file = None;
        Ok(())
    }
}

impl Write for Ingest<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(s) = self.size {
            if self.digester.len() + buf.len() as u64 > s {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is larger than its descriptor's {s} bytes",
                        self.expected
                    ),
                ));
            }
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("closed"))?;
        let n = f.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_528_767), "2024-03-04T05:06:07Z");
        assert_eq!(parse_rfc3339("2024-03-04T05:06:07Z"), Some(1_709_528_767));
        assert_eq!(
            parse_rfc3339("2024-03-04T06:06:07.123456789+01:00"),
            Some(1_709_528_767)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z")
                .map(rfc3339)
                .as_deref(),
            Some("2000-02-29T00:00:00Z")
        );
        for bad in [
            "",
            "2024-03-04",
            "2024-13-04T05:06:07Z",
            "2024-03-04T05:06:07",
            "2024-03-04T05:06:07+0100",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
