//! Pods: containers sharing namespaces held by an infra container of
//! ours (hako-init --pause on an empty rootfs), as rkt's pods and
//! Kubernetes' sandboxes. The pod's network namespace is a file its
//! members join; IPC, UTS and PID are joined through the infra's /proc.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::container::{ContainerRecord, Engine, EngineError};
use crate::db::PODS;
use crate::options::{bad, CreateOptions};
use crate::util;

/// What a pod may share (docker/podman's --share names).
pub const SHAREABLE: &[&str] = &["net", "ipc", "uts", "pid"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub name: String,
    pub created: i128,
    pub share: Vec<String>,
    /// `-p` as given (published on the infra's netns).
    pub publish: Vec<String>,
    pub network: Option<String>,
    pub labels: Vec<String>,
    pub infra: String,
}

/// A pod a new member joins.
pub(crate) struct MemberContext {
    pub record: PodRecord,
    pub netns: PathBuf,
    pub join: Vec<(&'static str, PathBuf)>,
}

impl MemberContext {
    pub fn joins(&self, ns: &str) -> bool {
        self.join.iter().any(|(t, _)| *t == ns)
    }
}

#[derive(Debug, Clone, Default)]
pub struct PodOptions {
    pub name: Option<String>,
    pub publish: Vec<String>,
    pub share: Option<String>,
    pub network: Option<String>,
    pub labels: Vec<String>,
    pub hostname: Option<String>,
}

impl Engine {
    /// Creates a pod and its infra container (not started).
    pub fn create_pod(&self, o: &PodOptions) -> Result<PodRecord, EngineError> {
        let share: Vec<String> = match &o.share {
            None => vec!["net".into(), "ipc".into(), "uts".into()],
            Some(s) => {
                let mut v = Vec::new();
                for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let p = if p == "network" { "net" } else { p };
                    if p == "cgroup" {
                        continue;
                    }
                    if !SHAREABLE.contains(&p) {
                        return Err(
                            bad("--share", s, format!("{p:?}: one of net, ipc, uts, pid")).into(),
                        );
                    }
                    if !v.iter().any(|x| x == p) {
                        v.push(p.to_string());
                    }
                }
                v
            }
        };
        if !o.publish.is_empty() && !share.iter().any(|s| s == "net") {
            return Err(bad(
                "-p",
                &o.publish.join(","),
                "a pod that does not share its network cannot publish ports",
            )
            .into());
        }
        let id = util::random_id().map_err(|source| EngineError::Io {
            id: "(new pod)".into(),
            what: "reading",
            path: "/dev/urandom".into(),
            source,
        })?;
        let name = match &o.name {
            Some(n) if !util::valid_name(n) => {
                return Err(bad("--name", n, "may hold only [a-zA-Z0-9][a-zA-Z0-9_.-]").into())
            }
            Some(n) => n.clone(),
            None => util::name_from_id(&id, 0),
        };
        let mut rec = PodRecord {
            id: id.clone(),
            name: name.clone(),
            created: util::now_nanos(),
            share: share.clone(),
            publish: o.publish.clone(),
            network: o.network.clone(),
            labels: o.labels.clone(),
            infra: String::new(),
        };
        self.db().insert(&PODS, &id, Some(&name), &rec)?;
        let infra_opts = CreateOptions {
            image: "(infra)".into(),
            name: Some(format!("{}-infra", &id[..12])),
            entrypoint: Some(vec![crate::spec::INIT_PATH.into()]),
            command: Some(vec!["--pause".into()]),
            publish: o.publish.clone(),
            network: Some(match (share.iter().any(|s| s == "net"), &o.network) {
                (false, _) => "none".into(),
                (true, Some(n)) => n.clone(),
                (true, None) => "bridge".into(),
            }),
            // The pod's name when it makes a hostname (`_` does not).
            hostname: Some(o.hostname.clone().unwrap_or_else(|| {
                if crate::etc_files::is_valid_hostname(&name) {
                    name.clone()
                } else {
                    id[..12].to_string()
                }
            })),
            labels: o.labels.clone(),
            // The infra holds namespaces; it needs no capability at all.
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        match self.create_inner(None, &infra_opts, Some(&id)) {
            Ok(infra) => {
                rec.infra = infra.id;
                self.db().update(&PODS, &id, &rec)?;
                Ok(rec)
            }
            Err(e) => {
                let _ = self.db().remove(&PODS, &id);
                Err(e)
            }
        }
    }

    pub fn find_pod(&self, what: &str) -> Result<PodRecord, EngineError> {
        self.db()
            .find::<PodRecord>(&PODS, what)?
            .map(|(_, p)| p)
            .ok_or_else(|| EngineError::NotFound(format!("pod {what}")))
    }

    pub fn pods(&self) -> Result<Vec<PodRecord>, EngineError> {
        let mut v: Vec<PodRecord> = self
            .db()
            .all::<PodRecord>(&PODS)?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok(v)
    }

    /// The pod's infra and members, infra first.
    pub fn pod_containers(&self, pod: &PodRecord) -> Result<Vec<ContainerRecord>, EngineError> {
        let mut v: Vec<ContainerRecord> = self
            .list()?
            .into_iter()
            .filter(|c| c.pod.as_deref() == Some(&pod.id) || c.id == pod.infra)
            .collect();
        v.sort_by_key(|c| (c.id != pod.infra, c.created));
        Ok(v)
    }

    /// Starts the infra, then the members.
    pub fn start_pod(&self, pod: &PodRecord) -> Result<(), EngineError> {
        let all = self.pod_containers(pod)?;
        let infra_restarted = match all.iter().find(|c| c.id == pod.infra) {
            Some(infra) => {
                let was = self.status(infra).is_running();
                self.start(infra)?;
                !was
            }
            None => {
                return Err(EngineError::NotFound(format!(
                    "the infra of pod {}",
                    pod.name
                )))
            }
        };
        for c in all.iter().filter(|c| c.id != pod.infra) {
            if infra_restarted && self.status(c).is_running() {
                continue;
            }
            self.start(c)?;
        }
        Ok(())
    }

    /// Stops the members, then the infra.
    pub fn stop_pod(&self, pod: &PodRecord, timeout: Option<u64>) -> Result<(), EngineError> {
        let all = self.pod_containers(pod)?;
        for c in all.iter().filter(|c| c.id != pod.infra) {
            self.stop(c, timeout)?;
        }
        if let Some(infra) = all.iter().find(|c| c.id == pod.infra) {
            self.stop(infra, timeout)?;
        }
        Ok(())
    }

    /// Removes the pod: its members (running ones only with `force`),
    /// then the infra and the record.
    pub fn remove_pod(&self, pod: &PodRecord, force: bool) -> Result<(), EngineError> {
        let all = self.pod_containers(pod)?;
        if !force {
            if let Some(c) = all
                .iter()
                .filter(|c| c.id != pod.infra)
                .find(|c| self.status(c).is_live())
            {
                return Err(EngineError::State {
                    name: format!("{} (pod {})", c.name, pod.name),
                    state: self.status(c).word().into(),
                    hint: "stop the pod first, or remove it with --force",
                });
            }
        }
        for c in all.iter().filter(|c| c.id != pod.infra) {
            self.remove(c, true)?;
        }
        if let Some(infra) = all.iter().find(|c| c.id == pod.infra) {
            self.remove(infra, true)?;
        }
        self.db().remove(&PODS, &pod.id)?;
        Ok(())
    }

    /// The pod a new member joins, started if it is not running.
    pub(crate) fn pod_for_member(&self, what: &str) -> Result<MemberContext, EngineError> {
        let record = self.find_pod(what)?;
        let infra = self.find(&record.infra)?;
        if !self.status(&infra).is_running() {
            self.start(&infra)?;
        }
        let pid = self.pid(&infra).ok_or_else(|| EngineError::Other {
            id: infra.id.clone(),
            what: "the pod's infra has no pid".into(),
        })?;
        let mut join = Vec::new();
        for (share, ns) in [("ipc", "ipc"), ("uts", "uts"), ("pid", "pid")] {
            if record.share.iter().any(|s| s == share) {
                join.push((ns, PathBuf::from(format!("/proc/{pid}/ns/{ns}"))));
            }
        }
        let netns = infra
            .network
            .netns
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}/ns/net")));
        Ok(MemberContext {
            record,
            netns,
            join,
        })
    }
}
