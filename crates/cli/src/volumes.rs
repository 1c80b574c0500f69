//! `hako volume`: named volumes.

use std::path::Path;

use clap::Subcommand;

use crate::containers::{engine, report, EXIT_ENGINE};
use crate::stdout::{outln, Table};
use crate::Error;
use hako_engine::EngineError;

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a named volume (a random name without one).
    Create {
        #[arg(short, long = "label")]
        label: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    Ls {
        #[arg(short, long)]
        quiet: bool,
        /// `json`, or a table (default).
        #[arg(long)]
        format: Option<String>,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes.
    Rm {
        /// Also when containers use it: they are removed first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses.
    Prune {
        #[arg(short, long)]
        force: bool,
    },
}

pub fn volume_cmd(root: &Path, runroot: &Path, c: VolumeCommand) -> Result<i32, Error> {
    let engine = engine(root, runroot)?;
    let vols = engine.volumes();
    match c {
        VolumeCommand::Create { label, name } => {
            let v = vols.create(name.as_deref(), &label, false, false)?;
            outln!("{}", v.name);
            Ok(0)
        }
        VolumeCommand::Ls { quiet, format } => {
            let list = vols.list()?;
            if quiet {
                for v in &list {
                    outln!("{}", v.name);
                }
            } else if let Some(f) = format {
                // `json` included: the list as JSON.
                crate::template::print_items(&f, &serde_json::to_value(&list)?)?;
            } else {
                let mut table = Table::new(&["DRIVER", "VOLUME NAME"]);
                for v in &list {
                    table.row(vec![v.driver.to_string(), v.name.clone()]);
                }
                table.print();
            }
            Ok(0)
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(vols.inspect(n)?);
            }
            outln!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        VolumeCommand::Rm { force, names } => {
            let mut code = 0;
            for n in &names {
                let r = (|| -> Result<(), EngineError> {
                    let users = engine.volume_users(n)?;
                    if force {
                        for u in &users {
                            let rec = engine.find(u)?;
                            engine.remove(&rec, true)?;
                        }
                        vols.remove(n, &[])?;
                    } else {
                        vols.remove(n, &users)?;
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => outln!("{n}"),
                    Err(e) => {
                        report(&e);
                        code = EXIT_ENGINE;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune { .. } => {
            for v in engine.prune_volumes()? {
                outln!("{v}");
            }
            Ok(0)
        }
    }
}
