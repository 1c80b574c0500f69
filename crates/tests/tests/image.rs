//! Images end to end: Debian's docker-registry on 127.0.0.1 (started here,
//! storage in a temp dir), images pushed with skopeo from OCI layouts made
//! here, pulled with `hako`, unpacked into bundles and run with
//! hako-runtime. Hostile layers go straight to the unpacker.

mod images;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hako_image::digest::Digest;
use hako_tests::{json, unique, TempDir, Value};
use images::*;

#[test]
fn pull_by_tag_and_digest_then_run() {
    let reg = Registry::start("");
    let dir = TempDir::new("img");
    let layout = dir.path.join("layout");
    make_layout(&layout, &test_rootfs(&dir.path), app_config(), &["amd64"]);
    let name = format!("{}/test/app:v1", reg.addr);
    push(&layout, &name, &[]);
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    let images = h.ok(&["images"]);
    assert!(
        images.contains(&format!("{}/test/app", reg.addr)) && images.contains("v1"),
        "{images}"
    );
    // User app (1234) with staff and wheel from /etc/group, env, cwd.
    assert_eq!(run_image(&h, &name), "hello\n1234\n1234 10 50\n/srv/work\n");

    // A bundle directory that has a rootfs is refused, and the user's
    // config.json there is left as it was.
    let taken = TempDir::new("taken");
    std::fs::create_dir(taken.path.join("rootfs")).expect("mkdir");
    std::fs::write(taken.path.join("config.json"), "mine").expect("write");
    let err = h.fails(&["image", "unpack", &name, &taken.path.to_string_lossy()]);
    assert!(err.contains("already has a rootfs"), "{err}");
    assert_eq!(
        std::fs::read_to_string(taken.path.join("config.json")).expect("read"),
        "mine"
    );

    // By digest, into another store: the same image ID.
    let inspect: Value =
        serde_json::from_str(&h.ok(&["image", "inspect", &name])).expect("inspect");
    let digest = inspect[0]["Digest"].as_str().expect("digest").to_string();
    let h2 = Hako::new();
    let id = h2.ok(&["pull", "-q", &format!("{}/test/app@{digest}", reg.addr)]);
    assert_eq!(id.trim(), inspect[0]["Id"].as_str().expect("id"));

    // tag, rmi of one name keeps the image, of the last removes it.
    h.ok(&["tag", &name, "localhost/other:x"]);
    assert!(h.ok(&["images"]).contains("localhost/other"));
    h.ok(&["rmi", "localhost/other:x"]);
    assert!(!h.ok(&["images"]).contains("localhost/other"));
    h.ok(&["rmi", &name]);
    assert_eq!(h.ok(&["images", "-q"]), "");
    // Blobs and layers went with it.
    let blobs = std::fs::read_dir(h.root.path.join("lib/blobs/sha256"))
        .expect("blobs")
        .count();
    let layers = std::fs::read_dir(h.root.path.join("lib/snapshots"))
        .expect("snapshots")
        .count();
    assert_eq!((blobs, layers), (0, 0));
    assert!(h.fails(&["rmi", &name]).contains("no image"));
}

#[test]
fn docker_schema2_zstd_and_multi_arch() {
    let reg = Registry::start("");
    let dir = TempDir::new("img");
    let layout = dir.path.join("layout");
    make_layout(&layout, &test_rootfs(&dir.path), app_config(), &["amd64"]);
    let h = Hako::new();
    let v2s2 = format!("{}/test/docker:v2s2", reg.addr);
    push(&layout, &v2s2, &["--format", "v2s2"]);
    h.ok(&["pull", "-q", &v2s2]);
    let inspect: Value =
        serde_json::from_str(&h.ok(&["image", "inspect", &v2s2])).expect("inspect");
    assert_eq!(
        inspect[0]["ManifestType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(run_image(&h, &v2s2), "hello\n1234\n1234 10 50\n/srv/work\n");

    let zstd = format!("{}/test/zstd:v1", reg.addr);
    push(&layout, &zstd, &["--dest-compress-format", "zstd"]);
    h.ok(&["pull", "-q", &zstd]);
    assert_eq!(run_image(&h, &zstd), "hello\n1234\n1234 10 50\n/srv/work\n");

    let multi_dir = TempDir::new("multi");
    let multi_layout = multi_dir.path.join("layout");
    make_layout(
        &multi_layout,
        &test_rootfs(&multi_dir.path),
        app_config(),
        &["amd64", "arm64"],
    );
    let multi = format!("{}/test/multi:v1", reg.addr);
    push(&multi_layout, &multi, &["--all"]);
    for (platform, arch) in [("linux/arm64", "arm64"), ("linux/amd64", "amd64")] {
        let h = Hako::new();
        h.ok(&["pull", "-q", "--platform", platform, &multi]);
        let inspect: Value =
            serde_json::from_str(&h.ok(&["image", "inspect", &multi])).expect("inspect");
        assert_eq!(inspect[0]["Platform"], format!("linux/{arch}"));
    }
    let err = Hako::new().fails(&["pull", "-q", "--platform", "linux/s390x", &multi]);
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn basic_auth_with_login() {
    let dir = TempDir::new("auth");
    let htpasswd = dir.path.join("htpasswd");
    let line = run(Command::new("htpasswd").args(["-Bbn", "alice", "s3cret"]));
    std::fs::write(&htpasswd, line).expect("htpasswd");
    let reg = Registry::start(&format!(
        "auth: {{htpasswd: {{realm: hako-test, path: {}}}}}\n",
        htpasswd.display()
    ));
    let layout = dir.path.join("layout");
    make_layout(&layout, &test_rootfs(&dir.path), app_config(), &["amd64"]);
    let name = format!("{}/private/app:v1", reg.addr);
    push(&layout, &name, &["--dest-creds", "alice:s3cret"]);
    let h = Hako::new();
    let authfile = dir.path.join("auth.json");
    let with_auth = |args: &[&str]| {
        let mut c = h.cmd(args);
        c.env("REGISTRY_AUTH_FILE", &authfile);
        c
    };
    let out = with_auth(&["pull", "-q", &name]).output().expect("hako");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = with_auth(&["login", "-u", "alice", "-p", "wrong", &reg.addr])
        .output()
        .expect("hako");
    assert!(!bad.status.success());
    assert!(!authfile.exists(), "a failed login stores nothing");
    run(&mut with_auth(&[
        "login", "-u", "alice", "-p", "s3cret", &reg.addr,
    ]));
    let auth: Value =
        serde_json::from_slice(&std::fs::read(&authfile).expect("auth.json")).expect("json");
    assert!(auth["auths"][&reg.addr]["auth"].is_string());
    run(&mut with_auth(&["pull", "-q", &name]));
    run(&mut with_auth(&["logout", &reg.addr]));
    let auth: Value =
        serde_json::from_slice(&std::fs::read(&authfile).expect("auth.json")).expect("json");
    assert!(auth["auths"].get(&reg.addr).is_none());
}

#[test]
fn push_then_skopeo_inspect() {
    let reg = Registry::start("");
    let dir = TempDir::new("img");
    let layout = dir.path.join("layout");
    make_layout(&layout, &test_rootfs(&dir.path), app_config(), &["amd64"]);
    let src = format!("{}/test/src:v1", reg.addr);
    push(&layout, &src, &[]);
    let h = Hako::new();
    h.ok(&["pull", "-q", &src]);
    let dest = format!("{}/other/copy:v2", reg.addr);
    h.ok(&["push", &src, &dest]);
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]));
    let v: Value = serde_json::from_str(&out).expect("skopeo json");
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Labels"]["org.example.team"], "images");
}

#[test]
fn registries_conf_location_and_mirror_with_docker_registry() {
    let dir = TempDir::new("img");
    let layout = dir.path.join("layout");
    make_layout(&layout, &test_rootfs(&dir.path), app_config(), &["amd64"]);
    let origin = Registry::start("");
    let mirror = Registry::start("");
    push(
        &layout,
        &format!("{}/hub/library/app:latest", origin.addr),
        &[],
    );
    push(&layout, &format!("{}/library/app:latest", mirror.addr), &[]);

    // docker.io/library is served from another registry and path (there
    // is no way to docker.io from here).
    let h = Hako::new();
    std::fs::write(
        h.conf_file(),
        format!(
            "[[registry]]\nprefix = \"docker.io/library\"\n\
             location = \"{}/hub/library\"\n",
            origin.addr
        ),
    )
    .expect("registries.conf");
    h.ok(&["pull", "-q", "app"]);
    let images = h.ok(&["images"]);
    assert!(images.contains("docker.io/library/app"), "{images}");
    assert_eq!(run_image(&h, "app"), "hello\n1234\n1234 10 50\n/srv/work\n");
    let inspect: Value = serde_json::from_str(&h.ok(&["image", "inspect", "app"])).expect("json");
    let digest = inspect[0]["Digest"].as_str().expect("digest").to_string();

    // With a mirror, and the location gone: by digest from the mirror.
    drop(origin);
    let h = Hako::new();
    std::fs::write(
        h.conf_file(),
        format!(
            "[[registry]]\nprefix = \"docker.io/library\"\nlocation = \"127.0.0.1:1/hub\"\n\
             [[registry.mirror]]\nlocation = \"{}/library\"\n\
             pull-from-mirror = \"digest-only\"\n",
            mirror.addr
        ),
    )
    .expect("registries.conf");
    let by_digest = format!("docker.io/library/app@{digest}");
    let id = h.ok(&["pull", "-q", &by_digest]);
    assert_eq!(id.trim(), inspect[0]["Id"].as_str().expect("id"));
    assert_eq!(
        run_image(&h, &by_digest),
        "hello\n1234\n1234 10 50\n/srv/work\n"
    );
    // A tag is not for this mirror, and the location is down.
    let err = h.fails(&["pull", "-q", "app"]);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

// ---- the unpacker against hostile layers ----------------------------------

/// A tar entry with raw name bytes (tar::Header::set_path refuses '..').
fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().expect("gnu");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if !link.is_empty() {
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).expect("append");
}

fn layer(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, k, l, d) in entries {
        entry(&mut b, n, *k, l, d);
    }
    b.into_inner().expect("tar")
}

fn apply(dest: &Path, tar: &[u8]) -> Result<(), String> {
    hako_image::unpack::apply_layer(
        dest,
        tar,
        &hako_image::unpack::UnpackOptions {
            whiteouts: hako_image::unpack::WhiteoutMode::Apply,
        },
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Every file under `dir`, for before/after comparison.
fn listing(dir: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(dir)
        .arg("-printf")
        .arg("%p %s %T@\n")
        .output()
        .expect("find");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn unpacker_keeps_every_path_inside() {
    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};
    type Layer<'a> = Vec<(&'a str, tar::EntryType, &'a str, &'a [u8])>;
    let cases: Vec<(&str, Vec<Layer>)> = vec![
        ("dotdot", vec![vec![("../escape", F, "", b"x")]]),
        ("dotdot deep", vec![vec![("a/../../escape", F, "", b"x")]]),
        (
            "abs symlink parent",
            vec![vec![("link", S, "/outside", b""), ("link/x", F, "", b"x")]],
        ),
        (
            "rel symlink parent",
            vec![vec![
                ("link", S, "../../outside", b""),
                ("link/x", F, "", b"x"),
            ]],
        ),
        (
            "symlink across layers",
            vec![
                vec![("d", S, "../../../outside", b"")],
                vec![("d/x", F, "", b"x")],
            ],
        ),
        ("hardlink out", vec![vec![("h", H, "../outside/file", b"")]]),
        (
            "hardlink via symlink",
            vec![vec![("s", S, "/outside", b""), ("h", H, "s/file", b"")]],
        ),
        ("whiteout up", vec![vec![("a/.wh...", F, "", b"")]]),
        (
            "opaque through symlink",
            vec![vec![
                ("s", S, "/outside", b""),
                ("s/.wh..wh..opq", F, "", b""),
            ]],
        ),
        (
            "whiteout through symlink",
            vec![vec![
                ("s", S, "../outside", b""),
                ("s/.wh.file", F, "", b""),
            ]],
        ),
        (
            "dir then symlink swap",
            vec![vec![
                ("d", D, "", b""),
                ("d", S, "/outside", b""),
                ("d/x", F, "", b"x"),
            ]],
        ),
    ];
    for (what, layers) in cases {
        let t = TempDir::new("unpack");
        let outside = t.path.join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("file"), "host").expect("write");
        let dest = t.path.join("a/b/rootfs");
        std::fs::create_dir_all(&dest).expect("mkdir");
        let before = listing(&outside);
        let before_parent = listing(&t.path.join("a"));
        for l in layers {
            let _ = apply(&dest, &layer(&l));
        }
        assert_eq!(listing(&outside), before, "{what}: outside changed");
        let after_parent: Vec<String> = listing(&t.path.join("a"))
            .into_iter()
            .filter(|p| !p.starts_with(&dest.to_string_lossy().to_string()))
            .collect();
        let before_parent: Vec<String> = before_parent
            .into_iter()
            .filter(|p| !p.starts_with(&dest.to_string_lossy().to_string()))
            .collect();
        assert_eq!(
            after_parent, before_parent,
            "{what}: a file appeared beside the rootfs"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("file")).expect("read"),
            "host",
            "{what}"
        );
        assert!(
            !t.path.join("escape").exists() && !t.path.join("a/escape").exists(),
            "{what}"
        );
    }
}

#[test]
fn unpacker_refuses_dotdot_and_lands_absolute_paths_inside() {
    use tar::EntryType::Regular as F;
    let t = TempDir::new("unpack");
    let dest = t.path.join("rootfs");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let err = apply(&dest, &layer(&[("../x", F, "", b"x")])).expect_err("refused");
    assert!(err.contains("../x") && err.contains(".."), "{err}");
    apply(&dest, &layer(&[("/etc/abs", F, "", b"abs")])).expect("absolute path");
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/abs")).expect("inside"),
        "abs"
    );
    // A symlinked directory resolves inside the root, like a chroot.
    apply(
        &dest,
        &layer(&[
            ("etc2", tar::EntryType::Symlink, "/etc", b""),
            ("etc2/y", F, "", b"y"),
        ]),
    )
    .expect("symlinked parent");
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/y")).expect("inside"),
        "y"
    );
}

#[test]
fn unpacker_metadata_whiteouts_and_special_files() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let t = TempDir::new("unpack");
    let dest = t.path.join("rootfs");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("bin/tool").expect("path");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(4);
    h.set_mode(0o4755);
    h.set_uid(1000);
    h.set_gid(2000);
    h.set_mtime(1_600_000_000);
    b.append_pax_extensions([("SCHILY.xattr.user.hako", b"yes".as_slice())])
        .expect("pax");
    h.set_cksum();
    b.append(&h, b"tool".as_slice()).expect("file");
    let mut hl = tar::Header::new_gnu();
    hl.set_path("bin/tool2").expect("path");
    hl.set_link_name("bin/tool").expect("link");
    hl.set_entry_type(tar::EntryType::Link);
    hl.set_size(0);
    hl.set_cksum();
    b.append(&hl, &[][..]).expect("link");
    for (name, kind) in [
        ("dev/null", tar::EntryType::Char),
        ("run/fifo", tar::EntryType::Fifo),
    ] {
        let mut d = tar::Header::new_gnu();
        d.set_path(name).expect("path");
        d.set_entry_type(kind);
        d.set_mode(0o666);
        d.set_uid(0);
        d.set_gid(0);
        d.set_mtime(1_600_000_000);
        if kind == tar::EntryType::Char {
            d.set_device_major(1).expect("major");
            d.set_device_minor(3).expect("minor");
        }
        d.set_size(0);
        d.set_cksum();
        b.append(&d, &[][..]).expect("dev");
    }
    let tar = b.into_inner().expect("tar");
    apply(&dest, &tar).expect("apply");
    let m = std::fs::metadata(dest.join("bin/tool")).expect("tool");
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o4755, 1000, 2000, 1_600_000_000)
    );
    assert_eq!(
        m.ino(),
        std::fs::metadata(dest.join("bin/tool2"))
            .expect("tool2")
            .ino()
    );
    let mut value = [0u8; 8];
    let path =
        std::ffi::CString::new(dest.join("bin/tool").to_string_lossy().as_bytes()).expect("c");
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.hako".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(&value[..n.max(0) as usize], b"yes");
    let dev = std::fs::metadata(dest.join("dev/null")).expect("dev");
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    assert!(std::fs::metadata(dest.join("run/fifo"))
        .expect("fifo")
        .file_type()
        .is_fifo());

    // A second layer: a whiteout and an opaque directory.
    use tar::EntryType::{Directory as D, Regular as F};
    std::fs::create_dir_all(dest.join("opq")).expect("mkdir");
    std::fs::write(dest.join("opq/old"), "old").expect("write");
    apply(
        &dest,
        &layer(&[
            ("bin/.wh.tool2", F, "", b""),
            ("opq", D, "", b""),
            ("opq/.wh..wh..opq", F, "", b""),
            ("opq/new", F, "", b"n"),
        ]),
    )
    .expect("whiteouts");
    assert!(!dest.join("bin/tool2").exists() && dest.join("bin/tool").exists());
    assert!(!dest.join("opq/old").exists() && dest.join("opq/new").exists());

    // Overlay mode: whiteouts become 0:0 devices and the opaque xattr.
    let ov = t.path.join("overlay-layer");
    std::fs::create_dir_all(&ov).expect("mkdir");
    hako_image::unpack::apply_layer(
        &ov,
        layer(&[("gone/.wh.x", F, "", b""), ("opq/.wh..wh..opq", F, "", b"")]).as_slice(),
        &hako_image::unpack::UnpackOptions {
            whiteouts: hako_image::unpack::WhiteoutMode::Overlay,
        },
    )
    .expect("overlay");
    let w = std::fs::metadata(ov.join("gone/x")).expect("whiteout");
    assert!(w.file_type().is_char_device() && w.rdev() == 0);
    let p = std::ffi::CString::new(ov.join("opq").to_string_lossy().as_bytes()).expect("c");
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(&value[..n.max(0) as usize], b"y");
}

#[test]
fn truncated_or_wrong_blobs_leave_nothing_visible() {
    let t = TempDir::new("store");
    let store = hako_image::store::Store::open(&t.path).expect("store");
    let d = Digest::sha256_of(b"right content");
    assert!(store.put_bytes(&d, b"wrong content").is_err());
    assert!(store.put_bytes(&d, b"right").is_err(), "truncated");
    assert!(!store.has_blob(&d));
    assert_eq!(
        std::fs::read_dir(t.path.join("ingest"))
            .expect("ingest")
            .count(),
        0
    );
    store.put_bytes(&d, b"right content").expect("right");
    assert!(store.has_blob(&d));
    let mut w = store.ingest(&d, Some(13)).expect("ingest");
    assert!(
        w.write_all(b"right content and more").is_err(),
        "longer than its descriptor"
    );
}

// ---- token auth: the registry's `auth: token`, a token issuer here --------

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A JWT for `service` granting pull and push on every repository, signed
/// RS256 with `key` and carrying `cert_der` (x5c), as the registry checks
/// it against its rootcertbundle.
fn sign_token(dir: &Path, key: &Path, cert_der: &[u8], service: &str, scope: &str) -> String {
    use base64::Engine;
    let header = json!({"typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let access: Vec<Value> = scope
        .split(' ')
        .filter_map(|s| {
            let mut p = s.splitn(3, ':');
            let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let claims = json!({"iss": "hako-test-issuer", "sub": "alice", "aud": service,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": unique("jti"), "access": access});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let input = dir.join(unique("jwt-input"));
    std::fs::write(&input, &signing_input).expect("write");
    let sig = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(&input)
        .output()
        .expect("openssl");
    assert!(
        sig.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&sig.stderr)
    );
    let _ = std::fs::remove_file(&input);
    format!("{signing_input}.{}", b64url(&sig.stdout))
}

/// Serves tokens on 127.0.0.1: each GET gets a token for the query's
/// service and scope, if it carries alice's basic credentials. Returns the
/// realm URL and a counter of tokens issued.
fn token_issuer(
    dir: PathBuf,
    key: PathBuf,
    cert_der: Vec<u8>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let realm = format!("http://{}/token", listener.local_addr().expect("addr"));
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = issued.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                use base64::Engine;
                let good = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
                if line
                    .to_ascii_lowercase()
                    .starts_with("authorization: basic ")
                    && line.trim_end().ends_with(&good)
                {
                    authorized = true;
                }
            }
            let query = request_line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.split_once('?'))
                .map(|(_, q)| q.to_string())
                .unwrap_or_default();
            let param = |k: &str| {
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(key, _)| *key == k)
                    .map(|(_, v)| percent_decode(v))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut s = &stream;
            if !authorized {
                let _ = s.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let token = sign_token(&dir, &key, &cert_der, &param("service"), &param("scope"));
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = json!({"token": token}).to_string();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (realm, issued)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn token_auth_like_docker_hub() {
    let dir = TempDir::new("token");
    let key = dir.path.join("key.pem");
    let cert = dir.path.join("cert.pem");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hako-test-issuer",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    let (realm, issued) = token_issuer(dir.path.clone(), key.clone(), der.stdout);
    let reg = Registry::start(&format!(
        "auth: {{token: {{realm: \"{realm}\", service: hako-test-registry, issuer: hako-test-issuer, rootcertbundle: {}}}}}\n",
        cert.display()
    ));
    let layout = dir.path.join("layout");
    make_layout(&layout, &test_rootfs(&dir.path), app_config(), &["amd64"]);
    let name = format!("{}/private/app:v1", reg.addr);
    push(&layout, &name, &["--dest-creds", "alice:s3cret"]);
    let before = issued.load(std::sync::atomic::Ordering::Relaxed);
    let h = Hako::new();
    let authfile = dir.path.join("auth.json");
    // Anonymous: the issuer refuses, and hako says so.
    let mut anon = h.cmd(&["pull", "-q", &name]);
    anon.env("REGISTRY_AUTH_FILE", &authfile);
    let out = anon.output().expect("hako");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token") || err.contains("401"), "{err}");
    let mut login = h.cmd(&["login", "-u", "alice", "-p", "s3cret", &reg.addr]);
    login.env("REGISTRY_AUTH_FILE", &authfile);
    run(&mut login);
    let mut pull = h.cmd(&["pull", "-q", &name]);
    pull.env("REGISTRY_AUTH_FILE", &authfile);
    run(&mut pull);
    assert!(
        issued.load(std::sync::atomic::Ordering::Relaxed) > before,
        "hako fetched a token"
    );
    assert_eq!(run_image(&h, &name), "hello\n1234\n1234 10 50\n/srv/work\n");
}

// ---- an interrupted download, resumed with Range --------------------------

/// An HTTP proxy in front of `upstream` that cuts the first full GET of any
/// path containing `cut` half-way through the body. Returns its address and
/// the Range headers it saw.
fn cutting_proxy(
    upstream: String,
    cut: String,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let ranges = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ranges.clone();
    std::thread::spawn(move || {
        let mut cut_done = false;
        for client in listener.incoming().flatten() {
            let mut reader = BufReader::new(&client);
            let mut head = Vec::new();
            let mut range = None;
            let mut first = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if first.is_empty() {
                    first = line.clone();
                }
                if line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("range:") {
                    range = Some(line.trim_end().to_string());
                }
                if lower.starts_with("connection:") || lower.starts_with("host:") {
                    continue;
                }
                head.push(line);
            }
            if let Some(r) = &range {
                seen.lock().expect("lock").push(r.clone());
            }
            let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let mut req = head.concat();
            req.push_str(&format!("Host: {upstream}\r\nConnection: close\r\n\r\n"));
            if up.write_all(req.as_bytes()).is_err() {
                continue;
            }
            let mut response = Vec::new();
            let _ = up.read_to_end(&mut response);
            let mut out = &client;
            let is_get = first.starts_with("GET ");
            if is_get && !cut_done && range.is_none() && first.contains(&cut) {
                cut_done = true;
                let body_at = response
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(response.len(), |p| p + 4);
                let half = body_at + (response.len() - body_at) / 2;
                let _ = out.write_all(&response[..half]);
                let _ = client.shutdown(std::net::Shutdown::Both);
                continue;
            }
            let _ = out.write_all(&response);
        }
    });
    (addr, ranges)
}

#[test]
fn interrupted_download_is_resumed() {
    let reg = Registry::start("");
    let dir = TempDir::new("img");
    let layout = dir.path.join("layout");
    let rootfs = test_rootfs(&dir.path);
    // Incompressible bytes so the layer blob is large.
    let noise: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(rootfs.join("srv/noise"), &noise).expect("noise");
    make_layout(&layout, &rootfs, app_config(), &["amd64"]);
    push(&layout, &format!("{}/test/big:v1", reg.addr), &[]);
    let layer = first_layer_digest(&layout);
    let (proxy, ranges) = cutting_proxy(reg.addr.clone(), layer.clone());
    let h = Hako::new();
    h.ok(&["pull", "-q", &format!("{proxy}/test/big:v1")]);
    let seen = ranges.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "one resumed request: {seen:?}");
    assert!(
        seen[0].starts_with("Range: bytes=") && !seen[0].ends_with("=0-"),
        "{seen:?}"
    );
    let bundle = TempDir::new("bundle");
    h.ok(&[
        "image",
        "unpack",
        &format!("{proxy}/test/big:v1"),
        &bundle.path.to_string_lossy(),
    ]);
    assert_eq!(
        std::fs::read(bundle.path.join("rootfs/srv/noise")).expect("noise"),
        noise
    );
}
