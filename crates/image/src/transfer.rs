//! Images in and out of the store without a registry: `oci:DIR`,
//! `oci-archive:FILE` and `docker-archive:FILE` as sources (`hako pull`,
//! `hako load`) and destinations (`hako push`, `hako save`).
//!
//! Importing copies the config and layer blobs into the store, each
//! checked against its digest and size before it becomes visible, unpacks
//! the layers into snapshots (published only with the config's diff IDs)
//! and records the image, as a pull does. A docker-archive carries no
//! manifest: hako makes a Docker schema 2 one for the image, whose layers
//! are the archive's tars as they are.
//!
//! Exporting writes the stored blobs. An OCI layout gets the image's
//! manifest, converted to OCI media types if it was Docker's (as skopeo
//! does; the config and layers, and so the image ID, stay the same); a
//! docker-archive gets each layer uncompressed, checked against its diff
//! ID on the way. Archives appear at their path only once complete.

use std::io::{self, Read};
use std::path::Path;

use crate::archive::{ArchiveError, ImageFiles, TarIndex, TarWriter};
use crate::digest::{Algorithm, Digest, HashingReader};
use crate::docker_archive::{self, ArchiveImage, DockerArchiveError};
use crate::layout::{self, LayoutError, LayoutWriter};
use crate::manifest::{self, Descriptor, Manifest, ManifestError, Parsed, Platform};
use crate::reference::{ImageSource, Reference};
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::store::{ImageRecord, Store, StoreError};
use crate::unpack;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    DockerArchive(#[from] DockerArchiveError),
    #[error("{what}: {source}")]
    Manifest { what: String, source: ManifestError },
    #[error("{what}: {source}")]
    Store { what: String, source: StoreError },
    #[error("{what}: {source}")]
    Snapshot { what: String, source: SnapshotError },
    #[error("{what}: the config lists {diff_ids} diff IDs for {layers} layers")]
    LayerCount {
        what: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("{what}: an index inside an index is not supported")]
    NestedIndex { what: String },
    #[error("{what}: layer {name:?} is {got} bytes, its descriptor says {expected}")]
    LayerSize {
        what: String,
        name: String,
        got: u64,
        expected: u64,
    },
    #[error("{what}: reading layer {name:?}: {source}")]
    ReadLayer {
        what: String,
        name: String,
        source: io::Error,
    },
    #[error("layer {layer}: its content has diff ID {got}, the image config says {expected}")]
    DiffId {
        layer: Digest,
        expected: Digest,
        got: Digest,
    },
    #[error("{}: neither a docker-archive (manifest.json) nor an OCI archive (index.json)", .0.display())]
    UnknownArchive(std::path::PathBuf),
    #[error("{0}: a registry reference; use pull or push")]
    Registry(String),
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub platform: Option<Platform>,
    pub quiet: bool,
}

fn store_err(what: &str) -> impl FnOnce(StoreError) -> TransferError + '_ {
    move |source| TransferError::Store {
        what: what.to_string(),
        source,
    }
}

fn manifest_err(what: &str) -> impl FnOnce(ManifestError) -> TransferError + '_ {
    move |source| TransferError::Manifest {
        what: what.to_string(),
        source,
    }
}

/// Imports the image `source` names into the store (`hako pull
/// oci:DIR:TAG`).
pub fn import(
    store: &Store,
    source: &ImageSource,
    opts: &ImportOptions,
) -> Result<ImageRecord, TransferError> {
    match source {
        ImageSource::Registry(r) => Err(TransferError::Registry(r.to_string())),
        ImageSource::OciLayout { path, tag } => {
            let files = ImageFiles::dir(path)?;
            import_layout(store, &files, tag.as_deref(), opts)
        }
        ImageSource::OciArchive { path, tag } => {
            let files = ImageFiles::Archive(TarIndex::open(path, &scratch(store))?);
            import_layout(store, &files, tag.as_deref(), opts)
        }
        ImageSource::DockerArchive { path, reference } => {
            let files = ImageFiles::Archive(TarIndex::open(path, &scratch(store))?);
            let images = docker_archive::read_manifest(&files)?;
            let image = docker_archive::choose(&files, &images, reference.as_deref())?;
            import_docker(store, &files, image, opts)
        }
    }
}

/// Imports every image of an archive (`hako load`): a docker-archive, or
/// an OCI archive (each entry of its index.json).
pub fn load(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>, TransferError> {
    let files = ImageFiles::Archive(TarIndex::open(path, &scratch(store))?);
    let mut out = Vec::new();
    if files.contains(docker_archive::MANIFEST) {
        for image in docker_archive::read_manifest(&files)? {
            out.push(import_docker(store, &files, &image, opts)?);
        }
    } else if files.contains("index.json") {
        for entry in layout::read_index(&files)? {
            out.push(import_layout_entry(store, &files, &entry, opts)?);
        }
    } else {
        return Err(TransferError::UnknownArchive(path.to_path_buf()));
    }
    Ok(out)
}

fn scratch(store: &Store) -> std::path::PathBuf {
    store.root().join("ingest")
}

fn import_layout(
    store: &Store,
    files: &ImageFiles,
    wanted: Option<&str>,
    opts: &ImportOptions,
) -> Result<ImageRecord, TransferError> {
    let entries = layout::read_index(files)?;
    let entry = layout::choose(files, &entries, wanted)?;
    import_layout_entry(store, files, entry, opts)
}

/// The name an image from a layout gets: a full name in its annotations
/// as it is; a bare tag (skopeo's `oci:DIR:TAG`) under `localhost/` with
/// the layout's file name as the repository (`oci:/x/app:v1` →
/// `localhost/app:v1`). Unnamed when neither works.
fn layout_image_name(files: &ImageFiles, entry: &Descriptor) -> Option<String> {
    let a = entry.annotations.as_ref()?;
    let full = |s: &String| {
        (s.contains('/'))
            .then(|| Reference::parse(s).ok())
            .flatten()
            .map(|r| r.to_string())
    };
    if let Some(n) = a.get(layout::CONTAINERD_NAME).and_then(full) {
        return Some(n);
    }
    let name = a.get(layout::REF_NAME)?;
    if let Some(n) = full(name) {
        return Some(n);
    }
    let stem = files.path().file_name()?.to_string_lossy().to_lowercase();
    let stem = stem
        .strip_suffix(".tar")
        .or_else(|| stem.strip_suffix(".tar.gz"))
        .unwrap_or(&stem);
    let repo: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let repo = repo.trim_matches('-');
    Reference::parse(&format!("localhost/{repo}:{name}"))
        .ok()
        .map(|r| r.to_string())
}

fn import_layout_entry(
    store: &Store,
    files: &ImageFiles,
    entry: &Descriptor,
    opts: &ImportOptions,
) -> Result<ImageRecord, TransferError> {
    let what = format!(
        "{}@{}",
        files.path().display(),
        layout::entry_name(entry).unwrap_or(&entry.digest.to_string())
    );
    let names: Vec<String> = layout_image_name(files, entry).into_iter().collect();
    let mut bytes = layout::read_blob(files, entry, manifest::MAX_JSON)?;
    let mut digest = entry.digest.clone();
    let mut index = None;
    let mut parsed =
        manifest::parse(&bytes, Some(&entry.media_type), &what).map_err(manifest_err(&what))?;
    if let Parsed::Index(list) = &parsed {
        let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
        let chosen = manifest::select(list, &wanted, &what)
            .map_err(manifest_err(&what))?
            .clone();
        index = Some((digest.clone(), bytes));
        bytes = layout::read_blob(files, &chosen, manifest::MAX_JSON)?;
        digest = chosen.digest.clone();
        parsed = manifest::parse(&bytes, Some(&chosen.media_type), &what)
            .map_err(manifest_err(&what))?;
    }
    let Parsed::Manifest(m) = parsed else {
        return Err(TransferError::NestedIndex { what });
    };
    let config = layout::read_blob(files, &m.config, manifest::MAX_JSON)?;
    let layer_names: Vec<String> = m
        .layers
        .iter()
        .map(|(l, _)| layout::blob_name(&l.digest))
        .collect();
    let incoming = Incoming {
        what: &what,
        manifest: &m,
        manifest_bytes: &bytes,
        manifest_digest: &digest,
        index: index.as_ref().map(|(d, b)| (d, b.as_slice())),
        config: &config,
        layer_names: &layer_names,
        names,
    };
    import_image(store, files, &incoming, opts)
}

fn import_docker(
    store: &Store,
    files: &ImageFiles,
    image: &ArchiveImage,
    opts: &ImportOptions,
) -> Result<ImageRecord, TransferError> {
    let what = format!("{}:{}", files.path().display(), image.config);
    let config = files.read(&image.config, manifest::MAX_JSON)?;
    let config_digest = Digest::sha256_of(&config);
    let parsed = manifest::parse_config(&config, &what).map_err(manifest_err(&what))?;
    let diff_ids = &parsed.rootfs.diff_ids;
    if diff_ids.len() != image.layers.len() {
        return Err(TransferError::LayerCount {
            what,
            diff_ids: diff_ids.len(),
            layers: image.layers.len(),
        });
    }
    // The manifest docker-archives lack: each layer as it is in the
    // archive (an uncompressed layer's digest is its diff ID; a
    // compressed one is hashed first).
    let mut layers = Vec::new();
    for (name, diff_id) in image.layers.iter().zip(diff_ids) {
        let read_err = |source| TransferError::ReadLayer {
            what: what.clone(),
            name: name.clone(),
            source,
        };
        let (mut r, size) = files.open(name)?;
        let mut head = [0u8; 4];
        let n = crate::archive::read_up_to(&mut r, &mut head).map_err(read_err)?;
        let compression = match unpack::detect(&head[..n]) {
            unpack::Compression::None => manifest::LayerCompression::None,
            unpack::Compression::Gzip => manifest::LayerCompression::Gzip,
            unpack::Compression::Zstd => manifest::LayerCompression::Zstd,
        };
        let digest = if compression == manifest::LayerCompression::None {
            diff_id.clone()
        } else {
            let (r, _) = files.open(name)?;
            let mut h = HashingReader::new(r, Algorithm::Sha256);
            io::copy(&mut h, &mut io::sink()).map_err(read_err)?;
            h.finish().0
        };
        layers.push(Descriptor {
            media_type: manifest::docker_layer_type(compression).to_string(),
            digest,
            size,
            platform: None,
            annotations: None,
        });
    }
    let config_desc = Descriptor {
        media_type: manifest::DOCKER_CONFIG.to_string(),
        digest: config_digest,
        size: config.len() as u64,
        platform: None,
        annotations: None,
    };
    let bytes = manifest::docker_manifest(&config_desc, &layers);
    let digest = Digest::sha256_of(&bytes);
    let Parsed::Manifest(m) = manifest::parse(&bytes, Some(manifest::DOCKER_MANIFEST), &what)
        .map_err(manifest_err(&what))?
    else {
        return Err(TransferError::NestedIndex { what });
    };
    let incoming = Incoming {
        what: &what,
        manifest: &m,
        manifest_bytes: &bytes,
        manifest_digest: &digest,
        index: None,
        config: &config,
        layer_names: &image.layers,
        names: image.names(),
    };
    import_image(store, files, &incoming, opts)
}

/// An image on its way into the store: its manifest (already checked),
/// config bytes and where each layer is among the files.
struct Incoming<'a> {
    what: &'a str,
    manifest: &'a Manifest,
    manifest_bytes: &'a [u8],
    manifest_digest: &'a Digest,
    index: Option<(&'a Digest, &'a [u8])>,
    config: &'a [u8],
    layer_names: &'a [String],
    names: Vec<String>,
}

fn import_image(
    store: &Store,
    files: &ImageFiles,
    inc: &Incoming<'_>,
    opts: &ImportOptions,
) -> Result<ImageRecord, TransferError> {
    let what = inc.what;
    let m = inc.manifest;
    let say = |msg: String| {
        if !opts.quiet {
            eprintln!("{msg}");
        }
    };
    // Garbage collection must not take what this import stored before the
    // image is recorded.
    let _held = store.shared_lock().map_err(store_err(what))?;
    let config = manifest::parse_config(inc.config, what).map_err(manifest_err(what))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != m.layers.len() {
        return Err(TransferError::LayerCount {
            what: what.to_string(),
            diff_ids: diff_ids.len(),
            layers: m.layers.len(),
        });
    }
    say(format!(
        "Getting image source signatures\nCopying config {}",
        m.config.digest
    ));
    for ((layer, _), name) in m.layers.iter().zip(inc.layer_names) {
        copy_blob(store, files, layer, name, what)?;
        say(format!("Copying blob {} done", short(&layer.digest)));
    }
    store
        .put_bytes(&m.config.digest, inc.config)
        .map_err(store_err(what))?;
    unpack_layers(store, m, diff_ids, what)?;
    if let Some((d, b)) = inc.index {
        store.put_bytes(d, b).map_err(store_err(what))?;
    }
    store
        .put_bytes(inc.manifest_digest, inc.manifest_bytes)
        .map_err(store_err(what))?;
    let rec = ImageRecord::new(
        m,
        &config,
        inc.manifest_digest,
        inc.index.map(|(d, _)| d.clone()),
        inc.names.clone(),
    );
    store.put_image(&rec).map_err(store_err(what))?;
    say(format!(
        "Writing manifest to image destination\n{}",
        rec.id.encoded()
    ));
    Ok(rec)
}

/// Copies blob `layer` from file `name` into the store, verified (size
/// and digest) before it becomes visible.
fn copy_blob(
    store: &Store,
    files: &ImageFiles,
    layer: &Descriptor,
    name: &str,
    what: &str,
) -> Result<(), TransferError> {
    if store.has_blob(&layer.digest) {
        return Ok(());
    }
    let (mut r, size) = files.open(name)?;
    if size != layer.size {
        return Err(TransferError::LayerSize {
            what: what.to_string(),
            name: name.to_string(),
            got: size,
            expected: layer.size,
        });
    }
    let mut w = store
        .ingest(&layer.digest, Some(layer.size))
        .map_err(store_err(what))?;
    io::copy(&mut r, &mut w).map_err(|source| TransferError::ReadLayer {
        what: what.to_string(),
        name: name.to_string(),
        source,
    })?;
    w.commit().map_err(store_err(what))
}

/// Unpacks the stored layers of `m` into snapshots, each published only
/// if its content has the config's diff ID.
fn unpack_layers(
    store: &Store,
    m: &Manifest,
    diff_ids: &[Digest],
    what: &str,
) -> Result<(), TransferError> {
    let snap_err = |source| TransferError::Snapshot {
        what: what.to_string(),
        source,
    };
    let pairs: Vec<(Digest, Digest)> = m
        .layers
        .iter()
        .map(|(l, _)| l.digest.clone())
        .zip(diff_ids.iter().cloned())
        .collect();
    Snapshotter::chosen(store.root())
        .map_err(snap_err)?
        .ensure_chain(&pairs, |d| std::fs::File::open(store.blob_path(d)))
        .map_err(snap_err)
}

fn short(d: &Digest) -> &str {
    &d.encoded()[..12.min(d.encoded().len())]
}

/// What `hako save --format` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    DockerArchive,
    OciArchive,
    OciDir,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker-archive" => Ok(ExportFormat::DockerArchive),
            "oci-archive" => Ok(ExportFormat::OciArchive),
            "oci-dir" => Ok(ExportFormat::OciDir),
            other => Err(format!(
                "unknown format {other:?}: docker-archive, oci-archive or oci-dir"
            )),
        }
    }
}

/// An image to export and the names to give it there (RepoTags of a
/// docker-archive, ref.name annotations of an OCI layout).
pub struct ExportImage<'a> {
    pub record: &'a ImageRecord,
    pub names: Vec<String>,
}

/// Writes `images` to `dest` in `format`. An archive is written beside
/// `dest` and renamed over it when complete; a layout directory keeps its
/// other images.
pub fn save(
    store: &Store,
    images: &[ExportImage<'_>],
    format: ExportFormat,
    dest: &Path,
) -> Result<(), TransferError> {
    // Garbage collection must not take a blob while it is being copied.
    let _held = store.shared_lock().map_err(store_err("saving"))?;
    match format {
        ExportFormat::DockerArchive => save_docker(store, images, dest),
        ExportFormat::OciArchive => save_layout(store, images, LayoutWriter::archive(dest)?),
        ExportFormat::OciDir => save_layout(store, images, LayoutWriter::dir(dest)?),
    }
}

/// Writes `rec` to a transport destination (`hako push IMAGE oci:DIR:TAG`).
pub fn export(store: &Store, rec: &ImageRecord, dest: &ImageSource) -> Result<(), TransferError> {
    // An OCI layout names the image by the tag asked for, else the image's
    // own tag (skopeo's `oci:DIR:TAG`); a docker-archive by the full name.
    let own_tag = || {
        rec.names
            .first()
            .and_then(|n| Reference::parse(n).ok())
            .and_then(|r| r.tag)
            .into_iter()
            .collect::<Vec<_>>()
    };
    let (format, path, names) = match dest {
        ImageSource::Registry(r) => return Err(TransferError::Registry(r.to_string())),
        ImageSource::OciLayout { path, tag } => (
            ExportFormat::OciDir,
            path,
            tag.clone().map_or_else(own_tag, |t| vec![t]),
        ),
        ImageSource::OciArchive { path, tag } => (
            ExportFormat::OciArchive,
            path,
            tag.clone().map_or_else(own_tag, |t| vec![t]),
        ),
        ImageSource::DockerArchive { path, reference } => (
            ExportFormat::DockerArchive,
            path,
            match reference {
                Some(r) if !r.starts_with('@') => vec![r.clone()],
                _ => rec.names.clone(),
            },
        ),
    };
    save(store, &[ExportImage { record: rec, names }], format, path)
}

fn save_layout(
    store: &Store,
    images: &[ExportImage<'_>],
    mut w: LayoutWriter,
) -> Result<(), TransferError> {
    for img in images {
        let rec = img.record;
        let what = rec.id.to_string();
        let stored = store
            .read_blob(&rec.manifest_digest, manifest::MAX_JSON)
            .map_err(store_err(&what))?;
        let bytes = manifest::to_oci_manifest(&stored, &what).map_err(manifest_err(&what))?;
        let digest = if bytes == stored {
            rec.manifest_digest.clone()
        } else {
            Digest::sha256_of(&bytes)
        };
        w.put_file(&rec.id, &store.blob_path(&rec.id))?;
        for l in &rec.layers {
            if !store.has_blob(l) {
                return Err(TransferError::Store {
                    what: what.clone(),
                    source: StoreError::NotFound(l.to_string()),
                });
            }
            w.put_file(l, &store.blob_path(l))?;
        }
        w.put_bytes(&digest, &bytes)?;
        let platform = Platform::parse(&rec.platform).ok();
        w.add_manifest(
            layout::manifest_descriptor(&bytes, &digest, manifest::OCI_MANIFEST, platform),
            &img.names,
        );
    }
    Ok(w.finish()?)
}

fn save_docker(
    store: &Store,
    images: &[ExportImage<'_>],
    dest: &Path,
) -> Result<(), TransferError> {
    let mut tar = TarWriter::create(dest, 0)?;
    let mut written = std::collections::HashSet::new();
    let mut entries = Vec::new();
    for img in images {
        let rec = img.record;
        let what = rec.id.to_string();
        let mut layers = Vec::new();
        for (layer, diff_id) in rec.layers.iter().zip(&rec.diff_ids) {
            let name = format!("{}.tar", diff_id.encoded());
            if written.insert(diff_id.clone()) {
                let blob = store.open_blob(layer).map_err(store_err(&what))?;
                let plain = unpack::decompressed(io::BufReader::with_capacity(256 << 10, blob))
                    .map_err(|source| TransferError::ReadLayer {
                        what: what.clone(),
                        name: layer.to_string(),
                        source,
                    })?;
                let mut h = ReadErrorKept {
                    inner: HashingReader::new(plain, diff_id.algorithm()),
                    error: None,
                };
                if let Err(e) = tar.add_stream(&name, &mut h) {
                    // The layer's own read error says more than the
                    // archive's write error it became.
                    return Err(match h.error {
                        Some(source) => TransferError::ReadLayer {
                            what: what.clone(),
                            name: layer.to_string(),
                            source,
                        },
                        None => e.into(),
                    });
                }
                let got = h.inner.finish().0;
                if &got != diff_id {
                    return Err(TransferError::DiffId {
                        layer: layer.clone(),
                        expected: diff_id.clone(),
                        got,
                    });
                }
            }
            layers.push(name);
        }
        let config_name = format!("{}.json", rec.id.encoded());
        if written.insert(rec.id.clone()) {
            let config = store
                .read_blob(&rec.id, manifest::MAX_JSON)
                .map_err(store_err(&what))?;
            tar.add_bytes(&config_name, &config)?;
        }
        let tags: Vec<String> = img
            .names
            .iter()
            .filter_map(|n| Reference::parse(n).ok())
            .filter(|r| r.tag.is_some())
            .map(|r| r.familiar())
            .collect();
        entries.push(ArchiveImage {
            config: config_name,
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers,
        });
    }
    let json = serde_json::to_vec(&entries).map_err(|source| DockerArchiveError::Json {
        path: dest.display().to_string(),
        source,
    })?;
    tar.add_bytes(docker_archive::MANIFEST, &json)?;
    Ok(tar.finish()?)
}

/// A reader that keeps a copy of the first error it returned.
struct ReadErrorKept<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for ReadErrorKept<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}
