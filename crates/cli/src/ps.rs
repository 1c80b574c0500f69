//! `hako ps`: containers listed, filtered, as a table, JSON or template.

use std::path::Path;

use clap::Args;
use hako_engine::{ContainerRecord, Engine, Status};

use crate::containers::{engine, labels};
use crate::stdout::{outln, Table};
use crate::Error;

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Also containers that are not running.
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// `json`, or a table (default).
    #[arg(long)]
    format: Option<String>,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// KEY=VALUE: id, name, label, status, exited, ancestor, pod, network
    /// (several of one key: any; of different keys: all).
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// The N most recently created (also not running).
    #[arg(short = 'n', long = "last")]
    last: Option<usize>,
    /// The most recently created (also not running).
    #[arg(short, long)]
    latest: bool,
}

/// `ps --filter`s, grouped by key.
struct PsFilter(Vec<(String, Vec<String>)>);

impl PsFilter {
    fn parse(specs: &[String]) -> Result<PsFilter, Error> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for f in specs {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| format!("--filter {f:?}: expected KEY=VALUE"))?;
            const KEYS: [&str; 8] = [
                "id", "name", "label", "status", "exited", "ancestor", "pod", "network",
            ];
            if !KEYS.contains(&k) {
                return Err(format!("--filter {f:?}: the keys are {}", KEYS.join(", ")).into());
            }
            if k == "status"
                && ![
                    "created",
                    "running",
                    "paused",
                    "exited",
                    "dead",
                    "restarting",
                    "removing",
                ]
                .contains(&v)
            {
                return Err(format!(
                    "--filter {f:?}: a status is created, running, paused, exited or dead"
                )
                .into());
            }
            if k == "exited" && v.parse::<i32>().is_err() {
                return Err(format!("--filter {f:?}: an exit code is a number").into());
            }
            match groups.iter_mut().find(|(key, _)| key == k) {
                Some((_, vs)) => vs.push(v.to_string()),
                None => groups.push((k.to_string(), vec![v.to_string()])),
            }
        }
        Ok(PsFilter(groups))
    }

    fn matches(&self, engine: &Engine, r: &ContainerRecord, st: &Status) -> bool {
        self.0.iter().all(|(k, vs)| {
            vs.iter().any(|v| match k.as_str() {
                "id" => r.id.starts_with(v.as_str()),
                "name" => r.name.contains(v.as_str()),
                "label" => r.options.labels.iter().any(|l| {
                    l == v || (!v.contains('=') && l.split('=').next() == Some(v.as_str()))
                }),
                "status" => st.word() == v,
                "exited" => matches!(st, Status::Exited { code, .. } if code.to_string() == *v),
                "ancestor" => {
                    r.image_name == *v
                        || r.image == *v
                        || r.image_name.strip_suffix(":latest") == Some(v.as_str())
                        || r.image_id.trim_start_matches("sha256:").starts_with(v.as_str())
                }
                "pod" => r.pod.as_deref().is_some_and(|p| {
                    p.starts_with(v.as_str())
                        || engine.find_pod(p).is_ok_and(|pod| pod.name == *v)
                }),
                "network" => engine.attached_networks(r).iter().any(|n| n.network == *v)
                    || matches!(&r.network.mode, hako_engine::net::NetMode::Network(n) if n == v),
                _ => false,
            })
        })
    }
}

fn status_text(engine: &Engine, rec: &ContainerRecord, st: &Status) -> String {
    match st {
        Status::Created { .. } => "Created".into(),
        Status::Running | Status::Paused => {
            let since = engine
                .started_at(rec)
                .and_then(|s| hako_engine::util::parse_rfc3339_nanos(&s))
                .map(|n| {
                    let secs = ((hako_engine::util::now_nanos() - n) / 1_000_000_000).max(0);
                    hako_engine::util::human_duration(secs as u64)
                })
                .unwrap_or_default();
            if *st == Status::Paused {
                format!("Up {since} (Paused)")
            } else {
                format!("Up {since}")
            }
        }
        Status::Exited { code, finished_at } => {
            let ago = hako_engine::util::parse_rfc3339_nanos(finished_at)
                .map(hako_engine::util::ago)
                .unwrap_or_default();
            format!("Exited ({code}) {ago}")
        }
        Status::Dead => "Dead".into(),
    }
}

pub fn ps(root: &Path, runroot: &Path, a: &PsArgs) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let filter = PsFilter::parse(&a.filter)?;
    // A status or exit-code filter looks at every container, as docker.
    let all = a.all
        || a.latest
        || a.last.is_some()
        || filter.0.iter().any(|(k, _)| k == "status" || k == "exited");
    let mut rows = Vec::new();
    for rec in engine.list()? {
        let st = engine.status(&rec);
        if (!all && !st.is_running()) || rec.infra_for.is_some() {
            continue;
        }
        if !filter.matches(&engine, &rec, &st) {
            continue;
        }
        rows.push((rec, st));
    }
    // Newest first (list's order): -n keeps the first N, -l the first.
    if let Some(n) = a.last.or(a.latest.then_some(1)) {
        rows.truncate(n);
    }
    if a.quiet {
        for (r, _) in &rows {
            outln!("{}", if a.no_trunc { &r.id[..] } else { &r.id[..12] });
        }
        return Ok(0);
    }
    if let Some(format) = a.format.as_deref().filter(|f| *f != "json") {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, st)| ps_fields(&engine, r, st, a.no_trunc, format.contains(".Networks")))
            .collect();
        crate::template::print(format, &ps_headers(), &items, None)?;
        return Ok(0);
    }
    if a.format.as_deref() == Some("json") {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, st)| {
                serde_json::json!({
                    "Id": r.id, "Names": [r.name], "Image": r.image_name, "ImageID": r.image_id,
                    "Command": r.args, "Created": hako_engine::util::rfc3339_nanos(r.created),
                    "State": st.word(), "Status": status_text(&engine, r, st),
                    "ExitCode": match st { Status::Exited { code, .. } => *code, _ => 0 },
                    "Pid": if st.is_running() { engine.pid(r).unwrap_or(0) } else { 0 },
                    "Labels": labels(r), "Pod": r.pod,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let mut table = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for (r, st) in &rows {
        let f = ps_fields(&engine, r, st, a.no_trunc, false);
        let cell = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        table.row(vec![
            cell("ID"),
            cell("Image"),
            cell("Command"),
            cell("RunningFor"),
            cell("Status"),
            cell("Ports"),
            cell("Names"),
        ]);
    }
    table.print();
    Ok(0)
}

/// A container as `ps --format` templates see it: docker's field names
/// (`.ID`, `.Names`, `.Ports`, …), and podman's `.Pod`, `.Pid`, `.ExitCode`.
fn ps_fields(
    engine: &Engine,
    r: &ContainerRecord,
    st: &Status,
    no_trunc: bool,
    with_networks: bool,
) -> serde_json::Value {
    let mut cmd = r.args.join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = format!("{}…", cmd.chars().take(19).collect::<String>());
    }
    let ports = port_text(engine, r);
    let labels: Vec<String> = r.options.labels.clone();
    let mounts: Vec<String> = r
        .options
        .volumes
        .iter()
        .filter_map(|v| hako_engine::options::parse_volume(v).ok())
        .map(|v| v.destination)
        .collect();
    // Read from the network cache only when asked for.
    let networks: Vec<String> = if with_networks {
        engine
            .attached_networks(r)
            .into_iter()
            .map(|n| n.network)
            .collect()
    } else {
        Vec::new()
    };
    serde_json::json!({
        "ID": if no_trunc { &r.id[..] } else { &r.id[..12] },
        "Id": r.id,
        "Image": r.image_name,
        "ImageID": r.image_id,
        "Command": format!("\"{cmd}\""),
        "CreatedAt": hako_engine::util::rfc3339_nanos(r.created),
        "RunningFor": hako_engine::util::ago(r.created),
        "Ports": ports,
        "State": st.word(),
        "Status": status_text(engine, r, st),
        "Names": r.name,
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": networks.join(","),
        "Pod": r.pod.clone().unwrap_or_default(),
        "Pid": if st.is_running() { engine.pid(r).unwrap_or(0) } else { 0 },
        "ExitCode": match st { Status::Exited { code, .. } => *code, _ => 0 },
    })
}

/// The column titles of `ps --format "table …"`.
fn ps_headers() -> serde_json::Value {
    serde_json::json!({
        "ID": "CONTAINER ID", "Id": "CONTAINER ID", "Image": "IMAGE", "ImageID": "IMAGE ID",
        "Command": "COMMAND", "CreatedAt": "CREATED AT", "RunningFor": "CREATED",
        "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Names": "NAMES",
        "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "Pod": "POD ID",
        "Pid": "PID", "ExitCode": "EXIT CODE",
    })
}

/// docker's PORTS cell: `0.0.0.0:8080->80/tcp, …` (a pod member's are
/// its pod's).
fn port_text(engine: &Engine, r: &ContainerRecord) -> String {
    let ports = match &r.pod {
        Some(p) => engine
            .find_pod(p)
            .and_then(|pod| engine.find(&pod.infra))
            .map(|infra| infra.network.ports)
            .unwrap_or_default(),
        None => r.network.ports.clone(),
    };
    ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string()),
                p.host_port,
                p.container_port,
                p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
