//! Tar archives of files that are read by name and written in one pass:
//! the containers of `oci-archive:` and `docker-archive:` images.
//!
//! Reading never extracts anything: [`TarIndex`] records where each
//! regular file's data lies in the (uncompressed) archive and serves it
//! with positioned reads. Names are normalised lexically (`./a`, `a/./b`
//! → `a`, `a/b`); a name that climbs above the archive's top is refused.
//! Symlinks and hardlinks inside the archive (`docker save` links shared
//! layers) resolve only to other entries of the same archive, never to
//! the filesystem. A compressed archive (gzip, zstd) is first decompressed
//! into an unlinked temporary file.
//!
//! [`TarWriter`] writes to a temporary file next to the destination and
//! renames it into place on [`TarWriter::finish`]; dropped unfinished, it
//! removes it, so a failed save leaves no half-written archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::unpack;

/// The most entries an archive may hold (a hostile archive of millions of
/// empty entries would otherwise grow the index without bound).
const MAX_ENTRIES: usize = 1 << 20;
/// The longest name kept in the index.
const MAX_NAME: usize = 4096;
/// Links followed in a row before giving up (a loop).
const MAX_LINK_HOPS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: not a tar archive: {source}", path.display())]
    NotTar { path: PathBuf, source: io::Error },
    #[error("{}: entry {name:?} climbs out of the archive", path.display())]
    Escapes { path: PathBuf, name: String },
    #[error("{}: more than {MAX_ENTRIES} entries", path.display())]
    TooManyEntries { path: PathBuf },
    #[error("{}: no file {name:?} in the archive", path.display())]
    Missing { path: PathBuf, name: String },
    #[error("{}: {name:?} is a link loop or a chain of more than {MAX_LINK_HOPS} links", path.display())]
    LinkLoop { path: PathBuf, name: String },
    #[error("{}: {name:?} is larger than {limit} bytes", path.display())]
    TooLarge {
        path: PathBuf,
        name: String,
        limit: u64,
    },
}

#[derive(Debug, Clone)]
enum Node {
    File {
        offset: u64,
        size: u64,
    },
    /// A normalised archive name this entry points at.
    Link(String),
}

/// The regular files of a tar archive, by normalised name.
pub struct TarIndex {
    path: PathBuf,
    file: Arc<File>,
    nodes: HashMap<String, Node>,
}

/// `a/./b/../c` → `a/c`, without a leading `/` or `./`; None if it climbs
/// above the top. The empty string is the top itself.
pub fn normalise(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl TarIndex {
    /// Indexes the archive at `path` (plain, gzip or zstd). A compressed
    /// archive is decompressed into an unlinked file made in `scratch`.
    pub fn open(path: &Path, scratch: &Path) -> Result<TarIndex, ArchiveError> {
        let io_err = |what: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| ArchiveError::Io {
                what,
                path: p,
                source,
            }
        };
        let mut file = File::open(path).map_err(io_err("opening", path))?;
        let mut head = [0u8; 4];
        let n = read_up_to(&mut file, &mut head).map_err(io_err("reading", path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("reading", path))?;
        if unpack::detect(&head[..n]) != unpack::Compression::None {
            let tmp = scratch.join(format!(
                ".archive-{}-{}",
                std::process::id(),
                crate::store::unique()
            ));
            let mut out = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("creating", &tmp))?;
            // Unlinked at once: the decompressed copy lives only as long
            // as the index.
            let _ = std::fs::remove_file(&tmp);
            let mut r = unpack::decompressed(BufReader::with_capacity(256 << 10, file))
                .map_err(io_err("decompressing", path))?;
            io::copy(&mut r, &mut out).map_err(io_err("decompressing", path))?;
            out.seek(SeekFrom::Start(0))
                .map_err(io_err("reading", &tmp))?;
            file = out;
        }
        let nodes = index_entries(path, &mut file)?;
        Ok(TarIndex {
            path: path.to_path_buf(),
            file: Arc::new(file),
            nodes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `name` is a file (or a link to one) in the archive.
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    fn resolve(&self, name: &str) -> Result<(u64, u64), ArchiveError> {
        let missing = || ArchiveError::Missing {
            path: self.path.clone(),
            name: name.to_string(),
        };
        let mut key = normalise(name).ok_or_else(missing)?;
        for _ in 0..MAX_LINK_HOPS {
            match self.nodes.get(&key).ok_or_else(missing)? {
                Node::File { offset, size } => return Ok((*offset, *size)),
                Node::Link(to) => key = to.clone(),
            }
        }
        Err(ArchiveError::LinkLoop {
            path: self.path.clone(),
            name: name.to_string(),
        })
    }

    /// A reader of file `name` and its size.
    pub fn open_file(&self, name: &str) -> Result<(Section, u64), ArchiveError> {
        let (offset, size) = self.resolve(name)?;
        Ok((
            Section {
                file: Arc::clone(&self.file),
                pos: offset,
                end: offset + size,
            },
            size,
        ))
    }

    /// The whole of file `name`, which must be at most `limit` bytes.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let (mut r, size) = self.open_file(name)?;
        if size > limit {
            return Err(ArchiveError::TooLarge {
                path: self.path.clone(),
                name: name.to_string(),
                limit,
            });
        }
        let mut v = Vec::with_capacity(size as usize);
        r.read_to_end(&mut v).map_err(|source| ArchiveError::Io {
            what: "reading",
            path: self.path.clone(),
            source,
        })?;
        Ok(v)
    }
}

/// Reads until `buf` is full or the input ends; the bytes read.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn index_entries(path: &Path, file: &mut File) -> Result<HashMap<String, Node>, ArchiveError> {
    // The tar crate quotes the bad field, which may be a line of some
    // other file: keep only what it says went wrong.
    let not_tar = |source: io::Error| {
        let msg = source.to_string();
        let what = msg.split(':').next().unwrap_or("invalid header").trim();
        ArchiveError::NotTar {
            path: path.to_path_buf(),
            source: io::Error::new(source.kind(), what.to_string()),
        }
    };
    let mut nodes = HashMap::new();
    let mut archive = tar::Archive::new(file);
    let mut seen = 0usize;
    for entry in archive.entries_with_seek().map_err(not_tar)? {
        let entry = entry.map_err(not_tar)?;
        seen += 1;
        if seen > MAX_ENTRIES {
            return Err(ArchiveError::TooManyEntries {
                path: path.to_path_buf(),
            });
        }
        let raw = entry.path_bytes();
        if raw.len() > MAX_NAME {
            continue;
        }
        let name = String::from_utf8_lossy(&raw).into_owned();
        let escapes = || ArchiveError::Escapes {
            path: path.to_path_buf(),
            name: name.clone(),
        };
        let key = normalise(&name).ok_or_else(escapes)?;
        let node = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Node::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            },
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                // A symlink is relative to its own directory; a hardlink
                // names another entry from the top. Either stays inside.
                let joined = match (kind, key.rsplit_once('/')) {
                    (tar::EntryType::Symlink, Some((dir, _))) if !target.starts_with('/') => {
                        format!("{dir}/{target}")
                    }
                    _ => target,
                };
                Node::Link(normalise(&joined).ok_or_else(escapes)?)
            }
            // Directories and anything else are not files to read.
            _ => continue,
        };
        nodes.insert(key, node);
    }
    Ok(nodes)
}

/// A reader of one file inside an archive, by positioned reads (several
/// may be open at once on one file).
pub struct Section {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for Section {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a file",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes a tar archive to a temporary file beside `dest`, renamed to
/// `dest` by [`TarWriter::finish`]. Entries are regular files and
/// directories, owned by 0:0, with the given mtime.
pub struct TarWriter {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    mtime: u64,
}

const BLOCK: usize = 512;

impl TarWriter {
    pub fn create(dest: &Path, mtime: u64) -> Result<TarWriter, ArchiveError> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "archive".into());
        let tmp = dest.with_file_name(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            crate::store::unique()
        ));
        let file = File::options()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|source| ArchiveError::Io {
                what: "creating",
                path: tmp.clone(),
                source,
            })?;
        Ok(TarWriter {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(file),
            mtime,
        })
    }

    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        move |source| ArchiveError::Io {
            what,
            path: self.tmp.clone(),
            source,
        }
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the archive is closed"))
    }

    /// Writes the header(s) of an entry; returns the offset of the main
    /// header (to patch its size later).
    fn header(&mut self, name: &str, kind: tar::EntryType, size: u64) -> io::Result<u64> {
        let mode = if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        };
        let mtime = self.mtime;
        let f = self.file()?;
        if name.len() > 100 {
            // GNU long name: an 'L' entry holding the name first.
            let mut long = tar::Header::new_gnu();
            long.set_entry_type(tar::EntryType::GNULongName);
            let data = format!("{name}\0");
            long.set_size(data.len() as u64);
            set_name(&mut long, "././@LongLink");
            long.set_mode(0o644);
            long.set_cksum();
            f.write_all(long.as_bytes())?;
            f.write_all(data.as_bytes())?;
            pad(f, data.len() as u64)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        set_name(&mut h, name);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_cksum();
        let at = f.stream_position()?;
        f.write_all(h.as_bytes())?;
        Ok(at)
    }

    pub fn add_dir(&mut self, name: &str) -> Result<(), ArchiveError> {
        let name = format!("{}/", name.trim_end_matches('/'));
        self.header(&name, tar::EntryType::Directory, 0)
            .map(|_| ())
            .map_err(self.io("writing"))
    }

    pub fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        (|| {
            self.header(name, tar::EntryType::Regular, data.len() as u64)?;
            let f = self.file()?;
            f.write_all(data)?;
            pad(f, data.len() as u64)
        })()
        .map_err(self.io("writing"))
    }

    /// Adds a file of unknown size from `r`: the header's size is patched
    /// once the data is written. Returns the size. `r`'s errors are
    /// returned as they are (ErrorKind::Other from the source).
    pub fn add_stream(&mut self, name: &str, r: &mut dyn Read) -> Result<u64, ArchiveError> {
        let result = (|| -> io::Result<u64> {
            let at = self.header(name, tar::EntryType::Regular, 0)?;
            let mtime = self.mtime;
            let f = self.file()?;
            let n = io::copy(r, f)?;
            pad(f, n)?;
            let end = f.stream_position()?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            set_name(&mut h, name);
            h.set_size(n);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_cksum();
            f.write_all_at(h.as_bytes(), at)?;
            f.seek(SeekFrom::Start(end))?;
            Ok(n)
        })();
        result.map_err(self.io("writing"))
    }

    /// Ends the archive (two zero blocks), syncs it and renames it to its
    /// destination.
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        (|| {
            let f = self.file()?;
            f.write_all(&[0u8; 2 * BLOCK])?;
            f.sync_all()
        })()
        .map_err(self.io("writing"))?;
        self.file = None;
        std::fs::rename(&self.tmp, &self.dest).map_err(|source| ArchiveError::Io {
            what: "renaming into place",
            path: self.dest.clone(),
            source,
        })
    }
}

impl Drop for TarWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The name field: up to 100 bytes (a longer name has its 'L' entry).
fn set_name(h: &mut tar::Header, name: &str) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    let b = name.as_bytes();
    let n = b.len().min(field.len());
    field[..n].copy_from_slice(&b[..n]);
}

fn pad(f: &mut File, written: u64) -> io::Result<()> {
    let rem = (written % BLOCK as u64) as usize;
    if rem != 0 {
        f.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// The files of an image container: an OCI layout directory or a tar
/// archive (an OCI archive or a docker-archive).
pub enum ImageFiles {
    /// A directory, opened once; names are resolved inside it
    /// (`RESOLVE_IN_ROOT`: a symlink in the layout cannot reach out).
    Dir {
        path: PathBuf,
        root: OwnedFd,
    },
    Archive(TarIndex),
}

impl ImageFiles {
    pub fn dir(path: &Path) -> Result<ImageFiles, ArchiveError> {
        let root = hako_runtime::sys::open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(
            |source| ArchiveError::Io {
                what: "opening the directory",
                path: path.to_path_buf(),
                source,
            },
        )?;
        Ok(ImageFiles::Dir {
            path: path.to_path_buf(),
            root,
        })
    }

    /// Where the files are (for messages).
    pub fn path(&self) -> &Path {
        match self {
            ImageFiles::Dir { path, .. } => path,
            ImageFiles::Archive(a) => a.path(),
        }
    }

    fn missing(&self, name: &str) -> ArchiveError {
        ArchiveError::Missing {
            path: self.path().to_path_buf(),
            name: name.to_string(),
        }
    }

    /// A reader of the regular file `name` and its size.
    pub fn open(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), ArchiveError> {
        match self {
            ImageFiles::Archive(a) => {
                let (r, size) = a.open_file(name)?;
                Ok((Box::new(r), size))
            }
            ImageFiles::Dir { path, root } => {
                let rel = normalise(name).ok_or_else(|| self.missing(name))?;
                let fd = hako_runtime::sys::openat2(
                    root.as_raw_fd(),
                    Path::new(&rel),
                    libc::O_RDONLY,
                    0,
                    hako_runtime::sys::RESOLVE_IN_ROOT,
                )
                .map_err(|source| {
                    if source.raw_os_error() == Some(libc::ENOENT) {
                        self.missing(name)
                    } else {
                        ArchiveError::Io {
                            what: "opening",
                            path: path.join(&rel),
                            source,
                        }
                    }
                })?;
                let st = hako_runtime::sys::fstat(&fd).map_err(|source| ArchiveError::Io {
                    what: "inspecting",
                    path: path.join(&rel),
                    source,
                })?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(self.missing(name));
                }
                Ok((Box::new(File::from(fd)), st.st_size as u64))
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.open(name).is_ok()
    }

    /// The whole of file `name`, which must be at most `limit` bytes.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let (r, size) = self.open(name)?;
        if size > limit {
            return Err(ArchiveError::TooLarge {
                path: self.path().to_path_buf(),
                name: name.to_string(),
                limit,
            });
        }
        let mut v = Vec::with_capacity(size as usize);
        r.take(limit + 1)
            .read_to_end(&mut v)
            .map_err(|source| ArchiveError::Io {
                what: "reading",
                path: self.path().join(name),
                source,
            })?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hako-archive-test-{}-{}",
            std::process::id(),
            crate::store::unique()
        ));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn names_are_normalised_and_kept_inside() {
        assert_eq!(normalise("./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalise("/a//./b/").as_deref(), Some("a/b"));
        assert_eq!(normalise("a/../b").as_deref(), Some("b"));
        assert_eq!(normalise("../a"), None);
        assert_eq!(normalise("a/../../b"), None);
    }

    #[test]
    fn writes_then_reads_back_with_long_names_and_streams() {
        let dir = scratch();
        let dest = dir.join("out.tar");
        let long = format!("blobs/sha512/{}", "a".repeat(128));
        let mut w = TarWriter::create(&dest, 0).expect("create");
        w.add_dir("blobs").expect("dir");
        w.add_bytes("small", b"hello").expect("bytes");
        w.add_bytes(&long, b"long name").expect("long");
        let big = vec![7u8; 70_000];
        let n = w.add_stream("streamed", &mut &big[..]).expect("stream");
        assert_eq!(n, 70_000);
        w.finish().expect("finish");
        // GNU tar agrees.
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&dest)
            .output()
            .expect("tar");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        assert!(
            listing.contains(&long) && listing.contains("70000"),
            "{listing}"
        );
        let idx = TarIndex::open(&dest, &dir).expect("index");
        assert_eq!(idx.read("./small", 100).expect("small"), b"hello");
        assert_eq!(idx.read(&long, 100).expect("long"), b"long name");
        assert_eq!(idx.read("streamed", 1 << 20).expect("big"), big);
        assert!(matches!(
            idx.read("streamed", 10),
            Err(ArchiveError::TooLarge { .. })
        ));
        assert!(!idx.contains("blobs"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            set_name(&mut h, name);
            if !link.is_empty() {
                h.set_link_name(link).expect("link");
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn links_resolve_inside_the_archive_only() {
        let dir = scratch();
        let data = raw_tar(&[
            ("a/layer.tar", tar::EntryType::Regular, "", b"layer"),
            (
                "b/layer.tar",
                tar::EntryType::Symlink,
                "../a/layer.tar",
                b"",
            ),
            ("c", tar::EntryType::Link, "a/layer.tar", b""),
            ("loop1", tar::EntryType::Symlink, "loop2", b""),
            ("loop2", tar::EntryType::Symlink, "loop1", b""),
            ("host", tar::EntryType::Symlink, "/etc/passwd", b""),
        ]);
        let p = dir.join("links.tar");
        std::fs::write(&p, &data).expect("write");
        let idx = TarIndex::open(&p, &dir).expect("index");
        assert_eq!(idx.read("b/layer.tar", 10).expect("symlink"), b"layer");
        assert_eq!(idx.read("c", 10).expect("hardlink"), b"layer");
        assert!(matches!(
            idx.read("loop1", 10),
            Err(ArchiveError::LinkLoop { .. })
        ));
        // An absolute target names an archive entry, never the host file.
        assert!(matches!(
            idx.read("host", 10),
            Err(ArchiveError::Missing { .. })
        ));
        let bad = raw_tar(&[("x", tar::EntryType::Symlink, "../../etc/passwd", b"")]);
        std::fs::write(&p, &bad).expect("write");
        assert!(matches!(
            TarIndex::open(&p, &dir),
            Err(ArchiveError::Escapes { .. })
        ));
        let bad = raw_tar(&[("../x", tar::EntryType::Regular, "", b"x")]);
        std::fs::write(&p, &bad).expect("write");
        assert!(matches!(
            TarIndex::open(&p, &dir),
            Err(ArchiveError::Escapes { .. })
        ));
        // gzip'd archives are read too.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).expect("gz");
        std::fs::write(&p, gz.finish().expect("gz")).expect("write");
        let idx = TarIndex::open(&p, &dir).expect("gz index");
        assert_eq!(idx.read("c", 10).expect("hardlink"), b"layer");
        std::fs::write(&p, b"not a tar at all, just text that is long enough?").expect("write");
        assert!(TarIndex::open(&p, &dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
