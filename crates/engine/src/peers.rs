//! Names on user networks: a container on a network other than the
//! default one finds the others on it by name, and they find it, through
//! /etc/hosts, as docker's embedded DNS answers on user-defined networks
//! (the default network has no names, as docker's default bridge).
//!
//! Each attach and detach rewrites, under the network's lock, the
//! /etc/hosts of every container running on the network from what is
//! attached then; the files are rewritten in place (they are bind-mounted),
//! so running containers see the change at their next lookup.

use crate::container::{ContainerRecord, Engine};
use crate::etc_files::{hosts_text, EtcInput};
use crate::net::NetMode;

/// One container on the network: its record, its address there, the names
/// it answers to.
struct Member {
    rec: ContainerRecord,
    addresses: Vec<String>,
    names: Vec<String>,
    /// For a pod's infra: the members (by ID) that share its network.
    pod_members: Vec<String>,
}

impl Engine {
    /// Rewrites the /etc/hosts of the containers running on `network`
    /// and of `starting`, the one being attached (nothing on the default
    /// network). Best effort: a file that cannot be written leaves that
    /// container without the new names.
    pub(crate) fn refresh_network_hosts(&self, network: &str, starting: Option<&str>) {
        if network == hako_network::store::DEFAULT_NETWORK {
            return;
        }
        let Ok(_lock) = self.lock(&format!("network-hosts-{network}")) else {
            return;
        };
        let members = self.members_of(network, starting);
        for m in &members {
            let peers: Vec<(String, Vec<String>)> = members
                .iter()
                .filter(|o| o.rec.id != m.rec.id)
                .flat_map(|o| o.addresses.iter().map(|a| (a.clone(), o.names.clone())))
                .collect();
            // Its own names on its own address too.
            let aliases = m
                .names
                .iter()
                .filter(|n| **n != m.rec.hostname)
                .cloned()
                .collect();
            let text = hosts_text(&EtcInput {
                hostname: &m.rec.hostname,
                addresses: m.addresses.clone(),
                add_hosts: &m.rec.options.add_hosts,
                aliases,
                peers,
                ..Default::default()
            });
            // In place: the file is bind-mounted into the container. A
            // pod's members share its infra's network: the same file.
            let mut ids = vec![m.rec.id.clone()];
            ids.extend(m.pod_members.iter().cloned());
            for id in ids {
                let _ = std::fs::write(self.container_dir(&id).join("hosts"), &text);
            }
        }
    }

    /// After a pod member started: its name on the pod's user network.
    pub(crate) fn refresh_pod_network_hosts(&self, pod: &str) {
        let Ok(p) = self.find_pod(pod) else {
            return;
        };
        if let Ok(infra) = self.find(&p.infra) {
            if let NetMode::Network(n) = &infra.network.mode {
                self.refresh_network_hosts(n, None);
            }
        }
    }

    /// The containers running on `network` (and `starting`) with an
    /// address there.
    fn members_of(&self, network: &str, starting: Option<&str>) -> Vec<Member> {
        let Ok(all) = self.list() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for rec in all.iter() {
            if rec.network.mode != NetMode::Network(network.to_string())
                || !(starting == Some(rec.id.as_str()) || self.status(rec).is_running())
            {
                continue;
            }
            let Some(result) = self.network_result(rec) else {
                continue;
            };
            let addresses: Vec<String> = result
                .networks
                .iter()
                .filter(|n| n.network == network)
                .map(|n| n.ip.to_string())
                .collect();
            let mut names = Vec::new();
            let mut pod_members = Vec::new();
            match &rec.infra_for {
                // A pod's infra holds its network: the pod's name and its
                // live members' names are its address.
                Some(pod) => {
                    if let Ok(p) = self.find_pod(pod) {
                        names.push(p.name);
                    }
                    for r in all.iter().filter(|r| {
                        r.pod.as_deref() == Some(pod.as_str())
                            && r.infra_for.is_none()
                            && matches!(r.network.mode, NetMode::Pod(_))
                    }) {
                        pod_members.push(r.id.clone());
                        if self.status(r).is_live() {
                            names.push(r.name.clone());
                        }
                    }
                }
                None => names.push(rec.name.clone()),
            }
            if !names.contains(&rec.hostname) {
                names.push(rec.hostname.clone());
            }
            out.push(Member {
                rec: rec.clone(),
                addresses,
                names,
                pod_members,
            });
        }
        out
    }
}
