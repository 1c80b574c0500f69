//! `hako pod`: pods, containers sharing namespaces.

use std::path::Path;

use clap::Subcommand;

use crate::containers::{engine, report, EXIT_ENGINE};
use crate::stdout::{outln, Table};
use crate::Error;
use hako_engine::{Engine, EngineError, Status};

#[derive(Subcommand, Debug)]
pub enum PodCommand {
    /// Create a pod (its infra holds the shared namespaces); prints its ID.
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(short, long = "publish")]
        publish: Vec<String>,
        /// Namespaces to share: net, ipc, uts, pid (default net,ipc,uts).
        #[arg(long)]
        share: Option<String>,
        #[arg(long = "network", alias = "net")]
        network: Option<String>,
        #[arg(short, long = "label")]
        label: Vec<String>,
        #[arg(long)]
        hostname: Option<String>,
    },
    /// List pods.
    #[command(alias = "ls", alias = "list")]
    Ps {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        format: Option<String>,
    },
    /// Show pods as JSON.
    Inspect {
        #[arg(required = true)]
        pods: Vec<String>,
    },
    /// Start pods (the infra, then the members).
    Start {
        #[arg(required = true)]
        pods: Vec<String>,
    },
    /// Stop pods (the members, then the infra).
    Stop {
        #[arg(short, long)]
        time: Option<u64>,
        #[arg(required = true)]
        pods: Vec<String>,
    },
    /// Remove pods and their containers.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        pods: Vec<String>,
    },
}

fn pod_status(engine: &Engine, pod: &hako_engine::pod::PodRecord) -> (&'static str, usize) {
    let all = engine.pod_containers(pod).unwrap_or_default();
    let states: Vec<Status> = all.iter().map(|c| engine.status(c)).collect();
    let running = states.iter().filter(|s| s.is_running()).count();
    let created = states
        .iter()
        .filter(|s| matches!(s, Status::Created { .. }))
        .count();
    // podman's words: never started, all running, some, none.
    let state = match (running, created, all.len()) {
        (0, c, n) if c == n => "Created",
        (0, _, _) => "Exited",
        (r, _, n) if r == n => "Running",
        _ => "Degraded",
    };
    (state, all.len().saturating_sub(1))
}

fn pod_json(engine: &Engine, pod: &hako_engine::pod::PodRecord) -> serde_json::Value {
    let (state, members) = pod_status(engine, pod);
    let containers: Vec<serde_json::Value> = engine
        .pod_containers(pod)
        .unwrap_or_default()
        .iter()
        .map(|c| serde_json::json!({"Id": c.id, "Name": c.name, "State": engine.status(c).word()}))
        .collect();
    serde_json::json!({
        "Id": pod.id, "Name": pod.name, "Created": hako_engine::util::rfc3339_nanos(pod.created),
        "State": state, "Members": members, "InfraContainerID": pod.infra,
        "SharedNamespaces": pod.share, "Publish": pod.publish, "Network": pod.network,
        "Containers": containers,
    })
}

pub fn pod_cmd(root: &Path, runroot: &Path, c: PodCommand) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let each_pod =
        |names: &[String], f: &dyn Fn(&hako_engine::pod::PodRecord) -> Result<(), EngineError>| {
            let mut code = 0;
            for n in names {
                match engine.find_pod(n).and_then(|p| f(&p)) {
                    Ok(()) => outln!("{n}"),
                    Err(e) => {
                        report(&e);
                        code = EXIT_ENGINE;
                    }
                }
            }
            code
        };
    match c {
        PodCommand::Create {
            name,
            publish,
            share,
            network,
            label,
            hostname,
        } => {
            let p = engine.create_pod(&hako_engine::pod::PodOptions {
                name,
                publish,
                share,
                network,
                labels: label,
                hostname,
            })?;
            outln!("{}", p.id);
            Ok(0)
        }
        PodCommand::Ps { quiet, format } => {
            let pods = engine.pods()?;
            if quiet {
                for p in &pods {
                    outln!("{}", &p.id[..12]);
                }
            } else if let Some(f) = format {
                // `json` included: the list as JSON.
                let items: Vec<_> = pods.iter().map(|p| pod_json(&engine, p)).collect();
                crate::template::print_items(&f, &serde_json::Value::Array(items))?;
            } else {
                let mut table =
                    Table::new(&["POD ID", "NAME", "STATUS", "CREATED", "# OF CONTAINERS"]);
                for p in &pods {
                    let (state, n) = pod_status(&engine, p);
                    table.row(vec![
                        p.id[..12].to_string(),
                        p.name.clone(),
                        state.to_string(),
                        hako_engine::util::ago(p.created),
                        n.to_string(),
                    ]);
                }
                table.print();
            }
            Ok(0)
        }
        PodCommand::Inspect { pods } => {
            let mut out = Vec::new();
            for n in &pods {
                out.push(pod_json(&engine, &engine.find_pod(n)?));
            }
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        PodCommand::Start { pods } => Ok(each_pod(&pods, &|p| engine.start_pod(p))),
        PodCommand::Stop { time, pods } => Ok(each_pod(&pods, &|p| engine.stop_pod(p, time))),
        PodCommand::Rm { force, pods } => Ok(each_pod(&pods, &|p| engine.remove_pod(p, force))),
    }
}
