//! hako's OCI runtime: turns a bundle (rootfs + config.json, runtime-spec
//! 1.x) into an isolated container and manages its lifecycle.
//!
//! Module map, bottom-up (a module uses only those above it):
//! - [`log`], [`sys`]: logging and raw syscalls with safe wrappers.
//! - [`sealed_exe`]: re-executing from a sealed copy of the binary.
//! - [`spec`]: loading and validating config.json.
//! - [`state`]: container state on disk, locks, status.
//! - [`signal`], [`sync`], [`console`], [`hooks`], [`mount_options`].
//! - [`namespaces`], [`idmap`], [`rootfs`], [`process`], [`seccomp`]: the
//!   pieces of isolation; [`seccomp_agent`] hands seccomp listeners on.
//! - [`init`]: the container's init during create (child side).
//! - [`container`]: create, start, run, kill, delete, state, list (runtime side).
//! - [`exec`]: a new process in a running container.
//! - [`defaults`]: the config `spec` writes and the `features` document.
//! - [`hardened`]: the hardened default profile (capabilities, seccomp).

pub mod log;
pub mod sys;

pub mod sealed_exe;

pub mod spec;
pub mod state;

pub mod console;
pub mod hooks;
pub mod mount_options;
pub mod signal;
pub mod sync;

pub mod idmap;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_agent;
pub mod seccomp_cache;

pub mod init;

pub mod container;
pub mod exec;
pub mod terminal;

pub mod defaults;
pub mod hardened;

pub use container::{CreateOptions, OciState, Runtime, RuntimeError, OCI_VERSION};
pub use exec::ExecOptions;
