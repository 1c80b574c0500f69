//! Which snapshots a store makes: overlay where overlay mounts work,
//! flat ones (each chain ID a whole applied tree) where they do not or
//! when `HAKO_SNAPSHOTTER=flat` says so. Both from a registry pull and
//! from an OCI layout, with a whiteout and an opaque directory in the top
//! layer, and `image prune` removing them again.

mod images;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hako_tests::{json, TempDir};
use images::*;

/// Two layers over the busybox rootfs: the second deletes /data/gone
/// (whiteout), replaces /data/dir's content (opaque) and adds /new.
fn two_layer_layout(dir: &Path) -> PathBuf {
    let base = test_rootfs(dir);
    std::fs::create_dir_all(base.join("data/dir")).expect("mkdir");
    std::fs::write(base.join("data/gone"), "old").expect("write");
    std::fs::write(base.join("data/dir/a"), "a").expect("write");
    std::fs::write(base.join("keep"), "kept").expect("write");
    let top = dir.join("top");
    std::fs::create_dir_all(top.join("data/dir")).expect("mkdir");
    std::fs::write(top.join("data/.wh.gone"), "").expect("write");
    std::fs::write(top.join("data/dir/.wh..wh..opq"), "").expect("write");
    std::fs::write(top.join("data/dir/b"), "b").expect("write");
    std::fs::write(top.join("new"), "new").expect("write");
    let layout = dir.join("layout");
    make_layered_layout(
        &layout,
        &[&base, &top],
        json!({"Cmd": ["sh", "-c", "cat /keep /new /data/dir/*; ls /data"]}),
    );
    layout
}

fn entries(dir: &Path) -> Vec<String> {
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

fn pull(h: &Hako, flat: bool, source: &str) {
    let mut c = h.cmd(&["pull", "-q", source]);
    if flat {
        c.env("HAKO_SNAPSHOTTER", "flat");
    }
    run(&mut c);
}

/// The merged view of the image: a flat store's top snapshot.
fn check_flat_top(lib: &Path) -> PathBuf {
    let flat = lib.join("snapshots-flat");
    let layers = entries(&flat);
    assert_eq!(layers.len(), 2, "two chain IDs: {layers:?}");
    // The top is the one holding /new.
    let top = layers
        .iter()
        .map(|l| flat.join(l))
        .find(|p| p.join("new").exists())
        .expect("a snapshot with /new");
    let bottom = layers
        .iter()
        .map(|l| flat.join(l))
        .find(|p| !p.join("new").exists())
        .expect("the base snapshot");
    assert_eq!(entries(&top.join("data")), ["dir"]);
    assert_eq!(entries(&top.join("data/dir")), ["b"]);
    assert_eq!(
        std::fs::read_to_string(top.join("keep")).expect("keep"),
        "kept"
    );
    assert!(top.join("bin/busybox").is_file());
    // The parent is untouched by its child's whiteouts, and the copy kept
    // busybox's hardlinks and modes.
    assert_eq!(entries(&bottom.join("data")), ["dir", "gone"]);
    assert_eq!(entries(&bottom.join("data/dir")), ["a"]);
    let (a, b) = (
        std::fs::metadata(top.join("bin/busybox")).expect("busybox"),
        std::fs::metadata(bottom.join("bin/busybox")).expect("busybox"),
    );
    assert_eq!(a.mode(), b.mode());
    assert_eq!(a.len(), b.len());
    top
}

fn prune_empties(h: &Hako, name: &str) {
    h.ok(&["rmi", name]);
    h.ok(&["image", "prune"]);
    let lib = h.root.path.join("lib");
    for d in ["snapshots", "snapshots-flat"] {
        assert!(
            entries(&lib.join(d)).is_empty(),
            "{d}: {:?}",
            entries(&lib.join(d))
        );
    }
}

/// What the image prints when run from `rootfs` by hako-runtime.
fn run_rootfs(rootfs: &Path) -> String {
    let b = hako_tests::Bundle::new(&["sh", "-c", "cat /keep /new /data/dir/*; ls /data"]);
    let r = b.path().join("rootfs");
    std::fs::remove_dir_all(&r).expect("rm rootfs");
    hako_tests::copy_tree(rootfs, &r);
    run(&mut hako_tests::Runtime::new().cmd(&[
        "run",
        "--bundle",
        &b.path().to_string_lossy(),
        &hako_tests::unique("snap"),
    ]))
}

const EXPECTED: &str = "keptnewbdir\n";

#[test]
fn flat_snapshots_from_a_layout_and_a_registry() {
    let t = TempDir::new("flat");
    let layout = two_layer_layout(&t.path);

    // From an OCI layout (the import path).
    let h = Hako::new();
    pull(&h, true, &format!("oci:{}:latest", layout.display()));
    let top = check_flat_top(&h.root.path.join("lib"));
    assert!(entries(&h.root.path.join("lib/snapshots")).is_empty());
    assert_eq!(run_rootfs(&top), EXPECTED);
    prune_empties(&h, "localhost/layout:latest");

    // From a registry (layers fetched at once, then applied in order).
    let reg = Registry::start("");
    let name = format!("{}/snap/flat:v1", reg.addr);
    push(&layout, &name, &[]);
    let h = Hako::new();
    pull(&h, true, &name);
    let top = check_flat_top(&h.root.path.join("lib"));
    assert_eq!(run_rootfs(&top), EXPECTED);
    // A second pull finds everything there.
    pull(&h, true, &name);
    assert_eq!(entries(&h.root.path.join("lib/snapshots-flat")).len(), 2);
    prune_empties(&h, &name);
}

#[test]
fn the_store_probes_overlay_once_and_keeps_the_kinds_apart() {
    let t = TempDir::new("kinds");
    let layout = two_layer_layout(&t.path);
    let h = Hako::new();
    let lib = h.root.path.join("lib");
    // Overlay works here: the probe says so and remembers it.
    pull(&h, false, &format!("oci:{}:latest", layout.display()));
    assert_eq!(
        std::fs::read_to_string(lib.join("snapshotter")).expect("marker"),
        "overlay\n"
    );
    let overlay = entries(&lib.join("snapshots"));
    assert_eq!(overlay.len(), 2);
    assert!(entries(&lib.join("snapshots-flat")).is_empty());
    // Overlay layers stand alone: the top one holds only its own files,
    // its whiteouts as overlayfs whiteouts (0:0 character devices).
    let top = overlay
        .iter()
        .map(|l| lib.join("snapshots").join(l))
        .find(|p| p.join("new").exists())
        .expect("top layer");
    assert!(!top.join("bin").exists());
    let wh = std::fs::symlink_metadata(top.join("data/gone")).expect("whiteout");
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    assert_eq!(wh.rdev(), 0);

    // The same store asked for flat snapshots makes them beside, from the
    // stored blobs, without touching the overlay ones.
    let mut c = h.cmd(&["pull", "-q", &format!("oci:{}:latest", layout.display())]);
    c.env("HAKO_SNAPSHOTTER", "flat");
    run(&mut c);
    check_flat_top(&lib);
    assert_eq!(entries(&lib.join("snapshots")), overlay);

    // A bad choice is a clear error.
    let out = h
        .cmd(&["pull", "-q", &format!("oci:{}:latest", layout.display())])
        .env("HAKO_SNAPSHOTTER", "zfs")
        .output()
        .expect("hako");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HAKO_SNAPSHOTTER") && err.contains("zfs"),
        "{err}"
    );
    prune_empties(&h, "localhost/layout:latest");
}
