//! Images without a registry in between: OCI layouts and archives made by
//! skopeo read by hako (`pull oci:…`, `load`), and hako's (`save`, `push
//! oci:…`) read by skopeo, podman and umoci, with the image run each time.
//! Hostile archives get a clear error and leave nothing in the store.

mod images;

use std::path::Path;
use std::process::{Command, Stdio};

use hako_image::digest::Digest;
use hako_tests::{json, TempDir, Value};
use images::*;

const APP_OUTPUT: &str = "hello\n1234\n1234 10 50\n/srv/work\n";

fn image_id(h: &Hako, name: &str) -> String {
    let v: Value = serde_json::from_str(&h.ok(&["image", "inspect", name])).expect("inspect");
    v[0]["Id"].as_str().expect("Id").to_string()
}

/// The store holds nothing: no image, blob, layer or leftover download.
fn assert_empty_store(h: &Hako) {
    assert_eq!(h.ok(&["images", "-q"]), "");
    let lib = h.root.path.join("lib");
    for d in ["blobs/sha256", "snapshots", "ingest"] {
        let left: Vec<_> = std::fs::read_dir(lib.join(d))
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let left: Vec<_> = left
            .into_iter()
            .filter(|n| n != "locks" && !n.to_string_lossy().ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{d} has {left:?}");
    }
}

/// An image in a registry, made from an OCI layout: (registry, its name,
/// the layout's directory).
fn registry_with_app() -> (Registry, String, TempDir) {
    let reg = Registry::start("");
    let dir = TempDir::new("img");
    let layout = dir.path.join("layout");
    make_layout(&layout, &test_rootfs(&dir.path), app_config(), &["amd64"]);
    let name = format!("{}/test/app:v1", reg.addr);
    push(&layout, &name, &[]);
    (reg, name, dir)
}

fn skopeo(args: &[&str]) -> String {
    run(Command::new("skopeo").args(args))
}

#[test]
fn layouts_and_archives_made_by_skopeo_are_pulled_loaded_and_run() {
    let (reg, name, dir) = registry_with_app();
    let from_registry = Hako::new();
    from_registry.ok(&["pull", "-q", &name]);
    let registry_id = image_id(&from_registry, &name);
    let src = format!("docker://{name}");
    let tls = "--src-tls-verify=false";

    // oci: the layout itself, by tag; named localhost/<dir>:<tag>.
    let h = Hako::new();
    let layout = dir.path.join("layout");
    let id = h.ok(&["pull", "-q", &format!("oci:{}:latest", layout.display())]);
    assert_eq!(id.trim(), registry_id);
    assert!(h.ok(&["images"]).contains("localhost/layout"));
    assert_eq!(run_image(&h, "localhost/layout:latest"), APP_OUTPUT);
    let err = h.fails(&["pull", &format!("oci:{}:nope", layout.display())]);
    assert!(
        err.contains("no image named \"nope\"") && err.contains("latest"),
        "{err}"
    );

    // oci-archive: skopeo's, loaded and pulled by tag.
    let oa = dir.path.join("skopeo-oci.tar");
    skopeo(&[
        "copy",
        "-q",
        tls,
        &src,
        &format!("oci-archive:{}:v1", oa.display()),
    ]);
    let h = Hako::new();
    let out = h.ok(&["load", "-i", &oa.to_string_lossy()]);
    assert_eq!(out, "Loaded image: localhost/skopeo-oci:v1\n");
    assert_eq!(image_id(&h, "localhost/skopeo-oci:v1"), registry_id);
    assert_eq!(run_image(&h, "localhost/skopeo-oci:v1"), APP_OUTPUT);
    let h = Hako::new();
    h.ok(&["pull", "-q", &format!("oci-archive:{}:v1", oa.display())]);
    assert_eq!(run_image(&h, "localhost/skopeo-oci:v1"), APP_OUTPUT);

    // docker-archive: skopeo's, with uncompressed layers and RepoTags.
    let da = dir.path.join("skopeo-docker.tar");
    skopeo(&[
        "copy",
        "-q",
        tls,
        &src,
        &format!("docker-archive:{}:example/app:v2", da.display()),
    ]);
    let h = Hako::new();
    let out = h.ok(&["load", "-i", &da.to_string_lossy()]);
    assert_eq!(out, "Loaded image: docker.io/example/app:v2\n");
    assert_eq!(image_id(&h, "example/app:v2"), registry_id);
    assert_eq!(run_image(&h, "example/app:v2"), APP_OUTPUT);
    let h = Hako::new();
    h.ok(&["pull", "-q", &format!("docker-archive:{}", da.display())]);
    assert_eq!(run_image(&h, "example/app:v2"), APP_OUTPUT);
    let err = h.fails(&["pull", &format!("docker-archive:{}:other:x", da.display())]);
    assert!(err.contains("example/app:v2"), "{err}");

    // A multi-platform layout: --platform picks from its nested index.
    let multi = TempDir::new("multi");
    let multi_layout = multi.path.join("layout");
    make_layout(
        &multi_layout,
        &test_rootfs(&multi.path),
        app_config(),
        &["amd64", "arm64"],
    );
    let h = Hako::new();
    h.ok(&[
        "pull",
        "-q",
        "--platform",
        "linux/arm64",
        &format!("oci:{}", multi_layout.display()),
    ]);
    let v: Value =
        serde_json::from_str(&h.ok(&["image", "inspect", "localhost/layout:latest"])).expect("j");
    assert_eq!(v[0]["Platform"], "linux/arm64");
    drop(reg);
}

#[test]
fn archives_saved_by_hako_are_read_by_skopeo_podman_and_umoci() {
    let (reg, name, dir) = registry_with_app();
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    let id = image_id(&h, &name);
    let dest_tls = "--dest-tls-verify=false";

    // docker-archive (the default) → skopeo inspects it and copies it to
    // the registry; hako pulls that copy: same image, same output.
    let da = dir.path.join("hako-docker.tar");
    h.ok(&["save", "-o", &da.to_string_lossy(), &name]);
    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("docker-archive:{}", da.display()),
    ]))
    .expect("skopeo inspect");
    assert_eq!(
        inspect["RepoTags"],
        json!([]),
        "skopeo lists tags of registries only"
    );
    assert_eq!(inspect["Architecture"], "amd64");
    let copy = format!("{}/copy/docker:v1", reg.addr);
    skopeo(&[
        "copy",
        "-q",
        dest_tls,
        &format!("docker-archive:{}", da.display()),
        &format!("docker://{copy}"),
    ]);
    let h2 = Hako::new();
    h2.ok(&["pull", "-q", &copy]);
    assert_eq!(image_id(&h2, &copy), id);
    assert_eq!(run_image(&h2, &copy), APP_OUTPUT);

    // podman loads it under its name.
    let podman = TempDir::new("podman");
    let pm = |args: &[&str]| {
        run(Command::new("podman")
            .arg("--root")
            .arg(podman.path.join("root"))
            .arg("--runroot")
            .arg(podman.path.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args))
    };
    let loaded = pm(&["load", "-i", &da.to_string_lossy()]);
    assert!(loaded.contains(&name), "{loaded}");
    let listed = pm(&["images", "--no-trunc", "--format", "{{.ID}}"]);
    assert!(listed.contains(&id), "{listed}");

    // oci-archive → skopeo copies it by the full name hako wrote.
    let oa = dir.path.join("hako-oci.tar");
    h.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &oa.to_string_lossy(),
        &name,
    ]);
    let copy = format!("{}/copy/oci:v1", reg.addr);
    skopeo(&[
        "copy",
        "-q",
        dest_tls,
        &format!("oci-archive:{}:{name}", oa.display()),
        &format!("docker://{copy}"),
    ]);
    let h3 = Hako::new();
    h3.ok(&["pull", "-q", &copy]);
    assert_eq!(image_id(&h3, &copy), id);
    assert_eq!(run_image(&h3, &copy), APP_OUTPUT);

    // push to oci:DIR:TAG → umoci unpacks it; a second image joins the
    // layout without dropping the first.
    let layout = dir.path.join("hako-layout");
    h.ok(&["push", &name, &format!("oci:{}:v2", layout.display())]);
    h.ok(&["push", &name, &format!("oci:{}:v3", layout.display())]);
    let bundle = dir.path.join("umoci-bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v2", layout.display()))
        .arg(&bundle));
    let passwd = std::fs::read_to_string(bundle.join("rootfs/etc/passwd")).expect("passwd");
    assert!(passwd.contains("app:x:1234"), "{passwd}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["process"]["cwd"], "/srv/work");
    let tags = run(Command::new("umoci").args(["ls", "--layout"]).arg(&layout));
    assert_eq!(tags, "v2\nv3\n");

    // Round trips through hako itself, by file and through a pipe.
    let h4 = Hako::new();
    h4.ok(&["load", "-i", &da.to_string_lossy()]);
    assert_eq!(image_id(&h4, &name), id);
    h4.ok(&["rmi", &name]);
    let piped = dir.path.join("piped.tar");
    let out = std::fs::File::create(&piped).expect("create");
    let status = h
        .cmd(&["save", "--format", "oci-archive", &name])
        .stdout(out)
        .status()
        .expect("save");
    assert!(status.success());
    let input = std::fs::File::open(&piped).expect("open");
    let out = h4
        .cmd(&["load"])
        .stdin(input)
        .stdout(Stdio::piped())
        .output()
        .expect("load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Loaded image: {name}\n")
    );
    assert_eq!(run_image(&h4, &name), APP_OUTPUT);
    // No spool file stays behind.
    let ingest: Vec<_> = std::fs::read_dir(h4.root.path.join("lib/ingest"))
        .expect("ingest")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("spool"))
        .collect();
    assert!(ingest.is_empty());
}

/// A docker-archive of one image whose manifest.json lists `layers` and
/// whose config has `diff_ids`, with `files` as the archive's entries.
fn docker_archive(
    path: &Path,
    layers: &[&str],
    diff_ids: &[Digest],
    files: &[(&str, tar::EntryType, &str, &[u8])],
) {
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}});
    let manifest = json!([{"Config": "config.json", "RepoTags": ["evil:1"], "Layers": layers}]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, link: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        // Raw bytes: the tar crate refuses to write hostile names itself.
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        if !link.is_empty() {
            h.set_link_name(link).expect("link");
        }
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    add(
        "config.json",
        tar::EntryType::Regular,
        "",
        config.to_string().as_bytes(),
    );
    add(
        "manifest.json",
        tar::EntryType::Regular,
        "",
        manifest.to_string().as_bytes(),
    );
    for (n, k, l, d) in files {
        add(n, *k, l, d);
    }
    std::fs::write(path, b.into_inner().expect("tar")).expect("write");
}

fn layer_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path(name).expect("path");
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).expect("append");
    b.into_inner().expect("tar")
}

#[test]
fn hostile_or_broken_archives_are_refused_and_leave_nothing() {
    let dir = TempDir::new("hostile");
    let h = Hako::new();
    let layer = layer_with("hello", b"hi");
    let good = Digest::sha256_of(&layer);
    let p = dir.path.join("a.tar");
    let load_fails = |expect: &str| {
        let err = h.fails(&["load", "-i", &p.to_string_lossy()]);
        assert!(err.contains(expect), "wanted {expect:?} in: {err}");
        assert_empty_store(&h);
    };

    // A layer path that climbs out of the archive, or an absolute one
    // meaning a host file: names are of the archive only.
    docker_archive(&p, &["../../etc/passwd"], std::slice::from_ref(&good), &[]);
    load_fails("no file \"../../etc/passwd\" in the archive");
    docker_archive(&p, &["/etc/passwd"], std::slice::from_ref(&good), &[]);
    load_fails("no file \"/etc/passwd\"");
    // A symlinked layer pointing at the host.
    docker_archive(
        &p,
        &["layer.tar"],
        std::slice::from_ref(&good),
        &[("layer.tar", tar::EntryType::Symlink, "/etc/passwd", b"")],
    );
    load_fails("no file \"layer.tar\"");
    // An entry whose name climbs out.
    docker_archive(
        &p,
        &["layer.tar"],
        std::slice::from_ref(&good),
        &[("../layer.tar", tar::EntryType::Regular, "", &layer)],
    );
    load_fails("climbs out of the archive");
    // Layer content that is not the config's diff ID.
    let other = layer_with("hello", b"ho");
    docker_archive(
        &p,
        &["layer.tar"],
        std::slice::from_ref(&good),
        &[("layer.tar", tar::EntryType::Regular, "", &other)],
    );
    load_fails("content has digest");
    // Fewer layers than diff IDs.
    docker_archive(
        &p,
        &["layer.tar"],
        &[good.clone(), good.clone()],
        &[("layer.tar", tar::EntryType::Regular, "", &layer)],
    );
    load_fails("2 diff IDs for 1 layers");
    // A layer that is not a tar at all.
    let junk = b"junk that is not a tar archive at all".repeat(20);
    docker_archive(
        &p,
        &["layer.tar"],
        &[Digest::sha256_of(&junk)],
        &[("layer.tar", tar::EntryType::Regular, "", &junk)],
    );
    let err = h.fails(&["load", "-i", &p.to_string_lossy()]);
    assert!(err.contains("layer"), "{err}");
    assert_eq!(h.ok(&["images", "-q"]), "");
    std::fs::write(&p, b"plain text, not an archive").expect("write");
    let err = h.fails(&["load", "-i", &p.to_string_lossy()]);
    assert!(err.contains("a.tar"), "{err}");
    // A working one, to show the fixture is right.
    docker_archive(
        &p,
        &["layer.tar"],
        std::slice::from_ref(&good),
        &[("layer.tar", tar::EntryType::Regular, "", &layer)],
    );
    assert_eq!(
        h.ok(&["load", "-i", &p.to_string_lossy()]),
        "Loaded image: docker.io/library/evil:1\n"
    );
    h.ok(&["rmi", "evil:1"]);
    assert_empty_store(&h);

    // An OCI layout whose layer blob is wrong, or a symlink to a host
    // file: refused, nothing stored.
    let src = TempDir::new("src");
    let layout = src.path.join("layout");
    make_layout(&layout, &test_rootfs(&src.path), app_config(), &["amd64"]);
    let layer_blob = layout
        .join("blobs/sha256")
        .join(&first_layer_digest(&layout)[7..]);
    let original = std::fs::read(&layer_blob).expect("layer");
    let mut corrupt = original.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    std::fs::write(&layer_blob, &corrupt).expect("corrupt");
    let err = h.fails(&["pull", &format!("oci:{}", layout.display())]);
    assert!(err.contains("content has digest"), "{err}");
    assert_empty_store(&h);
    std::fs::remove_file(&layer_blob).expect("rm");
    let secret = src.path.join("secret");
    std::fs::write(&secret, &original).expect("secret");
    std::os::unix::fs::symlink(&secret, &layer_blob).expect("symlink");
    let err = h.fails(&["pull", &format!("oci:{}", layout.display())]);
    assert!(err.contains("no file"), "{err}");
    assert_empty_store(&h);
    // The same file through a relative link that stays inside is fine.
    std::fs::remove_file(&layer_blob).expect("rm");
    std::fs::rename(&secret, layout.join("blobs/real")).expect("mv");
    std::os::unix::fs::symlink("../real", &layer_blob).expect("symlink");
    h.ok(&["pull", "-q", &format!("oci:{}", layout.display())]);
    assert_eq!(run_image(&h, "localhost/layout:latest"), APP_OUTPUT);

    // A save that fails half-way (a stored layer no longer matches its
    // diff ID) leaves no archive, not even a temporary one.
    let rec: Value = serde_json::from_str(&h.ok(&["image", "inspect", "localhost/layout:latest"]))
        .expect("inspect");
    let stored = h
        .root
        .path
        .join("lib/blobs/sha256")
        .join(&rec[0]["Layers"][0].as_str().expect("layer").to_string()[7..]);
    std::fs::write(&stored, &corrupt).expect("corrupt the store");
    let out_dir = TempDir::new("out");
    let dest = out_dir.path.join("x.tar");
    let err = h.fails(&[
        "save",
        "-o",
        &dest.to_string_lossy(),
        "localhost/layout:latest",
    ]);
    assert!(err.contains("layer"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out_dir.path)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // And writing to a terminal or to nowhere is refused clearly.
    let err = h.fails(&[
        "save",
        "-o",
        "/nonexistent/dir/x.tar",
        "localhost/layout:latest",
    ]);
    assert!(err.contains("/nonexistent/dir"), "{err}");
    let err = h.fails(&[
        "save",
        "--format",
        "tarball",
        "-o",
        "x",
        "localhost/layout:latest",
    ]);
    assert!(err.contains("unknown format"), "{err}");
}
