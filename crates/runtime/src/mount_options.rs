//! The `options` of a config mount, split the way mount(2) and
//! mount_setattr(2) need them. Accepts every option runc accepts.

use crate::sys;

/// Parsed mount options.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// MS_* flags to set.
    pub flags: libc::c_ulong,
    /// MS_* flags explicitly cleared (`rw`, `suid`, `dev`, …).
    pub cleared: libc::c_ulong,
    /// Propagation changes applied after the mount, in order.
    pub propagation: Vec<libc::c_ulong>,
    /// MOUNT_ATTR_* set recursively (`rro`, `rnosuid`, …).
    pub rec_set: u64,
    /// MOUNT_ATTR_* cleared recursively (`rrw`, `rsuid`, …).
    pub rec_clear: u64,
    /// Filesystem-specific data (`size=64k,mode=755`).
    pub data: String,
    /// `bind` or `rbind` was given.
    pub bind: bool,
    /// `rbind` was given.
    pub recursive_bind: bool,
    /// runc's `tmpcopyup`: copy the destination's content into the new tmpfs.
    pub tmpcopyup: bool,
    /// `idmap`/`ridmap` were given.
    pub idmap: bool,
    /// `ridmap`: the id mapping applies to submounts too.
    pub recursive_idmap: bool,
}

impl MountOptions {
    /// Parses the options list of one mount.
    pub fn parse(options: &[String]) -> MountOptions {
        let mut o = MountOptions::default();
        let mut data: Vec<&str> = Vec::new();
        for opt in options {
            let opt = opt.as_str();
            if let Some((set, flag)) = plain_flag(opt) {
                if set {
                    o.flags |= flag;
                    o.cleared &= !flag;
                } else {
                    o.flags &= !flag;
                    o.cleared |= flag;
                }
                continue;
            }
            if let Some(p) = propagation_flag(opt) {
                o.propagation.push(p);
                continue;
            }
            if let Some((set, attr)) = recursive_attr(opt) {
                if set {
                    o.rec_set |= attr;
                    o.rec_clear &= !attr;
                } else {
                    o.rec_clear |= attr;
                    o.rec_set &= !attr;
                }
                // Atime modes are one field: clearing it is how you change it.
                if attr & sys::MOUNT_ATTR__ATIME != 0 || opt == "rrelatime" || opt == "rnoatime" {
                    o.rec_clear |= sys::MOUNT_ATTR__ATIME;
                }
                continue;
            }
            match opt {
                "bind" => o.bind = true,
                "rbind" => {
                    o.bind = true;
                    o.recursive_bind = true;
                }
                "defaults" => {}
                "tmpcopyup" => o.tmpcopyup = true,
                "idmap" => o.idmap = true,
                "ridmap" => {
                    o.idmap = true;
                    o.recursive_idmap = true;
                }
                other => data.push(other),
            }
        }
        o.data = data.join(",");
        o
    }
}

/// (true = set / false = clear, MS_ flag).
fn plain_flag(opt: &str) -> Option<(bool, libc::c_ulong)> {
    Some(match opt {
        "ro" => (true, libc::MS_RDONLY),
        "rw" => (false, libc::MS_RDONLY),
        "nosuid" => (true, libc::MS_NOSUID),
        "suid" => (false, libc::MS_NOSUID),
        "nodev" => (true, libc::MS_NODEV),
        "dev" => (false, libc::MS_NODEV),
        "noexec" => (true, libc::MS_NOEXEC),
        "exec" => (false, libc::MS_NOEXEC),
        "sync" => (true, libc::MS_SYNCHRONOUS),
        "async" => (false, libc::MS_SYNCHRONOUS),
        "dirsync" => (true, libc::MS_DIRSYNC),
        "remount" => (true, libc::MS_REMOUNT),
        "mand" => (true, libc::MS_MANDLOCK),
        "nomand" => (false, libc::MS_MANDLOCK),
        "noatime" => (true, libc::MS_NOATIME),
        "atime" => (false, libc::MS_NOATIME),
        "nodiratime" => (true, libc::MS_NODIRATIME),
        "diratime" => (false, libc::MS_NODIRATIME),
        "relatime" => (true, libc::MS_RELATIME),
        "norelatime" => (false, libc::MS_RELATIME),
        "strictatime" => (true, libc::MS_STRICTATIME),
        "nostrictatime" => (false, libc::MS_STRICTATIME),
        "iversion" => (true, libc::MS_I_VERSION),
        "noiversion" => (false, libc::MS_I_VERSION),
        "lazytime" => (true, libc::MS_LAZYTIME),
        "nolazytime" => (false, libc::MS_LAZYTIME),
        "silent" => (true, libc::MS_SILENT),
        "loud" => (false, libc::MS_SILENT),
        "nosymfollow" => (true, MS_NOSYMFOLLOW),
        "symfollow" => (false, MS_NOSYMFOLLOW),
        _ => return None,
    })
}

/// MS_NOSYMFOLLOW (Linux 5.10), not in every libc.
pub const MS_NOSYMFOLLOW: libc::c_ulong = 256;

fn propagation_flag(opt: &str) -> Option<libc::c_ulong> {
    Some(match opt {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// Parses a propagation mode as `linux.rootfsPropagation` spells it.
pub fn rootfs_propagation(mode: &str) -> Option<libc::c_ulong> {
    propagation_flag(mode)
}

fn recursive_attr(opt: &str) -> Option<(bool, u64)> {
    Some(match opt {
        "rro" => (true, sys::MOUNT_ATTR_RDONLY),
        "rrw" => (false, sys::MOUNT_ATTR_RDONLY),
        "rnosuid" => (true, sys::MOUNT_ATTR_NOSUID),
        "rsuid" => (false, sys::MOUNT_ATTR_NOSUID),
        "rnodev" => (true, sys::MOUNT_ATTR_NODEV),
        "rdev" => (false, sys::MOUNT_ATTR_NODEV),
        "rnoexec" => (true, sys::MOUNT_ATTR_NOEXEC),
        "rexec" => (false, sys::MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (true, sys::MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (false, sys::MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (true, sys::MOUNT_ATTR_RELATIME),
        "rnorelatime" => (false, sys::MOUNT_ATTR_RELATIME),
        "rnoatime" => (true, sys::MOUNT_ATTR_NOATIME),
        "ratime" => (false, sys::MOUNT_ATTR_NOATIME),
        "rstrictatime" => (true, sys::MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => (false, sys::MOUNT_ATTR_STRICTATIME),
        "rnosymfollow" => (true, sys::MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (false, sys::MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        MountOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn splits_flags_data_and_propagation() {
        let o = opts(&[
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rprivate",
        ]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert!(!o.bind);
    }

    #[test]
    fn later_options_win() {
        let o = opts(&["ro", "rw", "rbind"]);
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
        assert_ne!(o.cleared & libc::MS_RDONLY, 0);
        assert!(o.bind && o.recursive_bind);
    }

    #[test]
    fn recursive_attributes() {
        let o = opts(&["rbind", "rro", "rnosuid"]);
        assert_eq!(o.rec_set, sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID);
        let o = opts(&["rnoatime"]);
        assert_eq!(o.rec_set, sys::MOUNT_ATTR_NOATIME);
        assert_ne!(o.rec_clear & sys::MOUNT_ATTR__ATIME, 0);
    }
}
