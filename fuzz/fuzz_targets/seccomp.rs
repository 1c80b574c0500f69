//! `linux.seccomp` JSON → `seccomp::compile` → `Filter::export_bpf`: the
//! filter is built and written out as BPF, never loaded (the check at the
//! end fails the run if this process ever got a seccomp filter).
#![no_main]

use hako_runtime::seccomp;
use libfuzzer_sys::fuzz_target;
use libseccomp::error::SeccompErrno;
use oci_spec::runtime::LinuxSeccomp;

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = serde_json::from_slice::<LinuxSeccomp>(data) {
        match seccomp::compile(&profile) {
            Ok(filter) => {
                let bpf = filter
                    .export_bpf()
                    .unwrap_or_else(|e| panic!("a compiled filter does not export: {e}"));
                // struct sock_filter is 8 bytes; even an empty profile has a
                // default-action return.
                assert!(
                    !bpf.is_empty() && bpf.len().is_multiple_of(8),
                    "exported BPF of {} bytes",
                    bpf.len()
                );
            }
            // libseccomp answers EACCES to a rule whose action is the
            // default one; compile() must skip those rules, not fail.
            Err(seccomp::SeccompError::Lib { what, source }) => assert_ne!(
                source.errno(),
                Some(SeccompErrno::EACCES),
                "{what}: a rule repeating the default action reached libseccomp"
            ),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments; it returns the
    // calling thread's seccomp mode (0: none).
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP) };
    assert_eq!(mode, 0, "the fuzz target must never load a filter");
});
