//! Pulling: reference → manifest (→ platform from an index) → config and
//! layers into the store, verified → each layer unpacked once into the
//! snapshots → an image record. Up to three layers are fetched and
//! unpacked at once; a layer is unpacked as soon as its blob is complete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::digest::Digest;
use crate::manifest::{self, ImageConfig, Manifest, ManifestError, Parsed, Platform};
use crate::reference::Reference;
use crate::registries_conf::{Access, RegistriesConf};
use crate::registry::{BlobEvent, Client, Credentials, RegistryError};
use crate::snapshot::{chain_ids, SnapshotError, SnapshotKind, Snapshotter};
use crate::store::{ImageRecord, Store, StoreError};
use crate::unpack::{self, UnpackOptions, WhiteoutMode};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: {source}")]
    Manifest {
        reference: String,
        source: ManifestError,
    },
    #[error("{reference}: {source}")]
    Store {
        reference: String,
        source: StoreError,
    },
    #[error("{reference}: {source}")]
    Snapshot {
        reference: String,
        source: SnapshotError,
    },
    #[error("{reference}: the config lists {diff_ids} diff IDs for {layers} layers")]
    LayerCount {
        reference: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("{reference}: an index inside an index is not supported")]
    NestedIndex { reference: String },
    #[error("{reference}: a download thread panicked")]
    Worker { reference: String },
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub platform: Option<Platform>,
    pub quiet: bool,
    pub credentials: Option<Credentials>,
    /// Plain HTTP even for a host that is not loopback or listed in
    /// HAKO_INSECURE_REGISTRIES (podman's `--tls-verify=false`).
    pub insecure: bool,
}

/// Pulls `reference` into `store` and unpacks its layers, through the
/// mirrors and location registries.conf gives it (the image is recorded
/// under `reference`'s name).
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord, PullError> {
    let name = reference.to_string();
    let mferr = |source| PullError::Manifest {
        reference: name.clone(),
        source,
    };
    let serr = |source| PullError::Store {
        reference: name.clone(),
        source,
    };
    // registries.conf first: a blocked registry leaves nothing behind.
    let conf = RegistriesConf::load().map_err(RegistryError::from)?;
    let client = Client::configured(
        reference,
        opts.credentials.clone(),
        opts.insecure,
        &conf,
        Access::Pull,
    )?;
    // Garbage collection must not delete what this pull fetched before the
    // image is recorded.
    let _held = store.shared_lock().map_err(serr)?;
    let repo = &reference.repository;
    let (mut bytes, mut ct, mut digest) = client.manifest(repo, &reference.manifest_ref())?;
    let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
    let mut parsed = manifest::parse(&bytes, ct.as_deref(), &name).map_err(mferr)?;
    let mut index_digest = None;
    if let Parsed::Index(list) = &parsed {
        store.put_bytes(&digest, &bytes).map_err(serr)?;
        index_digest = Some(digest.clone());
        let chosen = manifest::select(list, &wanted, &name)
            .map_err(mferr)?
            .clone();
        (bytes, ct, digest) = client.manifest(repo, &chosen.digest.to_string())?;
        if ct.is_none() && !chosen.media_type.is_empty() {
            ct = Some(chosen.media_type.clone());
        }
        parsed = manifest::parse(&bytes, ct.as_deref(), &name).map_err(mferr)?;
    }
    let Parsed::Manifest(m) = parsed else {
        return Err(PullError::NestedIndex { reference: name });
    };
    store.put_bytes(&digest, &bytes).map_err(serr)?;
    let say = |msg: String| {
        if !opts.quiet {
            eprintln!("{msg}");
        }
    };
    say(format!(
        "Getting image source signatures\nCopying config {}",
        m.config.digest
    ));
    if m.config.size > manifest::MAX_JSON {
        return Err(mferr(ManifestError::MediaType {
            what: name.clone(),
            media_type: format!("a config of {} bytes", m.config.size),
        }));
    }
    client.fetch_blob(store, repo, &m.config.digest, m.config.size, &mut |_| {})?;
    let config_bytes = store
        .read_blob(&m.config.digest, manifest::MAX_JSON)
        .map_err(serr)?;
    let config = manifest::parse_config(&config_bytes, &name).map_err(mferr)?;
    fetch_and_unpack(store, &client, repo, &m, &config, &name, opts.quiet)?;
    let rec = ImageRecord::new(&m, &config, &digest, index_digest, vec![name.clone()]);
    let platform = &rec.platform;
    let got = Platform::parse(platform).ok();
    if got.is_some_and(|p| p.os != wanted.os || p.architecture != wanted.architecture) {
        // As podman: a warning, the image may still be what the user wants.
        say(format!(
            "WARNING: image platform ({platform}) does not match the expected platform ({wanted})"
        ));
    }
    store.put_image(&rec).map_err(serr)?;
    say(format!(
        "Writing manifest to image destination\n{}",
        rec.id.encoded()
    ));
    Ok(rec)
}

fn fetch_and_unpack(
    store: &Store,
    client: &Client,
    repo: &str,
    m: &Manifest,
    config: &ImageConfig,
    name: &str,
    quiet: bool,
) -> Result<(), PullError> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != m.layers.len() {
        return Err(PullError::LayerCount {
            reference: name.into(),
            diff_ids: diff_ids.len(),
            layers: m.layers.len(),
        });
    }
    let chains = chain_ids(diff_ids);
    let snapshots = Snapshotter::chosen(store.root()).map_err(|source| PullError::Snapshot {
        reference: name.into(),
        source,
    })?;
    // Flat snapshots build on their parent: the blobs are fetched at once,
    // then applied in order.
    let flat = snapshots.kind() == SnapshotKind::Flat;
    let next = AtomicUsize::new(0);
    // A bar per layer (bytes, rate) on a terminal; plain lines otherwise.
    let bars = (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);
    let style = indicatif::ProgressStyle::with_template(
        "Copying blob {prefix} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let say = |msg: String| {
        if !quiet && bars.is_none() {
            eprintln!("{msg}");
        }
    };
    let work = || -> Result<(), PullError> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((layer, _)) = m.layers.get(i) else {
                return Ok(());
            };
            if store.has_blob(&layer.digest) && (flat || snapshots.has_layer(&chains[i])) {
                say(format!(
                    "Copying blob {} skipped: already exists",
                    short(&layer.digest)
                ));
                continue;
            }
            let opts = UnpackOptions {
                whiteouts: WhiteoutMode::Overlay,
            };
            let snap_err = |source| PullError::Snapshot {
                reference: name.into(),
                source,
            };
            // Download and unpack at once: the bytes go to the store and,
            // through a channel, to the unpacker. The snapshot is published
            // only if the unpacked content has the config's diff ID.
            let bar = bars.as_ref().map(|mp| {
                mp.add(
                    indicatif::ProgressBar::new(layer.size)
                        .with_style(style.clone())
                        .with_prefix(short(&layer.digest).to_string()),
                )
            });
            if !flat && !store.has_blob(&layer.digest) && !snapshots.has_layer(&chains[i]) {
                let target = LayerTarget {
                    snapshots: &snapshots,
                    chain_id: &chains[i],
                    diff_id: &diff_ids[i],
                };
                fetch_while_unpacking(client, store, repo, layer, &target, bar.as_ref())?;
            }
            if !store.has_blob(&layer.digest) {
                // Unpacked already, but the blob went (pruned): fetch it
                // again, the record needs it for bundles and pushes.
                client.fetch_blob(store, repo, &layer.digest, layer.size, &mut |ev| {
                    if let (Some(b), BlobEvent::Data(d)) = (&bar, ev) {
                        b.inc(d.len() as u64);
                    }
                })?;
            }
            if let Some(b) = &bar {
                b.finish();
            }
            say(format!("Copying blob {} done", short(&layer.digest)));
            if flat || snapshots.has_layer(&chains[i]) {
                continue;
            }
            // From the verified file: a blob already stored, or a stream
            // that did not make it.
            let blob = store
                .open_blob(&layer.digest)
                .map_err(|source| PullError::Store {
                    reference: name.into(),
                    source,
                })?;
            snapshots
                .add_layer(&chains[i], &layer.digest, &diff_ids[i], |dir| {
                    unpack::apply_layer_file(dir, blob, &opts)
                })
                .map_err(snap_err)?;
        }
    };
    let workers = m.layers.len().clamp(1, 3);
    let fetched = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
        let mut first = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(PullError::Worker {
                    reference: name.into(),
                })
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    });
    fetched?;
    if flat {
        let pairs: Vec<(Digest, Digest)> = m
            .layers
            .iter()
            .map(|(l, _)| l.digest.clone())
            .zip(diff_ids.iter().cloned())
            .collect();
        snapshots
            .ensure_chain(&pairs, |d| std::fs::File::open(store.blob_path(d)))
            .map_err(|source| PullError::Snapshot {
                reference: name.into(),
                source,
            })?;
    }
    Ok(())
}

/// Where a streamed layer goes: the snapshot `chain_id`, whose content
/// must have `diff_id`.
struct LayerTarget<'a> {
    snapshots: &'a Snapshotter,
    chain_id: &'a Digest,
    diff_id: &'a Digest,
}

/// Downloads `layer` into the store and, through a channel, into the
/// unpacker at once. The snapshot is published only if the unpacked
/// content has the config's diff ID; a stream that did not make it (a
/// restart, a blob another process fetched, a bad layer) leaves none, and
/// the caller unpacks the verified file instead (which reports the layer's
/// error if there is one). Only the download's error is returned.
fn fetch_while_unpacking(
    client: &Client,
    store: &Store,
    repo: &str,
    layer: &manifest::Descriptor,
    target: &LayerTarget<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(), RegistryError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(64);
    let opts = UnpackOptions {
        whiteouts: WhiteoutMode::Overlay,
    };
    std::thread::scope(|s| {
        let unpacker = s.spawn(|| {
            target
                .snapshots
                .add_layer(target.chain_id, &layer.digest, target.diff_id, |dir| {
                    let input = std::io::BufReader::with_capacity(
                        256 << 10,
                        unpack::ChannelReader::new(rx),
                    );
                    let tar = unpack::decompressed(input).map_err(unpack::UnpackError::Read)?;
                    unpack::apply_layer(dir, unpack::ChannelReader::threaded(tar), &opts)
                })
        });
        let mut tx = Some(tx);
        let fetched =
            client.fetch_blob(store, repo, &layer.digest, layer.size, &mut |ev| match ev {
                BlobEvent::Data(d) => {
                    if let Some(b) = bar {
                        b.inc(d.len() as u64);
                    }
                    if tx.as_ref().is_some_and(|t| t.send(Ok(d.to_vec())).is_err()) {
                        tx = None;
                    }
                }
                // The unpacker saw bytes twice: end its stream short so it fails.
                BlobEvent::Restart => {
                    if let Some(b) = bar {
                        b.set_position(0);
                    }
                    tx = None;
                }
            });
        drop(tx);
        let _ = unpacker.join();
        fetched
    })
}

fn short(d: &Digest) -> &str {
    &d.encoded()[..12]
}

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum UnpackBundleError {
    #[error("{}: the bundle already has a rootfs", .0.display())]
    RootfsExists(PathBuf),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {layer}: {source}")]
    Layer {
        layer: Digest,
        source: unpack::UnpackError,
    },
    #[error("layer {layer}: its content has diff ID {got}, the image config says {expected}")]
    DiffId {
        layer: Digest,
        expected: Digest,
        got: Digest,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
}

/// Writes a runtime bundle for `image` at `dir`: `dir/rootfs` (which must
/// not exist yet) with every layer applied in order, then `dir/config.json`.
/// On error nothing made here is left: not the rootfs, nor `dir` if it
/// was created.
pub fn unpack_bundle(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    opts: &crate::bundle::BundleOptions,
) -> Result<(), UnpackBundleError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackBundleError::Io { what, path, source }
    };
    let made_dir = !dir.exists();
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let rootfs = dir.join("rootfs");
    if let Err(e) = std::fs::create_dir(&rootfs) {
        if made_dir {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            UnpackBundleError::RootfsExists(dir.to_path_buf())
        } else {
            io("creating", &rootfs)(e)
        });
    }
    let result = (|| {
        for (layer, want) in image.layers.iter().zip(&image.diff_ids) {
            let blob = store.open_blob(layer)?;
            let opts = UnpackOptions {
                whiteouts: WhiteoutMode::Apply,
            };
            let stats = unpack::apply_layer_file(&rootfs, blob, &opts).map_err(|source| {
                UnpackBundleError::Layer {
                    layer: layer.clone(),
                    source,
                }
            })?;
            if &stats.diff_id != want {
                return Err(UnpackBundleError::DiffId {
                    layer: layer.clone(),
                    expected: want.clone(),
                    got: stats.diff_id,
                });
            }
        }
        let config_bytes = store.read_blob(&image.id, manifest::MAX_JSON)?;
        let config = manifest::parse_config(&config_bytes, &image.id.to_string())?;
        let spec = crate::bundle::runtime_spec(&config, &rootfs, opts)?;
        // Written last (temp file, then rename): an error before it leaves
        // any config.json of the user's untouched.
        crate::bundle::write_config(dir, &spec)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&rootfs);
        if made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}
