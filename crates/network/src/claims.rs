//! Bridges and subnets claimed host-wide.
//!
//! Every network store on the host, whatever its root, records the bridge
//! of each network it creates in one directory: `<dir>/<bridge>` is a
//! symlink to the network's conflist. A store choosing a bridge or subnet
//! skips those claimed by the others, so two stores (two `--root`s) never
//! pick the same `hakoN` or /24 — the kernel alone cannot tell, since a
//! bridge exists only after its first container attached. A claim whose
//! conflist is gone, or no longer names that bridge, is stale and removed.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use crate::conflist;
use crate::fsutil::{lock_file, random_hex};
use crate::subnet::Ipv4Net;

/// Where the host's claims live (tmpfs: bridges do not survive a reboot
/// either, and each store claims its networks again on its next create).
pub const CLAIMS_DIR: &str = "/run/hako/network-claims";

/// A live claim of another store's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The network's name in its store.
    pub network: String,
    pub conflist: PathBuf,
}

impl Claim {
    /// `NAME (PATH)`, for error messages.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.network, self.conflist.display())
    }
}

/// The claims directory, locked (exclusive flock on `<dir>/.lock`) for as
/// long as this lives.
pub struct Claims {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// What failed, with the path.
#[derive(Debug, thiserror::Error)]
#[error("network claims: {op} {path}: {source}")]
pub struct ClaimError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// An error mapper for `op` on `path`.
fn err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClaimError {
    let path = path.to_path_buf();
    move |source| ClaimError { op, path, source }
}

impl Claims {
    /// Takes the host-wide lock, creating `dir` (mode 0700) first.
    pub fn lock(dir: &Path) -> Result<Claims, ClaimError> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err("creating", dir))?;
        }
        let path = dir.join(".lock");
        let lock = lock_file(&path).map_err(|(op, source)| ClaimError { op, path, source })?;
        Ok(Claims {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The live claims whose conflist is not in `own_dir` (the caller's
    /// store); stale claims are removed on the way, and so are temporary
    /// links a killed claimer left (under the lock, nobody else is making
    /// one).
    pub fn others(&self, own_dir: &Path) -> Vec<Claim> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let bridge = entry.file_name().to_string_lossy().into_owned();
            if bridge == ".lock" {
                continue;
            }
            if bridge.starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            match self.read(&bridge) {
                Some(c) if c.conflist.parent() == Some(own_dir) => {}
                Some(c) => out.push(c),
                None => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        out.sort_by(|a, b| a.bridge.cmp(&b.bridge));
        out
    }

    /// The claim of `bridge` if it is live: its link points at a conflist
    /// that exists and still names this bridge.
    fn read(&self, bridge: &str) -> Option<Claim> {
        let conflist = std::fs::read_link(self.dir.join(bridge)).ok()?;
        let data = std::fs::read(&conflist).ok()?;
        let list: serde_json::Value = serde_json::from_slice(&data).ok()?;
        let net = conflist::parse(&list, &conflist).ok()?;
        (net.bridge == bridge).then(|| Claim {
            bridge: bridge.to_string(),
            subnet: net.subnet,
            network: net.name,
            conflist,
        })
    }

    /// Claims `bridge` for the network whose conflist is `conflist`
    /// (replacing a stale or own claim; the caller checked [`Self::others`]).
    pub fn claim(&self, bridge: &str, conflist: &Path) -> Result<(), ClaimError> {
        let link = self.dir.join(bridge);
        let tmp = self.dir.join(format!(
            ".{bridge}.{}.{}",
            std::process::id(),
            random_hex(4).map_err(err("reading /dev/urandom for", &link))?
        ));
        std::os::unix::fs::symlink(conflist, &tmp).map_err(err("linking", &tmp))?;
        std::fs::rename(&tmp, &link).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ClaimError {
                op: "renaming into",
                path: link.clone(),
                source,
            }
        })
    }

    /// Drops the claim of `bridge` if it is `conflist`'s.
    pub fn release(&self, bridge: &str, conflist: &Path) {
        if self.holds(bridge, conflist) {
            let _ = std::fs::remove_file(self.dir.join(bridge));
        }
    }

    /// Whether `bridge` is claimed for `conflist`.
    pub fn holds(&self, bridge: &str, conflist: &Path) -> bool {
        std::fs::read_link(self.dir.join(bridge)).ok().as_deref() == Some(conflist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflist;
    use crate::conflist::Network;

    fn temp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "hako-claims-{name}-{}-{}",
            std::process::id(),
            random_hex(4).expect("urandom")
        ));
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    fn write_net(dir: &Path, name: &str, bridge: &str, subnet: &str) -> PathBuf {
        let subnet: Ipv4Net = subnet.parse().expect("subnet");
        let path = dir.join(format!("{name}.conflist"));
        let net = Network {
            name: name.into(),
            id: "0".repeat(64),
            bridge: bridge.into(),
            subnet,
            gateway: subnet.host(1).expect("host"),
            internal: false,
            labels: Default::default(),
            cni_version: "1.0.0".into(),
            created: 0,
            config_path: path.clone(),
        };
        let list = conflist::build(&net, &dir.join("ipam"));
        std::fs::write(&path, serde_json::to_vec(&list).expect("json")).expect("write");
        path
    }

    #[test]
    fn other_stores_claims_are_seen_and_stale_ones_go() {
        let claims_dir = temp("dir");
        let a = temp("a");
        let b = temp("b");
        let claims = Claims::lock(&claims_dir).expect("lock");
        let pa = write_net(&a, "hako", "hako0", "10.90.0.0/24");
        claims.claim("hako0", &pa).expect("claim");
        let pb = write_net(&b, "web", "hako1", "10.90.1.0/24");
        claims.claim("hako1", &pb).expect("claim");
        // Each store sees the other's claim, not its own.
        let seen = claims.others(&a);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].bridge, "hako1");
        assert_eq!(seen[0].network, "web");
        assert_eq!(seen[0].subnet.to_string(), "10.90.1.0/24");
        assert_eq!(claims.others(&b)[0].bridge, "hako0");
        // A conflist that now names another bridge no longer claims this one.
        write_net(&b, "web", "other", "10.90.1.0/24");
        assert!(claims.others(&a).is_empty());
        assert!(!claims_dir.join("hako1").exists(), "stale claim kept");
        // Removed store: its claim goes too.
        std::fs::remove_dir_all(&a).expect("rm");
        assert!(claims.others(&b).is_empty());
        assert!(!claims_dir.join("hako0").exists());
        // A temporary link a killed claimer left goes; the lock file stays.
        let leftover = claims_dir.join(".hako7.1.00000000");
        std::os::unix::fs::symlink(&pb, &leftover).expect("symlink");
        claims.others(&b);
        assert!(leftover.symlink_metadata().is_err(), "leftover kept");
        assert!(claims_dir.join(".lock").exists());
        // Release only drops the caller's own claim.
        claims.claim("hako1", &pb).expect("claim");
        claims.release("hako1", &pa);
        assert!(claims.holds("hako1", &pb));
        claims.release("hako1", &pb);
        assert!(!claims.holds("hako1", &pb));
        drop(claims);
        for d in [&claims_dir, &b] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
