//! The `bpf(2)` commands a cgroup device filter needs, as safe functions:
//! load a `BPF_PROG_TYPE_CGROUP_DEVICE` program, list the programs attached
//! to a cgroup, attach and detach, open a program by id and read its name.
//!
//! Each command gets its own `#[repr(C)]` struct with the layout of its
//! member of `union bpf_attr` (linux/bpf.h). The kernel accepts an attr
//! shorter than its own union and treats the missing tail as zero, so each
//! struct stops after the last field hako sets; padding is explicit and
//! zeroed.

use std::ffi::c_long;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::program::BpfInsn;

const BPF_PROG_LOAD: c_long = 5;
const BPF_PROG_ATTACH: c_long = 8;
const BPF_PROG_DETACH: c_long = 9;
const BPF_PROG_GET_FD_BY_ID: c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: c_long = 15;
const BPF_PROG_QUERY: c_long = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
/// `BPF_OBJ_NAME_LEN`: program names are at most 15 bytes plus a NUL.
const NAME_LEN: usize = 16;

/// A failed `BPF_PROG_LOAD`, with what the verifier said.
#[derive(Debug)]
pub struct LoadError {
    pub source: io::Error,
    /// The verifier log (empty when the failure was not the verifier's).
    pub log: String,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C, align(8))]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH` and `BPF_PROG_DETACH`, up to
/// `replace_bpf_fd`.
#[repr(C, align(8))]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_PROG_QUERY`, up to `prog_cnt`.
#[repr(C, align(8))]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_PROG_GET_FD_BY_ID`.
#[repr(C, align(8))]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C, align(8))]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_prog_info` up to `name`; the kernel fills what fits.
#[repr(C, align(8))]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; NAME_LEN],
}

/// Calls `bpf(cmd, attr, size_of::<A>())`.
///
/// # Safety
/// `A` must be the layout the kernel expects for `cmd`, and every pointer
/// stored in `attr` must be valid for what the kernel does with it during
/// the call (read `insns`, fill `log_buf` or `prog_ids` up to the sizes
/// given next to them).
unsafe fn bpf<A>(cmd: c_long, attr: &mut A) -> io::Result<c_long> {
    let size = std::mem::size_of::<A>();
    // SAFETY: `attr` points at `size` initialised bytes; the caller vouches
    // for the layout and for the pointers inside it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // File descriptors are never negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

fn owned_fd(ret: c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new descriptor and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `insns` as a cgroup device program named `name` (at most 15 bytes
/// of `[A-Za-z0-9_.]`). On failure the load is repeated with the verifier
/// log on, so the error says why the kernel refused the program.
pub fn load_device_program(insns: &[BpfInsn], name: &str) -> Result<OwnedFd, LoadError> {
    let license = c"Apache";
    let mut prog_name = [0u8; NAME_LEN];
    let len = name.len().min(NAME_LEN - 1);
    prog_name[..len].copy_from_slice(&name.as_bytes()[..len]);
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| LoadError {
        source: io::Error::from_raw_os_error(libc::E2BIG),
        log: String::new(),
    })?;
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: u32::try_from(log.len()).unwrap_or(0),
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name,
            prog_ifindex: 0,
            expected_attach_type: BPF_CGROUP_DEVICE,
        };
        // SAFETY: ProgLoadAttr is the BPF_PROG_LOAD layout; `insns` holds
        // `insn_cnt` instructions, `license` is NUL-terminated and `log`
        // has `log_size` writable bytes, all alive for the call.
        unsafe { bpf(BPF_PROG_LOAD, &mut attr) }.and_then(owned_fd)
    };
    // Without a log first: a log too small for a long verification
    // fails the load on older kernels (ENOSPC).
    load(&mut []).or_else(|_| {
        let mut log = vec![0u8; 256 * 1024];
        load(&mut log).map_err(|source| {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            LoadError {
                source,
                log: String::from_utf8_lossy(&log[..end]).trim_end().to_string(),
            }
        })
    })
}

/// The ids of the device programs attached directly to the cgroup `cgroup`
/// (an open cgroup2 directory).
pub fn query_device_programs(cgroup: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut capacity = 64usize;
    loop {
        let mut ids = vec![0u32; capacity];
        let mut attr = QueryAttr {
            target_fd: fd_u32(cgroup),
            attach_type: BPF_CGROUP_DEVICE,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(capacity).unwrap_or(u32::MAX),
            _pad: 0,
        };
        // SAFETY: QueryAttr is the BPF_PROG_QUERY layout and `prog_ids`
        // has room for `prog_cnt` ids.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // The kernel reports how many there are.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && capacity < 1 << 16 => {
                capacity = (attr.prog_cnt as usize).max(capacity * 2);
            }
            Err(e) => return Err(e),
        }
    }
}

fn attach_attr(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, flags: u32) -> AttachAttr {
    AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        replace_bpf_fd: 0,
        _pad: 0,
    }
}

/// Attaches `prog` to `cgroup` next to the programs already there
/// (`BPF_F_ALLOW_MULTI`: a device access must pass all of them).
pub fn attach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = attach_attr(cgroup, prog, BPF_F_ALLOW_MULTI);
    // SAFETY: AttachAttr is the BPF_PROG_ATTACH layout; it holds no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

/// Detaches `prog` from `cgroup`.
pub fn detach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = attach_attr(cgroup, prog, 0);
    // SAFETY: AttachAttr is the BPF_PROG_DETACH layout; it holds no pointers.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// Opens the program with `id`.
pub fn program_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
        _pad: 0,
    };
    // SAFETY: GetFdByIdAttr is the BPF_PROG_GET_FD_BY_ID layout; no pointers.
    unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.and_then(owned_fd)
}

/// The name `prog` was loaded with.
pub fn program_name(prog: BorrowedFd<'_>) -> io::Result<String> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(prog),
        info_len: u32::try_from(std::mem::size_of::<ProgInfo>()).unwrap_or(0),
        info: &mut info as *mut ProgInfo as u64,
    };
    // SAFETY: InfoAttr is the BPF_OBJ_GET_INFO_BY_FD layout and `info`
    // points at `info_len` writable bytes; its zero counts and pointers ask
    // for no instruction or map arrays.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let end = info.name.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_linux_bpf_h() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(offset_of!(QueryAttr, prog_ids), 16);
        assert_eq!(offset_of!(QueryAttr, prog_cnt), 24);
        assert_eq!(offset_of!(AttachAttr, replace_bpf_fd), 16);
        assert_eq!(offset_of!(InfoAttr, info), 8);
        assert_eq!(offset_of!(ProgInfo, load_time), 40);
        assert_eq!(offset_of!(ProgInfo, name), 64);
        assert_eq!(size_of::<BpfInsn>(), 8);
        assert_eq!(align_of::<ProgLoadAttr>(), 8);
    }

    /// A refused program's error carries the verifier's explanation
    /// (needs root; skipped otherwise).
    #[test]
    fn verifier_log_reaches_the_error() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        // Returns r0 without setting it.
        let bad = [BpfInsn {
            code: super::super::program::EXIT,
            regs: 0,
            off: 0,
            imm: 0,
        }];
        let err = load_device_program(&bad, "hako_test").expect_err("verifier refuses");
        assert_eq!(err.source.raw_os_error(), Some(libc::EACCES), "{err:?}");
        assert!(err.log.contains("R0"), "log: {:?}", err.log);
    }
}
