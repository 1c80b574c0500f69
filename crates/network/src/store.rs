//! Network configurations on disk: create, list, inspect, remove.
//!
//! State (see the crate's README for the whole picture):
//! - `<root>/networks/<name>.conflist`: one CNI conflist per network.
//! - `<root>/networks/.lock`: flock; exclusive for create, remove, attach
//!   and detach, so concurrent engines never pick the same subnet, bridge or
//!   host port.
//! - `<root>/networks/ipam/<name>/`: host-local's leases (its `dataDir`).
//! - `<root>/networks/cache/<container>/<network>.json`: attachments.
//! - `<runroot>/netns/<name>`: persistent network namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::Flock;

use crate::cache::{AttachmentRecord, Cache, CacheError};
use crate::chain;
use crate::claims::{Claim, ClaimError, Claims, CLAIMS_DIR};
use crate::cni::{self, CniError, CniPath};
use crate::conflist::{self, Network};
use crate::fsutil::{lock_file, random_hex, remove_if_exists, write_atomic};
use crate::netns::is_netns;
use crate::subnet::Ipv4Net;

/// The default network's name.
pub const DEFAULT_NETWORK: &str = "hako";
/// The default network's bridge.
pub const DEFAULT_BRIDGE: &str = "hako0";
/// Automatic subnets are /24s of this pool. 10.88.0.0/16 is podman's.
pub const SUBNET_POOL: &str = "10.90.0.0/16";
/// The default network's subnet when it is free: the pool's first /24.
/// Other automatic subnets start at the second, and bridges at `hako1`.
pub const DEFAULT_SUBNET: &str = "10.90.0.0/24";
/// Names `hako run --network` gives other meanings to.
pub const RESERVED_NAMES: &[&str] = &["none", "host", "bridge", "default"];
/// The longest network name (it becomes a file name and part of iptables
/// comments).
pub const MAX_NAME_LEN: usize = 64;

/// What `hako network create` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// `None`: the first free /24 of [`SUBNET_POOL`] that overlaps neither
    /// another network nor a host route.
    pub subnet: Option<Ipv4Net>,
    /// `None`: the subnet's first host address.
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// `None`: the first free `hakoN` (N ≥ 1).
    pub bridge: Option<String>,
}

/// A failure of a network store operation; each names the network or path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid network name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("network name {name:?} is reserved")]
    Reserved { name: String },
    #[error("network {name} already exists")]
    Exists { name: String },
    #[error("network {name} not found")]
    NotFound { name: String },
    #[error("network {name}: subnet {subnet} overlaps subnet {other_subnet} of network {other}")]
    Overlap {
        name: String,
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error("network {name}: gateway {gateway} is not a host address of subnet {subnet}")]
    Gateway {
        name: String,
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("network {name}: a gateway needs a subnet")]
    GatewayWithoutSubnet { name: String },
    #[error("network {name}: no free /24 left in {pool}")]
    NoFreeSubnet { name: String, pool: Ipv4Net },
    #[error("network {name}: invalid bridge name {bridge:?}: {reason}")]
    InvalidBridge {
        name: String,
        bridge: String,
        reason: &'static str,
    },
    #[error("network {name}: bridge {bridge} is already used by network {other}")]
    BridgeTaken {
        name: String,
        bridge: String,
        other: String,
    },
    #[error("network config {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("network {name} is in use by container(s) {}", containers.join(", "))]
    InUse {
        name: String,
        containers: Vec<String>,
    },
    #[error("network {name}: detaching container {container} while removing: {source}")]
    Detach {
        name: String,
        container: String,
        source: Box<CniError>,
    },
    #[error("network {name}: deleting bridge {bridge} (ip link delete): {output}")]
    BridgeDelete {
        name: String,
        bridge: String,
        output: String,
    },
    #[error("{source}")]
    Claims {
        #[from]
        source: ClaimError,
    },
    #[error("{source}")]
    Cache {
        #[from]
        source: CacheError,
    },
}

/// The networks of one engine data root.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    root: PathBuf,
    runroot: PathBuf,
    cni: CniPath,
    /// The host-wide claims of bridges and subnets ([`crate::claims`]).
    claims_dir: PathBuf,
}

/// An exclusive hold on the store's lock file.
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

impl NetworkStore {
    /// A store under the engine's `root` (persistent, e.g. /var/lib/hako)
    /// and `runroot` (tmpfs, e.g. /run/hako). Plugins are searched in
    /// `$HAKO_CNI_PATH` or /usr/lib/cni. Nothing is touched on disk yet.
    pub fn new(root: impl Into<PathBuf>, runroot: impl Into<PathBuf>) -> NetworkStore {
        // Absolute, so the host-wide claims (symlinks) point at this store
        // from anywhere.
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        NetworkStore {
            root: absolute(root.into()),
            runroot: absolute(runroot.into()),
            cni: CniPath::from_env(),
            claims_dir: PathBuf::from(CLAIMS_DIR),
        }
    }

    /// Keeps the host-wide claims of bridges and subnets in `dir` instead
    /// of [`CLAIMS_DIR`] (stores that share one see each other).
    pub fn with_claims_dir(mut self, dir: impl Into<PathBuf>) -> NetworkStore {
        self.claims_dir = dir.into();
        self
    }

    /// Takes the host-wide claims lock (after the store's own).
    fn claims(&self) -> Result<Claims, StoreError> {
        Ok(Claims::lock(&self.claims_dir)?)
    }

    /// Uses these plugin directories instead of the environment's.
    pub fn with_cni_path(mut self, cni: CniPath) -> NetworkStore {
        self.cni = cni;
        self
    }

    pub fn cni_path(&self) -> &CniPath {
        &self.cni
    }

    /// `<root>/networks`.
    pub fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    /// host-local's `dataDir`; leases of network N are in `<this>/N/`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.networks_dir().join("ipam")
    }

    /// Where the engine should create a container's (or pod's) network
    /// namespace: `<runroot>/netns/<name>`.
    pub fn netns_path(&self, name: &str) -> PathBuf {
        self.runroot.join("netns").join(name)
    }

    pub(crate) fn cache(&self) -> Cache {
        Cache::new(self.networks_dir().join("cache"))
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.networks_dir().join(format!("{name}.conflist"))
    }

    /// Takes the store's lock (blocking), creating the directory first.
    pub(crate) fn lock(&self) -> Result<StoreLock, StoreError> {
        let dir = self.networks_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            op: "creating",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(".lock");
        let lock = lock_file(&path).map_err(|(op, source)| StoreError::Io { op, path, source })?;
        Ok(StoreLock { _lock: lock })
    }

    /// Creates a network. See [`NetworkSpec`] for the defaults.
    pub fn create(&self, spec: &NetworkSpec) -> Result<Network, StoreError> {
        validate_name(&spec.name)?;
        if RESERVED_NAMES.contains(&spec.name.as_str()) {
            return Err(StoreError::Reserved {
                name: spec.name.clone(),
            });
        }
        let _lock = self.lock()?;
        self.create_locked(spec, false)
    }

    fn create_locked(&self, spec: &NetworkSpec, default: bool) -> Result<Network, StoreError> {
        let name = &spec.name;
        let existing = self.list()?;
        if existing.iter().any(|n| &n.name == name) {
            return Err(StoreError::Exists { name: name.clone() });
        }
        if spec.gateway.is_some() && spec.subnet.is_none() {
            return Err(StoreError::GatewayWithoutSubnet { name: name.clone() });
        }
        // Other stores' networks count as taken as well as this one's.
        let claims = self.claims()?;
        let others = claims.others(&self.networks_dir());
        claim_own(&claims, &existing, &others)?;
        let subnet = match spec.subnet {
            Some(subnet) => {
                let mine = existing
                    .iter()
                    .find(|n| n.subnet.overlaps(&subnet))
                    .map(|n| (n.name.clone(), n.subnet));
                let theirs = || {
                    others
                        .iter()
                        .find(|c| c.subnet.overlaps(&subnet))
                        .map(|c| (c.describe(), c.subnet))
                };
                if let Some((other, other_subnet)) = mine.or_else(theirs) {
                    return Err(StoreError::Overlap {
                        name: name.clone(),
                        subnet,
                        other,
                        other_subnet,
                    });
                }
                subnet
            }
            None => allocate_subnet(name, &existing, &others, default)?,
        };
        let gateway = match spec.gateway {
            Some(gw) if !subnet.is_host(gw) => {
                return Err(StoreError::Gateway {
                    name: name.clone(),
                    gateway: gw,
                    subnet,
                })
            }
            Some(gw) => gw,
            None => subnet.host(1).ok_or(StoreError::Gateway {
                name: name.clone(),
                gateway: subnet.network(),
                subnet,
            })?,
        };
        let bridge = match &spec.bridge {
            Some(b) => {
                validate_bridge(name, b)?;
                let mine = existing
                    .iter()
                    .find(|n| &n.bridge == b)
                    .map(|n| n.name.clone());
                let theirs = || others.iter().find(|c| &c.bridge == b).map(Claim::describe);
                if let Some(other) = mine.or_else(theirs) {
                    return Err(StoreError::BridgeTaken {
                        name: name.clone(),
                        bridge: b.clone(),
                        other,
                    });
                }
                b.clone()
            }
            None => allocate_bridge(&existing, &others, default),
        };
        let path = self.config_path(name);
        let net = Network {
            name: name.clone(),
            id: random_hex(32).map_err(|source| StoreError::Io {
                op: "reading /dev/urandom for the id of",
                path: path.clone(),
                source,
            })?,
            bridge,
            subnet,
            gateway,
            internal: spec.internal,
            labels: spec.labels.clone(),
            cni_version: self.spec_version().to_string(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            config_path: path.clone(),
        };
        let list = conflist::build(&net, &self.ipam_dir());
        let data = serde_json::to_vec_pretty(&list).map_err(|e| StoreError::Io {
            op: "encoding",
            path: path.clone(),
            source: e.into(),
        })?;
        claims.claim(&net.bridge, &path)?;
        if let Err(source) = write_atomic(&path, &data) {
            claims.release(&net.bridge, &path);
            return Err(StoreError::Io {
                op: "writing",
                path,
                source,
            });
        }
        Ok(net)
    }

    /// The newest spec version both hako and the installed `bridge` plugin
    /// speak; 1.0.0 when the plugin cannot be asked (then attach reports the
    /// missing plugin).
    fn spec_version(&self) -> &'static str {
        match cni::supported_versions(&self.cni, "bridge") {
            Ok(v) => cni::pick_version(&v),
            Err(_) => cni::SPEC_VERSIONS[0],
        }
    }

    /// All networks, sorted by name.
    pub fn list(&self) -> Result<Vec<Network>, StoreError> {
        let dir = self.networks_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "listing",
                    path: dir,
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                op: "listing",
                path: dir.clone(),
                source,
            })?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if let Some(name) = file.strip_suffix(".conflist") {
                if !name.starts_with('.') {
                    out.push(self.load(&entry.path())?);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One network.
    pub fn inspect(&self, name: &str) -> Result<Network, StoreError> {
        validate_name(name)?;
        let path = self.config_path(name);
        if !path.exists() {
            return Err(StoreError::NotFound {
                name: name.to_string(),
            });
        }
        self.load(&path)
    }

    /// A network's conflist as stored.
    pub(crate) fn conflist(&self, name: &str) -> Result<serde_json::Value, StoreError> {
        let path = self.config_path(name);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    name: name.to_string(),
                })
            }
            Err(source) => {
                return Err(StoreError::Io {
                    op: "reading",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    fn load(&self, path: &Path) -> Result<Network, StoreError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let list = self.conflist(&name)?;
        let net = conflist::parse(&list, path).map_err(|reason| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })?;
        if net.name != name {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("its name is {:?}, not its file's {name:?}", net.name),
            });
        }
        Ok(net)
    }

    /// The default network `hako`, created on first use: bridge `hako0`
    /// and 10.90.0.0/24 (gateway 10.90.0.1) when those are free, else the
    /// next free ones.
    pub fn default_network(&self) -> Result<Network, StoreError> {
        if let Ok(n) = self.inspect(DEFAULT_NETWORK) {
            return Ok(n);
        }
        let _lock = self.lock()?;
        if let Ok(n) = self.inspect(DEFAULT_NETWORK) {
            return Ok(n);
        }
        let spec = NetworkSpec {
            name: DEFAULT_NETWORK.to_string(),
            ..NetworkSpec::default()
        };
        self.create_locked(&spec, true)
    }

    /// Cached attachments: all, or those of one network.
    pub fn attachments(&self, network: Option<&str>) -> Result<Vec<AttachmentRecord>, StoreError> {
        Ok(self.cache().all(network)?)
    }

    /// Removes a network: its conflist, its bridge and its IPAM leases.
    /// Refuses while containers are attached, unless `force`, which first
    /// detaches them (DEL with their cached results).
    pub fn remove(&self, name: &str, force: bool) -> Result<(), StoreError> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let net = self.inspect(name)?;
        let cache = self.cache();
        let attached = cache.all(Some(name))?;
        if !attached.is_empty() && !force {
            return Err(StoreError::InUse {
                name: name.to_string(),
                containers: attached.into_iter().map(|r| r.container_id).collect(),
            });
        }
        for rec in attached {
            let netns = Some(rec.netns.as_path()).filter(|p| is_netns(p));
            let errors = chain::del_cached(&self.cni, &rec, netns);
            if let Some(source) = errors.into_iter().next() {
                return Err(StoreError::Detach {
                    name: name.to_string(),
                    container: rec.container_id.clone(),
                    source: Box::new(source),
                });
            }
            cache.remove(&rec.container_id, name)?;
        }
        delete_bridge(&net)?;
        let leases = self.ipam_dir().join(name);
        match std::fs::remove_dir_all(&leases) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::Io {
                    op: "removing IPAM leases",
                    path: leases,
                    source: e,
                })
            }
            _ => {}
        }
        let path = self.config_path(name);
        remove_if_exists(&path).map_err(|source| StoreError::Io {
            op: "removing",
            path: path.clone(),
            source,
        })?;
        if let Ok(claims) = self.claims() {
            claims.release(&net.bridge, &path);
        }
        Ok(())
    }
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, here at most 64 bytes.
pub(crate) fn validate_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return bad("it is empty"),
        Some(b) if !b.is_ascii_alphanumeric() => {
            return bad("it must start with a letter or digit")
        }
        _ => {}
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-') {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 64 characters");
    }
    Ok(())
}

/// A Linux interface name: 1..=15 bytes of `[a-zA-Z0-9_.-]`, not `.`/`..`.
pub(crate) fn interface_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        Some("an interface name has 1 to 15 characters")
    } else if name == "." || name == ".." {
        Some("an interface name cannot be . or ..")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        Some("only letters, digits, '_', '.' and '-' are allowed")
    } else {
        None
    }
}

fn validate_bridge(name: &str, bridge: &str) -> Result<(), StoreError> {
    match interface_name_problem(bridge) {
        Some(reason) => Err(StoreError::InvalidBridge {
            name: name.to_string(),
            bridge: bridge.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn pool() -> Ipv4Net {
    // A constant that parses; the unit tests check it.
    SUBNET_POOL
        .parse()
        .unwrap_or(Ipv4Net::raw(Ipv4Addr::new(10, 90, 0, 0), 16))
}

/// Claims this store's networks that have no claim yet (made before claims
/// existed, or before a reboot emptied them); a bridge another store
/// claimed meanwhile (`others`) is left to it.
fn claim_own(claims: &Claims, existing: &[Network], others: &[Claim]) -> Result<(), ClaimError> {
    for n in existing {
        if !claims.holds(&n.bridge, &n.config_path) && !others.iter().any(|c| c.bridge == n.bridge)
        {
            claims.claim(&n.bridge, &n.config_path)?;
        }
    }
    Ok(())
}

/// The first /24 of the pool free of stored networks, other stores' claims
/// and host routes.
/// The pool's first /24 is kept for the default network.
fn allocate_subnet(
    name: &str,
    existing: &[Network],
    others: &[Claim],
    default: bool,
) -> Result<Ipv4Net, StoreError> {
    let pool = pool();
    let routes = host_routes();
    let base = u32::from(pool.network());
    let count = 1u32 << (24 - u32::from(pool.prefix()));
    let first = if default { 0 } else { 1 };
    (first..count)
        .map(|i| Ipv4Net::raw(Ipv4Addr::from(base + (i << 8)), 24))
        .find(|cand| {
            !existing.iter().any(|n| n.subnet.overlaps(cand))
                && !others.iter().any(|c| c.subnet.overlaps(cand))
                && !routes.iter().any(|r| r.overlaps(cand))
        })
        .ok_or(StoreError::NoFreeSubnet {
            name: name.to_string(),
            pool,
        })
}

/// The first `hakoN` no stored network uses, no other store claimed and no
/// host link has; N starts at 1, `hako0` being the default network's.
fn allocate_bridge(existing: &[Network], others: &[Claim], default: bool) -> String {
    let first = if default { 0 } else { 1 };
    (first..)
        .map(|n| format!("hako{n}"))
        .find(|b| {
            !existing.iter().any(|n| &n.bridge == b)
                && !others.iter().any(|c| &c.bridge == b)
                && !Path::new("/sys/class/net").join(b).exists()
        })
        .unwrap_or_else(|| DEFAULT_BRIDGE.to_string())
}

/// The destinations of the host's IPv4 routes, default route excepted.
fn host_routes() -> Vec<Ipv4Net> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    parse_proc_route(&text)
}

/// `/proc/net/route` rows: Iface Destination Gateway Flags RefCnt Use
/// Metric Mask …, addresses in little-endian hex.
fn parse_proc_route(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let dst = u32::from_str_radix(cols.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(cols.get(7)?, 16).ok()?;
            // The kernel prints the network-order word as a native integer.
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            (prefix > 0).then(|| Ipv4Net::raw(Ipv4Addr::from(dst.to_ne_bytes()), prefix))
        })
        .collect()
}

/// `ip link delete` the network's bridge, if it exists.
fn delete_bridge(net: &Network) -> Result<(), StoreError> {
    if !Path::new("/sys/class/net").join(&net.bridge).exists() {
        return Ok(());
    }
    let failed = |output: String| StoreError::BridgeDelete {
        name: net.name.clone(),
        bridge: net.bridge.clone(),
        output,
    };
    let out = Command::new("ip")
        .args(["link", "delete", "dev", &net.bridge, "type", "bridge"])
        .output()
        .map_err(|e| failed(format!("running ip: {e}")))?;
    if out.status.success() || !Path::new("/sys/class/net").join(&net.bridge).exists() {
        return Ok(());
    }
    Err(failed(
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_roots_are_made_absolute() {
        let s = NetworkStore::new("rel/root", "rel/run");
        assert!(
            s.networks_dir().is_absolute(),
            "{}",
            s.networks_dir().display()
        );
        assert!(s.netns_path("x").is_absolute());
        assert!(s.networks_dir().ends_with("rel/root/networks"));
    }

    #[test]
    fn names() {
        for ok in ["a", "web", "my_net.v2-1", "0net", &"n".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a/b",
            "a b",
            "ü",
            "a:b",
            &"n".repeat(65),
        ] {
            assert!(
                matches!(validate_name(bad), Err(StoreError::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn pool_parses() {
        assert_eq!(SUBNET_POOL.parse::<Ipv4Net>().ok(), Some(pool()));
        assert_eq!(
            DEFAULT_SUBNET.parse::<Ipv4Net>().ok(),
            Some(Ipv4Net::raw(Ipv4Addr::new(10, 90, 0, 0), 24))
        );
    }

    #[test]
    fn proc_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    hako1\t00015A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_proc_route(text),
            vec![
                "192.0.2.0/24".parse::<Ipv4Net>().expect("test fixture"),
                "10.90.1.0/24".parse().expect("test fixture")
            ]
        );
    }
}
