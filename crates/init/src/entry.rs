//! What the static executable needs besides `main`: `_start`, the panic
//! handler and the C functions (mem*, bcmp, strlen) that core and LLVM
//! emit calls to. Their symbols are exported only in the executable build
//! (`--cfg hako_init_exe`, see build.rs); in the library build (which
//! clippy and the tests see) they are ordinary functions, so a crate
//! linking the library gets no `memcpy` or `_start` of ours.

use crate::message::Message;
use crate::startup::{Args, Env};
use crate::sys;

// The kernel starts us with the stack pointer at argc, followed by the
// argv pointers, NULL, the envp pointers, NULL, and the auxiliary vector.
#[cfg(all(hako_init_exe, target_arch = "x86_64"))]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start,
);

#[cfg(all(hako_init_exe, target_arch = "aarch64"))]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "mov x0, sp",
    "bl {start}",
    "brk #0",
    start = sym start,
);

/// The Rust side of `_start`.
///
/// # Safety
/// `sp` must be the initial stack pointer the kernel gave the process.
pub unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack holds argc, then argc argv
    // pointers and a NULL, then the envp pointers and a NULL; the strings
    // live (unchanged by us) until the process ends.
    let (args, env) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        (
            Args::from_raw(argc, argv),
            Env::from_raw(argv.add(argc + 1)),
        )
    };
    sys::exit(crate::run::main(args, env))
}

/// There is no unwinding (panic=abort) and nobody to unwind to: say where
/// and exit with hako-init's own failure status.
#[cfg_attr(hako_init_exe, panic_handler)]
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut m = Message::new();
    m.push(b"internal error");
    if let Some(loc) = info.location() {
        m.push(b" at ")
            .push_str(loc.file())
            .push(b":")
            .push_int(loc.line().into());
    }
    m.print();
    sys::exit(crate::run::EXIT_INIT_FAILED)
}

// The loops below use volatile accesses so that LLVM cannot recognise them
// as memcpy/memset idioms and compile them into calls to themselves. The
// buffers hako-init copies are a few hundred bytes: speed is irrelevant.

/// # Safety
/// As C's `memcpy`: `src` and `dst` valid for `n` bytes, not overlapping.
#[cfg_attr(hako_init_exe, no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: i < n, within both buffers.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
    dst
}

/// # Safety
/// As C's `memmove`: `src` and `dst` valid for `n` bytes.
#[cfg_attr(hako_init_exe, no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) < (src as usize) {
        for i in 0..n {
            // SAFETY: i < n; going up never overwrites an unread byte.
            unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        }
    } else {
        for i in (0..n).rev() {
            // SAFETY: i < n; going down never overwrites an unread byte.
            unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        }
    }
    dst
}

/// # Safety
/// As C's `memset`: `dst` valid for `n` bytes.
#[cfg_attr(hako_init_exe, no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: i < n, within the buffer.
        unsafe { dst.add(i).write_volatile(c as u8) };
    }
    dst
}

/// # Safety
/// As C's `memcmp`: `a` and `b` valid for `n` bytes.
#[cfg_attr(hako_init_exe, no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n, within both buffers.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As `memcmp`.
#[cfg_attr(hako_init_exe, no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// LLVM recognises a NUL-scanning loop (`startup::c_str`) as `strlen`.
///
/// # Safety
/// As C's `strlen`: `s` points to a NUL-terminated string.
#[cfg_attr(hako_init_exe, no_mangle)]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: every byte up to the NUL is part of the string.
    while unsafe { s.add(n).read_volatile() } != 0 {
        n += 1;
    }
    n
}
