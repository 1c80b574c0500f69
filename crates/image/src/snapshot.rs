//! Unpacked layers, each once, keyed by chain ID.
//!
//! `<root>/snapshots/<chain-id hex>/` holds one layer's tar applied alone,
//! its whiteouts as overlayfs whiteouts: an overlay mount with these
//! directories as lower dirs (top-most first) is the image's rootfs. A
//! layer is unpacked into `<root>/snapshots/tmp-*` and renamed to its
//! chain ID only once complete and verified, so nothing half-made is ever
//! used; a second process unpacking the same layer keeps the first one's.

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::unpack::{LayerStats, UnpackError};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
    #[error("layer {layer}: its content has diff ID {got}, the image config says {expected}")]
    DiffId {
        layer: Digest,
        expected: Digest,
        got: Digest,
    },
}

/// ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

pub struct Snapshotter {
    root: PathBuf,
}

impl Snapshotter {
    pub fn new(store_root: &Path) -> Snapshotter {
        Snapshotter {
            root: store_root.join("snapshots"),
        }
    }

    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.encoded())
    }

    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).is_dir()
    }

    /// Runs `unpack` on a fresh directory and publishes it as `chain_id`
    /// when it succeeds with `expected_diff_id`; removes it otherwise.
    pub fn add_layer(
        &self,
        chain_id: &Digest,
        layer: &Digest,
        expected_diff_id: &Digest,
        unpack: impl FnOnce(&Path) -> Result<LayerStats, UnpackError>,
    ) -> Result<(), SnapshotError> {
        if self.has_layer(chain_id) {
            return Ok(());
        }
        let tmp = self.root.join(format!(
            "tmp-{}-{}",
            std::process::id(),
            &chain_id.encoded()[..16]
        ));
        let io = |what| {
            let path = tmp.clone();
            move |source| SnapshotError::Io { path, what, source }
        };
        std::fs::create_dir_all(&tmp).map_err(io("creating"))?;
        let result = match unpack(&tmp) {
            Ok(stats) if &stats.diff_id == expected_diff_id => Ok(()),
            Ok(stats) => Err(SnapshotError::DiffId {
                layer: layer.clone(),
                expected: expected_diff_id.clone(),
                got: stats.diff_id,
            }),
            Err(source) => Err(SnapshotError::Unpack {
                layer: layer.clone(),
                source,
            }),
        };
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, self.layer_dir(chain_id)) {
            Ok(()) => Ok(()),
            // Someone else published it first: theirs is as good.
            Err(_) if self.has_layer(chain_id) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(io("publishing")(e))
            }
        }
    }

    /// Removes layers no chain in `keep` uses, and leftovers of failed
    /// unpacks; returns how many.
    pub fn prune(&self, keep: &std::collections::HashSet<String>) -> usize {
        let mut n = 0;
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) && std::fs::remove_dir_all(e.path()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_image_spec() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }
}
