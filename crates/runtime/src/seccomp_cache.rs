//! Seccomp programs: compiled once per profile, cached, loaded raw.
//!
//! libseccomp needs about 5 ms per architecture to turn a Docker-sized
//! profile (~370 syscalls) into BPF; with the default profile's three x86
//! architectures that was a third of a container start, on every `run` and
//! `exec`. The program depends only on the profile, libseccomp and the
//! kernel, so the runtime compiles a profile before it clones the
//! container's process, keeps the program under its state root
//! (`<root>/@seccomp`, a name no container ID can take), and the container
//! process loads the bytes with seccomp(2) itself.
//!
//! A cache file holds the full key (libseccomp's version, the kernel's
//! release and machine, the profile's JSON) and the program, each with its
//! length; it is used only when the key matches byte for byte, the lengths
//! add up exactly, and the file belongs to us and is writable by no one
//! else. Files are written under a temporary name, synced and renamed, so a
//! concurrent runtime never reads half a program. A cache that cannot be
//! read or written only costs the compile.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag};

use crate::seccomp::SeccompError;

/// The cache directory's name under the state root: '@' is not allowed in
/// container IDs, so it never meets a container's directory.
pub const CACHE_DIR: &str = "@seccomp";

const MAGIC: &[u8; 8] = b"hakobpf1";

/// A compiled seccomp program, ready for seccomp(SECCOMP_SET_MODE_FILTER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Classic BPF, 8 bytes per `sock_filter` instruction.
    bpf: Vec<u8>,
    /// SECCOMP_FILTER_FLAG_* from the profile's `flags`.
    flags: libc::c_ulong,
    /// Some rule uses SCMP_ACT_NOTIFY: loading creates a listener.
    notify: bool,
}

impl Program {
    /// The program for `profile`: from the cache in `cache_dir` when there
    /// is a valid entry, else compiled now and cached (`cache_dir` None:
    /// compiled, not cached).
    pub fn for_profile(
        profile: &LinuxSeccomp,
        cache_dir: Option<&Path>,
    ) -> Result<Program, SeccompError> {
        // A cached program was compiled from this very profile (it is the
        // key), so it passed compile's checks; a new one is checked there.
        let notify = crate::seccomp::uses_notify(profile);
        let flags = flags_of(profile, notify);
        let key = cache_key(profile);
        let path = cache_dir.map(|d| d.join(file_name(&key)));
        if let Some(bpf) = path.as_deref().and_then(|p| read_cached(p, &key)) {
            return Ok(Program { bpf, flags, notify });
        }
        let bpf = crate::seccomp::compile(profile)?.export_bpf()?;
        if let (Some(dir), Some(path)) = (cache_dir, &path) {
            if let Err(e) = write_cached(dir, path, &key, &bpf) {
                crate::debug!("seccomp: not caching the program in {}: {e}", dir.display());
            }
        }
        Ok(Program { bpf, flags, notify })
    }

    /// True when loading creates a listener (SCMP_ACT_NOTIFY).
    pub fn uses_notify(&self) -> bool {
        self.notify
    }

    /// Loads the program into the calling thread (every thread with TSYNC).
    /// Without no_new_privs this needs CAP_SYS_ADMIN. For a program that
    /// notifies, returns the new listener (close-on-exec) and makes no
    /// other syscall and no allocation after the load: until the listener
    /// reaches an agent, a notified syscall would wait forever.
    pub fn load(&self) -> Result<Option<OwnedFd>, SeccompError> {
        let mut flags = self.flags;
        if self.notify {
            flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
            if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
                // With both, the return value is the listener, and a thread
                // that cannot be synchronised is reported as ESRCH.
                flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            }
        }
        let len = libc::c_ushort::try_from(self.bpf.len() / 8).map_err(|_| {
            SeccompError::Invalid(format!(
                "the compiled program has {} instructions; the kernel takes at most 4096",
                self.bpf.len() / 8
            ))
        })?;
        let prog = libc::sock_fprog {
            len,
            filter: self.bpf.as_ptr().cast_mut().cast::<libc::sock_filter>(),
        };
        // SAFETY: `prog` points at `len` instructions of 8 bytes in
        // self.bpf, which outlives the call; the kernel copies them and
        // only reads through the pointer.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return Err(SeccompError::Invalid(format!(
                "loading the filter: seccomp(SECCOMP_SET_MODE_FILTER, flags {flags:#x}): {e}"
            )));
        }
        if !self.notify {
            return Ok(None);
        }
        let fd = i32::try_from(ret).map_err(|_| {
            SeccompError::Invalid(format!("seccomp returned {ret} as the listener fd"))
        })?;
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns a
        // new fd for the listener, which nothing else owns.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The program's instructions (for tests).
    pub fn bpf(&self) -> &[u8] {
        &self.bpf
    }
}

/// SECCOMP_FILTER_FLAG_* for the profile's `flags`.
fn flags_of(profile: &LinuxSeccomp, notify: bool) -> libc::c_ulong {
    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only meaningful, and only accepted by the kernel, with a
            // listener.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if notify => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    flags
}

/// Everything the compiled program depends on.
fn cache_key(profile: &LinuxSeccomp) -> Vec<u8> {
    let lib = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let api = libseccomp::get_api();
    let uts = nix::sys::utsname::uname().ok();
    let (release, machine) = uts
        .as_ref()
        .map(|u| {
            (
                u.release().to_string_lossy().into_owned(),
                u.machine().to_string_lossy().into_owned(),
            )
        })
        .unwrap_or_default();
    let mut key = format!("libseccomp {lib} api {api}\nkernel {release} {machine}\n").into_bytes();
    // The profile as parsed, so spacing and field order in config.json do
    // not matter; a profile that cannot be encoded is simply not cached.
    match serde_json::to_vec(profile) {
        Ok(json) => key.extend_from_slice(&json),
        Err(_) => key.clear(),
    }
    key
}

/// FNV-1a: a stable name for the key (the key itself is compared in full).
fn file_name(key: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}.bpf")
}

fn read_cached(path: &Path, key: &[u8]) -> Option<Vec<u8>> {
    if key.is_empty() {
        return None;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        crate::debug!("seccomp: ignoring cache file {}", path.display());
        return None;
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).ok()?);
    file.read_to_end(&mut data).ok()?;
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    let (stored_key, rest) = take_counted(rest)?;
    let (bpf, rest) = take_counted(rest)?;
    let valid = stored_key == key && rest.is_empty() && !bpf.is_empty() && bpf.len() % 8 == 0;
    valid.then(|| bpf.to_vec())
}

/// Splits a little-endian u64 length and that many bytes off `data`.
fn take_counted(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_at_checked(8)?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
    rest.split_at_checked(len)
}

fn write_cached(dir: &Path, path: &Path, key: &[u8], bpf: &[u8]) -> io::Result<()> {
    if key.is_empty() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp: PathBuf = dir.join(format!(".tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let mut data = Vec::with_capacity(MAGIC.len() + 16 + key.len() + bpf.len());
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&(key.len() as u64).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(&(bpf.len() as u64).to_le_bytes());
        data.extend_from_slice(bpf);
        f.write_all(&data)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("profile")
    }

    const ERRNO_MKDIR: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#;

    #[test]
    fn cached_program_equals_compiled_one() {
        let dir = std::env::temp_dir().join(format!("hako-seccomp-cache-{}", std::process::id()));
        let p = profile(ERRNO_MKDIR);
        let fresh = Program::for_profile(&p, Some(&dir)).expect("compiles");
        assert_eq!(std::fs::read_dir(&dir).expect("cache dir").count(), 1);
        let cached = Program::for_profile(&p, Some(&dir)).expect("from cache");
        assert_eq!(fresh, cached);
        let uncached = Program::for_profile(&p, None).expect("compiles");
        assert_eq!(fresh, uncached);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_or_foreign_entries_are_not_used() {
        let dir = std::env::temp_dir().join(format!("hako-seccomp-bad-{}", std::process::id()));
        let p = profile(ERRNO_MKDIR);
        let good = Program::for_profile(&p, Some(&dir)).expect("compiles");
        let entry = std::fs::read_dir(&dir)
            .expect("cache dir")
            .flatten()
            .next()
            .expect("an entry")
            .path();
        let key = cache_key(&p);
        let bytes = std::fs::read(&entry).expect("read");
        // Truncated by one instruction: the stored length no longer adds up.
        std::fs::write(&entry, &bytes[..bytes.len() - 8]).expect("write");
        assert_eq!(read_cached(&entry, &key), None);
        // Another profile's key: not ours.
        std::fs::write(&entry, &bytes).expect("write");
        assert_eq!(
            read_cached(
                &entry,
                &cache_key(&profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#))
            ),
            None
        );
        // Writable by others: ignored.
        std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        assert_eq!(read_cached(&entry, &key), None);
        // And a fresh compile still gives the right program.
        assert_eq!(
            Program::for_profile(&p, Some(&dir)).expect("compiles"),
            good
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
