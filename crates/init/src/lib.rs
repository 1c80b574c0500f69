//! hako-init: the tiny init of `hako run --init` and the infra (pause)
//! process of hako pods.
//!
//! The engine bind-mounts the executable read-only into a container and
//! makes it process 1. Images may have no libc at all, so it is a static,
//! `#![no_std]` program with raw syscalls (see build.rs for how it is
//! built, and [`run`] for what it does):
//!
//! ```text
//! hako-init [-g] [--] COMMAND [ARG...]   run COMMAND, forward signals, reap
//! hako-init --pause                      hold the namespaces, reap
//! hako-init --version | --help
//! ```
//!
//! As a library, this crate offers the path of the executable built with
//! it ([`BUILT_BINARY`]); the same file is copied to
//! `target/<profile>/hako-init`.

#![cfg_attr(not(test), no_std)]
#![cfg_attr(hako_init_exe, no_main)]

pub mod cli;
#[doc(hidden)]
pub mod entry;
mod message;
#[doc(hidden)]
pub mod run;
mod startup;
pub mod sys;

/// Where build.rs put the executable compiled from this crate.
pub const BUILT_BINARY: &str = env!("HAKO_INIT_BINARY");
