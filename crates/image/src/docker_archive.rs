//! `docker save`'s archive format (`docker-archive:PATH`): a tar holding
//! `manifest.json`, a list of images each with its config file, its names
//! (`RepoTags`) and its layer tars in order, uncompressed as docker and
//! skopeo write them (docker ≥ 25 puts them under `blobs/sha256/`, older
//! versions as `<id>/layer.tar`, linking shared ones).

use serde::{Deserialize, Serialize};

use crate::archive::{ArchiveError, ImageFiles};
use crate::manifest::MAX_JSON;
use crate::reference::Reference;

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum DockerArchiveError {
    #[error(transparent)]
    Files(#[from] ArchiveError),
    #[error("{path}: manifest.json is not valid: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: the archive holds no image")]
    Empty { path: String },
    #[error("{path}: no image named {wanted:?}; the archive has: {available}")]
    NoSuchImage {
        path: String,
        wanted: String,
        available: String,
    },
    #[error(
        "{path}: the archive holds {count} images; name one (docker-archive:PATH:NAME or :@INDEX)"
    )]
    Ambiguous { path: String, count: usize },
}

/// One image of manifest.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveImage {
    /// The config file's name in the archive.
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// The layer tars' names, bottom first.
    pub layers: Vec<String>,
}

impl ArchiveImage {
    /// Its names, normalised (`busybox:1` → `docker.io/library/busybox:1`);
    /// names that do not parse are dropped.
    pub fn names(&self) -> Vec<String> {
        self.repo_tags
            .iter()
            .flatten()
            .filter_map(|t| Reference::parse(t).ok())
            .map(|r| r.to_string())
            .collect()
    }
}

/// The images listed in the archive's manifest.json.
pub fn read_manifest(files: &ImageFiles) -> Result<Vec<ArchiveImage>, DockerArchiveError> {
    let data = files.read(MANIFEST, MAX_JSON)?;
    serde_json::from_slice(&data).map_err(|source| DockerArchiveError::Json {
        path: files.path().display().to_string(),
        source,
    })
}

/// The image `wanted` names (`NAME[:TAG]` or `@INDEX`), or the only one.
pub fn choose<'a>(
    files: &ImageFiles,
    images: &'a [ArchiveImage],
    wanted: Option<&str>,
) -> Result<&'a ArchiveImage, DockerArchiveError> {
    let path = files.path().display().to_string();
    match wanted {
        None => match images {
            [] => Err(DockerArchiveError::Empty { path }),
            [only] => Ok(only),
            many => Err(DockerArchiveError::Ambiguous {
                path,
                count: many.len(),
            }),
        },
        Some(w) => {
            let found = match w.strip_prefix('@') {
                Some(i) => i.parse::<usize>().ok().and_then(|i| images.get(i)),
                None => {
                    let want = Reference::parse(w).ok().map(|r| r.to_string());
                    images
                        .iter()
                        .find(|i| want.as_ref().is_some_and(|n| i.names().contains(n)))
                }
            };
            found.ok_or_else(|| DockerArchiveError::NoSuchImage {
                path,
                wanted: w.to_string(),
                available: images
                    .iter()
                    .enumerate()
                    .map(|(i, img)| {
                        let n = img.names();
                        if n.is_empty() {
                            format!("@{i}")
                        } else {
                            n.join(" ")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}
