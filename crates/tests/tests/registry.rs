//! `hako` against a registry this test controls: a small HTTP server on
//! 127.0.0.1 that serves one image (manifest, config, one layer) and can
//! be slow, wrong or hostile on purpose, and counts what it is asked for.
//! It checks what a real registry cannot be made to do on demand
//! (image.rs covers Debian's docker-registry with skopeo): several hako
//! processes sharing one store, garbage collection during a pull, schema 1,
//! artifacts, wrong and truncated content, oversized manifests, auth.json,
//! registries.conf mirrors that are down or wrong.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hako_image::digest::Digest;
use hako_tests::{bin_dir, json, TempDir, Value};

// ---- a registry in the test ------------------------------------------------

struct Request {
    path: String,
    headers: HashMap<String, String>,
}

/// What to answer. `pause` sleeps half-way through the body; `cut_at`
/// closes the connection after that many bytes (Content-Length still
/// promises the whole body).
#[derive(Default)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    pause: Option<Duration>,
    cut_at: Option<usize>,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            body,
            ..Default::default()
        }
    }

    fn status(status: u16) -> Reply {
        Reply {
            status,
            ..Default::default()
        }
    }

    fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// An HTTP/1.1 server (one thread per connection, `Connection: close`);
/// records every request line; stopped on drop.
struct FakeRegistry {
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    fn start(handler: Box<Handler>) -> FakeRegistry {
        FakeRegistry::start_on("127.0.0.1", handler)
    }

    /// Listens on `ip` (`0.0.0.0`: every address); `addr` is 127.0.0.1:PORT.
    fn start_on(ip: &str, handler: Box<Handler>) -> FakeRegistry {
        let listener = TcpListener::bind((ip, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let addr = format!("127.0.0.1:{port}");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::from(handler);
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (handler, log) = (handler.clone(), log2.clone());
                std::thread::spawn(move || serve(conn, &*handler, &log));
            }
        });
        FakeRegistry { addr, log, stop }
    }

    /// How many requests were `METHOD path`.
    fn count(&self, method: &str, path: &str) -> usize {
        let want = format!("{method} {path}");
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| **l == want)
            .count()
    }

    /// How many requests it had.
    fn total(&self) -> usize {
        self.log.lock().expect("log").len()
    }
}

/// A 127.0.0.1 address nothing listens on.
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<String>>) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    // Bodies (uploads) are not used here; drain what was announced.
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        let _ = std::io::copy(&mut (&mut reader).take(n), &mut std::io::sink());
    }
    log.lock().expect("log").push(format!("{method} {path}"));
    let reply = handler(&Request { path, headers });
    let mut out = conn;
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    let body = match reply.cut_at {
        Some(n) => &reply.body[..n.min(reply.body.len())],
        None => &reply.body[..],
    };
    let half = body.len() / 2;
    let _ = out.write_all(&body[..half]);
    let _ = out.flush();
    if let Some(p) = reply.pause {
        std::thread::sleep(p);
    }
    let _ = out.write_all(&body[half..]);
    let _ = out.flush();
}

// ---- an image to serve -----------------------------------------------------

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Image {
    manifest: Vec<u8>,
    manifest_digest: Digest,
    config: Digest,
    layer: Digest,
    blobs: HashMap<String, Vec<u8>>,
}

/// A layer tar with `/hello.txt` and `/etc/motd`.
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_uid(0);
    dir.set_gid(0);
    dir.set_mtime(1_700_000_000);
    dir.set_size(0);
    b.append_data(&mut dir, "etc/", std::io::empty())
        .expect("tar dir");
    for (name, data) in [
        ("hello.txt", &b"hello from the test registry\n"[..]),
        ("etc/motd", b"motd\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// An OCI image with one uncompressed layer; `config_type` is the config
/// descriptor's media type.
fn image(config_type: &str) -> Image {
    labelled_image(config_type, "")
}

/// `image` with a label in its config (another image ID, the same layer).
fn labelled_image(config_type: &str, label: &str) -> Image {
    let layer = layer_tar();
    let layer_digest = Digest::sha256_of(&layer);
    let config = json!({"architecture": "amd64", "os": "linux", "created": "2026-03-04T05:06:07Z",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]}})
    .to_string()
    .into_bytes();
    let config_digest = Digest::sha256_of(&config);
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest.to_string(), "size": layer.len()}]})
    .to_string()
    .into_bytes();
    let mut blobs = HashMap::new();
    blobs.insert(config_digest.to_string(), config);
    blobs.insert(layer_digest.to_string(), layer);
    Image {
        manifest_digest: Digest::sha256_of(&manifest),
        manifest,
        config: config_digest,
        layer: layer_digest,
        blobs,
    }
}

/// Serves `img` as `test/app:latest` (and by digest); `layer_reply` may
/// change how the layer blob is answered.
fn serve_image(
    img: Image,
    layer_reply: impl Fn(Reply) -> Reply + Send + Sync + 'static,
) -> Box<Handler> {
    let layer = img.layer.to_string();
    Box::new(move |req: &Request| {
        if req.path == "/v2/" {
            return Reply::ok(b"{}".to_vec());
        }
        if let Some(r) = req.path.strip_prefix("/v2/test/app/manifests/") {
            if r == "latest" || r == img.manifest_digest.to_string() {
                return Reply::ok(img.manifest.clone())
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", &img.manifest_digest.to_string());
            }
            return Reply::status(404);
        }
        if let Some(d) = req.path.strip_prefix("/v2/test/app/blobs/") {
            return match img.blobs.get(d) {
                Some(b) if d == layer => layer_reply(Reply::ok(b.clone())),
                Some(b) => Reply::ok(b.clone()),
                None => Reply::status(404),
            };
        }
        Reply::status(404)
    })
}

// ---- running hako ----------------------------------------------------------

struct Hako {
    dir: TempDir,
}

impl Hako {
    fn new() -> Hako {
        let dir = TempDir::new("hako-reg");
        std::fs::create_dir_all(dir.path.join("home")).expect("home");
        Hako { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path.join("lib")
    }

    fn auth_file(&self) -> PathBuf {
        self.dir.path.join("auth.json")
    }

    /// Its registries.conf (none until [`Hako::conf`] writes it).
    fn conf_file(&self) -> PathBuf {
        self.dir.path.join("registries.conf")
    }

    fn conf(&self, text: &str) {
        std::fs::write(self.conf_file(), text).expect("registries.conf");
    }

    /// `hako --root … ARGS` with its own auth file and registries.conf
    /// (never /etc's) and no ~/.docker.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("hako"));
        c.arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.dir.path.join("run"))
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("HAKO_REGISTRIES_CONF", self.conf_file())
            .env("HOME", self.dir.path.join("home"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("HAKO_INSECURE_REGISTRIES");
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run hako")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "hako {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail with podman's 125; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(125), "hako {args:?}: {err}");
        assert!(err.starts_with("hako: "), "{err}");
        err
    }

    fn blob(&self, d: &Digest) -> PathBuf {
        self.root().join("blobs/sha256").join(d.encoded())
    }

    /// Files (not directories) under ingest/: what downloads left behind.
    fn ingest_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root().join("ingest")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().expect("type").is_dir() {
                    dirs.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- tests -------------------------------------------------------------------

#[test]
fn concurrent_pulls_share_one_store_and_fetch_each_blob_once() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let layer_path = format!("/v2/test/app/blobs/{}", img.layer);
    let id = img.config.encoded().to_string();
    let reg = FakeRegistry::start(serve_image(img, |r| Reply {
        pause: Some(Duration::from_millis(1500)),
        ..r
    }));
    let h = Hako::new();
    h.ok(&["images"]); // creates the store
    let name = format!("{}/test/app:latest", reg.addr);
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            h.cmd(&["pull", "-q", &name])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn pull")
        })
        .collect();
    // Other commands use the database while the pulls run.
    wait_for("the layer download", || reg.count("GET", &layer_path) > 0);
    for _ in 0..5 {
        h.ok(&["images", "-q"]);
    }
    for p in pulls {
        let out = p.wait_with_output().expect("pull");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    }
    assert_eq!(
        reg.count("GET", &layer_path),
        1,
        "the layer was fetched again"
    );
    assert_eq!(h.ok(&["images", "-q"]).trim(), &id[..12]);
    assert_eq!(h.ingest_files(), Vec::<PathBuf>::new());
}

#[test]
fn prune_waits_for_a_running_pull() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let layer_path = format!("/v2/test/app/blobs/{}", img.layer);
    let (config, layer, manifest) = (
        img.config.clone(),
        img.layer.clone(),
        img.manifest_digest.clone(),
    );
    let reg = FakeRegistry::start(serve_image(img, |r| Reply {
        pause: Some(Duration::from_millis(1500)),
        ..r
    }));
    let h = Hako::new();
    let name = format!("{}/test/app:latest", reg.addr);
    let pull = h
        .cmd(&["pull", "-q", &name])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pull");
    // The config and manifest are in the store, not yet in an image record:
    // a prune now must not take them.
    wait_for("the layer download", || reg.count("GET", &layer_path) > 0);
    assert!(h.blob(&config).exists());
    h.ok(&["image", "prune"]);
    let out = pull.wait_with_output().expect("pull");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in [&config, &layer, &manifest] {
        assert!(h.blob(d).exists(), "{d} was pruned");
    }
    let bundle = TempDir::new("bundle");
    h.ok(&["image", "unpack", &name, &bundle.path.to_string_lossy()]);
    assert_eq!(
        std::fs::read_to_string(bundle.path.join("rootfs/hello.txt")).expect("hello.txt"),
        "hello from the test registry\n"
    );
}

#[test]
fn schema1_artifacts_and_oversized_manifests_are_refused() {
    let schema1 = br#"{"schemaVersion":1,"name":"test/app","tag":"latest","fsLayers":[],"history":[],"signatures":[]}"#;
    let huge = vec![b' '; 5 << 20];
    let artifact = image("application/vnd.cncf.helm.config.v1+json");
    let reg = FakeRegistry::start(Box::new(move |req: &Request| match req.path.as_str() {
        "/v2/" => Reply::ok(b"{}".to_vec()),
        "/v2/old/app/manifests/latest" => Reply::ok(schema1.to_vec()).header(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        // Schema 1 without a telling content type.
        "/v2/old/plain/manifests/latest" => {
            Reply::ok(schema1.to_vec()).header("Content-Type", "application/json")
        }
        "/v2/chart/app/manifests/latest" => {
            Reply::ok(artifact.manifest.clone()).header("Content-Type", OCI_MANIFEST)
        }
        "/v2/huge/app/manifests/latest" => {
            Reply::ok(huge.clone()).header("Content-Type", OCI_MANIFEST)
        }
        _ => Reply::status(404),
    }));
    let h = Hako::new();
    for repo in ["old/app", "old/plain"] {
        let err = h.fails(&["pull", "-q", &format!("{}/{repo}", reg.addr)]);
        assert!(err.contains("schema 1") && err.contains(repo), "{err}");
    }
    let err = h.fails(&["pull", "-q", &format!("{}/chart/app", reg.addr)]);
    assert!(
        err.contains("not a container image") && err.contains("helm"),
        "{err}"
    );
    let err = h.fails(&["pull", "-q", &format!("{}/huge/app", reg.addr)]);
    assert!(err.contains("larger than 4194304 bytes"), "{err}");
    let err = h.fails(&["pull", "-q", &format!("{}/missing/app", reg.addr)]);
    assert!(err.contains("404"), "{err}");
    assert_eq!(h.ok(&["images", "-q"]), "");
}

#[test]
fn wrong_or_truncated_content_leaves_nothing_visible() {
    let h = Hako::new();
    // A layer with the right size and the wrong bytes.
    let img = image("application/vnd.oci.image.config.v1+json");
    let layer = img.layer.clone();
    let reg = FakeRegistry::start(serve_image(img, |mut r| {
        r.body[0] ^= 0xff;
        r
    }));
    let err = h.fails(&["pull", "-q", &format!("{}/test/app", reg.addr)]);
    assert!(err.contains(&layer.to_string()), "{err}");
    assert!(err.contains("content has digest"), "{err}");
    assert!(!h.blob(&layer).exists());
    assert_eq!(h.ingest_files(), Vec::<PathBuf>::new());
    assert_eq!(h.ok(&["images", "-q"]), "");

    // A layer whose connection always breaks half-way: retried with Range
    // (this server ignores it and cuts again), then given up.
    let img = image("application/vnd.oci.image.config.v1+json");
    let reg = FakeRegistry::start(serve_image(img, |r| {
        let n = r.body.len() / 2;
        Reply {
            cut_at: Some(n),
            ..r
        }
    }));
    let layer_path = format!("/v2/test/app/blobs/{layer}");
    let err = h.fails(&["pull", "-q", &format!("{}/test/app", reg.addr)]);
    assert!(err.contains(&layer.to_string()), "{err}");
    assert!(reg.count("GET", &layer_path) > 1, "no retry");
    assert!(!h.blob(&layer).exists());
    assert_eq!(h.ingest_files(), Vec::<PathBuf>::new());
    assert_eq!(h.ok(&["images", "-q"]), "");

    // A manifest fetched by digest that does not have that digest.
    let img = image("application/vnd.oci.image.config.v1+json");
    let other = Digest::sha256_of(b"something else");
    let manifest = img.manifest.clone();
    let reg = FakeRegistry::start(Box::new(move |req: &Request| {
        if req.path == "/v2/" {
            Reply::ok(b"{}".to_vec())
        } else {
            Reply::ok(manifest.clone()).header("Content-Type", OCI_MANIFEST)
        }
    }));
    let err = h.fails(&["pull", "-q", &format!("{}/test/app@{other}", reg.addr)]);
    assert!(
        err.contains("the manifest has digest") && err.contains(&other.to_string()),
        "{err}"
    );
    assert_eq!(h.ok(&["images", "-q"]), "");
}

#[test]
fn tag_rmi_prune_and_a_lost_blob_fetched_again() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let (id, layer) = (img.config.clone(), img.layer.clone());
    let layer_path = format!("/v2/test/app/blobs/{layer}");
    let reg = FakeRegistry::start(serve_image(img, |r| r));
    let h = Hako::new();
    let name = format!("{}/test/app:latest", reg.addr);
    assert_eq!(h.ok(&["pull", "-q", &name]).trim(), id.encoded());

    h.ok(&["tag", &name, "localhost/copy:v2"]);
    h.ok(&["tag", &id.encoded()[..8], "other"]);
    let table = h.ok(&["images"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("REPOSITORY") && rows[0].contains("IMAGE ID"),
        "{table}"
    );
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        table.contains("localhost/copy") && table.contains("v2"),
        "{table}"
    );
    assert!(table.contains("docker.io/library/other"), "{table}");
    assert!(rows[1].contains(" ago"), "{table}");
    let listed: Value = serde_json::from_str(&h.ok(&["images", "--format", "json"])).expect("json");
    assert_eq!(listed.as_array().expect("array").len(), 1);
    assert_eq!(listed[0]["names"].as_array().expect("names").len(), 3);
    // A single-platform image for another platform: pulled, with a warning.
    let out = h.output(&["pull", "--platform", "linux/arm64", &name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "image platform (linux/amd64) does not match the expected platform (linux/arm64)"
        ),
        "{stderr}"
    );
    let err = h.fails(&["tag", &name, "Bad/Name"]);
    assert!(err.contains("Bad/Name"), "{err}");
    let err = h.fails(&["image", "inspect", "nothing-here"]);
    assert!(err.contains("no image matches"), "{err}");

    // Untag by name; the image stays while it has names.
    assert!(h.ok(&["rmi", "localhost/copy:v2"]).contains("Untagged"));
    assert!(h.ok(&["rmi", "other"]).contains("Untagged"));
    assert_eq!(h.ok(&["images", "-q"]).trim(), &id.encoded()[..12]);

    // A blob lost (the layer stays unpacked): the next pull fetches it
    // again instead of recording an image it cannot unpack or push.
    std::fs::remove_file(h.blob(&layer)).expect("remove blob");
    h.ok(&["pull", "-q", &name]);
    assert_eq!(reg.count("GET", &layer_path), 2);
    assert!(h.blob(&layer).exists());
    let bundle = TempDir::new("bundle");
    h.ok(&["image", "unpack", &name, &bundle.path.to_string_lossy()]);
    assert!(bundle.path.join("rootfs/etc/motd").exists());

    // Leftovers of an interrupted download go with a prune.
    let junk = h.root().join("ingest/0123-leftover");
    std::fs::write(&junk, b"partial").expect("junk");
    h.ok(&["image", "prune"]);
    assert!(!junk.exists());
    assert!(h.blob(&layer).exists(), "prune took a blob in use");
    assert!(h.ok(&["system", "df"]).contains("Images"));

    assert!(h.ok(&["rmi", &id.encoded()[..12]]).contains("Deleted"));
    assert_eq!(h.ok(&["images", "-q"]), "");
    assert!(!h.blob(&layer).exists());
    assert!(h.fails(&["rmi", &name]).contains("no image matches"));
}

fn basic_auth_registry(user: &'static str, pass: &'static str) -> FakeRegistry {
    use base64::Engine;
    let img = image("application/vnd.oci.image.config.v1+json");
    let inner = serve_image(img, |r| r);
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    FakeRegistry::start(Box::new(move |req: &Request| {
        if req.headers.get("authorization") != Some(&want) {
            return Reply::status(401).header("WWW-Authenticate", r#"Basic realm="test""#);
        }
        inner(req)
    }))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json")
}

#[test]
fn login_logout_keep_other_registries_in_auth_json() {
    use std::os::unix::fs::PermissionsExt;
    let reg = basic_auth_registry("alice", "s3cret");
    let h = Hako::new();
    let name = format!("{}/test/app", reg.addr);
    std::fs::write(
        h.auth_file(),
        r#"{"auths": {"quay.io": {"auth": "b3RoZXI6cGFzcw=="}}, "credHelpers": {}}"#,
    )
    .expect("auth.json");

    let err = h.fails(&["pull", "-q", &name]);
    assert!(
        err.contains("hako login") && err.contains(&reg.addr),
        "{err}"
    );
    let err = h.fails(&["login", "-u", "alice", "-p", "wrong", &reg.addr]);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(read_json(&h.auth_file())["auths"].get(&reg.addr).is_none());

    let mut login = h
        .cmd(&["login", "-u", "alice", "--password-stdin", &reg.addr])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("login");
    login
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("password");
    assert!(login.wait().expect("login").success());
    let auth = read_json(&h.auth_file());
    assert_eq!(auth["auths"][&reg.addr]["auth"], "YWxpY2U6czNjcmV0");
    assert_eq!(auth["auths"]["quay.io"]["auth"], "b3RoZXI6cGFzcw==");
    assert!(auth.get("credHelpers").is_some(), "other keys kept");
    let mode = std::fs::metadata(h.auth_file())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    h.ok(&["pull", "-q", &name]);
    h.ok(&["logout", &reg.addr]);
    let auth = read_json(&h.auth_file());
    assert!(auth["auths"].get(&reg.addr).is_none());
    assert_eq!(auth["auths"]["quay.io"]["auth"], "b3RoZXI6cGFzcw==");

    // An auth file hako cannot read is not replaced.
    std::fs::write(h.auth_file(), "{ not json").expect("corrupt");
    let err = h.fails(&["login", "-u", "alice", "-p", "s3cret", &reg.addr]);
    assert!(err.contains("not valid JSON"), "{err}");
    assert_eq!(
        std::fs::read_to_string(h.auth_file()).expect("read"),
        "{ not json"
    );
}

/// A local address that is not loopback, if the machine has one.
fn non_loopback_ipv4() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
        .map(|a| a.to_string())
}

#[test]
fn index_digests_insecure_hosts_and_rmi_force() {
    // An index of two platforms sharing a layer.
    let amd = image("application/vnd.oci.image.config.v1+json");
    let mut arm = image("application/vnd.oci.image.config.v1+json");
    let arm_config = json!({"architecture": "arm64", "variant": "v8", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [amd.layer.to_string()]}})
    .to_string()
    .into_bytes();
    let arm_config_digest = Digest::sha256_of(&arm_config);
    arm.manifest = String::from_utf8(arm.manifest.clone())
        .expect("utf8")
        .replace(&arm.config.to_string(), &arm_config_digest.to_string())
        .replace(
            &format!("\"size\":{}", arm.blobs[&arm.config.to_string()].len()),
            &format!("\"size\":{}", arm_config.len()),
        )
        .into_bytes();
    arm.manifest_digest = Digest::sha256_of(&arm.manifest);
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.manifest_digest.to_string(), "size": amd.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.manifest_digest.to_string(), "size": arm.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]})
    .to_string()
    .into_bytes();
    let index_digest = Digest::sha256_of(&index);
    let mut documents: HashMap<String, (Vec<u8>, &str)> = HashMap::new();
    documents.insert(
        "latest".into(),
        (index.clone(), "application/vnd.oci.image.index.v1+json"),
    );
    documents.insert(
        index_digest.to_string(),
        (index, "application/vnd.oci.image.index.v1+json"),
    );
    documents.insert(
        amd.manifest_digest.to_string(),
        (amd.manifest.clone(), OCI_MANIFEST),
    );
    documents.insert(
        arm.manifest_digest.to_string(),
        (arm.manifest.clone(), OCI_MANIFEST),
    );
    let mut blobs = amd.blobs.clone();
    blobs.insert(arm_config_digest.to_string(), arm_config);
    let reg = FakeRegistry::start_on(
        "0.0.0.0",
        Box::new(move |req: &Request| {
            if req.path == "/v2/" {
                return Reply::ok(b"{}".to_vec());
            }
            if let Some(r) = req.path.strip_prefix("/v2/test/multi/manifests/") {
                return match documents.get(r) {
                    Some((body, ct)) => Reply::ok(body.clone()).header("Content-Type", ct),
                    None => Reply::status(404),
                };
            }
            match req
                .path
                .strip_prefix("/v2/test/multi/blobs/")
                .and_then(|d| blobs.get(d))
            {
                Some(b) => Reply::ok(b.clone()),
                None => Reply::status(404),
            }
        }),
    );
    let h = Hako::new();
    let name = format!("{}/test/multi", reg.addr);
    h.ok(&["pull", "-q", "--platform", "linux/arm64", &name]);
    let by_index = format!("{name}@{index_digest}");
    let inspect: Value =
        serde_json::from_str(&h.ok(&["image", "inspect", &by_index])).expect("inspect");
    assert_eq!(inspect[0]["Platform"], "linux/arm64");
    assert_eq!(inspect[0]["Id"], arm_config_digest.encoded());
    let digests = inspect[0]["RepoDigests"].to_string();
    assert!(
        digests.contains(&index_digest.to_string())
            && digests.contains(&arm.manifest_digest.to_string()),
        "{digests}"
    );
    h.ok(&[
        "image",
        "inspect",
        &format!("{name}@{}", arm.manifest_digest),
    ]);
    // The index survives a prune: it is part of the image.
    h.ok(&["image", "prune"]);
    assert!(h.blob(&index_digest).exists());

    // By ID with several names: only with --force, as podman.
    h.ok(&["tag", &name, "localhost/second"]);
    let id = &arm_config_digest.encoded()[..12];
    let err = h.fails(&["rmi", id]);
    assert!(
        err.contains("--force") && err.contains("localhost/second"),
        "{err}"
    );
    assert!(h.ok(&["rmi", "--force", id]).contains("Deleted"));
    assert_eq!(h.ok(&["images", "-q"]), "");

    // A host that is neither loopback nor listed: HTTPS, unless told.
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("no non-loopback address here: insecure hosts not checked");
        return;
    };
    let port = reg.addr.rsplit_once(':').expect("port").1;
    let remote = format!("{ip}:{port}/test/multi");
    let err = h.fails(&["pull", "-q", &remote]);
    assert!(
        err.contains(&format!("https://{ip}:{port}/v2/")) && err.contains("--tls-verify=false"),
        "{err}"
    );
    h.ok(&["pull", "-q", "--tls-verify=false", &remote]);
    h.ok(&["rmi", &remote]);
    let out = h
        .cmd(&["pull", "-q", &remote])
        .env("HAKO_INSECURE_REGISTRIES", format!("quay.io, {ip}:{port}"))
        .output()
        .expect("hako");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_name_moved_away_leaves_a_dangling_image_that_prune_removes() {
    let a = labelled_image("application/vnd.oci.image.config.v1+json", "a");
    let b = labelled_image("application/vnd.oci.image.config.v1+json", "b");
    let (a_id, b_id, layer) = (a.config.clone(), b.config.clone(), a.layer.clone());
    assert_eq!(layer, b.layer);
    let reg_a = FakeRegistry::start(serve_image(a, |r| r));
    let reg_b = FakeRegistry::start(serve_image(b, |r| r));
    let h = Hako::new();
    let (name_a, name_b) = (
        format!("{}/test/app:latest", reg_a.addr),
        format!("{}/test/app:latest", reg_b.addr),
    );
    h.ok(&["pull", "-q", &name_a]);
    h.ok(&["pull", "-q", &name_b]);
    h.ok(&["tag", &name_b, &name_a]);
    let table = h.ok(&["images"]);
    let dangling = table
        .lines()
        .find(|l| l.contains(&a_id.encoded()[..12]))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(dangling.starts_with("<none>"), "{table}");
    let df = h.ok(&["system", "df"]);
    let row: Vec<&str> = df
        .lines()
        .find(|l| l.starts_with("Images"))
        .unwrap_or_else(|| panic!("{df}"))
        .split_whitespace()
        .collect();
    // TYPE TOTAL ACTIVE SIZE unit RECLAIMABLE unit: the dangling config
    // (and its manifest) can go.
    assert_eq!(&row[..3], ["Images", "2", "1"], "{df}");
    assert_ne!(row[5], "0", "{df}");
    // rmi's collection keeps dangling images' blobs; prune removes them.
    assert_eq!(h.ok(&["image", "prune"]).trim(), a_id.encoded());
    assert_eq!(h.ok(&["images", "-q"]).trim(), &b_id.encoded()[..12]);
    assert!(!h.blob(&a_id).exists());
    assert!(h.blob(&b_id).exists() && h.blob(&layer).exists());
    let df = h.ok(&["system", "df"]);
    assert!(
        df.lines()
            .any(|l| l.starts_with("Images") && l.ends_with(" 0 B")),
        "{df}"
    );
    let inspect: Value =
        serde_json::from_str(&h.ok(&["image", "inspect", &name_a])).expect("inspect");
    assert_eq!(inspect[0]["Id"], b_id.encoded());
}

#[test]
fn a_download_cut_again_and_again_is_resumed_while_it_progresses() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let (layer, id) = (img.layer.clone(), img.config.clone());
    let layer_path = format!("/v2/test/app/blobs/{layer}");
    let data = img.blobs[&layer.to_string()].clone();
    assert!(data.len() > 6 * 500, "the layer is {} bytes", data.len());
    let inner = serve_image(img, |r| r);
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    let reg = FakeRegistry::start(Box::new(move |req: &Request| {
        if req.path != layer_path {
            return inner(req);
        }
        // Range honoured, but no answer carries more than 500 bytes.
        let from = req
            .headers
            .get("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        seen.lock().expect("ranges").push(from);
        let start = from.unwrap_or(0);
        let mut reply = Reply::ok(data[start..].to_vec());
        if from.is_some() {
            reply.status = 206;
            reply = reply.header(
                "Content-Range",
                &format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
            );
        }
        Reply {
            cut_at: Some(500),
            ..reply
        }
    }));
    let h = Hako::new();
    let out = h.ok(&["pull", "-q", &format!("{}/test/app", reg.addr)]);
    assert_eq!(out.trim(), id.encoded());
    let ranges = ranges.lock().expect("ranges").clone();
    assert!(ranges.len() > 6, "{ranges:?}");
    assert_eq!(ranges[0], None);
    for (i, r) in ranges.iter().enumerate().skip(1) {
        assert_eq!(*r, Some(500 * i), "{ranges:?}");
    }
    assert!(h.blob(&layer).exists());
}

// ---- registries.conf: mirrors, locations, blocked ------------------------------

/// /hello.txt of `name` unpacked into a bundle.
fn unpacked_hello(h: &Hako, name: &str) -> String {
    let bundle = TempDir::new("hako-bundle");
    let dir = bundle.path.join("b");
    h.ok(&["image", "unpack", name, &dir.to_string_lossy()]);
    std::fs::read_to_string(dir.join("rootfs/hello.txt")).expect("hello.txt")
}

#[test]
fn a_mirror_serves_the_pull_while_the_registry_is_down() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let (id, layer) = (img.config.clone(), img.layer.clone());
    let mirror = FakeRegistry::start(serve_image(img, |r| r));
    let primary = dead_addr();
    let name = format!("{primary}/test/app");

    // Without registries.conf the pull has nowhere to go.
    let h = Hako::new();
    let err = h.fails(&["pull", "-q", &name]);
    assert!(err.contains(&primary), "{err}");
    assert_eq!(mirror.total(), 0);

    h.conf(&format!(
        "[[registry]]\nprefix = \"{primary}/test\"\n\
         [[registry.mirror]]\nlocation = \"{}/test\"\n",
        mirror.addr
    ));
    assert_eq!(h.ok(&["pull", "-q", &name]).trim(), id.encoded());
    assert_eq!(mirror.count("GET", "/v2/test/app/manifests/latest"), 1);
    assert_eq!(
        mirror.count("GET", &format!("/v2/test/app/blobs/{layer}")),
        1
    );
    // Recorded under the name asked for, not the mirror's.
    let images = h.ok(&["images"]);
    assert!(images.contains(&format!("{primary}/test/app")), "{images}");
    assert!(!images.contains(&mirror.addr), "{images}");
    assert_eq!(unpacked_hello(&h, &name), "hello from the test registry\n");
}

#[test]
fn mirrors_that_are_down_or_wrong_are_skipped_in_order() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let (id, layer) = (img.config.clone(), img.layer.clone());
    let layer_path = format!("/v2/test/app/blobs/{layer}");
    let manifest_path = "/v2/test/app/manifests/latest";
    let down = dead_addr();
    // Answers every request with bytes that are no manifest (nor blob).
    let garbage = FakeRegistry::start(Box::new(|req: &Request| {
        if req.path == "/v2/" {
            Reply::ok(b"{}".to_vec())
        } else {
            Reply::ok(b"<html>captive portal</html>".to_vec()).header("Content-Type", OCI_MANIFEST)
        }
    }));
    // The right manifest, a layer of the right size with other bytes.
    let wrong_blob = FakeRegistry::start(serve_image(
        image("application/vnd.oci.image.config.v1+json"),
        |mut r| {
            r.body[0] ^= 0xff;
            r
        },
    ));
    let primary = FakeRegistry::start(serve_image(img, |r| r));
    let h = Hako::new();
    let mut conf = format!("[[registry]]\nlocation = \"{}\"\n", primary.addr);
    for m in [&down, &garbage.addr, &wrong_blob.addr] {
        conf.push_str(&format!("[[registry.mirror]]\nlocation = \"{m}\"\n"));
    }
    h.conf(&conf);
    let name = format!("{}/test/app", primary.addr);
    let out = h
        .cmd(&["pull", "-q", &name])
        .env("HAKO_DEBUG", "1")
        .output()
        .expect("pull");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id.encoded());
    // The manifest came from the first mirror that served a good one …
    assert_eq!(garbage.count("GET", manifest_path), 1);
    assert_eq!(wrong_blob.count("GET", manifest_path), 1);
    assert_eq!(primary.count("GET", manifest_path), 0);
    // … and so did the config; its wrong layer sent the pull on to the
    // others, and the registry had it.
    assert_eq!(wrong_blob.count("GET", &layer_path), 1);
    assert_eq!(primary.count("GET", &layer_path), 1);
    assert!(err.contains(&format!("trying http://{down}")), "{err}");
    assert!(err.contains("content has digest"), "{err}");
    // The garbage manifest sent it on to the wrong-blob mirror; that
    // mirror's layer, round the others, to the registry.
    assert!(
        err.contains(&format!("trying http://{}", wrong_blob.addr)),
        "{err}"
    );
    assert!(
        err.contains(&format!("trying http://{}", primary.addr)),
        "{err}"
    );
    assert!(h.blob(&layer).exists());
    assert_eq!(h.ingest_files(), Vec::<PathBuf>::new());
    assert_eq!(unpacked_hello(&h, &name), "hello from the test registry\n");

    // Every endpoint failing: one error naming them all.
    let h = Hako::new();
    h.conf(&format!(
        "[[registry]]\nprefix = \"{down}\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
        garbage.addr
    ));
    let err = h.fails(&["pull", "-q", &format!("{down}/test/app")]);
    assert!(err.contains("every source failed"), "{err}");
    assert!(err.contains(&garbage.addr) && err.contains(&down), "{err}");
    assert_eq!(h.ok(&["images", "-q"]), "");
}

#[test]
fn digest_only_and_tag_only_mirrors() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let digest = img.manifest_digest.clone();
    let copy = || image("application/vnd.oci.image.config.v1+json");
    let by_digest = FakeRegistry::start(serve_image(copy(), |r| r));
    let by_tag = FakeRegistry::start(serve_image(copy(), |r| r));
    let primary = FakeRegistry::start(serve_image(img, |r| r));
    let conf = format!(
        "[[registry]]\nlocation = \"{}\"\n\
         [[registry.mirror]]\nlocation = \"{}\"\npull-from-mirror = \"digest-only\"\n\
         [[registry.mirror]]\nlocation = \"{}\"\npull-from-mirror = \"tag-only\"\n",
        primary.addr, by_digest.addr, by_tag.addr
    );
    let h = Hako::new();
    h.conf(&conf);
    h.ok(&["pull", "-q", &format!("{}/test/app:latest", primary.addr)]);
    assert_eq!(by_digest.total(), 0, "a digest-only mirror served a tag");
    assert_eq!(by_tag.count("GET", "/v2/test/app/manifests/latest"), 1);
    assert_eq!(primary.total(), 0);

    let h = Hako::new();
    h.conf(&conf);
    h.ok(&["pull", "-q", &format!("{}/test/app@{digest}", primary.addr)]);
    assert_eq!(
        by_digest.count("GET", &format!("/v2/test/app/manifests/{digest}")),
        1
    );
    assert_eq!(
        by_tag.count("GET", "/v2/test/app/manifests/latest"),
        1,
        "unchanged"
    );
    assert_eq!(primary.total(), 0);
}

#[test]
fn a_blocked_registry_is_refused_for_pull_and_push() {
    let blocked = FakeRegistry::start(serve_image(
        image("application/vnd.oci.image.config.v1+json"),
        |r| r,
    ));
    let other = FakeRegistry::start(serve_image(
        image("application/vnd.oci.image.config.v1+json"),
        |r| r,
    ));
    let h = Hako::new();
    h.conf(&format!(
        "[[registry]]\nprefix = \"{}/test\"\nblocked = true\n",
        blocked.addr
    ));
    let name = format!("{}/test/app", blocked.addr);
    let err = h.fails(&["pull", "-q", &name]);
    assert!(
        err.contains(&format!("{name} is blocked by {}", h.conf_file().display())),
        "{err}"
    );
    assert_eq!(blocked.total(), 0);
    assert_eq!(h.ok(&["images", "-q"]), "");
    let blobs = std::fs::read_dir(h.root().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0);

    // Pushing there is refused too, before any request.
    let from = format!("{}/test/app", other.addr);
    h.ok(&["pull", "-q", &from]);
    let err = h.fails(&["push", &from, &name]);
    assert!(err.contains("is blocked by"), "{err}");
    assert_eq!(blocked.total(), 0);

    // A malformed registries.conf is an error naming it.
    h.conf("[[registry]]\nprefix = \"a.io\"\nblocked = \"yes\"\n");
    let err = h.fails(&["pull", "-q", &from]);
    assert!(
        err.contains(&format!("{}: line 3", h.conf_file().display())),
        "{err}"
    );
}

#[test]
fn locations_rewrite_names_and_mirrors_use_their_own_credentials() {
    let img = image("application/vnd.oci.image.config.v1+json");
    let id = img.config.clone();
    let reg = FakeRegistry::start(serve_image(img, |r| r));
    let h = Hako::new();
    // example.com is not reachable from here: only the rewrite can work.
    h.conf(&format!(
        "[[registry]]\nprefix = \"example.com/hub\"\nlocation = \"{}/test\"\n",
        reg.addr
    ));
    assert_eq!(
        h.ok(&["pull", "-q", "example.com/hub/app"]).trim(),
        id.encoded()
    );
    assert_eq!(reg.count("GET", "/v2/test/app/manifests/latest"), 1);
    assert!(h.ok(&["images"]).contains("example.com/hub/app"));
    // Another component is not under the prefix.
    let err = h.fails(&["pull", "-q", "example.com/hubx/app"]);
    assert!(err.contains("example.com"), "{err}");

    // A mirror asks for credentials: its host's entry in auth.json.
    let mirror = basic_auth_registry("mirror", "pw");
    let primary = dead_addr();
    let h = Hako::new();
    h.conf(&format!(
        "[[registry]]\nprefix = \"{primary}\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
        mirror.addr
    ));
    let name = format!("{primary}/test/app");
    let err = h.fails(&["pull", "-q", &name]);
    assert!(err.contains("authentication failed"), "{err}");
    std::fs::write(
        h.auth_file(),
        json!({"auths": {&mirror.addr: {"auth": "bWlycm9yOnB3"}}}).to_string(),
    )
    .expect("auth.json");
    assert_eq!(h.ok(&["pull", "-q", &name]).trim(), id.encoded());
}
