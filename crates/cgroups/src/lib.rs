//! cgroup management for hako: one interface over cgroup v1, unified v2 and
//! hybrid hosts (v1 controllers plus a cgroup2 mount, as on Debian's older
//! defaults).
//!
//! The layout is detected at run time from `/proc/self/mountinfo`
//! ([`Layout::detect`]). A container's cgroup is a [`Cgroup`]: the set of
//! directories it owns, one per mounted hierarchy. Creating one, placing a
//! process in it, applying `linux.resources` and removing it are the only
//! operations the runtime needs; richer control (pause, update, events) builds
//! on the same type.
//!
//! Module map (each imports only modules above it in this list):
//! - [`systemd::dbus`]: the D-Bus wire protocol (imports nothing here).
//! - [`error`]: the error type, naming the file or directory involved.
//! - [`layout`]: which hierarchies are mounted where.
//! - [`fs`]: small file helpers for cgroupfs writes.
//! - [`systemd`]: the systemd driver's unit names and manager calls, over
//!   a small D-Bus client of its own ([`systemd::dbus`]).
//! - [`cgroup`]: the [`Cgroup`] type: create, place, freeze, remove.
//! - [`devices`]: device rules, enforced by the v1 devices controller or an
//!   eBPF program on cgroup2 (compiler in [`devices::program`]).
//! - [`resources`]: translation of OCI `linux.resources` into file writes.
//! - [`stats`]: usage statistics (what `events --stats` prints).

pub mod cgroup;
pub mod devices;
pub mod error;
pub mod fs;
pub mod layout;
pub mod resources;
pub mod stats;
pub mod systemd;

pub use cgroup::{Cgroup, CgroupPath};
pub use error::CgroupError;
pub use layout::{Hierarchy, Layout, Mode};
