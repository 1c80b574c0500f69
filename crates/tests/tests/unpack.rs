//! The layer unpacker and the snapshotter, without a registry: hostile
//! tars (paths, links and whiteouts that try to reach outside), metadata,
//! compression, memory limits; flat and overlay snapshots, failures that
//! must leave nothing behind, and overlay mounts that must not leak.
//!
//! More escape patterns run in image.rs; these add the ones it lacks.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hako_image::digest::Digest;
use hako_image::snapshot::{chain_ids, SnapshotKind, Snapshotter};
use hako_image::unpack::{self, LayerStats, UnpackOptions, WhiteoutMode};
use hako_tests::TempDir;
use tar::EntryType::{self, Directory as D, Link as H, Regular as F, Symlink as S};

/// An entry with raw name bytes (tar::Header::set_path refuses '..').
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().expect("gnu");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == D { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).expect("append");
}

type Entry<'a> = (&'a str, EntryType, &'a str, &'a [u8]);

fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, k, l, d) in entries {
        raw_entry(&mut b, n, *k, l, d);
    }
    b.into_inner().expect("tar")
}

fn opts(whiteouts: WhiteoutMode) -> UnpackOptions {
    UnpackOptions { whiteouts }
}

fn apply(dest: &Path, tar: &[u8]) -> Result<LayerStats, String> {
    unpack::apply_layer(dest, tar, &opts(WhiteoutMode::Apply)).map_err(|e| e.to_string())
}

/// Every path under `dir` with its type, size, mode and mtime.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        out.push(format!(
            "{} {:o} {} {}",
            p.display(),
            m.mode(),
            m.size(),
            m.mtime()
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir").flatten() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of that length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let len = usize::try_from(len).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// A sandbox: `<tmp>/outside` with a file the layers aim at, and an empty
/// `<tmp>/rootfs`.
struct Sandbox {
    t: TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let t = TempDir::new("unpack");
        let outside = t.path.join("outside");
        std::fs::create_dir_all(outside.join("dir")).expect("mkdir");
        std::fs::write(outside.join("file"), "host").expect("write");
        std::fs::write(outside.join("dir/kept"), "host").expect("write");
        let dest = t.path.join("rootfs");
        std::fs::create_dir_all(&dest).expect("mkdir");
        Sandbox { t, dest, outside }
    }

    /// Everything beside the rootfs, for before/after comparison.
    fn around(&self) -> Vec<String> {
        let dest = self.dest.to_string_lossy().into_owned();
        listing(&self.t.path)
            .into_iter()
            .filter(|l| !l.starts_with(&format!("{dest} ")) && !l.starts_with(&format!("{dest}/")))
            .collect()
    }
}

#[test]
fn hostile_layers_stay_inside() {
    let cases: Vec<(&str, Vec<Vec<Entry>>)> = vec![
        ("../escape", vec![vec![("../escape", F, "", b"x")]]),
        (
            "a/../../escape",
            vec![vec![("a/../../escape", F, "", b"x")]],
        ),
        (
            "symlink to /outside, file through it",
            vec![vec![("link", S, "/outside", b""), ("link/x", F, "", b"x")]],
        ),
        (
            "relative symlink out, file through it",
            vec![vec![
                ("link", S, "../../outside", b""),
                ("link/x", F, "", b"x"),
            ]],
        ),
        (
            "symlink in layer 1, file through it in layer 2",
            vec![
                vec![("d", S, "../outside/dir", b"")],
                vec![("d/kept", F, "", b"overwritten")],
            ],
        ),
        (
            "hardlink to ../outside/file",
            vec![vec![("h", H, "../outside/file", b"")]],
        ),
        (
            "hardlink to a symlink pointing out, then a file over it",
            vec![vec![
                ("s", S, "../outside/file", b""),
                ("h", H, "s", b""),
                ("h", F, "", b"overwritten"),
            ]],
        ),
        (
            "whiteout naming the parent",
            vec![vec![("a/.wh...", F, "", b"")]],
        ),
        (
            "whiteout through a symlinked dir",
            vec![vec![
                ("s", S, "../outside", b""),
                ("s/.wh.file", F, "", b""),
            ]],
        ),
        (
            "opaque whiteout in a symlinked dir",
            vec![vec![
                ("s", S, "/outside/dir", b""),
                ("s/.wh..wh..opq", F, "", b""),
            ]],
        ),
        (
            "a file replacing a dir symlink",
            vec![
                vec![("d", S, "../outside/dir", b"")],
                vec![("d", F, "", b"file now")],
            ],
        ),
        (
            "a dir replacing a dir symlink, then a file in it",
            vec![
                vec![("d", S, "/outside/dir", b"")],
                vec![("d", D, "", b""), ("d/kept", F, "", b"inside")],
            ],
        ),
    ];
    for (what, layers) in cases {
        let s = Sandbox::new();
        let before = s.around();
        for l in layers {
            // Refused or applied inside: both are fine, escaping is not.
            let _ = apply(&s.dest, &layer(&l));
        }
        assert_eq!(
            s.around(),
            before,
            "{what}: something outside the rootfs changed"
        );
        assert_eq!(
            std::fs::read_to_string(s.outside.join("file")).expect("read"),
            "host",
            "{what}"
        );
        assert_eq!(
            std::fs::read_to_string(s.outside.join("dir/kept")).expect("read"),
            "host",
            "{what}"
        );
    }
}

#[test]
fn refusals_name_the_entry_and_absolute_paths_land_inside() {
    let s = Sandbox::new();
    let e = apply(&s.dest, &layer(&[("a/../../escape", F, "", b"x")])).expect_err("refused");
    assert!(e.contains("a/../../escape"), "{e}");
    let e = apply(&s.dest, &layer(&[("h", H, "../outside/file", b"")])).expect_err("refused");
    assert!(e.contains("\"h\""), "{e}");
    let e = apply(&s.dest, &layer(&[("a/.wh...", F, "", b"")])).expect_err("refused");
    assert!(e.contains("a/.wh..."), "{e}");
    // A hardlink to a directory.
    let e = apply(
        &s.dest,
        &layer(&[("dir", D, "", b""), ("hd", H, "dir", b"")]),
    )
    .expect_err("refused");
    assert!(e.contains("directory"), "{e}");

    apply(&s.dest, &layer(&[("/etc/abs", F, "", b"abs")])).expect("absolute");
    assert_eq!(
        std::fs::read_to_string(s.dest.join("etc/abs")).expect("inside"),
        "abs"
    );
    // `..` that stays inside is resolved lexically.
    apply(&s.dest, &layer(&[("x/../etc/dot", F, "", b"dot")])).expect("inside '..'");
    assert_eq!(
        std::fs::read_to_string(s.dest.join("etc/dot")).expect("inside"),
        "dot"
    );
    // A symlink to "/" resolves to the rootfs, like a chroot.
    apply(
        &s.dest,
        &layer(&[("up", S, "/../../..", b""), ("up/etc/via", F, "", b"via")]),
    )
    .expect("symlink to root");
    assert_eq!(
        std::fs::read_to_string(s.dest.join("etc/via")).expect("inside"),
        "via"
    );
}

#[test]
fn huge_pax_headers_and_names_with_nul_are_refused() {
    let s = Sandbox::new();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    h.set_size(64 << 30);
    h.set_path("pax").expect("path");
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.extend_from_slice(&[b'9'; 8192]);
    let e = apply(&s.dest, &data).expect_err("refused");
    assert!(e.contains("extended header"), "{e}");

    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", &b"a\0b"[..])])
        .expect("pax");
    raw_entry(&mut b, "ignored", F, "", b"x");
    let e = apply(&s.dest, &b.into_inner().expect("tar")).expect_err("refused");
    assert!(e.contains("NUL"), "{e}");
}

#[test]
fn metadata_xattrs_links_and_special_files() {
    let s = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    // security.capability: cap_net_bind_service+ep (VFS_CAP_REVISION_2).
    let mut cap = [0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    b.append_pax_extensions([
        ("SCHILY.xattr.user.note", &b"hello"[..]),
        ("SCHILY.xattr.security.capability", &cap[..]),
    ])
    .expect("pax");
    let mut h = tar::Header::new_ustar();
    h.set_path("usr/bin/ping").expect("path");
    h.set_size(4);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_500_000_000);
    h.set_cksum();
    b.append(&h, &b"ping"[..]).expect("file");
    let mut h = tar::Header::new_ustar();
    h.set_path("srv/owned").expect("path");
    h.set_size(1);
    h.set_mode(0o2640);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_400_000_000);
    h.set_cksum();
    b.append(&h, &b"o"[..]).expect("file");
    let mut h = tar::Header::new_ustar();
    h.set_path("tmp").expect("path");
    h.set_entry_type(D);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(0o1777);
    h.set_mtime(1_300_000_000);
    h.set_cksum();
    b.append(&h, &[][..]).expect("dir");
    // Entries made inside tmp later must not change its mtime.
    raw_entry(&mut b, "tmp/later", F, "", b"l");
    raw_entry(&mut b, "usr/bin/ping2", H, "usr/bin/ping", b"");
    raw_entry(&mut b, "usr/bin/ping.sym", S, "ping", b"");
    for (name, kind, major, minor) in [
        ("dev/null", EntryType::Char, 1, 3),
        ("dev/loop9", EntryType::Block, 7, 9),
        ("run/initctl", EntryType::Fifo, 0, 0),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("path");
        h.set_entry_type(kind);
        h.set_mode(0o620);
        h.set_uid(0);
        h.set_gid(6);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_size(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, &[][..]).expect("special");
    }
    // A long name (GNU 'L') and a long link target.
    let long = format!("deep/{}/file", "n".repeat(200));
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, &long, &b"long"[..]).expect("long");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(S);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_link(&mut h, "deep/longlink", format!("/{long}"))
        .expect("long link");
    let stats = apply(&s.dest, &b.into_inner().expect("tar")).expect("apply");
    assert!(stats.entries >= 10, "{stats:?}");

    let d = &s.dest;
    let m = std::fs::metadata(d.join("usr/bin/ping")).expect("ping");
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.mtime()),
        (0o4755, 0, 1_500_000_000)
    );
    assert_eq!(
        getxattr(&d.join("usr/bin/ping"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        getxattr(&d.join("usr/bin/ping"), "security.capability").as_deref(),
        Some(&cap[..]),
        "file capabilities survive (set after chown)"
    );
    let m = std::fs::metadata(d.join("srv/owned")).expect("owned");
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o2640, 1234, 5678, 1_400_000_000)
    );
    let m = std::fs::metadata(d.join("tmp")).expect("tmp");
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o1777, 1_300_000_000));
    assert_eq!(
        std::fs::metadata(d.join("usr/bin/ping2"))
            .expect("link")
            .ino(),
        std::fs::metadata(d.join("usr/bin/ping"))
            .expect("ping")
            .ino()
    );
    assert_eq!(
        std::fs::read_link(d.join("usr/bin/ping.sym")).expect("symlink"),
        Path::new("ping")
    );
    let null = std::fs::symlink_metadata(d.join("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777, null.gid()),
        (libc::makedev(1, 3), 0o620, 6)
    );
    let blk = std::fs::symlink_metadata(d.join("dev/loop9")).expect("loop");
    assert!(blk.file_type().is_block_device() && blk.rdev() == libc::makedev(7, 9));
    assert!(std::fs::symlink_metadata(d.join("run/initctl"))
        .expect("fifo")
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::read_to_string(d.join(&long)).expect("long"),
        "long"
    );
    assert_eq!(
        std::fs::read_link(d.join("deep/longlink")).expect("long link"),
        Path::new(&format!("/{long}"))
    );
}

#[test]
fn whiteouts_in_both_modes() {
    let s = Sandbox::new();
    apply(
        &s.dest,
        &layer(&[
            ("a/gone", F, "", b"x"),
            ("a/stays", F, "", b"x"),
            ("o/old", F, "", b"x"),
            ("o/sub/old", F, "", b"x"),
        ]),
    )
    .expect("layer 1");
    apply(
        &s.dest,
        &layer(&[
            ("a/.wh.gone", F, "", b""),
            ("o/.wh..wh..opq", F, "", b""),
            ("o/new", F, "", b"n"),
        ]),
    )
    .expect("layer 2");
    assert!(!s.dest.join("a/gone").exists() && s.dest.join("a/stays").exists());
    assert!(!s.dest.join("o/old").exists() && !s.dest.join("o/sub").exists());
    assert!(s.dest.join("o/new").exists());

    let ov = s.t.path.join("overlay-layer");
    std::fs::create_dir(&ov).expect("mkdir");
    unpack::apply_layer(
        &ov,
        layer(&[
            ("a/.wh.gone", F, "", b""),
            ("o/.wh..wh..opq", F, "", b""),
            ("o/new", F, "", b"n"),
        ])
        .as_slice(),
        &opts(WhiteoutMode::Overlay),
    )
    .expect("overlay layer");
    let w = std::fs::symlink_metadata(ov.join("a/gone")).expect("whiteout");
    assert!(w.file_type().is_char_device() && w.rdev() == 0);
    assert_eq!(
        getxattr(&ov.join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(ov.join("o/new").exists());
}

#[test]
fn gzip_and_zstd_layers_with_their_diff_id() {
    let tar = layer(&[("etc/hello", F, "", b"hello"), ("etc/dir", D, "", b"")]);
    let want = Digest::sha256_of(&tar);
    let mut gz = flate2_like_gzip(&tar);
    let zst = zstd_compress(&tar);
    for (what, data) in [
        ("plain", tar.clone()),
        ("gzip", std::mem::take(&mut gz)),
        ("zstd", zst),
    ] {
        let s = Sandbox::new();
        let path = s.t.path.join("layer");
        std::fs::write(&path, &data).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let stats = unpack::apply_layer_file(&s.dest, file, &opts(WhiteoutMode::Apply))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(stats.diff_id, want, "{what}");
        assert_eq!(stats.tar_bytes, tar.len() as u64, "{what}");
        assert_eq!(
            std::fs::read_to_string(s.dest.join("etc/hello")).expect("hello"),
            "hello",
            "{what}"
        );
    }
}

/// gzip and zstd through the system tools, so the test does not depend on
/// the compressors hako uses to read them.
fn flate2_like_gzip(data: &[u8]) -> Vec<u8> {
    pipe_through(&["gzip", "-c"], data)
}

fn zstd_compress(data: &[u8]) -> Vec<u8> {
    pipe_through(&["zstd", "-q", "-c"], data)
}

fn pipe_through(cmd: &[&str], data: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (install it)", cmd[0]));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("join").expect("write");
    assert!(out.status.success(), "{cmd:?}");
    out.stdout
}

// ---- snapshots -------------------------------------------------------------

fn unpack_into(
    snaps: &Snapshotter,
    chain: &Digest,
    parent: Option<&Digest>,
    tar: &[u8],
) -> Result<(), String> {
    let mode = snaps.kind().whiteouts();
    let tar = tar.to_vec();
    snaps
        .unpack_layer(chain, parent, move |dir| {
            unpack::apply_layer(dir, tar.as_slice(), &opts(mode))
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Unpacks `layers` in order; returns their chain IDs.
fn unpack_chain(snaps: &Snapshotter, layers: &[Vec<u8>]) -> Vec<Digest> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
    let chain = chain_ids(&diff_ids);
    for (i, l) in layers.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| &chain[p]);
        unpack_into(snaps, &chain[i], parent, l).expect("unpack");
    }
    chain
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn base_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.kept", &b"1"[..])])
        .expect("pax");
    let mut h = tar::Header::new_ustar();
    h.set_path("bin/tool").expect("path");
    h.set_size(4);
    h.set_mode(0o4755);
    h.set_uid(42);
    h.set_gid(43);
    h.set_mtime(1_200_000_000);
    h.set_cksum();
    b.append(&h, &b"tool"[..]).expect("tool");
    raw_entry(&mut b, "bin/tool-hl", H, "bin/tool", b"");
    raw_entry(&mut b, "bin/sh", S, "tool", b"");
    raw_entry(&mut b, "etc/gone", F, "", b"gone");
    raw_entry(&mut b, "etc/old/file", F, "", b"old");
    let mut h = tar::Header::new_gnu();
    h.set_path("dev/null").expect("path");
    h.set_entry_type(EntryType::Char);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_mode(0o666);
    h.set_device_major(1).expect("major");
    h.set_device_minor(3).expect("minor");
    h.set_cksum();
    b.append(&h, &[][..]).expect("dev");
    b.into_inner().expect("tar")
}

fn top_layer() -> Vec<u8> {
    layer(&[
        ("etc/.wh.gone", F, "", b""),
        ("etc/old/.wh..wh..opq", F, "", b""),
        ("etc/old/new", F, "", b"new"),
        ("etc/added", F, "", b"added"),
    ])
}

fn check_image(root: &Path) {
    let m = std::fs::symlink_metadata(root.join("bin/tool")).expect("tool");
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o4755, 42, 43, 1_200_000_000)
    );
    assert_eq!(
        std::fs::symlink_metadata(root.join("bin/tool-hl"))
            .expect("hardlink")
            .ino(),
        m.ino(),
        "hardlinks stay hardlinks"
    );
    assert_eq!(
        getxattr(&root.join("bin/tool"), "user.kept").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).expect("sh"),
        Path::new("tool")
    );
    let dev = std::fs::symlink_metadata(root.join("dev/null")).expect("null");
    assert!(dev.file_type().is_char_device() && dev.rdev() == libc::makedev(1, 3));
    assert!(!root.join("etc/gone").exists());
    assert_eq!(dir_entries(&root.join("etc/old")), ["new"]);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/added")).expect("added"),
        "added"
    );
}

#[test]
fn flat_snapshots_copy_the_parent_and_apply_whiteouts() {
    let t = TempDir::new("snap-flat");
    let snaps = Snapshotter::open(&t.path.join("snapshots"), SnapshotKind::Flat).expect("open");
    let chain = unpack_chain(&snaps, &[base_layer(), top_layer()]);
    assert_eq!(snaps.list_layers().expect("list"), {
        let mut c = chain.clone();
        c.sort();
        c
    });
    // The parent is untouched, the child is the whole image.
    let base = snaps.layer_dir(&chain[0]);
    assert!(base.join("etc/gone").exists() && base.join("etc/old/file").exists());
    check_image(&snaps.layer_dir(&chain[1]));

    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let c = t.path.join("container");
    let prepared = snaps.prepare_rootfs(&chain, &c).expect("prepare");
    assert!(!prepared.mounted);
    check_image(&prepared.rootfs);
    std::fs::write(prepared.rootfs.join("etc/added"), "changed").expect("write");
    assert_eq!(
        std::fs::read_to_string(snaps.layer_dir(&chain[1]).join("etc/added")).expect("read"),
        "added",
        "the container has its own copy"
    );
    Snapshotter::release_rootfs(&c).expect("release");
    assert!(!c.exists());
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
        mounts
    );

    assert!(snaps.remove_layer(&chain[1]).expect("remove"));
    assert!(!snaps.has_layer(&chain[1]) && snaps.has_layer(&chain[0]));
    assert!(!snaps.remove_layer(&chain[1]).expect("remove again"));
    // A flat child needs its parent.
    let orphan = Digest::sha256_of(b"orphan");
    let e = unpack_into(
        &snaps,
        &orphan,
        Some(&Digest::sha256_of(b"none")),
        &top_layer(),
    )
    .expect_err("no parent");
    assert!(e.contains("parent"), "{e}");
}

#[test]
fn failed_unpacks_leave_nothing_behind() {
    for kind in [SnapshotKind::Overlay, SnapshotKind::Flat] {
        let t = TempDir::new("snap-fail");
        let root = t.path.join("snapshots");
        let snaps = Snapshotter::open(&root, kind).expect("open");
        let chain = unpack_chain(&snaps, &[base_layer()]);
        let before = dir_entries(&root);
        let bad = layer(&[("etc/ok", F, "", b"x"), ("../escape", F, "", b"x")]);
        let id = Digest::sha256_of(b"bad chain");
        let e = unpack_into(&snaps, &id, Some(&chain[0]), &bad).expect_err("refused");
        assert!(e.contains("../escape"), "{kind:?}: {e}");
        assert_eq!(dir_entries(&root), before, "{kind:?}: a directory was left");
        assert!(!snaps.has_layer(&id));
        // A missing layer makes prepare_rootfs fail without making the dir.
        let c = t.path.join("container");
        assert!(snaps.prepare_rootfs(&[chain[0].clone(), id], &c).is_err());
        assert!(!c.exists(), "{kind:?}: the container dir was left");
    }
}

#[test]
fn concurrent_unpacks_of_one_layer_both_succeed() {
    let t = TempDir::new("snap-race");
    let root = t.path.join("snapshots");
    let tar = base_layer();
    let id = Digest::sha256_of(&tar);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let root = root.clone();
            let tar = tar.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let snaps = Snapshotter::open(&root, SnapshotKind::Overlay).expect("open");
                unpack_into(&snaps, &id, None, &tar)
            })
        })
        .collect();
    for th in threads {
        th.join().expect("join").expect("unpack");
    }
    assert_eq!(dir_entries(&root), [id.encoded().to_string()]);
}

fn overlay_or_skip(root: &Path) -> bool {
    std::fs::create_dir_all(root).expect("mkdir");
    if hako_image::snapshot::overlay_supported(root) {
        return true;
    }
    eprintln!("overlay mounts do not work here: skipped");
    false
}

#[test]
fn overlay_prepare_and_release_leave_no_mount() {
    let t = TempDir::new("snap-ovl");
    let root = t.path.join("snapshots");
    if !overlay_or_skip(&root) {
        return;
    }
    let snaps = Snapshotter::open(&root, SnapshotKind::Overlay).expect("open");
    let chain = unpack_chain(&snaps, &[base_layer(), top_layer()]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let c = t.path.join("container");
    let prepared = snaps.prepare_rootfs(&chain, &c).expect("prepare");
    assert!(prepared.mounted);
    check_image(&prepared.rootfs);
    std::fs::write(prepared.rootfs.join("etc/added"), "changed").expect("write");
    assert_eq!(
        std::fs::read_to_string(snaps.layer_dir(&chain[1]).join("etc/added")).expect("read"),
        "added",
        "writes go to the upper dir"
    );
    // Busy: a file open in the mount; release detaches it.
    let busy = std::fs::File::open(prepared.rootfs.join("etc/added")).expect("open");
    Snapshotter::release_rootfs(&c).expect("release");
    drop(busy);
    assert!(!c.exists());
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
        mounts,
        "a mount was left"
    );
}

#[test]
fn overlay_with_more_layers_than_a_page_of_options_holds() {
    let t = TempDir::new("snap-many");
    // A long root makes 70 lower dirs far longer than one page.
    let root = t.path.join(format!("{}/snapshots", "x".repeat(120)));
    if !overlay_or_skip(&root) {
        return;
    }
    let snaps = Snapshotter::open(&root, SnapshotKind::Overlay).expect("open");
    let layers: Vec<Vec<u8>> = (0..70)
        .map(|i| {
            let name = format!("layers/{i}");
            let data = format!("{i}");
            layer(&[
                (name.as_str(), F, "", data.as_bytes()),
                ("top", F, "", data.as_bytes()),
            ])
        })
        .collect();
    let chain = unpack_chain(&snaps, &layers);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let c = t.path.join("container");
    let prepared = snaps.prepare_rootfs(&chain, &c).expect("prepare 70 layers");
    assert_eq!(dir_entries(&prepared.rootfs.join("layers")).len(), 70);
    assert_eq!(
        std::fs::read_to_string(prepared.rootfs.join("top")).expect("top"),
        "69",
        "the last layer is on top"
    );
    Snapshotter::release_rootfs(&c).expect("release");
    assert!(!c.exists());
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo"),
        mounts
    );
}
