//! Attaching a container's network namespace to networks, and detaching it.
//!
//! ```text
//! attach(netns, id, [a0, a1, …])          under the store lock
//!   for each attachment, in order:
//!     resolve host ports (free ones bound to port 0, conflicts refused)
//!     ADD bridge → portmap → firewall     prevResult chained
//!       on failure: DEL firewall … bridge  (undo this one)
//!                   detach a(k-1) … a0     (undo the earlier ones)
//!     cache the final result              <root>/networks/cache/<id>/<net>.json
//! detach(netns, id, [a0, a1, …])
//!   for each attachment, in reverse:
//!     DEL firewall → portmap → bridge     prevResult = cached result;
//!                                         CNI_NETNS empty if the netns is gone
//!     drop the cache entry
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{interface_info, runtime_config, AttachmentRecord, CacheError};
use crate::chain::{self, Target};
use crate::cni::CniError;
use crate::conflist;
use crate::netns::is_netns;
use crate::ports::{assign_host_ports, conflicts, PortMapping, PortSpecError};
use crate::store::{interface_name_problem, NetworkStore, StoreError};

/// One network a container joins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network: String,
    /// The interface inside the container: `eth0`, `eth1`, …
    pub ifname: String,
    /// Ports to publish through this network (host port 0: pick one).
    pub ports: Vec<PortMapping>,
    /// Extra names of the container on this network (recorded for the
    /// engine's /etc/hosts; there is no DNS server).
    pub aliases: Vec<String>,
    /// A fixed address (docker's `--ip`); `None` takes the next free one.
    pub ip: Option<Ipv4Addr>,
}

impl NetworkAttachment {
    pub fn new(network: impl Into<String>, ifname: impl Into<String>) -> NetworkAttachment {
        NetworkAttachment {
            network: network.into(),
            ifname: ifname.into(),
            ..NetworkAttachment::default()
        }
    }
}

/// What attach gave a container, per network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachResult {
    pub networks: Vec<AttachedNetwork>,
}

/// A container's place on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedNetwork {
    pub network: String,
    /// The interface inside the container.
    pub interface: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
    pub bridge: String,
    /// Published ports, host ports resolved.
    pub ports: Vec<PortMapping>,
    pub aliases: Vec<String>,
}

/// A failure to attach or detach; each variant names the container and,
/// where there is one, the network (CNI errors name the plugin too).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("invalid container id {id:?}: only letters, digits, '_', '.' and '-' (1 to 255)")]
    ContainerId { id: String },
    #[error(
        "container {container}, network {network}: invalid interface name {ifname:?}: {reason}"
    )]
    Ifname {
        container: String,
        network: String,
        ifname: String,
        reason: &'static str,
    },
    #[error("container {container}: {what} {value} is given twice")]
    Duplicate {
        container: String,
        what: &'static str,
        value: String,
    },
    #[error("container {container}, network {network}: invalid alias {alias:?}: a host name has 1 to 253 letters, digits, '-', '_' and '.'")]
    Alias {
        container: String,
        network: String,
        alias: String,
    },
    #[error("container {container}: {path} is not a network namespace")]
    Netns { container: String, path: PathBuf },
    #[error("container {container}: {source}")]
    Store {
        container: String,
        source: Box<StoreError>,
    },
    #[error("container {container} is already attached to network {network}")]
    AlreadyAttached { container: String, network: String },
    #[error("container {container}: interface {ifname} is already used by its attachment to network {network}")]
    IfnameInUse {
        container: String,
        ifname: String,
        network: String,
    },
    #[error(
        "container {container}: network {network} is internal: ports cannot be published on it"
    )]
    InternalPorts { container: String, network: String },
    #[error("container {container}: address {ip} is not a free host address of network {network} ({subnet}, gateway {gateway})")]
    StaticIp {
        container: String,
        network: String,
        ip: Ipv4Addr,
        subnet: String,
        gateway: Ipv4Addr,
    },
    #[error("container {container}, network {network}: {source}")]
    Ports {
        container: String,
        network: String,
        source: PortSpecError,
    },
    #[error("container {container}, network {network}: host port {port} is already published by container {other}")]
    PortConflict {
        container: String,
        network: String,
        port: PortMapping,
        other: String,
    },
    #[error(
        "attaching container {container} to network {network}: {source}{}",
        rollback_note(rollback)
    )]
    Add {
        container: String,
        network: String,
        source: Box<CniError>,
        /// Failures while undoing, as text.
        rollback: Vec<String>,
    },
    #[error("attaching container {container} to network {network}: the CNI result has no IPv4 address for {ifname}: {result}")]
    NoAddress {
        container: String,
        network: String,
        ifname: String,
        result: String,
    },
    #[error("detaching container {container} from network {network}: {source}{}", more_note(*more))]
    Del {
        container: String,
        network: String,
        source: Box<CniError>,
        more: usize,
    },
    #[error("checking container {container} on network {network}: {source}")]
    Check {
        container: String,
        network: String,
        source: Box<CniError>,
    },
    #[error("container {container}: {source}")]
    Cache {
        container: String,
        source: CacheError,
    },
}

fn rollback_note(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" (undoing it also failed: {})", errors.join("; "))
    }
}

fn more_note(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" (and {more} more failures)")
    }
}

fn validate_container_id(id: &str) -> Result<(), AttachError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AttachError::ContainerId { id: id.to_string() })
    }
}

impl AttachmentRecord {
    fn status(&self, bridge: &str) -> Option<AttachedNetwork> {
        let info = interface_info(&self.result, &self.ifname)?;
        Some(AttachedNetwork {
            network: self.network.clone(),
            interface: self.ifname.clone(),
            ip: info.ip,
            prefix: info.prefix,
            gateway: info.gateway,
            mac: info.mac,
            bridge: bridge.to_string(),
            ports: self.ports.clone(),
            aliases: self.aliases.clone(),
        })
    }

    fn bridge(&self) -> String {
        conflist::parse(&self.config, Path::new(""))
            .map(|n| n.bridge)
            .unwrap_or_default()
    }
}

impl NetworkStore {
    /// Attaches the namespace at `netns` (made with [`crate::Netns::create`])
    /// to each network in order, as container `container_id`. All or
    /// nothing: on a failure everything done so far is undone.
    pub fn attach(
        &self,
        netns: &Path,
        container_id: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<AttachResult, AttachError> {
        validate_container_id(container_id)?;
        let container = || container_id.to_string();
        for (i, a) in attachments.iter().enumerate() {
            if let Some(reason) = interface_name_problem(&a.ifname) {
                return Err(AttachError::Ifname {
                    container: container(),
                    network: a.network.clone(),
                    ifname: a.ifname.clone(),
                    reason,
                });
            }
            let bad_alias = a.aliases.iter().find(|al| {
                al.is_empty()
                    || al.len() > 253
                    || !al
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            });
            if let Some(alias) = bad_alias {
                return Err(AttachError::Alias {
                    container: container(),
                    network: a.network.clone(),
                    alias: alias.clone(),
                });
            }
            let earlier = &attachments[..i];
            if earlier.iter().any(|b| b.network == a.network) {
                return Err(AttachError::Duplicate {
                    container: container(),
                    what: "network",
                    value: a.network.clone(),
                });
            }
            if earlier.iter().any(|b| b.ifname == a.ifname) {
                return Err(AttachError::Duplicate {
                    container: container(),
                    what: "interface",
                    value: a.ifname.clone(),
                });
            }
        }
        if !is_netns(netns) {
            return Err(AttachError::Netns {
                container: container(),
                path: netns.to_path_buf(),
            });
        }

        let store_err = |source| AttachError::Store {
            container: container(),
            source: Box::new(source),
        };
        let cache_err = |source| AttachError::Cache {
            container: container(),
            source,
        };
        let _lock = self.lock().map_err(store_err)?;
        let cache = self.cache();
        let mine = cache.for_container(container_id).map_err(cache_err)?;
        for a in attachments {
            if mine.iter().any(|r| r.network == a.network) {
                return Err(AttachError::AlreadyAttached {
                    container: container(),
                    network: a.network.clone(),
                });
            }
            if let Some(r) = mine.iter().find(|r| r.ifname == a.ifname) {
                return Err(AttachError::IfnameInUse {
                    container: container(),
                    ifname: a.ifname.clone(),
                    network: r.network.clone(),
                });
            }
        }
        let mut published: Vec<(String, PortMapping)> = cache
            .all(None)
            .map_err(cache_err)?
            .into_iter()
            .flat_map(|r| {
                let id = r.container_id;
                r.ports.into_iter().map(move |p| (id.clone(), p))
            })
            .collect();
        let mut order = mine.iter().map(|r| r.order + 1).max().unwrap_or(0);

        let mut done: Vec<AttachmentRecord> = Vec::new();
        let mut out = Vec::new();
        for a in attachments {
            match self.attach_one(netns, container_id, a, order, &published) {
                Ok((rec, status)) => {
                    published.extend(rec.ports.iter().map(|p| (container(), *p)));
                    done.push(rec);
                    out.push(status);
                    order += 1;
                }
                Err(e) => {
                    for rec in done.iter().rev() {
                        let _ = self.del_record(rec, Some(netns));
                    }
                    return Err(e);
                }
            }
        }
        Ok(AttachResult { networks: out })
    }

    fn attach_one(
        &self,
        netns: &Path,
        container_id: &str,
        a: &NetworkAttachment,
        order: u64,
        published: &[(String, PortMapping)],
    ) -> Result<(AttachmentRecord, AttachedNetwork), AttachError> {
        let container = || container_id.to_string();
        let network = || a.network.clone();
        let list = self
            .conflist(&a.network)
            .map_err(|source| AttachError::Store {
                container: container(),
                source: Box::new(source),
            })?;
        let path = self.networks_dir().join(format!("{}.conflist", a.network));
        let net = conflist::parse(&list, &path).map_err(|reason| AttachError::Store {
            container: container(),
            source: Box::new(StoreError::Corrupt { path, reason }),
        })?;
        if net.internal && !a.ports.is_empty() {
            return Err(AttachError::InternalPorts {
                container: container(),
                network: network(),
            });
        }
        if let Some(ip) = a.ip {
            if !net.subnet.is_host(ip) || ip == net.gateway {
                return Err(AttachError::StaticIp {
                    container: container(),
                    network: network(),
                    ip,
                    subnet: net.subnet.to_string(),
                    gateway: net.gateway,
                });
            }
        }

        let mut ports = a.ports.clone();
        for (i, p) in ports.iter().enumerate() {
            if p.host_port == 0 {
                continue;
            }
            if let Some((other, _)) = published.iter().find(|(_, q)| conflicts(p, q)) {
                return Err(AttachError::PortConflict {
                    container: container(),
                    network: network(),
                    port: *p,
                    other: other.clone(),
                });
            }
            if ports[..i].iter().any(|q| conflicts(p, q)) {
                return Err(AttachError::Duplicate {
                    container: container(),
                    what: "host port",
                    value: p.to_string(),
                });
            }
        }
        let taken: Vec<PortMapping> = published.iter().map(|(_, p)| *p).collect();
        assign_host_ports(&mut ports, &taken).map_err(|source| AttachError::Ports {
            container: container(),
            network: network(),
            source,
        })?;

        let target = Target {
            container_id,
            netns: Some(netns),
            ifname: &a.ifname,
        };
        let runtime = runtime_config(&ports, a.ip);
        let result = chain::add(self.cni_path(), &list, &target, &runtime).map_err(|failure| {
            AttachError::Add {
                container: container(),
                network: network(),
                source: failure.error,
                rollback: failure.rollback.iter().map(ToString::to_string).collect(),
            }
        })?;
        let rec = AttachmentRecord {
            container_id: container(),
            network: network(),
            ifname: a.ifname.clone(),
            netns: netns.to_path_buf(),
            order,
            ports,
            aliases: a.aliases.clone(),
            static_ip: a.ip,
            config: list,
            result,
        };
        let Some(status) = rec.status(&net.bridge) else {
            let _ = self.del_record(&rec, Some(netns));
            return Err(AttachError::NoAddress {
                container: container(),
                network: network(),
                ifname: a.ifname.clone(),
                result: rec.result.to_string(),
            });
        };
        if let Err(source) = self.cache().write(&rec) {
            let _ = self.del_record(&rec, Some(netns));
            return Err(AttachError::Cache {
                container: container(),
                source,
            });
        }
        Ok((rec, status))
    }

    /// DEL over a cached attachment, then forget it. The namespace used is
    /// `netns` or the recorded one if either is still a namespace, else
    /// none (CNI_NETNS empty: plugins release what is outside it).
    fn del_record(&self, rec: &AttachmentRecord, netns: Option<&Path>) -> Result<(), AttachError> {
        let ns = netns
            .filter(|p| is_netns(p))
            .or(Some(rec.netns.as_path()).filter(|p| is_netns(p)));
        let mut errors = chain::del_cached(self.cni_path(), rec, ns);
        if !errors.is_empty() {
            let more = errors.len() - 1;
            return Err(AttachError::Del {
                container: rec.container_id.clone(),
                network: rec.network.clone(),
                source: Box::new(errors.remove(0)),
                more,
            });
        }
        self.cache()
            .remove(&rec.container_id, &rec.network)
            .map_err(|source| AttachError::Cache {
                container: rec.container_id.clone(),
                source,
            })
    }

    /// Detaches the container from these networks, in reverse order.
    /// Idempotent: a network it is not attached to is DELeted without a
    /// cached result if the network still exists (cleaning up after a crash
    /// between ADD and caching), else skipped. Works when the namespace is
    /// already gone. Every network is tried; the first failure is returned
    /// and its cache entry kept so a later detach can retry.
    pub fn detach(
        &self,
        netns: &Path,
        container_id: &str,
        attachments: &[NetworkAttachment],
    ) -> Result<(), AttachError> {
        validate_container_id(container_id)?;
        let _lock = self.lock().map_err(|source| AttachError::Store {
            container: container_id.to_string(),
            source: Box::new(source),
        })?;
        let cache = self.cache();
        let mut first = None;
        for a in attachments.iter().rev() {
            let cached =
                cache
                    .read(container_id, &a.network)
                    .map_err(|source| AttachError::Cache {
                        container: container_id.to_string(),
                        source,
                    })?;
            let r = match cached {
                Some(rec) => self.del_record(&rec, Some(netns)),
                None => self.del_uncached(netns, container_id, a),
            };
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn del_uncached(
        &self,
        netns: &Path,
        container_id: &str,
        a: &NetworkAttachment,
    ) -> Result<(), AttachError> {
        let Ok(list) = self.conflist(&a.network) else {
            return Ok(());
        };
        if interface_name_problem(&a.ifname).is_some() {
            return Ok(());
        }
        let target = Target {
            container_id,
            netns: Some(netns).filter(|p| is_netns(p)),
            ifname: &a.ifname,
        };
        let mut errors = chain::del(self.cni_path(), &list, &target, &Default::default(), None);
        if errors.is_empty() {
            return Ok(());
        }
        let more = errors.len() - 1;
        Err(AttachError::Del {
            container: container_id.to_string(),
            network: a.network.clone(),
            source: Box::new(errors.remove(0)),
            more,
        })
    }

    /// Detaches the container from every network the cache says it is on,
    /// in reverse attach order. For the engine's cleanup of containers it
    /// no longer knows the networks of (after a crash or a reboot).
    pub fn detach_all(&self, netns: &Path, container_id: &str) -> Result<(), AttachError> {
        let recs =
            self.cache()
                .for_container(container_id)
                .map_err(|source| AttachError::Cache {
                    container: container_id.to_string(),
                    source,
                })?;
        let atts: Vec<NetworkAttachment> = recs
            .iter()
            .map(|r| NetworkAttachment::new(r.network.clone(), r.ifname.clone()))
            .collect();
        self.detach(netns, container_id, &atts)
    }

    /// CNI CHECK of every cached attachment of the container.
    pub fn check(&self, netns: &Path, container_id: &str) -> Result<(), AttachError> {
        let container = || container_id.to_string();
        let recs =
            self.cache()
                .for_container(container_id)
                .map_err(|source| AttachError::Cache {
                    container: container(),
                    source,
                })?;
        for rec in &recs {
            let target = Target {
                container_id,
                netns: Some(netns),
                ifname: &rec.ifname,
            };
            chain::check(
                self.cni_path(),
                &rec.config,
                &target,
                &rec.runtime_config(),
                &rec.result,
            )
            .map_err(|source| AttachError::Check {
                container: container(),
                network: rec.network.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// The networks a container is attached to, from the cache, in attach
    /// order (for inspect and /etc/hosts).
    pub fn container_networks(
        &self,
        container_id: &str,
    ) -> Result<Vec<AttachedNetwork>, AttachError> {
        let recs =
            self.cache()
                .for_container(container_id)
                .map_err(|source| AttachError::Cache {
                    container: container_id.to_string(),
                    source,
                })?;
        Ok(recs.iter().filter_map(|r| r.status(&r.bridge())).collect())
    }
}
