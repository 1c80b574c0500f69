//! `hako network`: CNI networks.

use std::path::Path;

use clap::Subcommand;

use crate::containers::{engine, report, EXIT_ENGINE};
use crate::stdout::{outln, Table};
use crate::Error;

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create {
        /// CIDR (a free /24 of 10.90.0.0/16 by default).
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<std::net::Ipv4Addr>,
        /// No masquerading, no published ports.
        #[arg(long)]
        internal: bool,
        #[arg(short, long = "label")]
        label: Vec<String>,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        format: Option<String>,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the user networks no container uses.
    Prune {
        /// Do not ask (there is nothing to ask: accepted for docker).
        #[arg(short, long)]
        force: bool,
    },
    /// Remove networks.
    Rm {
        /// Also while containers are attached (they are detached).
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub fn network_cmd(root: &Path, runroot: &Path, c: NetworkCommand) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let nets = engine.networks();
    match c {
        NetworkCommand::Create {
            subnet,
            gateway,
            internal,
            label,
            name,
        } => {
            let subnet = subnet
                .map(|s| s.parse::<hako_network::Ipv4Net>())
                .transpose()
                .map_err(|e| format!("--subnet: {e}"))?;
            let mut labels = std::collections::BTreeMap::new();
            for l in &label {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let n = nets.create(&hako_network::NetworkSpec {
                name,
                subnet,
                gateway,
                internal,
                labels,
                bridge: None,
            })?;
            outln!("{}", n.name);
            Ok(0)
        }
        NetworkCommand::Ls { quiet, format } => {
            let list = nets.list()?;
            if quiet {
                for n in &list {
                    outln!("{}", n.name);
                }
            } else if let Some(f) = format {
                // `json` included: the list as JSON.
                crate::template::print_items(&f, &serde_json::to_value(&list)?)?;
            } else {
                let mut table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE"]);
                for n in &list {
                    table.row(vec![
                        n.id[..12.min(n.id.len())].to_string(),
                        n.name.clone(),
                        "bridge".into(),
                        n.subnet.to_string(),
                        n.bridge.clone(),
                    ]);
                }
                table.print();
            }
            Ok(0)
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(serde_json::to_value(nets.inspect(n)?)?);
            }
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        NetworkCommand::Prune { .. } => {
            for n in engine.prune_networks()? {
                outln!("{n}");
            }
            Ok(0)
        }
        NetworkCommand::Rm { force, names } => {
            let mut code = 0;
            for n in &names {
                match nets.remove(n, force) {
                    Ok(()) => outln!("{n}"),
                    Err(e) => {
                        report(&e);
                        code = EXIT_ENGINE;
                    }
                }
            }
            Ok(code)
        }
    }
}
