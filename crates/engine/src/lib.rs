//! hako's engine: containers, volumes and pods on one node, with no
//! daemon. Each container has a monitor process (hako-monitor) that is its
//! parent, holds its stdio, writes its log and records its exit; every
//! `hako` command is a short-lived process that reads and writes the
//! state below and drives the OCI runtime through its command line.
//!
//! ```text
//! <root>/engine.db                 SQLite (hako-records): containers, names,
//!                                   volumes, pods (and its -wal, -shm)
//! <root>/containers/<id>/          the container's own files:
//!     bundle/config.json           its runtime config
//!     fs/{upper,work,merged}       its rootfs (overlay) or fs/rootfs (flat)
//!     hosts hostname resolv.conf   bound into /etc
//!     ctr.log                      its output, CRI log format
//! <root>/volumes/<name>/_data      named volumes
//! <runroot>/containers/<id>/       the monitor's run dir: monitor.pid,
//!                                  pid, attach, exit, started
//! <runroot>/runtime/               the OCI runtime's --root
//! <runroot>/locks/<id>             a flock per container (and per user
//!                                  network: network-hosts-<name>)
//! ```
//!
//! What is running is never recorded as a fact that could go stale: the
//! status is read from the run dir each time (the monitor alive, a
//! `started` mark, an `exit` record), so a `hako` or monitor killed at
//! any moment leaves state that `ps` reports truthfully and `rm` cleans.

pub mod container;
pub mod copy;
mod db;
pub mod etc_files;
pub mod net;
pub mod options;
mod peers;
pub mod pod;
pub mod runtime;
pub mod spec;
pub mod util;
pub mod volume;

pub use container::{
    ContainerRecord, Engine, EngineError, ExecCommand, ExecRequest, HostInfo, Status,
};
pub use db::{DbError, FindError};
pub use options::CreateOptions;
