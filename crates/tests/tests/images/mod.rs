//! Fixtures of the image tests: Debian's docker-registry on a free port
//! of 127.0.0.1, OCI layouts made from a busybox rootfs, skopeo pushes, a
//! `hako` with its own store, and bundles run with hako-runtime.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hako_image::digest::Digest;
use hako_tests::{bin_dir, busybox_rootfs, json, unique, Runtime, TempDir, Value};

pub fn hako_bin() -> PathBuf {
    bin_dir().join("hako")
}

/// A docker-registry on a free port of 127.0.0.1; killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: TempDir,
}

impl Registry {
    pub fn start(extra: &str) -> Registry {
        let dir = TempDir::new("registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}}}\n{extra}",
                dir.path.join("data").display()
            ),
        )
        .expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `data` as a blob of the layout; returns its descriptor fields.
pub fn blob(layout: &Path, data: &[u8]) -> (Digest, usize) {
    let d = Digest::sha256_of(data);
    std::fs::write(layout.join("blobs/sha256").join(d.encoded()), data).expect("blob");
    (d, data.len())
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI image layout at `layout` with one gzip layer of `rootfs` (plus
/// `extra` files) and `config` as the image's run config, for each arch.
pub fn make_layout(layout: &Path, rootfs: &Path, config: Value, archs: &[&str]) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    let work = TempDir::new("layer");
    let tar_path = work.path.join("layer.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "--sort=name", "-cf"])
        .arg(&tar_path)
        .arg("."));
    let tar = std::fs::read(&tar_path).expect("read tar");
    let diff_id = Digest::sha256_of(&tar);
    run(Command::new("gzip").args(["-n", "-f"]).arg(&tar_path));
    let gz = std::fs::read(work.path.join("layer.tar.gz")).expect("gz");
    let (layer, layer_size) = blob(layout, &gz);
    let mut manifests = Vec::new();
    for arch in archs {
        let cfg = json!({"architecture": arch, "os": "linux", "created": "2026-01-02T03:04:05Z",
            "config": config, "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}});
        let (c, cs) = blob(layout, cfg.to_string().as_bytes());
        let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": layer_size}]});
        let (md, ms) = blob(layout, m.to_string().as_bytes());
        manifests.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": ms, "platform": {"architecture": arch, "os": "linux"}}));
    }
    let index = if archs.len() == 1 {
        let mut m = manifests[0].clone();
        m["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
        json!({"schemaVersion": 2, "manifests": [m]})
    } else {
        let (id, is) = blob(
            layout,
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})
                .to_string()
                .as_bytes(),
        );
        json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": id.to_string(), "size": is, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})
    };
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
}

/// A busybox rootfs with a user and a group to resolve.
pub fn test_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    hako_tests::copy_tree(busybox_rootfs(), &rootfs);
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\napp:x:1234:\nstaff:x:50:app\nwheel:x:10:root,app\n",
    )
    .expect("group");
    std::fs::create_dir_all(rootfs.join("srv/work")).expect("mkdir");
    rootfs
}

pub fn push(layout: &Path, dest: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{dest}")));
}

pub struct Hako {
    pub root: TempDir,
}

impl Hako {
    pub fn new() -> Hako {
        Hako {
            root: TempDir::new("hako-root"),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(hako_bin());
        c.arg("--root")
            .arg(self.root.path.join("lib"))
            .arg("--runroot")
            .arg(self.root.path.join("run"))
            .args(args)
            .env("HAKO_REGISTRIES_CONF", self.conf_file());
        c
    }

    /// Its registries.conf (never /etc's; none until written).
    pub fn conf_file(&self) -> PathBuf {
        self.root.path.join("registries.conf")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("hako");
        assert!(!out.status.success(), "hako {args:?} succeeded");
        assert_eq!(out.status.code(), Some(125));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

pub fn app_config() -> Value {
    json!({"User": "app", "Env": ["GREETING=hello"], "WorkingDir": "/srv/work",
           "Entrypoint": ["sh", "-c"], "Cmd": ["echo $GREETING; id -u; id -G; pwd"],
           "Labels": {"org.example.team": "images"}, "StopSignal": "SIGQUIT"})
}

/// Unpacks `image` into a bundle and runs it with hako-runtime.
pub fn run_image(h: &Hako, image: &str) -> String {
    let bundle = TempDir::new("bundle");
    h.ok(&["image", "unpack", image, &bundle.path.to_string_lossy()]);
    let config: Value = serde_json::from_slice(
        &std::fs::read(bundle.path.join("config.json")).expect("config.json"),
    )
    .expect("json");
    assert_eq!(config["annotations"]["org.example.team"], "images");
    assert_eq!(
        config["annotations"]["org.opencontainers.image.stopSignal"],
        "SIGQUIT"
    );
    let rt = Runtime::new();
    let out = run(&mut rt.cmd(&[
        "run",
        "--bundle",
        &bundle.path.to_string_lossy(),
        &unique("img"),
    ]));
    out
}

/// The digest of the first layer of the (single-platform) layout's image.
pub fn first_layer_digest(layout: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("json");
    let m = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&m[7..])).expect("manifest"),
    )
    .expect("json");
    manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string()
}

/// A single-platform (linux/amd64) OCI layout whose image has one gzip
/// layer per directory of `layers` (bottom first), each tarred as is, so
/// whiteout files in them are whiteouts of the layer.
pub fn make_layered_layout(layout: &Path, layers: &[&Path], config: Value) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    let work = TempDir::new("layers");
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for (i, dir) in layers.iter().enumerate() {
        let tar_path = work.path.join(format!("layer{i}.tar"));
        run(Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["--numeric-owner", "--sort=name", "-cf"])
            .arg(&tar_path)
            .arg("."));
        diff_ids.push(Digest::sha256_of(&std::fs::read(&tar_path).expect("tar")).to_string());
        run(Command::new("gzip").args(["-n", "-f"]).arg(&tar_path));
        let gz = std::fs::read(work.path.join(format!("layer{i}.tar.gz"))).expect("gz");
        let (d, size) = blob(layout, &gz);
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.to_string(), "size": size}),
        );
    }
    let cfg = json!({"architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (c, cs) = blob(layout, cfg.to_string().as_bytes());
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": cs},
        "layers": descs});
    let (md, ms) = blob(layout, m.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md.to_string(), "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
}
