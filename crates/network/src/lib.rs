//! Container networking for hako through the standard CNI plugins.
//!
//! The engine's calls, in a container's life (see README.md for the state
//! on disk and the reasons behind it):
//!
//! ```text
//! let store = NetworkStore::new("/var/lib/hako", "/run/hako");
//! store.default_network()?;                       // `--network bridge`
//! let path = store.netns_path(&container_id);     // <runroot>/netns/<id>
//! Netns::create(&path)?;                          // lo is up
//! let ports = parse_port_spec("8080:80")?;        // each `-p`
//! let res = store.attach(&path, &container_id, &[NetworkAttachment { ports, ..
//!              NetworkAttachment::new("hako", "eth0") }])?;
//! // OCI config: linux.namespaces += { type: network, path }
//! // /etc/resolv.conf: dns::host_resolv_conf()?.render()
//! // /etc/hosts: dns::hosts_file(hostname, &res.networks, &[])
//! … container runs …
//! store.detach(&path, &container_id, &attachments)?; // or detach_all
//! Netns::remove(&path)?;
//! ```
//!
//! `--network none` is `Netns::create` without attach (loopback only);
//! `--network host` is no netns at all. A pod creates one netns, attaches
//! it once under the pod's id, and gives its path to every member.

pub mod attach;
pub mod cache;
mod chain;
pub mod claims;
pub mod cni;
pub mod conflist;
pub mod dns;
mod fsutil;
mod masq;
pub mod netns;
pub mod ports;
pub mod store;
pub mod subnet;

pub use attach::{AttachError, AttachResult, AttachedNetwork, NetworkAttachment};
pub use cache::AttachmentRecord;
pub use cni::{CniError, CniPath};
pub use conflist::Network;
pub use netns::{Netns, NetnsError};
pub use ports::{parse_port_spec, PortMapping, PortSpecError, Protocol};
pub use store::{NetworkSpec, NetworkStore, StoreError};
pub use subnet::{Ipv4Net, SubnetError};
