//! The attachment cache: what each successful ADD returned, and with which
//! configuration, so DEL and CHECK can be given `prevResult` (required by
//! CNI 1.0) and the same runtime config, even after the network itself was
//! changed or removed.
//!
//! Layout: `<root>/networks/cache/<container-id>/<network>.json`.
//!
//! It lives under the persistent root, not the runroot, because the
//! host-local IPAM leases it is needed to release live there too: after a
//! reboot the namespaces, veths and iptables rules are gone, but the leases
//! are not, and only a DEL with the cached result (run by `detach`) frees
//! them and tidies the rest idempotently.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fsutil::{remove_if_exists, write_atomic};
use crate::ports::PortMapping;

/// One container's attachment to one network, as cached after its ADD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    /// The namespace path given at attach.
    pub netns: PathBuf,
    /// Attach order across the container's networks; detach runs backwards.
    pub order: u64,
    /// Published ports with their host ports resolved.
    pub ports: Vec<PortMapping>,
    pub aliases: Vec<String>,
    /// An address the caller asked for, if any.
    pub static_ip: Option<Ipv4Addr>,
    /// The conflist as it was at ADD.
    pub config: Value,
    /// The final result of the ADD chain.
    pub result: Value,
}

impl AttachmentRecord {
    /// The `runtimeConfig` capabilities this attachment passes to plugins:
    /// `portMappings` (portmap) and `ips` (host-local, through bridge).
    pub(crate) fn runtime_config(&self) -> Map<String, Value> {
        runtime_config(&self.ports, self.static_ip)
    }
}

pub(crate) fn runtime_config(ports: &[PortMapping], ip: Option<Ipv4Addr>) -> Map<String, Value> {
    let mut rc = Map::new();
    if !ports.is_empty() {
        let maps: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut m = serde_json::json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol.to_string(),
                });
                if let Some(ip) = p.host_ip {
                    m["hostIP"] = Value::from(ip.to_string());
                }
                m
            })
            .collect();
        rc.insert("portMappings".into(), Value::Array(maps));
    }
    if let Some(ip) = ip {
        rc.insert("ips".into(), Value::from(vec![ip.to_string()]));
    }
    rc
}

/// What went wrong reading or writing the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("attachment cache {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("attachment cache {path}: not a valid record: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The cache directory of one store.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    fn path(&self, container_id: &str, network: &str) -> PathBuf {
        self.dir.join(container_id).join(format!("{network}.json"))
    }

    pub fn write(&self, rec: &AttachmentRecord) -> Result<(), CacheError> {
        let path = self.path(&rec.container_id, &rec.network);
        let io = |op, source| CacheError::Io {
            path: path.clone(),
            op,
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating directory", e))?;
        }
        let data = serde_json::to_vec_pretty(rec).map_err(|e| io("encoding", e.into()))?;
        write_atomic(&path, &data).map_err(|e| io("writing", e))
    }

    pub fn read(
        &self,
        container_id: &str,
        network: &str,
    ) -> Result<Option<AttachmentRecord>, CacheError> {
        read_record(&self.path(container_id, network))
    }

    pub fn remove(&self, container_id: &str, network: &str) -> Result<(), CacheError> {
        let path = self.path(container_id, network);
        remove_if_exists(&path).map_err(|e| CacheError::Io {
            path: path.clone(),
            op: "removing",
            source: e,
        })?;
        // The container's directory goes with its last record.
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// The records of one container, in attach order.
    pub fn for_container(&self, container_id: &str) -> Result<Vec<AttachmentRecord>, CacheError> {
        let mut out = Vec::new();
        for path in list_dir(&self.dir.join(container_id))? {
            if path.extension().is_some_and(|e| e == "json") {
                out.extend(read_record(&path)?);
            }
        }
        out.sort_by_key(|r| r.order);
        Ok(out)
    }

    /// Every record, or those of one network.
    pub fn all(&self, network: Option<&str>) -> Result<Vec<AttachmentRecord>, CacheError> {
        let mut out = Vec::new();
        for dir in list_dir(&self.dir)? {
            if !dir.is_dir() {
                continue;
            }
            let cid = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            match (network, cid) {
                (Some(net), Some(cid)) => out.extend(self.read(&cid, net)?),
                (None, Some(cid)) => out.extend(self.for_container(&cid)?),
                _ => {}
            }
        }
        out.sort_by(|a, b| (&a.container_id, a.order).cmp(&(&b.container_id, b.order)));
        Ok(out)
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CacheError::Io {
                path: dir.to_path_buf(),
                op: "listing",
                source: e,
            })
        }
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| CacheError::Io {
            path: dir.to_path_buf(),
            op: "listing",
            source: e,
        })?;
        // Temporary files of atomic writes start with a dot.
        if !e.file_name().to_string_lossy().starts_with('.') {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn read_record(path: &Path) -> Result<Option<AttachmentRecord>, CacheError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CacheError::Io {
                path: path.to_path_buf(),
                op: "reading",
                source: e,
            })
        }
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|source| CacheError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

/// The parts of a CNI result the engine needs about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceInfo {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
}

/// Finds, in a CNI result, the IPv4 address on the sandbox interface
/// `ifname` (or the first IPv4 address if none is tied to an interface).
pub(crate) fn interface_info(result: &Value, ifname: &str) -> Option<InterfaceInfo> {
    let interfaces = result.get("interfaces").and_then(Value::as_array);
    let ifindex = interfaces.and_then(|ifs| {
        ifs.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        })
    });
    let mac = ifindex
        .and_then(|n| interfaces?.get(n)?.get("mac")?.as_str())
        .unwrap_or_default()
        .to_string();
    let ips = result.get("ips").and_then(Value::as_array)?;
    let v4 = ips.iter().filter_map(|e| {
        let (addr, prefix) = e.get("address")?.as_str()?.split_once('/')?;
        let ip: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let gateway = e
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok());
        let iface = e.get("interface").and_then(Value::as_u64);
        Some((
            iface,
            InterfaceInfo {
                ip,
                prefix,
                gateway,
                mac: mac.clone(),
            },
        ))
    });
    let all: Vec<_> = v4.collect();
    all.iter()
        .find(|(i, _)| ifindex.is_some() && *i == ifindex.map(|n| n as u64))
        .or_else(|| all.first())
        .map(|(_, info)| info.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_sandbox_interface() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"interface": 2, "address": "10.90.4.2/24", "gateway": "10.90.4.1"}]
        });
        assert_eq!(
            interface_info(&r, "eth0"),
            Some(InterfaceInfo {
                ip: Ipv4Addr::new(10, 90, 4, 2),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 90, 4, 1)),
                mac: "cc:cc:cc:cc:cc:cc".into(),
            })
        );
        assert_eq!(interface_info(&json!({"ips": []}), "eth0"), None);
    }

    #[test]
    fn runtime_config_shapes() {
        let ports = crate::ports::parse_port_spec("127.0.0.1:8080:80/udp").expect("test fixture");
        let rc = runtime_config(&ports, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(
            Value::Object(rc),
            json!({
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"}],
                "ips": ["10.0.0.5"]
            })
        );
        assert!(runtime_config(&[], None).is_empty());
    }
}
