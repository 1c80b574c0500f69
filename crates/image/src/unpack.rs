//! Applying a layer (a tar, maybe compressed) to a directory, with every
//! path kept inside it.
//!
//! The `tar` crate only parses; every entry is created here, relative to a
//! directory fd of the destination: its parent directory is opened with
//! openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so `..` and symlinks
//! (from this layer or an earlier one) resolve as if the destination were
//! `/`, and the last component, a plain name, is made with the `*at` calls
//! and O_NOFOLLOW. A symlink is created as given and never followed; a
//! hardlink's target is resolved the same way. Nothing can land outside.
//!
//! Decompression runs on its own thread, so gunzip and the file writes use
//! two cores.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;

use crate::digest::{Algorithm, Digest, HashingReader};
use crate::sys::{check, clear_dir, create_at, cstr, is_dir, lstat_at, open_at, remove_all_at};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("opening the destination {}: {source}", path.display())]
    Dest { path: PathBuf, source: io::Error },
    #[error("reading the layer: {0}")]
    Read(io::Error),
    #[error("layer entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("layer entry {entry:?}: {what}: {source}")]
    Io {
        entry: String,
        what: &'static str,
        source: io::Error,
    },
}

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Delete what they name: for a flattened rootfs.
    Apply,
    /// Turn them into overlayfs whiteouts (a 0:0 character device, the
    /// `trusted.overlay.opaque` xattr): for one overlay lower layer.
    Overlay,
    /// No whiteouts: `.wh.` names are ordinary files (`hako cp`, where the
    /// tar is a copy of files, not a layer).
    None,
}

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: WhiteoutMode,
}

/// What a layer held.
#[derive(Debug, Clone)]
pub struct LayerStats {
    pub entries: u64,
    /// Bytes of the uncompressed tar.
    pub tar_bytes: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// The compression of a stream, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader of the decompressed stream (gzip, zstd or plain, by magic).
pub fn decompressed<R: BufRead + Send + 'static>(mut r: R) -> io::Result<Box<dyn Read + Send>> {
    let head = r.fill_buf()?;
    Ok(match detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

/// Reads the chunks sent on a channel, in order: an `Err` is passed on,
/// and the sender's going away is the end of the stream.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }

    /// Reads `inner` on a thread of its own, passing chunks through a
    /// bounded channel: decompression overlaps with the file writes.
    pub fn threaded(mut inner: Box<dyn Read + Send>) -> ChannelReader {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(16);
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; 256 << 10];
            let mut filled = 0;
            while filled < buf.len() {
                match inner.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            buf.truncate(filled);
            if filled == 0 || tx.send(Ok(buf)).is_err() {
                return;
            }
        });
        ChannelReader::new(rx)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Applies a compressed or plain layer file to `dest`.
pub fn apply_layer_file(
    dest: &Path,
    layer: File,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let reader =
        decompressed(BufReader::with_capacity(256 << 10, layer)).map_err(UnpackError::Read)?;
    apply_layer(dest, ChannelReader::threaded(reader), opts)
}

/// Applies an uncompressed layer tar to `dest` (an existing directory).
pub fn apply_layer(
    dest: &Path,
    tar: impl Read,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let root =
        hako_runtime::sys::open(dest, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|source| {
            UnpackError::Dest {
                path: dest.to_path_buf(),
                source,
            }
        })?;
    let mut hashing = HashingReader::new(tar, Algorithm::Sha256);
    let mut unpacker = Unpacker {
        root,
        opts: opts.clone(),
        parents: HashMap::new(),
        dir_times: Vec::new(),
        buf: vec![0; COPY_BUF],
        umask: crate::sys::umask(),
    };
    let mut entries = 0u64;
    {
        let mut archive = tar::Archive::new(MetadataLimit::new(&mut hashing));
        let iter = archive.entries().map_err(UnpackError::Read)?;
        for entry in iter {
            let entry = entry.map_err(UnpackError::Read)?;
            unpacker.entry(entry)?;
            entries += 1;
        }
    }
    // Whatever follows the end-of-archive blocks is part of the diff ID.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Read)?;
    unpacker.finish()?;
    let tar_bytes = hashing.bytes_read();
    let (diff_id, _) = hashing.finish();
    Ok(LayerStats {
        entries,
        tar_bytes,
        diff_id,
    })
}

/// The largest PAX extended header, GNU long name or long link accepted.
/// The `tar` crate reads these whole into memory; real ones are a few
/// hundred bytes (xattrs: a few KiB).
pub const MAX_METADATA_ENTRY: u64 = 1 << 20;

/// Watches the tar stream as the `tar` crate reads it, header by header,
/// and fails the read before a PAX header, GNU long name or long link
/// larger than [`MAX_METADATA_ENTRY`] is buffered (the crate itself has
/// no limit: a 10 GB "long name" would exhaust memory). GNU sparse
/// entries, which carry extra header blocks, are refused here too.
struct MetadataLimit<R> {
    inner: R,
    header: [u8; 512],
    header_filled: usize,
    /// Bytes of data (with padding) left before the next header.
    data_left: u64,
    /// The unpadded size of the PAX header being collected.
    pax_len: u64,
    /// A PAX header's records, kept to read a `size` that overrides the
    /// next header's size field (as the `tar` crate does).
    pax: Option<Vec<u8>>,
    next_size: Option<u64>,
    ended: bool,
}

impl<R: Read> MetadataLimit<R> {
    fn new(inner: R) -> Self {
        MetadataLimit {
            inner,
            header: [0; 512],
            header_filled: 0,
            data_left: 0,
            pax_len: 0,
            pax: None,
            next_size: None,
            ended: false,
        }
    }

    fn header_done(&mut self) -> io::Result<()> {
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            // End-of-archive: the crate stops reading here.
            self.ended = true;
            return Ok(());
        }
        let name =
            String::from_utf8_lossy(h[..100].split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
        let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
        let header_field = header_size(&h[124..136])
            .ok_or_else(|| bad(format!("tar header {name:?}: invalid size field")))?;
        // As the `tar` crate: a PAX `size` applies to the next header that
        // is not itself an extension (GNU long names/links keep it pending;
        // a global header is returned as an entry, which drops it).
        let size = match h[156] {
            b'L' | b'K' | b'x' => header_field,
            b'g' => {
                self.next_size = None;
                header_field
            }
            _ => self.next_size.take().unwrap_or(header_field),
        };
        match h[156] {
            b'x' | b'L' | b'K' if size > MAX_METADATA_ENTRY => {
                return Err(bad(format!(
                    "tar header {name:?}: a {size}-byte extended header or long name \
                     (at most {MAX_METADATA_ENTRY})"
                )))
            }
            b'S' => {
                return Err(bad(format!(
                    "tar entry {name:?}: GNU sparse files are not supported"
                )))
            }
            _ => {}
        }
        self.pax = (h[156] == b'x').then(Vec::new);
        self.pax_len = size;
        self.data_left = size
            .checked_add(511)
            .map(|s| s & !511)
            .ok_or_else(|| bad(format!("tar header {name:?}: size overflow")))?;
        if self.data_left == 0 {
            self.pax_done();
        }
        Ok(())
    }

    fn pax_done(&mut self) {
        if let Some(records) = self.pax.take() {
            self.next_size = pax_size(&records);
        }
    }

    fn observe(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() && !self.ended {
            if self.data_left > 0 {
                let take = usize::try_from(self.data_left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                if let Some(p) = &mut self.pax {
                    let want = usize::try_from(self.pax_len)
                        .unwrap_or(usize::MAX)
                        .saturating_sub(p.len())
                        .min(take);
                    p.extend_from_slice(&buf[..want]);
                }
                self.data_left -= take as u64;
                buf = &buf[take..];
                if self.data_left == 0 {
                    self.pax_done();
                }
            } else {
                let take = (512 - self.header_filled).min(buf.len());
                self.header[self.header_filled..self.header_filled + take]
                    .copy_from_slice(&buf[..take]);
                self.header_filled += take;
                buf = &buf[take..];
                if self.header_filled == 512 {
                    self.header_filled = 0;
                    self.header_done()?;
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for MetadataLimit<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.observe(&out[..n])?;
        Ok(n)
    }
}

/// A tar numeric field: octal digits (spaces/NULs around them), or
/// base-256 when the first byte has its high bit set.
fn header_size(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // The last 8 bytes, as the `tar` crate reads a 12-byte field.
        let tail = &field[field.len().saturating_sub(8)..];
        return Some(tail.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)));
    }
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
}

/// The first `size` record of PAX extended header records, read as the
/// `tar` crate reads it.
fn pax_size(records: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() == Ok("size") {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

const COPY_BUF: usize = 128 << 10;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

struct Unpacker {
    root: OwnedFd,
    opts: UnpackOptions,
    /// Open parent directories by their path inside the root.
    parents: HashMap<PathBuf, OwnedFd>,
    /// Directory mtimes, set at the end (later entries change them).
    dir_times: Vec<(PathBuf, Mtime)>,
    /// File data goes through this buffer: 128 KiB writes instead of
    /// io::copy's 8 KiB (a quarter of the write calls on a Debian layer).
    buf: Vec<u8>,
    /// The process's umask, when known: a file created with its mode
    /// needs no chmod when the umask takes nothing from it.
    umask: Option<libc::mode_t>,
}

/// An entry's path as plain components below the root: a leading '/' and
/// '.' are dropped, '..' is resolved lexically and refused when it would
/// climb above the layer's root.
fn clean_path(raw: &[u8], shown: &str) -> Result<PathBuf, UnpackError> {
    if raw.contains(&0) {
        return Err(refused(shown, "the name contains a NUL byte"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            // Lexical, like docker's and containerd's Clean: `a/../b` is
            // `b`. Symlinks are resolved later, in root, by the kernel.
            Component::ParentDir => {
                if !out.pop() {
                    return Err(refused(shown, "its '..' climbs above the layer's root"));
                }
            }
            Component::Prefix(_) => return Err(refused(shown, "unexpected path prefix")),
        }
    }
    Ok(out)
}

fn refused(entry: &str, reason: &str) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

fn io_err<'a>(entry: &'a str, what: &'static str) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        entry: entry.to_string(),
        what,
        source,
    }
}

/// Opens the directory `path` below `root`, resolved as if `root` were
/// `/` (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
fn open_dir_in(root: &OwnedFd, path: &Path) -> io::Result<OwnedFd> {
    hako_runtime::sys::openat2(
        root.as_raw_fd(),
        path,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        hako_runtime::sys::RESOLVE_IN_ROOT,
    )
}

impl Unpacker {
    /// The directory fd for `parent` (a clean relative path), made if
    /// missing (mode 0755, like tar and containerd).
    fn parent_fd(&mut self, parent: &Path, shown: &str) -> Result<RawFd, UnpackError> {
        if parent.as_os_str().is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some(fd) = self.parents.get(parent) {
            return Ok(fd.as_raw_fd());
        }
        let not_inside = |dir: &Path, e: io::Error| UnpackError::Refused {
            entry: shown.to_string(),
            reason: format!(
                "its parent {} is not a directory inside the layer's root ({e})",
                dir.display()
            ),
        };
        let fd = match open_dir_in(&self.root, parent) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Make the missing directories one by one; each prefix is
                // resolved in root again (a component may be a symlink).
                let mut cur = self.root.try_clone().map_err(io_err(shown, "dup"))?;
                let mut prefix = PathBuf::new();
                for c in parent.components() {
                    prefix.push(c);
                    cur = match open_dir_in(&self.root, &prefix) {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            let name = cstr(c.as_os_str()).map_err(io_err(shown, "name"))?;
                            // SAFETY: valid fd and C string.
                            let r = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) };
                            if let Err(e) = check(r) {
                                if e.raw_os_error() != Some(libc::EEXIST) {
                                    return Err(io_err(shown, "creating a parent directory")(e));
                                }
                            }
                            open_dir_in(&self.root, &prefix).map_err(|e| not_inside(&prefix, e))?
                        }
                        Err(e) => return Err(not_inside(&prefix, e)),
                    };
                }
                cur
            }
            Err(e) => return Err(not_inside(parent, e)),
        };
        let raw = fd.as_raw_fd();
        self.parents.insert(parent.to_path_buf(), fd);
        Ok(raw)
    }

    fn invalidate(&mut self, path: &Path) {
        // A replaced or removed directory: forget it and what is below.
        self.parents.retain(|p, _| !p.starts_with(path));
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        // Bounded cache, emptied only between entries: fds handed out while
        // one entry is made stay open.
        if self.parents.len() > 256 {
            self.parents.clear();
        }
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let path = clean_path(&raw_path, &shown)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let when = entry_mtime(&mut entry, &header)?;
        let Some(name) = path.file_name().map(OsStr::to_os_string) else {
            // The root itself ("./"): only its metadata.
            if kind.is_dir() {
                let root = self.root.as_raw_fd();
                self.metadata(root, c".", &header, &shown, true)?;
                self.dir_times.push((PathBuf::new(), when));
            }
            return Ok(());
        };
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_bytes = name.as_bytes();

        // Whiteouts.
        let whiteouts = self.opts.whiteouts != WhiteoutMode::None;
        if whiteouts && name_bytes == OPAQUE.as_bytes() {
            let dir = self.parent_fd(&parent, &shown)?;
            return match self.opts.whiteouts {
                WhiteoutMode::Apply => {
                    clear_dir(dir).map_err(io_err(&shown, "opaque whiteout"))?;
                    self.parents
                        .retain(|p, _| p == &parent || !p.starts_with(&parent));
                    Ok(())
                }
                WhiteoutMode::Overlay => set_xattr_fd(dir, "trusted.overlay.opaque", b"y")
                    .map_err(io_err(&shown, "setting trusted.overlay.opaque")),
                WhiteoutMode::None => Ok(()),
            };
        }
        if let Some(hidden) = name_bytes
            .strip_prefix(WHITEOUT_PREFIX.as_bytes())
            .filter(|_| whiteouts)
        {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(refused(
                    &shown,
                    "a whiteout must name an entry of its directory",
                ));
            }
            let dir = self.parent_fd(&parent, &shown)?;
            let target = CString::new(hidden).map_err(|_| refused(&shown, "NUL in name"))?;
            self.invalidate(&parent.join(OsStr::from_bytes(hidden)));
            return match self.opts.whiteouts {
                WhiteoutMode::Apply => {
                    remove_all_at(dir, &target).map_err(io_err(&shown, "applying the whiteout"))
                }
                WhiteoutMode::Overlay => {
                    remove_all_at(dir, &target)
                        .map_err(io_err(&shown, "replacing with a whiteout"))?;
                    // SAFETY: valid fd and C string; a 0:0 char device.
                    check(unsafe { libc::mknodat(dir, target.as_ptr(), libc::S_IFCHR, 0) })
                        .map_err(io_err(&shown, "creating the overlay whiteout"))
                }
                WhiteoutMode::None => Ok(()),
            };
        }

        let dir = self.parent_fd(&parent, &shown)?;
        let cname = cstr(&name).map_err(|_| refused(&shown, "NUL in name"))?;
        // What is there now: a directory stays for a directory; anything
        // else is replaced.
        let existing = lstat_at(dir, &cname).map_err(io_err(&shown, "stat"))?;
        if let Some(st) = existing {
            if !(kind.is_dir() && is_dir(&st)) {
                self.invalidate(&path);
                remove_all_at(dir, &cname)
                    .map_err(io_err(&shown, "replacing the existing entry"))?;
            }
        }
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|st| !is_dir(st)) {
                    // SAFETY: valid fd and C string.
                    check(unsafe { libc::mkdirat(dir, cname.as_ptr(), 0o700) })
                        .map_err(io_err(&shown, "mkdir"))?;
                }
                self.metadata(dir, &cname, &header, &shown, true)?;
                self.xattrs(&mut entry, dir, &cname, &shown)?;
                self.dir_times.push((path.clone(), when));
                Ok(())
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if kind == tar::EntryType::GNUSparse {
                    return Err(refused(&shown, "GNU sparse files are not supported"));
                }
                let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
                // Created with its permission bits (setuid, setgid and
                // sticky only after the chown, which would clear them).
                let perm = mode & 0o777;
                let mut file = File::from(
                    create_at(dir, &cname, libc::O_WRONLY, perm)
                        .map_err(io_err(&shown, "creating the file"))?,
                );
                copy_data(&mut entry, &mut file, &mut self.buf, &shown)?;
                let (uid, gid) = owner(&header)?;
                // SAFETY: valid fd.
                check(unsafe { libc::fchown(file.as_raw_fd(), uid, gid) })
                    .map_err(io_err(&shown, "chown"))?;
                // fchown leaves the permission bits alone (it clears only
                // setuid/setgid, which are not set yet), so the mode is
                // right already unless there are special bits or the
                // umask took some away.
                if mode != perm || self.umask.is_none_or(|m| perm & m != 0) {
                    // SAFETY: valid fd; chmod after chown keeps setuid bits.
                    check(unsafe { libc::fchmod(file.as_raw_fd(), mode) })
                        .map_err(io_err(&shown, "chmod"))?;
                }
                self.xattrs_fd(&mut entry, file.as_raw_fd(), &shown)?;
                set_times_fd(file.as_raw_fd(), when).map_err(io_err(&shown, "setting mtime"))
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(&shown, "a symlink without a target"))?;
                let target = CString::new(target.as_ref())
                    .map_err(|_| refused(&shown, "NUL in the symlink target"))?;
                // SAFETY: valid C strings and fd.
                check(unsafe { libc::symlinkat(target.as_ptr(), dir, cname.as_ptr()) })
                    .map_err(io_err(&shown, "symlink"))?;
                let (uid, gid) = owner(&header)?;
                // SAFETY: valid fd and C string; NOFOLLOW changes the link.
                check(unsafe {
                    libc::fchownat(dir, cname.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
                })
                .map_err(io_err(&shown, "chown"))?;
                set_times(dir, &cname, when).map_err(io_err(&shown, "setting mtime"))
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(&shown, "a hardlink without a target"))?
                    .into_owned();
                let target = clean_path(&target_raw, &shown)?;
                let tname = target
                    .file_name()
                    .ok_or_else(|| refused(&shown, "a hardlink to the root"))?;
                let tparent = target.parent().unwrap_or(Path::new("")).to_path_buf();
                let tdir = self.parent_fd(&tparent, &shown)?;
                let tc = cstr(tname).map_err(|_| refused(&shown, "NUL in name"))?;
                match lstat_at(tdir, &tc).map_err(io_err(&shown, "stat of the link target"))? {
                    None => return Err(refused(&shown, "the hardlink target does not exist")),
                    Some(st) if is_dir(&st) => {
                        return Err(refused(&shown, "the hardlink target is a directory"))
                    }
                    Some(_) => {}
                }
                // Re-fetch dir: parent_fd may have evicted the cache.
                let dir = self.parent_fd(&parent, &shown)?;
                // SAFETY: valid fds and C strings; flags 0 never follows
                // a symlink target.
                check(unsafe { libc::linkat(tdir, tc.as_ptr(), dir, cname.as_ptr(), 0) })
                    .map_err(io_err(&shown, "hardlink"))
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (fmt, dev) = match kind {
                    tar::EntryType::Char | tar::EntryType::Block => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let fmt = if kind == tar::EntryType::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (fmt, libc::makedev(major, minor))
                    }
                    _ => (libc::S_IFIFO, 0),
                };
                // SAFETY: valid fd and C string.
                check(unsafe { libc::mknodat(dir, cname.as_ptr(), fmt | 0o600, dev) })
                    .map_err(io_err(&shown, "mknod"))?;
                self.metadata(dir, &cname, &header, &shown, false)?;
                set_times(dir, &cname, when).map_err(io_err(&shown, "setting mtime"))
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => Ok(()),
            other => Err(refused(
                &shown,
                &format!("unsupported entry type {other:?}"),
            )),
        }
    }

    /// Owner and mode of a directory or special file created by name.
    fn metadata(
        &self,
        dir: RawFd,
        name: &CStr,
        header: &tar::Header,
        shown: &str,
        directory: bool,
    ) -> Result<(), UnpackError> {
        let (uid, gid) = owner(header)?;
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        if directory {
            let fd = open_at(
                dir,
                name,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_DIRECTORY,
            )
            .map_err(io_err(shown, "opening for metadata"))?;
            // SAFETY: valid fd.
            check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
                .map_err(io_err(shown, "chown"))?;
            // SAFETY: valid fd.
            check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map_err(io_err(shown, "chmod"))
        } else {
            // A device or fifo just made by name (opening one could block
            // or reach a device): changed by name, without following.
            // SAFETY: valid fd and C string.
            check(unsafe {
                libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
            })
            .map_err(io_err(shown, "chown"))?;
            // SAFETY: valid fd and C string.
            check(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) })
                .map_err(io_err(shown, "chmod"))
        }
    }

    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        dir: RawFd,
        name: &CStr,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let list = pax_xattrs(entry)?;
        if list.is_empty() {
            return Ok(());
        }
        let fd = open_at(
            dir,
            name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_DIRECTORY,
        )
        .map_err(io_err(shown, "opening for xattrs"))?;
        apply_xattrs(fd.as_raw_fd(), &list, shown)
    }

    fn xattrs_fd<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        fd: RawFd,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let list = pax_xattrs(entry)?;
        apply_xattrs(fd, &list, shown)
    }

    fn finish(&mut self) -> Result<(), UnpackError> {
        self.parents.clear();
        // Deepest first, so setting a child's time doesn't touch a parent
        // already set (utimensat on a child does not change the parent).
        let times = std::mem::take(&mut self.dir_times);
        for (path, t) in times.into_iter().rev() {
            let shown = path.display().to_string();
            let (dir, name) = match (path.parent(), path.file_name()) {
                (Some(p), Some(n)) if p.as_os_str().is_empty() => {
                    (None, cstr(n).map_err(|_| refused(&shown, "NUL"))?)
                }
                (Some(p), Some(n)) => {
                    let fd = match open_dir_in(&self.root, p) {
                        Ok(fd) => fd,
                        Err(_) => continue, // removed by a later whiteout
                    };
                    (Some(fd), cstr(n).map_err(|_| refused(&shown, "NUL"))?)
                }
                _ => (None, c".".to_owned()),
            };
            let dfd = dir
                .as_ref()
                .map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
            let _ = set_times(dfd, &name, t);
        }
        Ok(())
    }
}

fn owner(header: &tar::Header) -> Result<(u32, u32), UnpackError> {
    let uid = header.uid().map_err(UnpackError::Read)?;
    let gid = header.gid().map_err(UnpackError::Read)?;
    let conv = |v: u64| {
        u32::try_from(v)
            .map_err(|_| UnpackError::Read(io::Error::other(format!("owner id {v} out of range"))))
    };
    Ok((conv(uid)?, conv(gid)?))
}

/// Seconds and nanoseconds.
type Mtime = (i64, i64);

/// An entry's mtime: PAX `mtime` (with its fraction, as GNU tar and Go's
/// archive/tar write it) or the header's whole seconds.
fn entry_mtime<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    header: &tar::Header,
) -> Result<Mtime, UnpackError> {
    if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? {
        for ext in exts {
            let ext = ext.map_err(UnpackError::Read)?;
            if ext.key_bytes() == b"mtime" {
                if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                    return Ok(t);
                }
            }
        }
    }
    let secs = header
        .mtime()
        .ok()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(0);
    Ok((secs, 0))
}

/// "SECONDS[.FRACTION]", maybe negative.
fn parse_pax_time(v: &str) -> Option<Mtime> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Some(match (neg, nanos) {
        (false, n) => (secs, n),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

fn set_times(dir: RawFd, name: &CStr, (secs, nanos): Mtime) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = [ts, ts];
    // SAFETY: valid fd, C string and two timespecs.
    check(unsafe {
        libc::utimensat(
            dir,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// [`set_times`] on an open file (futimens): no name to look up again.
fn set_times_fd(fd: RawFd, (secs, nanos): Mtime) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = [ts, ts];
    // SAFETY: valid fd and two timespecs.
    check(unsafe { libc::futimens(fd, times.as_ptr()) })
}

/// PAX `SCHILY.xattr.NAME` records (at most 256, each value at most 64 KiB).
fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<(CString, Vec<u8>)>, UnpackError> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(UnpackError::Read)?;
        let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if out.len() >= 256 || ext.value_bytes().len() > 65536 {
            return Err(UnpackError::Read(io::Error::other(
                "too many or too large xattrs",
            )));
        }
        if let Ok(n) = CString::new(name) {
            out.push((n, ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

fn apply_xattrs(fd: RawFd, list: &[(CString, Vec<u8>)], shown: &str) -> Result<(), UnpackError> {
    for (name, value) in list {
        // SAFETY: valid fd, C string and buffer.
        let r =
            unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if let Err(e) = check(r) {
            // Filesystems without user xattrs, or trusted.* unprivileged:
            // like tar, go on.
            if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                crate::debug(&format!(
                    "layer entry {shown:?}: xattr {} not set: {e}",
                    name.to_string_lossy()
                ));
                continue;
            }
            return Err(io_err(shown, "setting an xattr")(e));
        }
    }
    Ok(())
}

/// An entry's data into its file: read errors are the layer's, write
/// errors the destination's.
fn copy_data(
    entry: &mut impl Read,
    file: &mut File,
    buf: &mut [u8],
    shown: &str,
) -> Result<(), UnpackError> {
    use std::io::Write;
    loop {
        // Fill the buffer (reads stop at the decompressor's chunk ends).
        let mut filled = 0;
        while filled < buf.len() {
            match entry.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UnpackError::Read(e)),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        file.write_all(&buf[..filled])
            .map_err(io_err(shown, "writing the file"))?;
        if filled < buf.len() {
            return Ok(());
        }
    }
}

fn set_xattr_fd(fd: RawFd, name: &str, value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid fd, C string and buffer.
    check(unsafe { libc::fsetxattr(fd, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean_path(b"/etc/x", "t").expect("abs"),
            PathBuf::from("etc/x")
        );
        assert_eq!(
            clean_path(b"./a/./b", "t").expect("dots"),
            PathBuf::from("a/b")
        );
        assert_eq!(clean_path(b"a/../b", "t").expect("in"), PathBuf::from("b"));
        assert!(clean_path(b"a/../../b", "t").is_err());
        assert!(clean_path(b"../b", "t").is_err());
    }

    fn drain(tar: &[u8]) -> io::Result<u64> {
        let mut a = tar::Archive::new(MetadataLimit::new(tar));
        let mut n = 0;
        for e in a.entries()? {
            let mut e = e?;
            io::copy(&mut e, &mut io::sink())?;
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn metadata_limit_follows_the_stream() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..])
            .expect("long name");
        b.append_pax_extensions([("SCHILY.xattr.user.a", &b"1"[..]), ("size", &b"700"[..])])
            .expect("pax");
        let mut h = tar::Header::new_ustar();
        h.set_size(5); // the PAX size (700) wins
        h.set_mode(0o644);
        h.set_path("big").expect("path");
        h.set_cksum();
        b.append(&h, &[7u8; 700][..]).expect("big");
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_path("after").expect("path");
        h.set_cksum();
        b.append(&h, &b"hi"[..]).expect("after");
        let data = b.into_inner().expect("tar");
        assert_eq!(drain(&data).expect("a valid tar passes"), 3);
    }

    #[test]
    fn metadata_limit_refuses_huge_pax_headers() {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(8 << 30);
        h.set_path("pax").expect("path");
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[b'x'; 4096]);
        let e = drain(&data).expect_err("refused");
        assert!(e.to_string().contains("extended header"), "{e}");
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time("1795355116.103771163"),
            Some((1795355116, 103771163))
        );
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("7"), Some((7, 0)));
        assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }

    #[test]
    fn detects_compression() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(b"ustar"), Compression::None);
    }
}
