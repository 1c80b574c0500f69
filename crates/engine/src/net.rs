//! A container's network through hako-network: a persistent netns per
//! container (or pod) attached to CNI networks, set up when its monitor
//! starts and torn down when it exits.

use std::path::{Path, PathBuf};

use hako_network::{AttachResult, NetworkAttachment, NetworkStore, PortMapping};
use serde::{Deserialize, Serialize};

use crate::options::{bad, OptionError};

/// How `--network` was understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetMode {
    /// Its own namespace with loopback only.
    None,
    Host,
    /// Its own namespace attached to this CNI network.
    Network(String),
    /// Another container's namespace (by ID).
    Container(String),
    /// Its pod's namespace (by pod ID).
    Pod(String),
}

impl NetMode {
    pub fn describe(&self) -> String {
        match self {
            NetMode::None => "none".into(),
            NetMode::Host => "host".into(),
            NetMode::Network(n) if n == hako_network::store::DEFAULT_NETWORK => "bridge".into(),
            NetMode::Network(n) => n.clone(),
            NetMode::Container(c) => format!("container:{c}"),
            NetMode::Pod(p) => format!("pod:{p}"),
        }
    }
}

pub fn store(root: &Path, runroot: &Path) -> NetworkStore {
    NetworkStore::new(root, runroot)
}

/// Parses every `-p` (host ports still 0 where not given).
pub fn parse_ports(specs: &[String]) -> Result<Vec<PortMapping>, OptionError> {
    let mut out = Vec::new();
    for s in specs {
        out.extend(hako_network::parse_port_spec(s).map_err(|e| bad("-p", s, e.to_string()))?);
    }
    Ok(out)
}

/// Host ports for the mappings that have none, and a check that the given
/// ones are free (no host listener, no other container's mapping).
pub fn assign_ports(store: &NetworkStore, ports: &mut [PortMapping]) -> Result<(), OptionError> {
    if ports.is_empty() {
        return Ok(());
    }
    let mut taken: Vec<PortMapping> = store
        .attachments(None)
        .map(|a| a.into_iter().flat_map(|r| r.ports).collect())
        .unwrap_or_default();
    // Other stores on this host publish through the same DNAT rules and
    // nothing binds their ports: what the portmap plugin's chains hold is
    // taken too.
    taken.extend(dnat_ports());
    for p in ports.iter().filter(|p| p.host_port != 0) {
        if taken.iter().any(|t| hako_network::ports::conflicts(p, t)) {
            return Err(bad(
                "-p",
                &p.to_string(),
                format!(
                    "host port {}/{} is already published",
                    p.host_port, p.protocol
                ),
            ));
        }
    }
    hako_network::ports::assign_host_ports(ports, &taken).map_err(|e| bad("-p", "", e.to_string()))
}

/// Host ports the CNI portmap plugin's DNAT chains (`CNI-DN-*`) forward,
/// whoever made them; none when iptables cannot be read.
fn dnat_ports() -> Vec<PortMapping> {
    let Ok(out) = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ports = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("-A CNI-DN-")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
        };
        let protocol = match after("-p").copied() {
            Some("udp") => hako_network::Protocol::Udp,
            Some("sctp") => hako_network::Protocol::Sctp,
            _ => hako_network::Protocol::Tcp,
        };
        if let Some(port) = after("--dport").and_then(|p| p.parse::<u16>().ok()) {
            ports.push(PortMapping {
                host_ip: None,
                host_port: port,
                container_port: 0,
                protocol,
            });
        }
    }
    ports
}

/// Makes the netns at `path` (unless it exists) and attaches it to
/// `network` as `owner` with `ports`. All or nothing.
pub fn up(
    store: &NetworkStore,
    path: &Path,
    owner: &str,
    network: Option<&str>,
    ports: &[PortMapping],
    aliases: &[String],
) -> Result<Option<AttachResult>, NetError> {
    let made = if hako_network::netns::is_netns(path) {
        false
    } else {
        hako_network::Netns::create(path).map_err(|e| NetError(e.to_string()))?;
        true
    };
    let Some(network) = network else {
        return Ok(None);
    };
    let mut a = NetworkAttachment::new(network, "eth0");
    a.ports = ports.to_vec();
    a.aliases = aliases.to_vec();
    match store.attach(path, owner, &[a]) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            if made {
                let _ = hako_network::Netns::remove(path);
            }
            Err(NetError(e.to_string()))
        }
    }
}

/// Detaches `owner` from `network` (by its cached result, or by a DEL
/// from the network's config when a killed `hako` never cached one) and
/// from whatever else the cache lists, then removes the netns.
pub fn down(
    store: &NetworkStore,
    path: &Path,
    owner: &str,
    network: Option<&str>,
) -> Result<(), NetError> {
    let mut detached = match network {
        Some(n) => store
            .detach(path, owner, &[NetworkAttachment::new(n, "eth0")])
            .map_err(|e| NetError(e.to_string())),
        None => Ok(()),
    };
    if let Err(e) = store.detach_all(path, owner) {
        detached = detached.and(Err(NetError(e.to_string())));
    }
    let removed = if path.exists() {
        hako_network::Netns::remove(path).map_err(|e| NetError(e.to_string()))
    } else {
        Ok(())
    };
    detached.and(removed)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetError(pub String);

/// Where a container's (or pod's) netns lives.
pub fn netns_path(store: &NetworkStore, owner: &str) -> PathBuf {
    store.netns_path(owner)
}
