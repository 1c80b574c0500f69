//! Containers: create (rootfs, config, monitor), start, stop, kill,
//! remove, wait, list, and the cleanup a monitor asks for when its
//! container exits.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hako_image::digest::Digest;
use hako_image::manifest::{self, ImageConfig};
use hako_image::snapshot::{SnapshotKind, Snapshotter};
use hako_image::store::{ImageRecord, Store, StoreError};
use hako_monitor::{ExitRecord, MonitorOptions};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, FindError, CONTAINERS};
use crate::net::{self, NetMode};
use crate::options::{self, bad, CreateOptions, OptionError, VolumeSource};
use crate::runtime::{self, OciRuntime, RuntimeError};
use crate::spec::{self, NetNs, SpecContext, SpecError};
use crate::util;
use crate::volume::{VolumeError, Volumes};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Find(#[from] FindError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Monitor(#[from] hako_monitor::MonitorError),
    #[error("container {id}: {source}")]
    Snapshot {
        id: String,
        source: hako_image::snapshot::SnapshotError,
    },
    #[error("image {image}: its config: {reason}")]
    ImageConfig { image: String, reason: String },
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container {name} is {state}: {hint}")]
    State {
        name: String,
        state: String,
        hint: &'static str,
    },
    #[error("container {id}: {what} {}: {source}", path.display())]
    Io {
        id: String,
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id}: {what}")]
    Other { id: String, what: String },
}

/// `runtime exec` for a process, and the files it uses.
pub struct ExecCommand {
    pub command: std::process::Command,
    /// The process's JSON (`--process`).
    pub process_file: PathBuf,
    /// The runtime's JSON log (`--log`).
    pub log_file: PathBuf,
}

impl ExecCommand {
    /// The runtime's error, if it logged one (the process did not start).
    pub fn runtime_error(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log_file).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .next_back()
    }

    /// Removes the files.
    pub fn clean(&self) {
        let _ = std::fs::remove_file(&self.process_file);
        let _ = std::fs::remove_file(&self.log_file);
    }
}

/// What `hako info` reports of the host and the store.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostInfo {
    pub version: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
    pub kernel: String,
    pub hostname: String,
    pub cpus: usize,
    pub mem_total: u64,
    /// legacy, hybrid or unified.
    pub cgroup_mode: Option<hako_cgroups::layout::Mode>,
    pub oci_runtime: PathBuf,
    pub oci_runtime_version: String,
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    pub containers_stopped: usize,
    pub pods: usize,
    pub volumes: usize,
    pub network_backend: &'static str,
}

fn has_restart_policy(rec: &ContainerRecord) -> bool {
    options::RestartPolicy::parse(rec.options.restart.as_deref())
        .is_ok_and(|p| p != options::RestartPolicy::No)
}

/// In the run dir while the container is paused.
const PAUSED_MARK: &str = "paused";
/// In the container dir once `stop` or `kill` ended it: its restart
/// policy does not start it again (until a `start`).
const STOPPED_MARK: &str = "stopped-by-user";
/// In the container dir: how often its restart policy started it.
const RESTARTS_FILE: &str = "restart-count";

/// What a container is, read from its run dir (never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Made, not started: the monitor holds it (or, with `monitor` false,
    /// nothing does any more: `start` makes it again).
    Created {
        monitor: bool,
    },
    Running,
    /// Running, its processes frozen (`hako pause`).
    Paused,
    Exited {
        code: i32,
        finished_at: String,
    },
    /// Started, but its monitor is gone without an exit record (killed).
    Dead,
}

impl Status {
    /// docker's State.Status words.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Created { .. } => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited { .. } => "exited",
            Status::Dead => "dead",
        }
    }

    /// Running or paused (docker's State.Running).
    pub fn is_running(&self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }

    /// A monitor holds a container (created, running or paused).
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Status::Running | Status::Paused | Status::Created { monitor: true }
        )
    }
}

/// How the container's network was set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub mode: NetMode,
    /// The netns the container joins, when not its own or the host's.
    pub netns: Option<PathBuf>,
    /// Published ports, host ports assigned at create.
    #[serde(default)]
    pub ports: Vec<hako_network::PortMapping>,
}

/// A container as recorded at create; it does not change afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image as the user named it, its ID, and its first name.
    pub image: String,
    pub image_id: String,
    pub image_name: String,
    pub created: i128,
    /// The process' argv.
    pub args: Vec<String>,
    pub options: CreateOptions,
    pub runtime: PathBuf,
    pub stop_signal: i32,
    pub stop_timeout: u64,
    pub hostname: String,
    /// Chain IDs of the image's layers, bottom first.
    pub chain: Vec<String>,
    pub snapshotter: String,
    pub network: NetworkRecord,
    /// Named volumes mounted (anonymous ones included).
    pub volumes: Vec<String>,
    pub anonymous_volumes: Vec<String>,
    /// The pod (ID) it is a member of.
    pub pod: Option<String>,
    /// The pod (ID) this is the infra container of.
    #[serde(default)]
    pub infra_for: Option<String>,
}

pub struct Engine {
    root: PathBuf,
    runroot: PathBuf,
    store: Store,
    db: Db,
}

/// The per-container flock: one `hako` at a time changes a container.
pub struct ContainerLock {
    _lock: Flock<std::fs::File>,
}

impl Engine {
    /// The engine over the image store at `root` (its data) and `runroot`
    /// (its runtime state, a tmpfs usually).
    pub fn open(root: &Path, runroot: &Path) -> Result<Engine, EngineError> {
        let store = Store::open(root)?;
        for (d, private) in [
            (root.join("containers"), true),
            (root.join("volumes"), true),
            (runroot.join("containers"), true),
            (runroot.join("locks"), true),
        ] {
            if !d.is_dir() {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                if private {
                    b.mode(0o700);
                }
                b.create(&d).map_err(|source| EngineError::Io {
                    id: "-".into(),
                    what: "creating",
                    path: d.clone(),
                    source,
                })?;
            }
        }
        Ok(Engine {
            root: root.to_path_buf(),
            runroot: runroot.to_path_buf(),
            store,
            db: Db::new(root),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runroot(&self) -> &Path {
        &self.runroot
    }

    pub fn volumes(&self) -> Volumes<'_> {
        Volumes {
            db: &self.db,
            dir: self.root.join("volumes"),
        }
    }

    /// The container's own directory (config, rootfs, log).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Its monitor's run dir.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("containers").join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("ctr.log")
    }

    pub fn oci_runtime(&self, rec: &ContainerRecord) -> OciRuntime {
        OciRuntime::new(rec.runtime.clone(), self.runroot.join("runtime"))
    }

    pub fn lock(&self, id: &str) -> Result<ContainerLock, EngineError> {
        let path = self.runroot.join("locks").join(id);
        let io = |source| EngineError::Io {
            id: id.to_string(),
            what: "locking",
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        loop {
            match Flock::lock(f, FlockArg::LockExclusive) {
                Ok(l) => return Ok(ContainerLock { _lock: l }),
                Err((back, nix::errno::Errno::EINTR)) => f = back,
                Err((_, e)) => return Err(io(std::io::Error::from(e))),
            }
        }
    }

    /// The container's lock if nobody holds it.
    fn try_lock(&self, id: &str) -> Result<Option<ContainerLock>, EngineError> {
        let path = self.runroot.join("locks").join(id);
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| EngineError::Io {
                id: id.to_string(),
                what: "locking",
                path: path.clone(),
                source,
            })?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(ContainerLock { _lock: l })),
            Err(_) => Ok(None),
        }
    }

    /// The container named, or with the ID (or unique ID prefix) `what`.
    pub fn find(&self, what: &str) -> Result<ContainerRecord, EngineError> {
        self.db
            .find::<ContainerRecord>(&CONTAINERS, what)?
            .map(|(_, r)| r)
            .ok_or_else(|| EngineError::NotFound(what.to_string()))
    }

    pub fn list(&self) -> Result<Vec<ContainerRecord>, EngineError> {
        let mut v: Vec<ContainerRecord> = self
            .db
            .all::<ContainerRecord>(&CONTAINERS)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok(v)
    }

    /// The container's status, read from its run dir.
    pub fn status(&self, rec: &ContainerRecord) -> Status {
        let run = self.run_dir(&rec.id);
        let exited = || match ExitRecord::read(&run) {
            Ok(Some(e)) => Some(Status::Exited {
                code: e.exit_code,
                finished_at: e.finished_at,
            }),
            _ => None,
        };
        if let Some(s) = exited() {
            return s;
        }
        let started = run.join("started").exists();
        match (monitor_alive(&run), started) {
            // The mark `pause` leaves (a new run dir at each start).
            (true, true) if run.join(PAUSED_MARK).exists() => Status::Paused,
            (true, true) => Status::Running,
            (true, false) => Status::Created { monitor: true },
            // A monitor writes the exit record right before it exits: one
            // that exited since the first look has left it.
            (false, true) => exited().unwrap_or(Status::Dead),
            (false, false) => exited().unwrap_or(Status::Created { monitor: false }),
        }
    }

    /// When the container last started (RFC 3339), if it did.
    pub fn started_at(&self, rec: &ContainerRecord) -> Option<String> {
        std::fs::read_to_string(self.run_dir(&rec.id).join("started"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The container's init pid while it runs.
    pub fn pid(&self, rec: &ContainerRecord) -> Option<i32> {
        std::fs::read_to_string(self.run_dir(&rec.id).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The networks the container's network namespace is attached to:
    /// its own, its pod infra's, or those of the container whose
    /// namespace it joined (`--network container:ID`).
    pub fn attached_networks(&self, rec: &ContainerRecord) -> Vec<hako_network::AttachedNetwork> {
        let owner = match &rec.network.mode {
            NetMode::Pod(pod) => match self.find_pod(pod) {
                Ok(p) => p.infra,
                Err(_) => return Vec::new(),
            },
            NetMode::Container(id) => id.clone(),
            NetMode::Network(_) => rec.id.clone(),
            NetMode::None | NetMode::Host => return Vec::new(),
        };
        self.networks()
            .container_networks(&owner)
            .unwrap_or_default()
    }

    /// Containers that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>, EngineError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.volumes.iter().any(|v| v == name))
            .map(|r| r.name)
            .collect())
    }

    /// Containers made from image `id`.
    pub fn image_users(&self, id: &Digest) -> Result<Vec<String>, EngineError> {
        let id = id.to_string();
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.image_id == id)
            .map(|r| r.name)
            .collect())
    }

    /// Creates a container from `image` (already in the store) and starts
    /// its monitor, which holds it created until [`Engine::start`]. On an
    /// error nothing is left: no record, directory, mount or process.
    pub fn create(
        &self,
        image: &ImageRecord,
        opts: &CreateOptions,
    ) -> Result<ContainerRecord, EngineError> {
        self.create_inner(Some(image), opts, None)
    }

    /// [`Engine::create`] for an image, or (None) for a pod's infra
    /// container: an empty rootfs running hako-init --pause.
    pub(crate) fn create_inner(
        &self,
        image: Option<&ImageRecord>,
        opts: &CreateOptions,
        infra_for: Option<&str>,
    ) -> Result<ContainerRecord, EngineError> {
        // The runtime moves init into its cgroup ~10 ms from now.
        hako_cgroups::cgroup::start_migration_grace_period();
        let plan = self.plan(image, opts, infra_for)?;
        let id = util::random_id().map_err(|source| EngineError::Io {
            id: "(new)".into(),
            what: "reading",
            path: "/dev/urandom".into(),
            source,
        })?;
        let mut rec = ContainerRecord {
            id: id.clone(),
            name: String::new(),
            image: opts.image.clone(),
            image_id: image.map(|i| i.id.to_string()).unwrap_or_default(),
            image_name: match image {
                Some(i) => i
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| i.id.encoded()[..12].to_string()),
                None => "(infra)".into(),
            },
            created: util::now_nanos(),
            args: Vec::new(),
            options: opts.clone(),
            runtime: runtime::resolve_runtime(opts.runtime.as_deref()),
            stop_signal: plan.stop_signal,
            stop_timeout: opts.stop_timeout.unwrap_or(10),
            hostname: plan
                .hostname
                .clone()
                .or(opts.hostname.clone())
                .or_else(|| {
                    // --uts host: the host's name.
                    options::host_namespace("--uts", opts.uts.as_deref())
                        .unwrap_or(false)
                        .then(|| nix::unistd::gethostname().ok())
                        .flatten()
                        .map(|h| h.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| id[..12].to_string()),
            chain: image
                .map(|i| hako_image::snapshot::chain_ids(&i.diff_ids))
                .unwrap_or_default()
                .iter()
                .map(|c| c.to_string())
                .collect(),
            snapshotter: plan.snapshots.kind().name().to_string(),
            network: NetworkRecord {
                mode: plan.net_mode.clone(),
                netns: plan.netns.clone(),
                ports: plan.ports.clone(),
            },
            volumes: Vec::new(),
            anonymous_volumes: Vec::new(),
            pod: plan.pod.clone(),
            infra_for: infra_for.map(String::from),
        };
        if let Some(n) = &opts.name {
            if !util::valid_name(n) {
                return Err(bad("--name", n, "may hold only [a-zA-Z0-9][a-zA-Z0-9_.-]").into());
            }
        }
        // Made under the container's lock before its record exists; a
        // `hako` killed meanwhile leaves directories no record names, and
        // `system prune` removes those once it can take their lock.
        let _lock = self.lock(&id)?;
        let undo = |rec: &ContainerRecord, recorded: bool| {
            let _ = self.teardown(rec);
            if recorded {
                let _ = self.db.remove(&CONTAINERS, &rec.id);
            }
            for v in &rec.anonymous_volumes {
                let _ = self.volumes().remove(v, &[]);
            }
            let _ = std::fs::remove_file(self.runroot.join("locks").join(&rec.id));
        };
        if let Err(e) = self.build(&mut rec, image, &plan) {
            undo(&rec, false);
            return Err(e);
        }
        // One write: the record with its name.
        let inserted = match &opts.name {
            Some(n) => {
                rec.name = n.clone();
                self.db.insert(&CONTAINERS, &id, Some(n), &rec)
            }
            None => {
                let mut attempt = 0;
                loop {
                    rec.name = util::name_from_id(&id, attempt);
                    match self.db.insert(&CONTAINERS, &id, Some(&rec.name), &rec) {
                        Err(DbError::NameInUse { .. }) if attempt < 50 => attempt += 1,
                        other => break other,
                    }
                }
            }
        };
        if let Err(e) = inserted {
            undo(&rec, false);
            return Err(e.into());
        }
        if let Err(e) = self.spawn_monitor(&rec) {
            undo(&rec, true);
            return Err(e);
        }
        Ok(rec)
    }

    /// Checks every option before anything is made.
    fn plan(
        &self,
        image: Option<&ImageRecord>,
        opts: &CreateOptions,
        infra_for: Option<&str>,
    ) -> Result<Plan, EngineError> {
        let config = match image {
            Some(image) => {
                let config_bytes = self.store.read_blob(&image.id, manifest::MAX_JSON)?;
                manifest::parse_config(&config_bytes, &opts.image).map_err(|e| {
                    EngineError::ImageConfig {
                        image: opts.image.clone(),
                        reason: e.to_string(),
                    }
                })?
            }
            None => ImageConfig::default(),
        };
        // A pod member joins what its pod shares (the pod must run).
        let pod = match &opts.pod {
            Some(p) => Some(self.pod_for_member(p)?),
            None => None,
        };
        let mut volumes = Vec::new();
        for v in &opts.volumes {
            volumes.push(options::parse_volume(v)?);
        }
        for t in &opts.tmpfs {
            options::parse_tmpfs(t)?;
        }
        for u in &opts.ulimits {
            options::parse_ulimit(u)?;
        }
        options::parse_pairs("--label", &opts.labels)?;
        options::parse_pairs("--sysctl", &opts.sysctls)?;
        crate::etc_files::validate(&opts.add_hosts, &opts.dns)?;
        if let Some(h) = &opts.hostname {
            crate::etc_files::validate_hostname(h)?;
        }
        options::check_more(opts)?;
        for c in opts.cap_add.iter().chain(&opts.cap_drop) {
            options::normalise_cap("--cap-add/--cap-drop", c)?;
        }
        let stop_signal = match opts.stop_signal.as_deref().or(config
            .config
            .as_ref()
            .and_then(|c| c.stop_signal.as_deref()))
        {
            Some(s) => options::parse_signal(s)
                .ok_or_else(|| bad("--stop-signal", s, "not a signal name or number"))?,
            None => libc::SIGTERM,
        };
        let netstore = self.networks();
        let mut ports = net::parse_ports(&opts.publish)?;
        if opts.publish_all {
            // -P: every exposed port not published already, on a free port.
            let mut exposed: Vec<String> = config
                .config
                .as_ref()
                .and_then(|c| c.exposed_ports.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for e in &opts.expose {
                let (list, proto) = options::expose_ports(e)?;
                exposed.extend(list.iter().map(|p| format!("{p}/{proto}")));
            }
            for e in exposed {
                let extra = net::parse_ports(std::slice::from_ref(&e))
                    .map_err(|_| bad("-P", &e, "the image exposes a port that is no port"))?;
                for p in extra {
                    let published = ports
                        .iter()
                        .any(|q| q.container_port == p.container_port && q.protocol == p.protocol);
                    if !published {
                        ports.push(p);
                    }
                }
            }
        }
        let net_mode = match (opts.network.as_deref(), &opts.pod) {
            (Some(n), Some(_)) if !n.is_empty() => {
                return Err(bad("--network", n, "a pod member shares its pod's network").into())
            }
            (_, Some(_)) => match &pod {
                Some(p) if p.record.share.iter().any(|s| s == "net") => {
                    NetMode::Pod(p.record.id.clone())
                }
                _ => NetMode::None,
            },
            (None | Some("") | Some("bridge"), None) => {
                let n = netstore.default_network().map_err(|e| EngineError::Other {
                    id: "(new)".into(),
                    what: format!("the default network: {e}"),
                })?;
                NetMode::Network(n.name)
            }
            (Some("none"), None) => NetMode::None,
            (Some("host"), None) => NetMode::Host,
            (Some(other), None) => match other.strip_prefix("container:") {
                Some(c) => {
                    let target = self.find(c)?;
                    if !self.status(&target).is_running() {
                        return Err(bad("--network", other, "that container is not running").into());
                    }
                    NetMode::Container(target.id)
                }
                None => {
                    let n = netstore
                        .inspect(other)
                        .map_err(|e| bad("--network", other, e.to_string()))?;
                    NetMode::Network(n.name)
                }
            },
        };
        if !ports.is_empty() {
            if !matches!(net_mode, NetMode::Network(_)) {
                return Err(bad(
                    "-p",
                    &opts.publish.join(","),
                    format!(
                        "ports cannot be published with --network {}{}",
                        net_mode.describe(),
                        if opts.pod.is_some() {
                            " (publish them on the pod)"
                        } else {
                            ""
                        }
                    ),
                )
                .into());
            }
            net::assign_ports(&netstore, &mut ports)?;
        }
        let netns = match &net_mode {
            NetMode::Container(c) => {
                let target = self.find(c)?;
                Some(match &target.network.netns {
                    Some(p) => p.clone(),
                    None => {
                        PathBuf::from(format!("/proc/{}/ns/net", self.pid(&target).unwrap_or(0)))
                    }
                })
            }
            NetMode::Pod(_) => pod.as_ref().map(|p| p.netns.clone()),
            // A pod's infra keeps its netns in a file its members join.
            _ if infra_for.is_some() && net_mode != NetMode::Host => Some(net::netns_path(
                &netstore,
                &format!("pod-{}", infra_for.unwrap_or_default()),
            )),
            _ => None,
        };
        let snapshots =
            Snapshotter::chosen(self.store.root()).map_err(|source| EngineError::Snapshot {
                id: "(new)".into(),
                source,
            })?;
        Ok(Plan {
            config,
            volumes,
            stop_signal,
            // Members sharing the pod's UTS namespace have its infra's
            // hostname.
            hostname: pod.as_ref().filter(|p| p.joins("uts")).map(|p| {
                self.find(&p.record.infra)
                    .map_or_else(|_| p.record.name.clone(), |infra| infra.hostname)
            }),
            join: pod.as_ref().map(|p| p.join.clone()).unwrap_or_default(),
            pod: pod.map(|p| p.record.id),
            net_mode,
            netns,
            ports,
            snapshots,
        })
    }

    /// Makes what the record describes: rootfs, volumes, /etc files,
    /// config, monitor.
    fn build(
        &self,
        rec: &mut ContainerRecord,
        image: Option<&ImageRecord>,
        plan: &Plan,
    ) -> Result<(), EngineError> {
        let id = rec.id.clone();
        let io = |what: &'static str, path: &Path| io_err(&id, what, path);
        let dir = self.container_dir(&id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
        // The layers as snapshots of this store's kind (a store switched
        // to flat makes them from the blobs now).
        let pairs: Vec<(Digest, Digest)> = image
            .map(|i| {
                i.layers
                    .iter()
                    .cloned()
                    .zip(i.diff_ids.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let snap_err = |source| EngineError::Snapshot {
            id: id.clone(),
            source,
        };
        {
            let _held = self.store.shared_lock()?;
            plan.snapshots
                .ensure_chain(&pairs, |d| std::fs::File::open(self.store.blob_path(d)))
                .map_err(snap_err)?;
        }
        let chain = self.chain(rec)?;
        let prepared = plan
            .snapshots
            .prepare_rootfs(&chain, &dir.join("fs"))
            .map_err(snap_err)?;
        // Volumes.
        let mut mounts = Vec::new();
        for v in &plan.volumes {
            let source = match &v.source {
                VolumeSource::Host(p) => {
                    if !p.exists() {
                        // As docker: a missing host directory is made.
                        std::fs::create_dir_all(p).map_err(io("creating the volume source", p))?;
                    }
                    p.clone()
                }
                VolumeSource::Named(n) => {
                    let vol = self.volumes().create(Some(n), &[], false, true)?;
                    rec.volumes.push(vol.name.clone());
                    vol.mountpoint
                }
                VolumeSource::Anonymous => {
                    let vol = self.volumes().create(None, &[], true, false)?;
                    rec.volumes.push(vol.name.clone());
                    rec.anonymous_volumes.push(vol.name.clone());
                    vol.mountpoint
                }
            };
            if matches!(v.source, VolumeSource::Named(_) | VolumeSource::Anonymous) {
                copy_up(&prepared.rootfs, &v.destination, &source);
            }
            mounts.push(spec::Mount {
                source,
                destination: v.destination.clone(),
                read_only: v.read_only,
                options: v.options.clone(),
            });
        }
        let host_network = plan.net_mode == NetMode::Host;
        let etc = crate::etc_files::write(
            &dir,
            &crate::etc_files::EtcInput {
                hostname: &rec.hostname,
                addresses: Vec::new(),
                add_hosts: &rec.options.add_hosts,
                dns: &rec.options.dns,
                dns_search: &rec.options.dns_search,
                dns_options: &rec.options.dns_options,
                host_network,
                aliases: Vec::new(),
                peers: Vec::new(),
            },
        )
        .map_err(io("writing /etc files in", &dir))?;
        let init = rec
            .options
            .init
            .then(|| runtime::helper_binary("hako-init"));
        if rec.infra_for.is_some() {
            mounts.push(spec::Mount {
                source: runtime::helper_binary("hako-init"),
                destination: spec::INIT_PATH.into(),
                read_only: true,
                options: vec!["nosuid".into(), "nodev".into()],
            });
        }
        let ctx = SpecContext {
            image: &plan.config,
            rootfs: &prepared.rootfs,
            hostname: rec.hostname.clone(),
            etc_files: etc,
            net: match (&plan.net_mode, &plan.netns) {
                (NetMode::Host, _) => NetNs::Host,
                (NetMode::None, None) => NetNs::New,
                (NetMode::Network(_), None) => NetNs::Path(net::netns_path(&self.networks(), &id)),
                (_, Some(p)) => NetNs::Path(p.clone()),
                (_, None) => NetNs::New,
            },
            join: plan.join.clone(),
            mounts,
            init,
            cgroups_path: format!("/hako/{id}"),
        };
        let spec = spec::runtime_spec(&rec.options, &ctx)?;
        rec.args = spec::strings(&spec["process"]["args"]);
        let bundle = dir.join("bundle");
        std::fs::create_dir(&bundle).map_err(io("creating", &bundle))?;
        hako_image::bundle::write_config(&bundle, &spec).map_err(|e| EngineError::Other {
            id: id.clone(),
            what: e.to_string(),
        })?;
        Ok(())
    }

    /// A fresh run dir and a monitor holding the container created.
    fn spawn_monitor(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let id = &rec.id;
        let run = self.run_dir(id);
        let io = |what: &'static str, path: &Path| io_err(id, what, path);
        let rt = self.oci_runtime(rec);
        // What an earlier run left (a restart, a reboot, a killed hako).
        if run.exists() {
            let _ = rt.delete(id, true);
            hako_image::remove_tree(&run).map_err(io("clearing", &run))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&run)
            .map_err(io("creating", &run))?;
        let snapshots = self.snapshotter(rec)?;
        let chain = self.chain(rec)?;
        snapshots
            .remount_rootfs(&chain, &self.container_dir(id).join("fs"))
            .map_err(|source| EngineError::Snapshot {
                id: id.clone(),
                source,
            })?;
        self.network_up(rec)?;
        if let Some(pod) = &rec.pod {
            self.rejoin_pod(rec, pod)?;
        }
        let exe = std::env::current_exe().map_err(io("finding", Path::new("/proc/self/exe")))?;
        let mut m = MonitorOptions::new(
            runtime::helper_binary("hako-monitor"),
            id.clone(),
            self.container_dir(id).join("bundle"),
            run.clone(),
            self.log_path(id),
        );
        m.runtime = Some(rec.runtime.clone());
        m.runtime_args = rt.global_args().into_iter().map(Into::into).collect();
        m.terminal = rec.options.tty;
        m.stdin = rec.options.interactive;
        m.log_max_size = 10 << 20;
        m.exit_command = Some(exe);
        // An attached `hako` (run, start -a) cleans up itself: no second
        // process racing it for the lock.
        m.exit_command_unless = Some(run.join("attached"));
        m.exit_args = vec![
            "--root".into(),
            self.root.clone().into(),
            "--runroot".into(),
            self.runroot.clone().into(),
            "container".into(),
            "cleanup".into(),
            id.into(),
        ];
        if let Err(e) = hako_monitor::spawn(&m) {
            let _ = self.network_down(rec);
            return Err(e.into());
        }
        Ok(())
    }

    /// A pod member's config names its infra's namespaces by /proc path:
    /// after the infra restarted they are those of its new pid.
    fn rejoin_pod(&self, rec: &ContainerRecord, pod: &str) -> Result<(), EngineError> {
        let ctx = self.pod_for_member(pod)?;
        let path = self.container_dir(&rec.id).join("bundle/config.json");
        let io = |what: &'static str| io_err(&rec.id, what, &path);
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).map_err(io("reading"))?).map_err(|e| {
                EngineError::Other {
                    id: rec.id.clone(),
                    what: format!("its config.json: {e}"),
                }
            })?;
        let mut joins = ctx.join.clone();
        if matches!(rec.network.mode, NetMode::Pod(_)) {
            joins.push(("network", ctx.netns.clone()));
        }
        if let Some(list) = cfg["linux"]["namespaces"].as_array_mut() {
            for ns in list.iter_mut() {
                if let Some((_, p)) = joins.iter().find(|(t, _)| ns["type"] == *t) {
                    ns["path"] = serde_json::json!(p);
                }
            }
        }
        hako_image::bundle::write_config(path.parent().unwrap_or(Path::new(".")), &cfg).map_err(
            |e| EngineError::Other {
                id: rec.id.clone(),
                what: e.to_string(),
            },
        )
    }

    pub fn networks(&self) -> hako_network::NetworkStore {
        net::store(&self.root, &self.runroot)
    }

    /// Its own netns, attached to its network, and /etc/hosts naming its
    /// address there.
    fn network_up(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let store = self.networks();
        let (path, name) = match (&rec.network.mode, &rec.infra_for, &rec.network.netns) {
            (NetMode::Network(n), None, _) => (net::netns_path(&store, &rec.id), Some(n.as_str())),
            (NetMode::Network(n), Some(_), Some(p)) => (p.clone(), Some(n.as_str())),
            (NetMode::None, Some(_), Some(p)) => (p.clone(), None),
            _ => return Ok(()),
        };
        let res = net::up(&store, &path, &rec.id, name, &rec.network.ports, &[]).map_err(|e| {
            // Attach errors name the container and network themselves.
            let what = match e.0.strip_prefix(&format!("container {}, ", rec.id)) {
                Some(rest) => rest.to_string(),
                None => format!("network {}: {}", name.unwrap_or("none"), e.0),
            };
            EngineError::Other {
                id: rec.id.clone(),
                what,
            }
        })?;
        let addresses: Vec<String> = res
            .iter()
            .flat_map(|r| r.networks.iter().map(|n| n.ip.to_string()))
            .collect();
        let dir = self.container_dir(&rec.id);
        crate::etc_files::write(
            &dir,
            &crate::etc_files::EtcInput {
                hostname: &rec.hostname,
                addresses,
                add_hosts: &rec.options.add_hosts,
                dns: &rec.options.dns,
                dns_search: &rec.options.dns_search,
                dns_options: &rec.options.dns_options,
                host_network: false,
                aliases: Vec::new(),
                peers: Vec::new(),
            },
        )
        .map_err(|source| EngineError::Io {
            id: rec.id.clone(),
            what: "writing /etc files in",
            path: dir.clone(),
            source,
        })?;
        if let Some(r) = res {
            let _ = util::write_atomic(
                &self.run_dir(&rec.id).join("network.json"),
                &serde_json::to_vec(&r).unwrap_or_default(),
            );
        }
        if let Some(n) = name {
            self.refresh_network_hosts(n, Some(&rec.id));
        }
        Ok(())
    }

    fn network_down(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let store = self.networks();
        let path = match (&rec.network.mode, &rec.infra_for, &rec.network.netns) {
            (NetMode::Network(_), None, _) => net::netns_path(&store, &rec.id),
            (NetMode::Network(_) | NetMode::None, Some(_), Some(p)) => p.clone(),
            // A pod member leaves its name on the pod's user network.
            (NetMode::Pod(pod), _, _) => {
                self.refresh_pod_network_hosts(pod);
                return Ok(());
            }
            _ => return Ok(()),
        };
        let network = match &rec.network.mode {
            NetMode::Network(n) => Some(n.as_str()),
            _ => None,
        };
        let down = net::down(&store, &path, &rec.id, network).map_err(|e| EngineError::Other {
            id: rec.id.clone(),
            what: format!("network teardown: {}", e.0),
        });
        // Gone from the network: gone from the others' /etc/hosts.
        let _ = std::fs::remove_file(self.run_dir(&rec.id).join("network.json"));
        if let Some(n) = network {
            self.refresh_network_hosts(n, None);
        }
        down
    }

    /// What the container got on its networks while it runs.
    pub fn network_result(&self, rec: &ContainerRecord) -> Option<hako_network::AttachResult> {
        let bytes = std::fs::read(self.run_dir(&rec.id).join("network.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn snapshotter(&self, rec: &ContainerRecord) -> Result<Snapshotter, EngineError> {
        let kind: SnapshotKind = rec.snapshotter.parse().map_err(|e| EngineError::Other {
            id: rec.id.clone(),
            what: e,
        })?;
        Ok(Snapshotter::for_store(self.store.root(), kind))
    }

    fn chain(&self, rec: &ContainerRecord) -> Result<Vec<Digest>, EngineError> {
        rec.chain
            .iter()
            .map(|c| {
                c.parse().map_err(|_| EngineError::Other {
                    id: rec.id.clone(),
                    what: format!("a bad chain ID {c} in its record"),
                })
            })
            .collect()
    }

    /// Starts a created container; an exited one is created again by a
    /// new monitor first (docker's `start` of a stopped container).
    pub fn start(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        self.clear_stop_mark(rec);
        self.start_locked(rec)
    }

    /// A user's start: the restart policy applies again, counted afresh.
    fn clear_stop_mark(&self, rec: &ContainerRecord) {
        if has_restart_policy(rec) {
            let dir = self.container_dir(&rec.id);
            let _ = std::fs::remove_file(dir.join(STOPPED_MARK));
            let _ = std::fs::remove_file(dir.join(RESTARTS_FILE));
        }
    }

    /// A user's stop or kill: the restart policy leaves it stopped.
    fn set_stop_mark(&self, rec: &ContainerRecord) {
        if has_restart_policy(rec) {
            let _ = std::fs::write(self.container_dir(&rec.id).join(STOPPED_MARK), b"");
        }
    }

    /// How often the restart policy started the container.
    pub fn restart_count(&self, rec: &ContainerRecord) -> u32 {
        std::fs::read_to_string(self.container_dir(&rec.id).join(RESTARTS_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// After an exit: starts the container again if its restart policy
    /// says so, after a back-off (100 ms doubling per restart, at most
    /// 30 s; 100 ms again after a run of 10 s or more).
    fn restart_by_policy(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        use options::RestartPolicy;
        let policy = RestartPolicy::parse(rec.options.restart.as_deref())?;
        if policy == RestartPolicy::No {
            return Ok(());
        }
        let due = |st: &Status, count: u32| match (policy, st) {
            (_, Status::Exited { .. } | Status::Dead)
                if self.container_dir(&rec.id).join(STOPPED_MARK).exists() =>
            {
                false
            }
            (RestartPolicy::OnFailure(max), Status::Exited { code, .. }) => {
                *code != 0 && max.is_none_or(|m| count < m)
            }
            (RestartPolicy::OnFailure(max), Status::Dead) => max.is_none_or(|m| count < m),
            (_, Status::Exited { .. } | Status::Dead) => true,
            _ => false,
        };
        let count = self.restart_count(rec);
        let st = self.status(rec);
        if !due(&st, count) {
            return Ok(());
        }
        let finished = match &st {
            Status::Exited { finished_at, .. } => util::parse_rfc3339_nanos(finished_at),
            _ => None,
        };
        let started = self
            .started_at(rec)
            .and_then(|s| util::parse_rfc3339_nanos(&s));
        let ran_long = matches!((finished, started), (Some(f), Some(s)) if f - s >= 10_000_000_000);
        let exp = if ran_long { 0 } else { count.min(9) };
        std::thread::sleep(Duration::from_millis((100u64 << exp).min(30_000)));
        let _lock = self.lock(&rec.id)?;
        // Removed, stopped or started meanwhile: nothing to do.
        let Ok(rec) = self.find(&rec.id) else {
            return Ok(());
        };
        if !due(&self.status(&rec), self.restart_count(&rec)) {
            return Ok(());
        }
        let counter = self.container_dir(&rec.id).join(RESTARTS_FILE);
        util::write_atomic(&counter, (count + 1).to_string().as_bytes())
            .map_err(|e| io_err(&rec.id, "writing", &counter)(e))?;
        self.start_locked(&rec)
    }

    /// A container that is not live gets a monitor holding it created,
    /// so a client can attach before [`Engine::start`].
    pub fn prepare_start(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        self.clear_stop_mark(rec);
        if self.status(rec).is_live() {
            return Ok(());
        }
        self.spawn_monitor(rec)
    }

    fn start_locked(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        match self.status(rec) {
            Status::Running | Status::Paused => return Ok(()),
            Status::Created { monitor: true } => {}
            _ => self.spawn_monitor(rec)?,
        }
        let run = self.run_dir(&rec.id);
        self.oci_runtime(rec).start(&rec.id)?;
        let mark = run.join("started");
        util::write_atomic(&mark, util::rfc3339_nanos(util::now_nanos()).as_bytes()).map_err(
            |source| EngineError::Io {
                id: rec.id.clone(),
                what: "writing",
                path: mark,
                source,
            },
        )?;
        // A pod member's name on its pod's user network (it is live only
        // now: its network_up ran before its monitor).
        if let NetMode::Pod(pod) = &rec.network.mode {
            self.refresh_pod_network_hosts(pod);
        }
        Ok(())
    }

    /// The runtime command that runs `args` in the running container (the
    /// container's process settings with these changes), for the caller to
    /// run with its stdio; its exit status is the process'.
    pub fn exec_command(
        &self,
        rec: &ContainerRecord,
        x: &ExecRequest,
    ) -> Result<ExecCommand, EngineError> {
        let st = self.status(rec);
        if st != Status::Running {
            return Err(EngineError::State {
                name: rec.name.clone(),
                state: st.word().into(),
                hint: if st == Status::Paused {
                    "unpause it first"
                } else {
                    "exec needs a running container"
                },
            });
        }
        if x.args.is_empty() {
            return Err(bad("exec", "", "no command given").into());
        }
        let bundle = self.container_dir(&rec.id).join("bundle");
        let cfg_path = bundle.join("config.json");
        let io = |what: &'static str, path: &Path| io_err(&rec.id, what, path);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).map_err(io("reading", &cfg_path))?)
                .map_err(|e| EngineError::Other {
                    id: rec.id.clone(),
                    what: format!("its config.json: {e}"),
                })?;
        let mut p = cfg["process"].clone();
        p["args"] = serde_json::json!(x.args);
        p["terminal"] = serde_json::json!(x.tty);
        let mut env: Vec<String> = spec::strings(&p["env"]);
        for e in &x.env {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|v| v.split('=').next() != Some(key));
            env.push(e.clone());
        }
        p["env"] = serde_json::json!(env);
        if let Some(w) = &x.workdir {
            if !w.starts_with('/') {
                return Err(bad("--workdir", w, "must be an absolute path").into());
            }
            p["cwd"] = serde_json::json!(w);
        }
        if let Some(u) = &x.user {
            let rootfs = PathBuf::from(cfg["root"]["path"].as_str().unwrap_or_default());
            let (uid, gid, groups) = hako_image::bundle::resolve_user_in(&rootfs, u)
                .map_err(|e| bad("--user", u, e.to_string()))?;
            p["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": groups});
        }
        let file = self
            .run_dir(&rec.id)
            .join(format!("exec-{}.json", std::process::id()));
        std::fs::write(&file, serde_json::to_vec(&p).unwrap_or_default())
            .map_err(io("writing", &file))?;
        // The runtime's own errors (the process could not be started)
        // go to a JSON log too, told apart from the process's exit status.
        let log = file.with_extension("log");
        let rt = self.oci_runtime(rec);
        let mut c = rt.command(&["--log"]);
        c.arg(&log)
            .args(["--log-format", "json", "exec", "--process"]);
        c.arg(&file);
        if x.tty {
            c.arg("--tty");
        }
        if x.detach {
            c.arg("--detach");
        }
        c.arg(&rec.id);
        Ok(ExecCommand {
            command: c,
            process_file: file,
            log_file: log,
        })
    }

    /// Sends `signal` to a running container.
    pub fn kill(&self, rec: &ContainerRecord, signal: i32) -> Result<(), EngineError> {
        let st = self.status(rec);
        if !st.is_running() {
            return Err(EngineError::State {
                name: rec.name.clone(),
                state: st.word().into(),
                hint: "only a running container can be signalled",
            });
        }
        if signal == libc::SIGKILL || signal == rec.stop_signal {
            self.set_stop_mark(rec);
        }
        self.oci_runtime(rec).kill(&rec.id, signal, false)?;
        // A frozen process acts on no signal (v1 freezer: not even
        // SIGKILL) until thawed.
        if st == Status::Paused && signal == libc::SIGKILL {
            let _lock = self.lock(&rec.id)?;
            self.unpause_locked(rec)?;
        }
        Ok(())
    }

    /// Freezes every process of a running container (the runtime's
    /// `pause`: the cgroup freezer).
    pub fn pause(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        self.require(
            rec,
            Status::Running,
            "only a running container can be paused",
        )?;
        self.oci_runtime(rec).pause(&rec.id)?;
        let mark = self.run_dir(&rec.id).join(PAUSED_MARK);
        std::fs::write(&mark, b"").map_err(|e| io_err(&rec.id, "writing", &mark)(e))
    }

    /// Thaws a paused container.
    pub fn unpause(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        self.require(
            rec,
            Status::Paused,
            "only a paused container can be unpaused",
        )?;
        self.unpause_locked(rec)
    }

    /// An error naming the container's state unless it is `want`.
    fn require(
        &self,
        rec: &ContainerRecord,
        want: Status,
        hint: &'static str,
    ) -> Result<(), EngineError> {
        let st = self.status(rec);
        if st == want {
            return Ok(());
        }
        Err(EngineError::State {
            name: rec.name.clone(),
            state: st.word().into(),
            hint,
        })
    }

    fn unpause_locked(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        self.oci_runtime(rec).resume(&rec.id)?;
        let _ = std::fs::remove_file(self.run_dir(&rec.id).join(PAUSED_MARK));
        Ok(())
    }

    /// Removes the user networks no container of this store uses (not
    /// the default one); their names.
    pub fn prune_networks(&self) -> Result<Vec<String>, EngineError> {
        let used: std::collections::HashSet<String> = self
            .list()?
            .into_iter()
            .filter_map(|r| match r.network.mode {
                NetMode::Network(n) => Some(n),
                _ => None,
            })
            .collect();
        let nets = self.networks();
        let list = nets.list().map_err(|e| EngineError::Other {
            id: "(networks)".into(),
            what: e.to_string(),
        })?;
        let mut gone = Vec::new();
        for n in list {
            if n.name == hako_network::store::DEFAULT_NETWORK || used.contains(&n.name) {
                continue;
            }
            // Not forced: one a container attached meanwhile stays.
            match nets.remove(&n.name, false) {
                Ok(()) => gone.push(n.name),
                Err(hako_network::StoreError::InUse { .. }) => {}
                Err(e) => {
                    return Err(EngineError::Other {
                        id: "(networks)".into(),
                        what: e.to_string(),
                    })
                }
            }
        }
        Ok(gone)
    }

    /// Removes the volumes no container uses; their names.
    pub fn prune_volumes(&self) -> Result<Vec<String>, EngineError> {
        let vols = self.volumes();
        let mut gone = Vec::new();
        for v in vols.list()? {
            if self.volume_users(&v.name)?.is_empty() {
                vols.remove(&v.name, &[])?;
                gone.push(v.name);
            }
        }
        Ok(gone)
    }

    /// The host and the store, for `hako info`.
    pub fn info(&self) -> Result<HostInfo, EngineError> {
        let containers: Vec<ContainerRecord> = self
            .list()?
            .into_iter()
            .filter(|r| r.infra_for.is_none())
            .collect();
        let states: Vec<Status> = containers.iter().map(|r| self.status(r)).collect();
        let runtime = runtime::resolve_runtime(None);
        let runtime_version = std::process::Command::new(&runtime)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        let uname = nix::sys::utsname::uname().ok();
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024);
        Ok(HostInfo {
            version: env!("CARGO_PKG_VERSION"),
            os: std::env::consts::OS,
            arch: match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            },
            kernel: uname
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total,
            cgroup_mode: hako_cgroups::layout::Layout::detect().ok().map(|l| l.mode),
            oci_runtime: runtime,
            oci_runtime_version: runtime_version,
            root: self.root.clone(),
            runroot: self.runroot.clone(),
            containers: containers.len(),
            containers_running: states.iter().filter(|s| **s == Status::Running).count(),
            containers_paused: states.iter().filter(|s| **s == Status::Paused).count(),
            containers_stopped: states.iter().filter(|s| !s.is_running()).count(),
            pods: self.pods()?.len(),
            volumes: self.volumes().list()?.len(),
            network_backend: "cni",
        })
    }

    /// Gives the container another name (its hostname stays, as in docker).
    pub fn rename(&self, rec: &ContainerRecord, name: &str) -> Result<(), EngineError> {
        if !util::valid_name(name) {
            return Err(bad("rename", name, "may hold only [a-zA-Z0-9][a-zA-Z0-9_.-]").into());
        }
        if rec.infra_for.is_some() {
            return Err(bad(
                "rename",
                &rec.name,
                "a pod's infra container keeps its name",
            )
            .into());
        }
        let _lock = self.lock(&rec.id)?;
        let mut renamed = self.find(&rec.id)?;
        let old = std::mem::replace(&mut renamed.name, name.to_string());
        renamed.options.name = Some(name.to_string());
        self.db.rename(&CONTAINERS, &rec.id, &old, name, &renamed)?;
        Ok(())
    }

    /// `stop` then `start`, under one lock.
    pub fn restart(&self, rec: &ContainerRecord, timeout: Option<u64>) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        self.stop_locked(rec, timeout)?;
        self.clear_stop_mark(rec);
        self.start_locked(rec)
    }

    /// The stop signal, then SIGKILL after `timeout` (the container's own
    /// stop timeout when None). A container that is not running is left
    /// as it is.
    pub fn stop(&self, rec: &ContainerRecord, timeout: Option<u64>) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        self.stop_locked(rec, timeout)
    }

    fn stop_locked(&self, rec: &ContainerRecord, timeout: Option<u64>) -> Result<(), EngineError> {
        self.set_stop_mark(rec);
        let rt = self.oci_runtime(rec);
        match self.status(rec) {
            Status::Running => {}
            // Frozen processes cannot act on the stop signal: thawed first.
            Status::Paused => self.unpause_locked(rec)?,
            Status::Created { monitor: true } => {
                // Never started: deleting it ends its waiting init.
                rt.delete(&rec.id, true)?;
                self.wait_exit(rec, Duration::from_secs(10));
                return Ok(());
            }
            _ => return Ok(()),
        }
        let timeout = Duration::from_secs(timeout.unwrap_or(rec.stop_timeout));
        if !timeout.is_zero() {
            if let Err(e) = rt.kill(&rec.id, rec.stop_signal, false) {
                if self.status(rec).is_running() {
                    return Err(e.into());
                }
            }
            if self.wait_exit(rec, timeout) {
                return Ok(());
            }
        }
        let _ = rt.kill(&rec.id, libc::SIGKILL, true);
        if self.wait_exit(rec, Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(EngineError::Other {
                id: rec.id.clone(),
                what: "it did not exit within 10 s of SIGKILL".into(),
            })
        }
    }

    /// Waits until the container is no longer live; true if it ended.
    fn wait_exit(&self, rec: &ContainerRecord, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if !self.status(rec).is_live() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits for the container to exit; its exit code (-1 when its
    /// monitor died without recording one).
    pub fn wait(&self, rec: &ContainerRecord) -> Result<i32, EngineError> {
        let mut pause = Duration::from_millis(1);
        loop {
            match self.status(rec) {
                Status::Exited { code, .. } => return Ok(code),
                Status::Dead => return Ok(-1),
                Status::Created { monitor: false } => {
                    return Err(EngineError::State {
                        name: rec.name.clone(),
                        state: "created".into(),
                        hint: "it is not running and nothing will start it",
                    })
                }
                _ => {}
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Removes a container; a live one only with `force` (killed first).
    pub fn remove(&self, rec: &ContainerRecord, force: bool) -> Result<(), EngineError> {
        let _lock = self.lock(&rec.id)?;
        // Gone while we waited for the lock (an exit command)? Then its
        // directories are gone too, and removing again changes nothing.
        self.remove_locked(rec, force)
    }

    fn remove_locked(&self, rec: &ContainerRecord, force: bool) -> Result<(), EngineError> {
        let st = self.status(rec);
        if st.is_live() {
            // As docker: a created container goes without --force.
            if st.is_running() && !force {
                return Err(EngineError::State {
                    name: rec.name.clone(),
                    state: st.word().into(),
                    hint: "stop it first, or remove it with --force",
                });
            }
            let rt = self.oci_runtime(rec);
            let _ = rt.kill(&rec.id, libc::SIGKILL, true);
            let _ = rt.delete(&rec.id, true);
            self.wait_exit(rec, Duration::from_secs(10));
        }
        self.teardown(rec)?;
        for v in &rec.anonymous_volumes {
            let _ = self.volumes().remove(v, &[]);
        }
        self.db.remove(&CONTAINERS, &rec.id)?;
        let _ = std::fs::remove_file(self.runroot.join("locks").join(&rec.id));
        Ok(())
    }

    /// Everything a container made, gone: runtime state, monitor, network,
    /// rootfs (unmounted), its directories. The record stays.
    fn teardown(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let id = &rec.id;
        let run = self.run_dir(id);
        let rt = self.oci_runtime(rec);
        let _ = rt.delete(id, true);
        if let Some(pid) = monitor_pid(&run) {
            // A monitor still there with nothing to watch (a failed start).
            // SAFETY: kill(2) with a pid we recorded and checked alive.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Everything else goes even when the network does not (then the
        // error is returned, the record stays, and `rm` can try again).
        let net = self.network_down(rec);
        let dir = self.container_dir(id);
        Snapshotter::release_rootfs(&dir.join("fs")).map_err(|source| EngineError::Snapshot {
            id: id.clone(),
            source,
        })?;
        for d in [&dir, &run] {
            match hako_image::remove_tree(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(EngineError::Io {
                        id: id.clone(),
                        what: "removing",
                        path: d.clone(),
                        source,
                    })
                }
            }
        }
        net
    }

    /// What a monitor runs when its container has exited: the runtime
    /// forgets it, the network and rootfs mount go (they come back at the
    /// next start), and an `--rm` container is removed.
    pub fn cleanup(&self, what: &str) -> Result<(), EngineError> {
        let rec = match self.find(what) {
            Ok(r) => r,
            Err(EngineError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let exited = self.cleanup_exited(&rec)?;
        if exited {
            self.restart_by_policy(&rec)?;
        }
        Ok(())
    }

    /// [`Engine::cleanup`] but the restart: true if the container had exited.
    fn cleanup_exited(&self, rec: &ContainerRecord) -> Result<bool, EngineError> {
        let _lock = self.lock(&rec.id)?;
        if self
            .db
            .find::<ContainerRecord>(&CONTAINERS, &rec.id)?
            .is_none()
        {
            return Ok(false);
        }
        if !matches!(self.status(rec), Status::Exited { .. } | Status::Dead) {
            return Ok(false);
        }
        if rec.options.auto_remove {
            return self.remove_locked(rec, false).map(|_| false);
        }
        let _ = self.oci_runtime(rec).delete(&rec.id, true);
        self.network_down(rec)?;
        Snapshotter::unmount_rootfs(&self.container_dir(&rec.id).join("fs")).map_err(|source| {
            EngineError::Snapshot {
                id: rec.id.clone(),
                source,
            }
        })?;
        Ok(true)
    }

    /// The rootfs of a container that is not running, mounted for `cp`.
    pub(crate) fn mount_for_copy(
        &self,
        rec: &ContainerRecord,
        fs: &Path,
    ) -> Result<PathBuf, EngineError> {
        let chain = self.chain(rec)?;
        let p = self
            .snapshotter(rec)?
            .remount_rootfs(&chain, fs)
            .map_err(|source| EngineError::Snapshot {
                id: rec.id.clone(),
                source,
            })?;
        Ok(p.rootfs)
    }

    /// Undoes [`Engine::mount_for_copy`] (the next start mounts again).
    pub(crate) fn unmount_after_copy(&self, rec: &ContainerRecord, fs: &Path) {
        if !self.status(rec).is_live() {
            let _ = Snapshotter::unmount_rootfs(fs);
        }
    }

    /// Marks the container as attached by this process: until it exits,
    /// the monitor's exit command leaves the cleanup to it (one cleanup,
    /// not two racing for the lock).
    pub fn mark_attached(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let path = self.run_dir(&rec.id).join("attached");
        util::write_atomic(&path, hako_procfs::own_mark().as_bytes()).map_err(|source| {
            EngineError::Io {
                id: rec.id.clone(),
                what: "writing",
                path,
                source,
            }
        })
    }

    /// Whether a live `hako` attached to container `id` will clean it up
    /// (see [`Engine::mark_attached`]); read without opening the engine.
    pub fn attached_cli_alive(runroot: &Path, id: &str) -> bool {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        hako_procfs::marked_process_alive(&runroot.join("containers").join(id).join("attached"))
    }

    /// Removes every container that is not running, created ones too, as
    /// docker (pods none of whose containers runs go with theirs); their
    /// IDs.
    pub fn prune(&self) -> Result<Vec<String>, EngineError> {
        let mut gone = Vec::new();
        for pod in self.pods()? {
            let all = self.pod_containers(&pod)?;
            if all.iter().all(|c| !self.status(c).is_running()) {
                gone.extend(
                    all.iter()
                        .filter(|c| c.infra_for.is_none())
                        .map(|c| c.id.clone()),
                );
                self.remove_pod(&pod, false)?;
            }
        }
        for rec in self.list()? {
            if self.status(&rec).is_running() || rec.infra_for.is_some() {
                continue;
            }
            self.remove(&rec, false)?;
            gone.push(rec.id);
        }
        // Directories no record names: a create killed before it wrote
        // its record.
        let known: std::collections::HashSet<String> =
            self.list()?.into_iter().map(|r| r.id).collect();
        for base in [
            self.root.join("containers"),
            self.runroot.join("containers"),
        ] {
            for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if known.contains(&name) || name.len() != 64 {
                    continue;
                }
                // A create in progress holds the lock; a dead one does not.
                let Some(_held) = self.try_lock(&name)? else {
                    continue;
                };
                if self
                    .db
                    .find::<ContainerRecord>(&CONTAINERS, &name)?
                    .is_some()
                {
                    continue;
                }
                if let Some(pid) = monitor_pid(&e.path()) {
                    // SAFETY: kill(2) of a monitor no record owns.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = Snapshotter::release_rootfs(&e.path().join("fs"));
                let _ = hako_image::remove_tree(&e.path());
                let _ = std::fs::remove_file(self.runroot.join("locks").join(&name));
            }
        }
        Ok(gone)
    }
}

/// What `hako exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub detach: bool,
}

/// What [`Engine::create`] checked before making anything.
struct Plan {
    config: ImageConfig,
    volumes: Vec<options::VolumeSpec>,
    stop_signal: i32,
    net_mode: NetMode,
    netns: Option<PathBuf>,
    ports: Vec<hako_network::PortMapping>,
    snapshots: Snapshotter,
    /// The pod's name when its UTS namespace is joined.
    hostname: Option<String>,
    /// Namespaces of the pod's infra joined by path.
    join: Vec<(&'static str, PathBuf)>,
    pod: Option<String>,
}

/// An I/O error of container `id`: `what` was being done to `path`.
fn io_err(id: &str, what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let id = id.to_string();
    let path = path.to_path_buf();
    move |source| EngineError::Io {
        id,
        what,
        path,
        source,
    }
}

/// The monitor's pid, if it is alive (its pid file names a live
/// hako-monitor).
fn monitor_pid(run: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(run.join("monitor.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    (comm.trim() == "hako-monitor" && state != "Z").then_some(pid)
}

fn monitor_alive(run: &Path) -> bool {
    monitor_pid(run).is_some()
}

/// A new named volume shows what the image has at its mount point, as in
/// docker: the image's files are copied in while the volume is empty.
/// The directory is opened inside the rootfs (RESOLVE_IN_ROOT): an image
/// symlink on the way can never point the copy at a host directory.
fn copy_up(rootfs: &Path, destination: &str, volume: &Path) {
    let Ok(mut entries) = std::fs::read_dir(volume) else {
        return;
    };
    if entries.next().is_some() {
        return;
    }
    let Ok(root) = std::fs::File::open(rootfs) else {
        return;
    };
    let Ok(fd) = hako_runtime::sys::openat2(
        std::os::fd::AsRawFd::as_raw_fd(&root),
        Path::new(destination.trim_start_matches('/')),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        hako_runtime::sys::RESOLVE_IN_ROOT,
    ) else {
        return;
    };
    let dir = std::fs::File::from(fd);
    let Ok(md) = dir.metadata() else { return };
    let src = format!(
        "/proc/{}/fd/{}/.",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    );
    let _ = std::process::Command::new("cp")
        .args(["-a", "--no-dereference"])
        .arg(&src)
        .arg(volume)
        .status();
    let _ = std::fs::set_permissions(volume, md.permissions());
    let _ = std::os::unix::fs::chown(
        volume,
        Some(std::os::unix::fs::MetadataExt::uid(&md)),
        Some(std::os::unix::fs::MetadataExt::gid(&md)),
    );
}
