//! Images: from a reference to a runnable bundle.
//!
//! Data flows one way through the modules, each of which depends only on
//! the ones above it in this list:
//!
//! - [`digest`]: content digests (sha256, sha512), parsing and streaming
//!   verification.
//! - [`reference`]: image references and transports as skopeo spells them
//!   (`busybox` → `docker.io/library/busybox:latest`, `oci:PATH[:TAG]`, …).
//! - [`manifest`]: OCI and Docker schema 2 manifests, indexes and manifest
//!   lists; platform selection.
//! - [`store`]: the content store (blobs written atomically, verified before
//!   they become visible) and image metadata in an embedded database.
//! - [`registries_conf`]: registries.conf(5): per-registry settings and
//!   mirrors.
//! - [`registry`]: the distribution-spec client (auth, retries, resume,
//!   mirrors).
//! - [`unpack`]: applying layer tars to a directory, every path kept inside.
//! - [`snapshot`]: unpacked layers keyed by chain ID, overlayfs mounts or a
//!   flattened copy.
//! - [`bundle`]: image config → runtime `config.json` and rootfs.
//! - [`archive`]: tar archives read by name (never extracted) and written
//!   in one pass; an image's files in a directory or an archive.
//! - [`layout`], [`docker_archive`]: OCI image layouts and `docker save`'s
//!   format.
//! - [`pull`]: the pipeline that ties them together for registries;
//!   [`transfer`]: the same for layouts and archives (pull, load, push,
//!   save).

pub mod archive;
pub mod bundle;
pub mod digest;
pub mod docker_archive;
pub mod layout;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod registries_conf;
pub mod registry;
pub mod snapshot;
pub mod store;
mod sys;
pub mod transfer;
pub mod unpack;

/// A debug line on stderr when HAKO_DEBUG is set.
pub(crate) fn debug(msg: &str) {
    if std::env::var_os("HAKO_DEBUG").is_some() {
        eprintln!("hako: debug: {msg}");
    }
}

/// Removes `path` recursively, never following a symlink and never
/// crossing into another mount (EBUSY instead); a missing path is fine.
pub fn remove_tree(path: &std::path::Path) -> std::io::Result<()> {
    sys::remove_tree(path)
}
