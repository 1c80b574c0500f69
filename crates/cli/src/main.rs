//! `hako`: the engine's command line. Argument parsing, output and exit
//! codes only; the work is in hako-image and hako-engine.

mod containers;
mod networks;
mod pods;
mod ps;
mod stdout;
mod template;
mod volumes;

use stdout::outln;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hako_image::bundle::BundleOptions;
use hako_image::manifest::Platform;
use hako_image::pull::{self, PullOptions};
use hako_image::reference::{ImageSource, Reference};
use hako_image::registries_conf::{Access, RegistriesConf};
use hako_image::registry::{self, Client, Credentials};
use hako_image::snapshot::{SnapshotKind, Snapshotter};
use hako_image::store::{ImageRecord, Store};
use hako_image::transfer::{self, ExportFormat, ExportImage, ImportOptions};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "hako",
    version,
    about = "hako: images and containers on one node"
)]
struct Cli {
    /// Where images and their layers are stored.
    #[arg(long, global = true, default_value = "/var/lib/hako")]
    root: PathBuf,
    /// Where runtime state lives.
    #[arg(long, global = true, default_value = "/run/hako")]
    runroot: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull an image from a registry, an OCI layout (oci:DIR[:TAG]) or an
    /// archive (oci-archive:FILE[:TAG], docker-archive:FILE[:NAME]).
    Pull {
        /// os/arch[/variant] to pick from a multi-platform image.
        #[arg(long)]
        platform: Option<String>,
        #[arg(short, long)]
        quiet: bool,
        /// false: plain HTTP to this registry (as HAKO_INSECURE_REGISTRIES).
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        tls_verify: bool,
        reference: String,
    },
    /// List images.
    Images {
        /// `json` or a table (default).
        #[arg(long)]
        format: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Image commands.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Add a name to an image.
    Tag { source: String, target: String },
    /// Remove images (by name or ID).
    Rmi {
        /// Remove an image given by ID even when it has several names.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Store credentials for a registry.
    Login {
        #[arg(short, long)]
        username: Option<String>,
        #[arg(short, long)]
        password: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        /// false: plain HTTP to this registry (as HAKO_INSECURE_REGISTRIES).
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        tls_verify: bool,
        registry: String,
    },
    /// Remove stored credentials for a registry.
    Logout { registry: String },
    /// Push an image to a registry.
    Push {
        /// false: plain HTTP to this registry (as HAKO_INSECURE_REGISTRIES).
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        tls_verify: bool,
        image: String,
        destination: Option<String>,
    },
    /// Load images from a docker-archive or OCI archive (stdin without -i).
    Load {
        /// The archive to read.
        #[arg(short, long)]
        input: Option<PathBuf>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Save images to an archive (stdout without -o, unless a terminal).
    Save {
        /// Where to write it.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// docker-archive (default), oci-archive or oci-dir.
        #[arg(long, default_value = "docker-archive")]
        format: String,
        /// Accepted for podman compatibility: a docker-archive may always
        /// hold several images.
        #[arg(short, long)]
        multi_image_archive: bool,
        #[arg(short, long)]
        quiet: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Storage use.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Create a container and run it (pulling its image when missing).
    Run(containers::RunArgs),
    /// Create a container without starting it; prints its ID.
    Create(containers::RunArgs),
    /// Start containers.
    Start {
        /// Attach to its output and wait for it.
        #[arg(short, long)]
        attach: bool,
        #[arg(short, long)]
        interactive: bool,
        /// The keys that end an attached terminal session (docker's format).
        #[arg(long = "detach-keys", default_value = hako_monitor::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: the stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL (the container's stop timeout,
        /// 10 by default).
        #[arg(short, long)]
        time: Option<u64>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers, then start them again.
    Restart {
        /// Seconds to wait before SIGKILL (the container's stop timeout,
        /// 10 by default).
        #[arg(short, long)]
        time: Option<u64>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// The host, the OCI runtime and what the store holds.
    Info {
        /// A Go template (`{{.CgroupMode}}`), or `json` (the default).
        #[arg(short, long)]
        format: Option<String>,
    },
    /// hako's version.
    Version {
        /// A Go template (`{{.Version}}`), or `json`.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Give a container another name.
    Rename { container: String, name: String },
    /// Freeze every process of containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw paused containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
        /// Accepted for docker compatibility: anonymous volumes always go.
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps(ps::PsArgs),
    /// Show a container's output.
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// RFC 3339, a Unix time or a duration back from now (10m).
        #[arg(long)]
        since: Option<String>,
        /// The last N lines, or "all".
        #[arg(short = 'n', long)]
        tail: Option<String>,
        #[arg(short, long)]
        timestamps: bool,
        container: String,
    },
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Wait for containers to exit; prints their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show containers (or images) as JSON.
    Inspect {
        /// A Go template applied to each (`{{.State.Pid}}`), or `json`.
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Pods: containers sharing namespaces.
    Pod {
        #[command(subcommand)]
        command: pods::PodCommand,
    },
    /// CNI networks.
    Network {
        #[command(subcommand)]
        command: networks::NetworkCommand,
    },
    /// A container's published ports.
    Port { container: String },
    /// Attach to a running container's output (and stdin).
    Attach {
        #[arg(long = "no-stdin")]
        no_stdin: bool,
        /// The keys that end the session (docker's format, default
        /// ctrl-p,ctrl-q; empty: none).
        #[arg(long = "detach-keys", default_value = hako_monitor::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        container: String,
    },
    /// Copy files between a container and the host.
    Cp { src: String, dest: String },
    /// A container's processes.
    Top {
        container: String,
        /// ps(1) options (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// CPU, memory and pids of running containers.
    Stats {
        #[arg(long = "no-stream")]
        no_stream: bool,
        /// A Go template (`{{.Name}} {{.CPUPerc}}`, `table …`) or `json`.
        #[arg(long)]
        format: Option<String>,
        containers: Vec<String>,
    },
    /// Named volumes.
    Volume {
        #[command(subcommand)]
        command: volumes::VolumeCommand,
    },
    /// Container commands.
    Container {
        #[command(subcommand)]
        command: containers::ContainerCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Show an image's record and config as JSON.
    Inspect { image: String },
    /// Write a runtime bundle (rootfs/ and config.json) for an image.
    Unpack {
        /// Docker's default capabilities and seccomp profile.
        #[arg(long)]
        hardened: bool,
        image: String,
        dir: PathBuf,
    },
    /// Remove dangling images (no name left) and unused blobs and layers.
    Prune,
    /// List images.
    Ls {
        #[arg(long)]
        format: Option<String>,
    },
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Disk usage of images and layers.
    Df,
    /// Remove stopped containers, user networks no container uses, then
    /// dangling images and unused layers.
    Prune {
        /// Also images no container uses.
        #[arg(short, long)]
        all: bool,
        /// Also volumes no container uses.
        #[arg(long)]
        volumes: bool,
        /// Do not ask (there is nothing to ask: accepted for docker).
        #[arg(short, long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    // A usage error is an engine error (125), as in docker and podman;
    // --help and --version print and succeed.
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                containers::EXIT_ENGINE as u8
            } else {
                0
            });
        }
    };
    let (root, runroot) = (cli.root.clone(), cli.runroot.clone());
    let result = match cli.command {
        Command::Run(a) => containers::run(&root, &runroot, a, true),
        Command::Create(a) => containers::run(&root, &runroot, a, false),
        Command::Start {
            attach,
            interactive,
            detach_keys,
            containers,
        } => containers::start(
            &root,
            &runroot,
            attach,
            interactive,
            &detach_keys,
            &containers,
        ),
        Command::Stop { time, containers } => containers::stop(&root, &runroot, time, &containers),
        Command::Restart { time, containers } => {
            containers::restart(&root, &runroot, time, &containers)
        }
        Command::Info { format } => info(&root, &runroot, format.as_deref()),
        Command::Version { format } => version(format.as_deref()),
        Command::Rename { container, name } => {
            containers::rename(&root, &runroot, &container, &name)
        }
        Command::Pause { containers } => containers::pause(&root, &runroot, true, &containers),
        Command::Unpause { containers } => containers::pause(&root, &runroot, false, &containers),
        Command::Kill { signal, containers } => {
            containers::kill(&root, &runroot, &signal, &containers)
        }
        Command::Rm {
            force, containers, ..
        } => containers::rm(&root, &runroot, force, &containers),
        Command::Ps(a) => ps::ps(&root, &runroot, &a),
        Command::Logs {
            follow,
            since,
            tail,
            timestamps,
            container,
        } => containers::logs(
            &root,
            &runroot,
            follow,
            since.as_deref(),
            tail.as_deref(),
            timestamps,
            &container,
        ),
        Command::Wait { containers } => containers::wait(&root, &runroot, &containers),
        Command::Exec(a) => containers::exec(&root, &runroot, a),
        Command::Volume { command } => volumes::volume_cmd(&root, &runroot, command),
        Command::Pod { command } => pods::pod_cmd(&root, &runroot, command),
        Command::Network { command } => networks::network_cmd(&root, &runroot, command),
        Command::Port { container } => containers::port(&root, &runroot, &container),
        Command::Attach {
            no_stdin,
            detach_keys,
            container,
        } => containers::attach(&root, &runroot, no_stdin, &detach_keys, &container),
        Command::Cp { src, dest } => containers::cp(&root, &runroot, &src, &dest),
        Command::Top { container, ps_args } => {
            containers::top(&root, &runroot, &container, &ps_args)
        }
        Command::Stats {
            no_stream,
            format,
            containers,
        } => containers::stats(&root, &runroot, no_stream, format.as_deref(), &containers),
        Command::Inspect { format, names } => {
            inspect_any(&root, &runroot, &names, format.as_deref())
        }
        Command::Container { command } => containers::container_cmd(&root, &runroot, command),
        Command::System {
            command: SystemCommand::Prune { all, volumes, .. },
        } => system_prune(&root, &runroot, all, volumes),
        other => run(Cli {
            root,
            runroot,
            command: other,
        })
        .map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("hako: {}", error_text(e.as_ref()));
            ExitCode::from(125)
        }
    }
}

/// An error with the sources it does not already say.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

/// `hako inspect`: containers first, then images (as docker).
fn inspect_any(
    root: &std::path::Path,
    runroot: &std::path::Path,
    names: &[String],
    format: Option<&str>,
) -> Result<i32, Error> {
    let engine = hako_engine::Engine::open(root, runroot)?;
    let mut out = Vec::new();
    for n in names {
        match engine.find(n) {
            Ok(r) => out.push(containers::inspect_json(&engine, &r)),
            Err(hako_engine::EngineError::NotFound(_)) => {
                let rec = engine.store().resolve(n)?;
                out.push(serde_json::json!({
                    "Id": rec.id.encoded(), "Digest": rec.manifest_digest, "RepoTags": rec.names,
                    "Created": rec.created, "Size": rec.size, "Platform": rec.platform,
                }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    containers::print_inspected(&out, format)?;
    Ok(0)
}

/// `hako info`: the host, the OCI runtime and what the store holds.
fn info(
    root: &std::path::Path,
    runroot: &std::path::Path,
    format: Option<&str>,
) -> Result<i32, Error> {
    let engine = hako_engine::Engine::open(root, runroot)?;
    let info = serde_json::to_value(engine.info()?)?;
    containers::print_inspected_one(&info, format)?;
    Ok(0)
}

/// `hako version`: a line, or the version document through a template.
fn version(format: Option<&str>) -> Result<i32, Error> {
    let v = serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Os": std::env::consts::OS,
        "Arch": std::env::consts::ARCH,
    });
    match format {
        None => outln!("hako version {}", env!("CARGO_PKG_VERSION")),
        Some(f) => containers::print_inspected_one(&v, Some(f))?,
    }
    Ok(0)
}

fn system_prune(
    root: &std::path::Path,
    runroot: &std::path::Path,
    all: bool,
    volumes: bool,
) -> Result<i32, Error> {
    let engine = hako_engine::Engine::open(root, runroot)?;
    let gone = engine.prune()?;
    outln!("Deleted containers: {}", gone.len());
    for id in &gone {
        outln!("{id}");
    }
    let networks = engine.prune_networks()?;
    outln!("Deleted networks: {}", networks.len());
    for n in &networks {
        outln!("{n}");
    }
    if volumes {
        let gone = engine.prune_volumes()?;
        outln!("Deleted volumes: {}", gone.len());
        for v in &gone {
            outln!("{v}");
        }
    }
    let store = engine.store();
    let used: std::collections::HashSet<String> =
        engine.list()?.into_iter().map(|r| r.image_id).collect();
    let mut images = 0;
    for r in store.images()? {
        if (r.names.is_empty() || all) && !used.contains(&r.id.to_string()) {
            store.remove_image(&r.id)?;
            images += 1;
        }
    }
    let (n, bytes) = prune(store, true)?;
    outln!(
        "Deleted images: {images}\nRemoved {n} unused blobs and layers ({})",
        human(bytes)
    );
    Ok(0)
}

/// Pulls `reference` for `run`/`create` (a registry or a transport).
pub(crate) fn pull_image(
    store: &Store,
    reference: &str,
    platform: Option<&str>,
    quiet: bool,
) -> Result<ImageRecord, Error> {
    let platform = platform.map(Platform::parse).transpose()?;
    let pulled = match ImageSource::parse(reference)? {
        ImageSource::Registry(r) => {
            let opts = PullOptions {
                platform,
                quiet,
                credentials: None,
                insecure: false,
            };
            pull::pull(store, &r, &opts).map_err(Error::from)
        }
        source => transfer::import(store, &source, &ImportOptions { platform, quiet })
            .map_err(Error::from),
    };
    pulled.inspect_err(|_| {
        let _ = prune(store, false);
    })
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Pull {
            platform,
            quiet,
            tls_verify,
            reference,
        } => {
            let store = Store::open(&cli.root)?;
            let platform = platform.as_deref().map(Platform::parse).transpose()?;
            let pulled = match ImageSource::parse(&reference)? {
                ImageSource::Registry(r) => {
                    let opts = PullOptions {
                        platform,
                        quiet,
                        credentials: None,
                        insecure: !tls_verify,
                    };
                    pull::pull(&store, &r, &opts).map_err(Error::from)
                }
                source => transfer::import(&store, &source, &ImportOptions { platform, quiet })
                    .map_err(Error::from),
            };
            // What a failed pull stored goes again (unless another pull
            // runs: then the next prune takes it).
            let rec = pulled.inspect_err(|_| {
                let _ = prune(&store, false);
            })?;
            if quiet {
                outln!("{}", rec.id.encoded());
            }
            Ok(())
        }
        Command::Images { format, quiet } => {
            list(&Store::open(&cli.root)?, format.as_deref(), quiet)
        }
        Command::Image { command } => match command {
            ImageCommand::Ls { format } => list(&Store::open(&cli.root)?, format.as_deref(), false),
            ImageCommand::Inspect { image } => {
                let store = Store::open(&cli.root)?;
                let rec = store.resolve(&image)?;
                let config: serde_json::Value = serde_json::from_slice(
                    &store.read_blob(&rec.id, hako_image::manifest::MAX_JSON)?,
                )?;
                let out = serde_json::json!([{
                    "Id": rec.id.encoded(), "Digest": rec.manifest_digest, "RepoTags": rec.names,
                    "Created": rec.created, "Size": rec.size, "Platform": rec.platform,
                    "Layers": rec.layers, "RootFS": {"Type": "layers", "Layers": rec.diff_ids},
                    "ManifestType": rec.manifest_media_type, "Config": config["config"],
                    "RepoDigests": repo_digests(&rec),
                }]);
                outln!("{}", serde_json::to_string_pretty(&out)?);
                Ok(())
            }
            ImageCommand::Unpack {
                hardened,
                image,
                dir,
            } => {
                let store = Store::open(&cli.root)?;
                let _held = store.shared_lock()?;
                let rec = store.resolve(&image)?;
                let opts = BundleOptions {
                    hardened,
                    ..Default::default()
                };
                Ok(pull::unpack_bundle(&store, &rec, &dir, &opts)?)
            }
            ImageCommand::Prune => {
                let store = Store::open(&cli.root)?;
                // Like podman: dangling images go, their IDs printed.
                for r in store.images()?.iter().filter(|r| r.names.is_empty()) {
                    store.remove_image(&r.id)?;
                    outln!("{}", r.id.encoded());
                }
                let (n, bytes) = prune(&store, true)?;
                eprintln!("removed {n} unused blobs and layers ({})", human(bytes));
                Ok(())
            }
        },
        Command::Tag { source, target } => {
            let store = Store::open(&cli.root)?;
            let mut rec = store.resolve(&source)?;
            rec.names = vec![Reference::parse(&target)?.to_string()];
            store.put_image(&rec)?;
            Ok(())
        }
        Command::Rmi { force, images } => {
            let engine = hako_engine::Engine::open(&cli.root, &cli.runroot)?;
            let store = engine.store();
            let mut failed = None;
            for i in images {
                match rmi(&engine, &i, force) {
                    Ok(msg) => outln!("{msg}"),
                    Err(e) => {
                        eprintln!("hako: {i}: {e}");
                        failed = Some(format!("{i}: {e}"));
                    }
                }
            }
            // Blobs and layers go too, unless a pull or push is running
            // (then `hako image prune` collects them later).
            prune(store, false)?;
            match failed {
                Some(f) => Err(f.into()),
                None => Ok(()),
            }
        }
        Command::Login {
            username,
            password,
            password_stdin,
            tls_verify,
            registry: host,
        } => {
            let username = username.ok_or("--username is required")?;
            let password = match (password, password_stdin) {
                (Some(p), false) => p,
                (None, true) => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
                _ => return Err("give the password with --password or --password-stdin".into()),
            };
            let creds = Credentials { username, password };
            let probe = Reference::parse(&format!("{host}/hako-login-probe"))?;
            let conf = RegistriesConf::load()?;
            Client::configured(
                &probe,
                Some(creds.clone()),
                !tls_verify,
                &conf,
                Access::Direct,
            )?
            .ping()?;
            let file = registry::save_credentials(&probe.registry, Some(&creds))?;
            outln!("Login Succeeded! (credentials in {})", file.display());
            Ok(())
        }
        Command::Logout { registry: host } => {
            let probe = Reference::parse(&format!("{host}/hako-login-probe"))?;
            registry::save_credentials(&probe.registry, None)?;
            outln!("Removed login credentials for {}", probe.registry);
            Ok(())
        }
        Command::Push {
            tls_verify,
            image,
            destination,
        } => {
            let store = Store::open(&cli.root)?;
            let rec = store.resolve(&image)?;
            match ImageSource::parse(destination.as_deref().unwrap_or(&image))? {
                ImageSource::Registry(dest) => push(&store, &rec, &dest, !tls_verify),
                dest => Ok(transfer::export(&store, &rec, &dest)?),
            }
        }
        Command::Load { input, quiet } => {
            let store = Store::open(&cli.root)?;
            // stdin is copied to a file first: an archive is read by name,
            // not in order.
            let spool;
            let path = match input {
                Some(p) => p,
                None => {
                    if std::io::stdin().is_terminal() {
                        return Err("no archive: give -i FILE or pipe one to stdin".into());
                    }
                    spool = Spool::new(&store)?;
                    let n = std::io::copy(&mut std::io::stdin().lock(), &mut spool.file()?)?;
                    if n == 0 {
                        return Err("no archive on stdin (it was empty)".into());
                    }
                    spool.path.clone()
                }
            };
            let opts = ImportOptions {
                platform: None,
                quiet: true,
            };
            let loaded = transfer::load(&store, &path, &opts).inspect_err(|_| {
                let _ = prune(&store, false);
            })?;
            for rec in loaded {
                if rec.names.is_empty() {
                    outln!("Loaded image: {}", rec.id);
                } else if !quiet {
                    for n in &rec.names {
                        outln!("Loaded image: {n}");
                    }
                }
            }
            Ok(())
        }
        Command::Save {
            output,
            format,
            multi_image_archive: _,
            quiet: _,
            images,
        } => {
            let format: ExportFormat = format.parse()?;
            let store = Store::open(&cli.root)?;
            let records = images
                .iter()
                .map(|i| store.resolve(i).map_err(Error::from))
                .collect::<Result<Vec<_>, _>>()?;
            // Each image under the name asked for, or all its names when
            // asked for by ID.
            let exports: Vec<ExportImage> = records
                .iter()
                .zip(&images)
                .map(|(rec, asked)| {
                    let normalised = Reference::parse(asked).ok().map(|r| r.to_string());
                    let names = match normalised.filter(|n| rec.names.contains(n)) {
                        Some(n) => vec![n],
                        None => rec.names.clone(),
                    };
                    ExportImage { record: rec, names }
                })
                .collect();
            match output {
                Some(path) => Ok(transfer::save(&store, &exports, format, &path)?),
                None => {
                    if format == ExportFormat::OciDir {
                        return Err("--format oci-dir needs -o DIR".into());
                    }
                    if std::io::stdout().is_terminal() {
                        return Err(
                            "refusing to write an archive to a terminal: use -o FILE or redirect stdout"
                                .into(),
                        );
                    }
                    let spool = Spool::new(&store)?;
                    transfer::save(&store, &exports, format, &spool.path)?;
                    std::io::copy(
                        &mut std::fs::File::open(&spool.path)?,
                        &mut std::io::stdout().lock(),
                    )?;
                    Ok(())
                }
            }
        }
        Command::System {
            command: SystemCommand::Df,
        } => {
            let u = Store::open(&cli.root)?.disk_usage()?;
            outln!(
                "{:<10} {:>6} {:>8} {:>12} {:>12}",
                "TYPE",
                "TOTAL",
                "ACTIVE",
                "SIZE",
                "RECLAIMABLE"
            );
            outln!(
                "{:<10} {:>6} {:>8} {:>12} {:>12}",
                "Images",
                u.images,
                u.images - u.dangling,
                human(u.blob_bytes),
                human(u.reclaimable_bytes)
            );
            outln!(
                "{:<10} {:>6} {:>8} {:>12} {:>12}",
                "Layers",
                u.layers,
                "",
                human(u.layer_bytes),
                ""
            );
            Ok(())
        }
        // Dispatched by main before this match.
        _ => Err("this command is handled by the engine path".into()),
    }
}

/// `repo@digest` for each repository the image has a name in, with the
/// manifest's digest and the index's (podman lists both).
fn repo_digests(rec: &ImageRecord) -> Vec<String> {
    let mut out = Vec::new();
    for n in &rec.names {
        let Ok(r) = Reference::parse(n) else { continue };
        for d in std::iter::once(&rec.manifest_digest).chain(&rec.index_digest) {
            let s = format!("{}@{d}", r.name());
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// A file in the store's ingest directory, removed on drop: stdin for
/// `load`, the archive `save` writes to stdout.
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn new(store: &Store) -> Result<Spool, Error> {
        let path = store
            .root()
            .join("ingest")
            .join(format!("spool-{}.tar", std::process::id()));
        Ok(Spool { path })
    }

    fn file(&self) -> Result<std::fs::File, Error> {
        Ok(std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&self.path)
            .map_err(|e| format!("creating {}: {e}", self.path.display()))?)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn list(store: &Store, format: Option<&str>, quiet: bool) -> Result<(), Error> {
    let images = store.images()?;
    if format == Some("json") {
        outln!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    if quiet {
        for i in &images {
            outln!("{}", &i.id.encoded()[..12]);
        }
        return Ok(());
    }
    // One row per name, as docker lists them; docker's template fields.
    let mut rows = Vec::new();
    for i in &images {
        let names: Vec<(String, String)> = if i.names.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.names
                .iter()
                .map(|n| match Reference::parse(n) {
                    Ok(r) => (r.name(), r.tag.unwrap_or_else(|| "<none>".into())),
                    Err(_) => (n.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in names {
            rows.push(serde_json::json!({
                "Repository": repo, "Tag": tag, "ID": &i.id.encoded()[..12],
                "Id": i.id.to_string(), "Digest": i.manifest_digest.to_string(),
                "CreatedAt": i.created, "CreatedSince": ago(&i.created),
                "Size": human(i.size), "Platform": i.platform,
            }));
        }
    }
    if let Some(f) = format {
        let header = serde_json::json!({
            "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Id": "IMAGE ID",
            "Digest": "DIGEST", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
            "Size": "SIZE", "Platform": "PLATFORM",
        });
        template::print(f, &header, &rows, None)?;
        return Ok(());
    }
    let mut table = stdout::Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    for r in &rows {
        let cell = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        table.row(
            ["Repository", "Tag", "ID", "CreatedSince", "Size"]
                .map(cell)
                .to_vec(),
        );
    }
    table.print();
    Ok(())
}

fn rmi(engine: &hako_engine::Engine, what: &str, force: bool) -> Result<String, Error> {
    let store = engine.store();
    let rec = store.resolve(what)?;
    let normalised = Reference::parse(what).ok().map(|r| r.to_string());
    // A name untags; the image goes with its last name, or when asked by
    // ID: then, like podman, only with --force if it has several names.
    match normalised.filter(|n| rec.names.contains(n)) {
        Some(n) if rec.names.len() > 1 => {
            store.untag(&rec, &n)?;
            return Ok(format!("Untagged: {n}"));
        }
        Some(_) => {}
        None if rec.names.len() > 1 && !force => {
            return Err(format!(
                "image {} has {} names ({}): remove them one by one or use --force",
                &rec.id.encoded()[..12],
                rec.names.len(),
                rec.names.join(", ")
            )
            .into());
        }
        None => {}
    }
    if let Some(c) = engine.image_users(&rec.id)?.first() {
        return Err(format!(
            "image {} is in use by container {c}: remove the container first",
            &rec.id.encoded()[..12]
        )
        .into());
    }
    store.remove_image(&rec.id)?;
    Ok(format!("Deleted: {}", rec.id.encoded()))
}

/// Drops blobs and layers no image uses; waits for running pulls, pushes
/// and unpacks when `wait`, else does nothing while one runs.
fn prune(store: &Store, wait: bool) -> Result<(u64, u64), Error> {
    let Some(held) = store.gc_lock(wait)? else {
        return Ok((0, 0));
    };
    let (n, bytes) = store.gc_blobs(&held)?;
    let mut keep = std::collections::HashSet::new();
    for r in store.images()? {
        for c in hako_image::snapshot::chain_ids(&r.diff_ids) {
            keep.insert(c.encoded().to_string());
        }
    }
    let mut layers = 0;
    for kind in [SnapshotKind::Overlay, SnapshotKind::Flat] {
        layers += Snapshotter::for_store(store.root(), kind).prune(&keep);
    }
    Ok((n + layers as u64, bytes))
}

fn push(store: &Store, rec: &ImageRecord, dest: &Reference, insecure: bool) -> Result<(), Error> {
    // Pushes go to the name given (no mirrors, no location rewriting);
    // registries.conf may mark it insecure or blocked.
    let client = Client::configured(
        dest,
        None,
        insecure,
        &RegistriesConf::load()?,
        Access::Direct,
    )?;
    let _held = store.shared_lock()?;
    let repo = &dest.repository;
    let quiet = !std::io::stderr().is_terminal();
    let mut blobs = vec![rec.id.clone()];
    blobs.extend(rec.layers.iter().cloned());
    // A repository of the same registry that has the blobs (the image was
    // pulled from it): the registry can mount them instead of an upload.
    let mount_from = rec
        .names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .find(|r| r.registry == dest.registry && r.repository != dest.repository)
        .map(|r| r.repository);
    for d in &blobs {
        client.push_blob(repo, d, &store.blob_path(d), mount_from.as_deref())?;
        if !quiet {
            eprintln!("Copying blob {} done", &d.encoded()[..12]);
        }
    }
    let manifest = store.read_blob(&rec.manifest_digest, hako_image::manifest::MAX_JSON)?;
    client.push_manifest(
        repo,
        &dest.manifest_ref(),
        &rec.manifest_media_type,
        &manifest,
    )?;
    Ok(())
}

/// podman's CREATED column: "3 days ago" (docker's go-units wording).
fn ago(created: &str) -> String {
    let Some(then) = hako_image::store::parse_rfc3339(created) else {
        return created.chars().take(19).collect();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let s = (now - then).max(0);
    let (min, hour, day) = (60, 3600, 86400);
    let text = match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < min => format!("{s} seconds"),
        s if s < 2 * min => "About a minute".to_string(),
        s if s < hour => format!("{} minutes", s / min),
        s if s < hour * 3 / 2 => "About an hour".to_string(),
        s if s < 2 * day => format!("{} hours", (s + hour / 2) / hour),
        s if s < 14 * day => format!("{} days", s / day),
        s if s < 90 * day => format!("{} weeks", s / (7 * day)),
        s if s < 730 * day => format!("{} months", s / (30 * day)),
        s => format!("{} years", s / (365 * day)),
    };
    format!("{text} ago")
}

fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
