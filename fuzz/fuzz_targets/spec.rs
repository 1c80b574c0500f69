//! config.json bytes → `spec::parse_spec` (serde and every check `create`
//! makes before it touches the host, except the rootfs lookup), then the
//! pure interpretations `create` makes of a config that passed: the
//! namespace plan, each mount's options, the /dev bind check and the rootfs
//! propagation. Nothing here writes to the file system.
#![no_main]

use std::path::Path;

use hako_runtime::mount_options::{rootfs_propagation, MountOptions};
use hako_runtime::namespaces::Plan;
use hako_runtime::{rootfs, spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let spec = match spec::parse_spec(data, Path::new("config.json")) {
        Ok(spec) => spec,
        Err(e) => {
            // The messages quote the input; building them must not panic.
            let _ = e.to_string();
            return;
        }
    };
    let linux = spec.linux().as_ref();
    if let Some(namespaces) = linux.and_then(|l| l.namespaces().as_deref()) {
        let _ = Plan::new(namespaces);
    }
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    for m in mounts {
        let _ = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
    }
    let _ = rootfs::dev_is_bind_mounted(mounts);
    // validate() accepts exactly the modes the rootfs code can apply.
    if let Some(mode) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        assert!(
            mode.is_empty() || rootfs_propagation(mode).is_some(),
            "rootfsPropagation {mode:?} passed validation but cannot be applied"
        );
    }
});
