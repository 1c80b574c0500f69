//! Builds the `hako-init` executable.
//!
//! hako-init is bind-mounted into arbitrary images (a busybox-static rootfs
//! has no libc at all), so it must be a fully static executable. It is a
//! `#![no_std]` program with raw syscalls and its own `_start`, which needs
//! `panic = "abort"`: a `no_std` executable compiled with `panic = "unwind"`
//! is rejected by stable rustc ("unwinding panics are not supported without
//! std", the `eh_personality` lang item). The workspace's dev profile
//! unwinds and cargo refuses a per-package `panic` override, and linking std
//! just to get that lang item drags in std's panic runtime, the unwinder and
//! libc. So cargo builds this package as a plain `no_std` library (which
//! needs neither lang item, and which clippy, rustfmt and the unit tests
//! see), and this script compiles the same `src/lib.rs` once more as the
//! executable, with `--cfg hako_init_exe` (which adds `_start`, the panic
//! handler and the C memory functions) and its own flags:
//! `-C panic=abort`, no start files, no libraries, `-static`.
//!
//! Nothing here is visible to the other crates: no RUSTFLAGS, no profile
//! changes. The result is `$OUT_DIR/hako-init` (exported to the library as
//! `HAKO_INIT_BINARY`) and a copy at `target/<profile>/hako-init`, beside
//! `hako` and `hako-runtime`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hako_init_exe)");
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let exe = out_dir.join("hako-init");
    compile_executable(&exe);
    println!("cargo::rustc-env=HAKO_INIT_BINARY={}", exe.display());

    // OUT_DIR is <target>/<profile>/build/hako-init-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .filter(|_| out_dir.ancestors().nth(2).and_then(Path::file_name) == Some("build".as_ref()));
    match profile_dir {
        Some(dir) => install(&exe, &dir.join("hako-init")),
        None => println!(
            "cargo::warning=unexpected OUT_DIR layout {}: hako-init left there",
            out_dir.display()
        ),
    }
}

fn compile_executable(exe: &Path) {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());

    let mut cmd = Command::new(rustc);
    cmd.arg("--edition=2021")
        .arg("--crate-name=hako_init")
        .arg("--crate-type=bin")
        .arg("--cfg=hako_init_exe")
        .arg(format!("--target={target}"))
        .args(["-C", "panic=abort"])
        // Always optimised: the program is a few hundred lines, and an
        // unoptimised one is several times larger for nothing.
        .args(["-C", "opt-level=s"])
        .args(["-C", "codegen-units=1"])
        .args(["-C", "lto=fat"])
        .args(["-C", "relocation-model=static"])
        .args(["-C", "link-arg=-nostartfiles"])
        .args(["-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static"])
        .args(["-C", "link-arg=-Wl,--build-id=none"])
        .args(["-D", "warnings"])
        .arg("-o")
        .arg(exe)
        .arg(manifest_dir.join("src/lib.rs"))
        .env("HAKO_INIT_BINARY", exe);
    // The code is compiled the same way in every profile, so what the dev
    // build links the release build links (a release-only
    // debug-assertions difference once let LLVM turn a loop into a call to
    // strlen there only). Symbols are kept outside release, for gdb.
    if release {
        cmd.args(["-C", "strip=symbols"]);
    }
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    let out = cmd
        .output()
        .expect("run rustc for the hako-init executable");
    if !out.status.success() {
        panic!(
            "compiling the hako-init executable failed ({}):\n{:?}\n{}{}",
            out.status,
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Copies `from` to `to` through a rename, so a running copy (text busy)
/// is replaced, not written into.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::rename(&tmp, to))
        .unwrap_or_else(|e| panic!("install {} as {}: {e}", from.display(), to.display()));
}
