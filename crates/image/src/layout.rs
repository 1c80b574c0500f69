//! OCI image layouts (image-spec's `oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), in a directory (`oci:PATH[:REF]`) or a tar of one
//! (`oci-archive:PATH[:REF]`): finding an image by its reference name, and
//! writing images into one.
//!
//! An image's name in a layout is the `org.opencontainers.image.ref.name`
//! annotation of its entry in index.json. skopeo and umoci write a bare
//! tag there (`latest`); podman and containerd write full names
//! (`docker.io/library/busybox:latest`, and containerd also
//! `io.containerd.image.name`). hako reads all of them and writes the tag
//! the user asked for (`oci:DIR:TAG`) or the image's full names (`hako
//! save --format oci-archive`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::{ArchiveError, ImageFiles, TarWriter};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, MAX_JSON, OCI_INDEX};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Files(#[from] ArchiveError),
    #[error("{}: not an OCI image layout (no oci-layout file)", .0.display())]
    NotALayout(PathBuf),
    #[error("{}: unsupported image layout version {version:?}", path.display())]
    Version { path: PathBuf, version: String },
    #[error("{}: {what} is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        what: String,
        source: serde_json::Error,
    },
    #[error("{}: no image named {wanted:?}; the layout has: {available}", path.display())]
    NoSuchImage {
        path: PathBuf,
        wanted: String,
        available: String,
    },
    #[error("{}: the layout holds {count} images ({available}): name one", path.display())]
    Ambiguous {
        path: PathBuf,
        count: usize,
        available: String,
    },
    #[error("{}: the layout holds no image", .0.display())]
    Empty(PathBuf),
    #[error("{}: blob {digest}: {problem}", path.display())]
    Blob {
        path: PathBuf,
        digest: Digest,
        problem: String,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The path of a blob inside a layout.
pub fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.encoded())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutMarker {
    image_layout_version: String,
}

/// The entries of the layout's index.json (checking its oci-layout).
pub fn read_index(files: &ImageFiles) -> Result<Vec<Descriptor>, LayoutError> {
    let path = files.path().to_path_buf();
    let marker = match files.read(LAYOUT_FILE, 4096) {
        Ok(m) => m,
        Err(ArchiveError::Missing { .. }) => return Err(LayoutError::NotALayout(path)),
        Err(e) => return Err(e.into()),
    };
    let marker: LayoutMarker =
        serde_json::from_slice(&marker).map_err(|source| LayoutError::Json {
            path: path.clone(),
            what: LAYOUT_FILE.into(),
            source,
        })?;
    if !marker.image_layout_version.starts_with("1.") {
        return Err(LayoutError::Version {
            path,
            version: marker.image_layout_version,
        });
    }
    let index = files.read("index.json", MAX_JSON)?;
    let index: Index = serde_json::from_slice(&index).map_err(|source| LayoutError::Json {
        path,
        what: "index.json".into(),
        source,
    })?;
    Ok(index.manifests)
}

/// The name an entry carries, if any: its ref.name (or containerd's).
pub fn entry_name(d: &Descriptor) -> Option<&str> {
    let a = d.annotations.as_ref()?;
    a.get(REF_NAME)
        .or_else(|| a.get(CONTAINERD_NAME))
        .map(String::as_str)
}

/// Whether an entry answers to `wanted`: its ref.name or containerd name,
/// equal as written or as normalised image references.
fn answers_to(d: &Descriptor, wanted: &str) -> bool {
    let Some(a) = d.annotations.as_ref() else {
        return false;
    };
    let norm = |s: &str| {
        crate::reference::Reference::parse(s)
            .ok()
            .map(|r| r.to_string())
    };
    let wanted_norm = norm(wanted);
    [a.get(REF_NAME), a.get(CONTAINERD_NAME)]
        .into_iter()
        .flatten()
        .any(|n| n == wanted || (n.contains('/') && norm(n).is_some() && norm(n) == wanted_norm))
}

/// The entry for `wanted` (a ref name), or the only entry when None.
pub fn choose<'a>(
    files: &ImageFiles,
    entries: &'a [Descriptor],
    wanted: Option<&str>,
) -> Result<&'a Descriptor, LayoutError> {
    let path = files.path().to_path_buf();
    let available = || {
        let names: Vec<String> = entries
            .iter()
            .map(|d| entry_name(d).map_or_else(|| d.digest.to_string(), str::to_string))
            .collect();
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    };
    match wanted {
        Some(w) => {
            // A digest names a manifest directly.
            if let Ok(d) = w.parse::<Digest>() {
                if let Some(e) = entries.iter().find(|e| e.digest == d) {
                    return Ok(e);
                }
            }
            entries
                .iter()
                .rev()
                .find(|e| answers_to(e, w))
                .ok_or_else(|| LayoutError::NoSuchImage {
                    path,
                    wanted: w.to_string(),
                    available: available(),
                })
        }
        None => match entries {
            [] => Err(LayoutError::Empty(path)),
            [only] => Ok(only),
            many => Err(LayoutError::Ambiguous {
                path,
                count: many.len(),
                available: available(),
            }),
        },
    }
}

/// Reads blob `d` (at most `limit` bytes), checking its size and digest.
pub fn read_blob(files: &ImageFiles, d: &Descriptor, limit: u64) -> Result<Vec<u8>, LayoutError> {
    let bad = |problem: String| LayoutError::Blob {
        path: files.path().to_path_buf(),
        digest: d.digest.clone(),
        problem,
    };
    if d.size > limit {
        return Err(bad(format!(
            "{} bytes is more than hako reads ({limit})",
            d.size
        )));
    }
    let data = files.read(&blob_name(&d.digest), limit)?;
    if data.len() as u64 != d.size {
        return Err(bad(format!(
            "{} bytes, the descriptor says {}",
            data.len(),
            d.size
        )));
    }
    let got = d.digest.of_same_kind(&data);
    if got != d.digest {
        return Err(bad(format!("content has digest {got}")));
    }
    Ok(data)
}

/// Where a layout is written.
enum Target {
    /// A directory: blobs go in as they come (each by rename, skipped if
    /// present), index.json is replaced last.
    Dir(PathBuf),
    /// An archive, renamed into place by [`LayoutWriter::finish`].
    Archive {
        tar: TarWriter,
        written: std::collections::HashSet<Digest>,
    },
}

/// Writes images into an OCI layout.
pub struct LayoutWriter {
    target: Target,
    entries: Vec<Descriptor>,
}

impl LayoutWriter {
    /// A layout directory at `path` (created if missing; an existing
    /// layout keeps its other images).
    pub fn dir(path: &Path) -> Result<LayoutWriter, LayoutError> {
        if path.exists() && !path.join(LAYOUT_FILE).exists() {
            let non_empty = std::fs::read_dir(path)
                .map_err(io("reading", path))?
                .next()
                .is_some();
            if non_empty {
                return Err(LayoutError::NotALayout(path.to_path_buf()));
            }
        }
        std::fs::create_dir_all(path).map_err(io("creating", path))?;
        let entries = if path.join("index.json").exists() {
            read_index(&ImageFiles::dir(path)?)?
        } else {
            Vec::new()
        };
        write_file(
            &path.join(LAYOUT_FILE),
            format!(r#"{{"imageLayoutVersion":"{LAYOUT_VERSION}"}}"#).as_bytes(),
        )?;
        Ok(LayoutWriter {
            target: Target::Dir(path.to_path_buf()),
            entries,
        })
    }

    /// A new archive at `path` (replaced on finish).
    pub fn archive(path: &Path) -> Result<LayoutWriter, LayoutError> {
        let mut tar = TarWriter::create(path, 0)?;
        tar.add_bytes(
            LAYOUT_FILE,
            format!(r#"{{"imageLayoutVersion":"{LAYOUT_VERSION}"}}"#).as_bytes(),
        )?;
        tar.add_dir("blobs")?;
        tar.add_dir("blobs/sha256")?;
        Ok(LayoutWriter {
            target: Target::Archive {
                tar,
                written: Default::default(),
            },
            entries: Vec::new(),
        })
    }

    /// Adds blob `d` with `data`.
    pub fn put_bytes(&mut self, d: &Digest, data: &[u8]) -> Result<(), LayoutError> {
        match &mut self.target {
            Target::Dir(root) => {
                let dest = root.join(blob_name(d));
                if !dest.exists() {
                    write_file(&dest, data)?;
                }
                Ok(())
            }
            Target::Archive { tar, written } => {
                if written.insert(d.clone()) {
                    tar.add_bytes(&blob_name(d), data)?;
                }
                Ok(())
            }
        }
    }

    /// Adds blob `d` from the file `src` (a verified blob of the store).
    pub fn put_file(&mut self, d: &Digest, src: &Path) -> Result<(), LayoutError> {
        match &mut self.target {
            Target::Dir(root) => {
                let dest = root.join(blob_name(d));
                if dest.exists() {
                    return Ok(());
                }
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                let tmp = temp_beside(&dest);
                let result = (|| {
                    std::fs::copy(src, &tmp).map_err(io("copying to", &tmp))?;
                    std::fs::File::open(&tmp)
                        .and_then(|f| f.sync_all())
                        .map_err(io("syncing", &tmp))?;
                    std::fs::rename(&tmp, &dest).map_err(io("renaming into place", &dest))
                })();
                if result.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                result
            }
            Target::Archive { tar, written } => {
                if written.insert(d.clone()) {
                    let mut f = std::fs::File::open(src).map_err(io("opening", src))?;
                    tar.add_stream(&blob_name(d), &mut f)?;
                }
                Ok(())
            }
        }
    }

    /// Lists manifest `d` in index.json under `names` (ref.name; an entry
    /// already there with one of them loses it). No name: listed unnamed.
    pub fn add_manifest(&mut self, d: Descriptor, names: &[String]) {
        // A name moves to the new manifest (as skopeo does): the entry that
        // had it goes.
        self.entries.retain(|e| {
            e.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_none_or(|n| !names.contains(n))
        });
        if names.is_empty() {
            self.entries.push(d);
            return;
        }
        for n in names {
            let mut e = d.clone();
            let mut a = e.annotations.take().unwrap_or_default();
            a.insert(REF_NAME.to_string(), n.clone());
            e.annotations = Some(a);
            self.entries.push(e);
        }
    }

    /// Writes index.json; the archive is renamed into place.
    pub fn finish(self) -> Result<(), LayoutError> {
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: self.entries,
            annotations: None,
        };
        let json = serde_json::to_vec(&index).map_err(|source| LayoutError::Json {
            path: PathBuf::from("index.json"),
            what: "index.json".into(),
            source,
        })?;
        match self.target {
            Target::Dir(root) => write_file(&root.join("index.json"), &json),
            Target::Archive { mut tar, .. } => {
                tar.add_bytes("index.json", &json)?;
                Ok(tar.finish()?)
            }
        }
    }
}

/// An I/O error on `path` while doing `what`.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError {
    let path = path.to_path_buf();
    move |source| LayoutError::Io { what, path, source }
}

fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        crate::store::unique()
    ))
}

/// Writes `data` to `dest` through a synced temporary file and a rename.
fn write_file(dest: &Path, data: &[u8]) -> Result<(), LayoutError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let tmp = temp_beside(dest);
    let result = (|| {
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.write_all(data).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        std::fs::rename(&tmp, dest).map_err(io("renaming into place", dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A descriptor of a manifest, for index.json.
pub fn manifest_descriptor(
    bytes: &[u8],
    digest: &Digest,
    media_type: &str,
    platform: Option<manifest::Platform>,
) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        platform,
        annotations: None,
    }
}
