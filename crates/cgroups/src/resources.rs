//! `linux.resources` → cgroup control files, for v1 and v2 controllers.
//!
//! Each controller group goes to its v1 hierarchy when one is mounted and to
//! the cgroup2 directory otherwise, so hybrid hosts (v1 controllers plus some
//! on cgroup2, like `hugetlb` here) work. Values are converted between v1 and
//! v2 the way runc and crun do (shares → weight, blkio weight → io.weight,
//! memory+swap → swap alone). A setting whose control file this kernel lacks
//! is returned as a warning when it is optional (kernel memory, blkio weight,
//! net_cls) and an error otherwise. Device rules are not written here but
//! by [`crate::devices`].

use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNetwork, LinuxResources,
};

use crate::cgroup::Cgroup;
use crate::error::{CgroupError, Result};
use crate::fs::write_file;

/// Where a controller group's files are.
enum Target<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

fn target<'a>(cg: &'a Cgroup, v1_controller: &str, v2_controller: &str) -> Option<Target<'a>> {
    if let Some(d) = cg.dir_for(v1_controller) {
        return Some(Target::V1(d));
    }
    let d = cg.unified_dir()?;
    cg.enable_on_unified(v2_controller).then_some(Target::V2(d))
}

fn missing(field: &'static str, controller: &str) -> CgroupError {
    CgroupError::Unsupported {
        field,
        reason: format!("the {controller} controller is not available on this host"),
    }
}

/// Writes `value` to `file` if the file exists; otherwise records a warning.
fn write_optional(dir: &Path, file: &str, value: &str, warnings: &mut Vec<String>) -> Result<()> {
    if dir.join(file).exists() {
        write_file(dir, file, value)
    } else {
        warnings.push(format!(
            "{file} is not supported by this kernel; ignoring {value:?}"
        ));
        Ok(())
    }
}

/// Applies every set field of `res` except `devices`. Returns warnings for
/// settings ignored because this kernel has no file for them.
///
/// `devices` is left to [`crate::devices::apply`]: a container's device
/// rules are its `devices` plus the default devices and its `linux.devices`
/// ([`crate::devices::container_rules`]), which this document alone does
/// not have, and they replace the previous rules as a whole.
pub fn apply(cg: &Cgroup, res: &LinuxResources) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if let Some(m) = res.memory() {
        memory(cg, m, &mut warnings)?;
    }
    if let Some(c) = res.cpu() {
        cpu(cg, c, &mut warnings)?;
    }
    if let Some(p) = res.pids() {
        let value = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        match target(cg, "pids", "pids") {
            Some(Target::V1(d) | Target::V2(d)) => write_file(d, "pids.max", &value)?,
            None => return Err(missing("pids", "pids")),
        }
    }
    if let Some(b) = res.block_io() {
        block_io(cg, b, &mut warnings)?;
    }
    if let Some(h) = res.hugepage_limits() {
        hugetlb(cg, h)?;
    }
    if let Some(n) = res.network() {
        network(cg, n, &mut warnings)?;
    }
    if let Some(rdma) = res.rdma() {
        let dir = match target(cg, "rdma", "rdma") {
            Some(Target::V1(d) | Target::V2(d)) => d,
            None => return Err(missing("rdma", "rdma")),
        };
        for (dev, limits) in rdma {
            let mut value = dev.clone();
            if let Some(h) = limits.hca_handles() {
                value.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = limits.hca_objects() {
                value.push_str(&format!(" hca_object={o}"));
            }
            write_file(dir, "rdma.max", &value)?;
        }
    }
    if let Some(unified) = res.unified() {
        let Some(dir) = cg.unified_dir() else {
            return Err(CgroupError::Unsupported {
                field: "unified",
                reason: "this host has no cgroup2 hierarchy".into(),
            });
        };
        let mut keys: Vec<_> = unified.iter().collect();
        keys.sort();
        for (key, value) in keys {
            if key.contains('/') || key.starts_with('.') {
                return Err(CgroupError::Unsupported {
                    field: "unified",
                    reason: format!("{key:?} is not a cgroup control file name"),
                });
            }
            write_file(dir, key, value)?;
        }
    }
    Ok(warnings)
}

fn limit_value(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// `checkBeforeUpdate`: refuses a memory limit below what the cgroup
/// already uses, instead of letting the kernel reclaim or OOM-kill.
fn check_limit_above_usage(dir: &Path, usage_file: &str, m: &LinuxMemory) -> Result<()> {
    let Some(limit) = m.limit().filter(|l| *l > 0) else {
        return Ok(());
    };
    if m.check_before_update() != Some(true) {
        return Ok(());
    }
    let path = dir.join(usage_file);
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.clone(),
        source,
    })?;
    let usage: i64 = text.trim().parse().unwrap_or(0);
    if limit < usage {
        return Err(CgroupError::Unsupported {
            field: "memory.limit",
            reason: format!(
                "{limit} is below the current usage {usage} ({}) and checkBeforeUpdate is set",
                path.display()
            ),
        });
    }
    Ok(())
}

fn memory(cg: &Cgroup, m: &LinuxMemory, warnings: &mut Vec<String>) -> Result<()> {
    match target(cg, "memory", "memory") {
        Some(Target::V1(d)) => {
            check_limit_above_usage(d, "memory.usage_in_bytes", m)?;
            // memsw must stay >= limit: when raising both, swap goes first.
            let set_limit = |d: &Path| -> Result<()> {
                if let Some(l) = m.limit() {
                    write_file(d, "memory.limit_in_bytes", &l.to_string())?;
                }
                Ok(())
            };
            let set_swap = |d: &Path, warnings: &mut Vec<String>| -> Result<()> {
                if let Some(s) = m.swap() {
                    write_optional(d, "memory.memsw.limit_in_bytes", &s.to_string(), warnings)?;
                }
                Ok(())
            };
            if set_limit(d).is_err() {
                set_swap(d, warnings)?;
                set_limit(d)?;
            } else {
                set_swap(d, warnings)?;
            }
            if let Some(r) = m.reservation() {
                write_file(d, "memory.soft_limit_in_bytes", &r.to_string())?;
            }
            if let Some(k) = m.kernel() {
                write_optional(d, "memory.kmem.limit_in_bytes", &k.to_string(), warnings)?;
            }
            if let Some(k) = m.kernel_tcp() {
                write_optional(
                    d,
                    "memory.kmem.tcp.limit_in_bytes",
                    &k.to_string(),
                    warnings,
                )?;
            }
            if let Some(s) = m.swappiness() {
                if s > 100 {
                    return Err(CgroupError::Unsupported {
                        field: "memory.swappiness",
                        reason: format!("{s} is out of range 0-100"),
                    });
                }
                write_optional(d, "memory.swappiness", &s.to_string(), warnings)?;
            }
            if m.disable_oom_killer() == Some(true) {
                write_file(d, "memory.oom_control", "1")?;
            }
        }
        Some(Target::V2(d)) => {
            check_limit_above_usage(d, "memory.current", m)?;
            if let Some(r) = m.reservation() {
                write_file(d, "memory.low", &limit_value(r))?;
            }
            if let Some(l) = m.limit() {
                write_file(d, "memory.max", &limit_value(l))?;
            }
            if let Some(s) = m.swap() {
                // OCI's swap is memory+swap; cgroup2 limits swap alone.
                let value = match m.limit() {
                    _ if s < 0 => "max".to_string(),
                    Some(l) if l >= 0 => {
                        if s < l {
                            return Err(CgroupError::Unsupported {
                                field: "memory.swap",
                                reason: format!(
                                    "{s} is below memory.limit {l} (swap counts memory plus swap)"
                                ),
                            });
                        }
                        (s - l).to_string()
                    }
                    _ => s.to_string(),
                };
                write_optional(d, "memory.swap.max", &value, warnings)?;
            }
            if m.kernel().is_some() || m.kernel_tcp().is_some() {
                warnings
                    .push("memory.kernel and kernelTCP have no cgroup2 equivalent; ignored".into());
            }
            if m.swappiness().is_some() {
                warnings.push("memory.swappiness has no cgroup2 equivalent; ignored".into());
            }
            if m.disable_oom_killer() == Some(true) {
                warnings.push("memory.disableOOMKiller has no cgroup2 equivalent; ignored".into());
            }
        }
        None => return Err(missing("memory", "memory")),
    }
    Ok(())
}

/// runc's conversion of v1 cpu.shares (2..262144) to cgroup2 cpu.weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// runc's conversion of v1 blkio.weight (10..1000) to io.weight (1..10000).
pub fn blkio_weight_to_io(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (u64::from(weight).clamp(10, 1000) - 10) * 9999 / 990
}

fn cpu(cg: &Cgroup, c: &LinuxCpu, warnings: &mut Vec<String>) -> Result<()> {
    let wants_cpu = c.shares().is_some()
        || c.quota().is_some()
        || c.period().is_some()
        || c.realtime_runtime().is_some()
        || c.realtime_period().is_some()
        || c.idle().is_some()
        || c.burst().is_some();
    if wants_cpu {
        match target(cg, "cpu", "cpu") {
            Some(Target::V1(d)) => {
                if let Some(s) = c.shares() {
                    write_file(d, "cpu.shares", &s.to_string())?;
                }
                if let Some(p) = c.period() {
                    write_file(d, "cpu.cfs_period_us", &p.to_string())?;
                }
                if let Some(q) = c.quota() {
                    write_file(d, "cpu.cfs_quota_us", &q.to_string())?;
                }
                if let Some(b) = c.burst() {
                    write_optional(d, "cpu.cfs_burst_us", &b.to_string(), warnings)?;
                }
                if let Some(p) = c.realtime_period() {
                    write_optional(d, "cpu.rt_period_us", &p.to_string(), warnings)?;
                }
                if let Some(r) = c.realtime_runtime() {
                    write_optional(d, "cpu.rt_runtime_us", &r.to_string(), warnings)?;
                }
                if let Some(i) = c.idle() {
                    write_optional(d, "cpu.idle", &i.to_string(), warnings)?;
                }
            }
            Some(Target::V2(d)) => {
                if let Some(s) = c.shares() {
                    write_file(d, "cpu.weight", &shares_to_weight(s).to_string())?;
                }
                if c.quota().is_some() || c.period().is_some() {
                    let quota = match c.quota() {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".to_string(),
                    };
                    let period = c.period().unwrap_or(100_000);
                    write_file(d, "cpu.max", &format!("{quota} {period}"))?;
                }
                if let Some(b) = c.burst() {
                    write_optional(d, "cpu.max.burst", &b.to_string(), warnings)?;
                }
                if let Some(i) = c.idle() {
                    write_optional(d, "cpu.idle", &i.to_string(), warnings)?;
                }
                if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
                    return Err(CgroupError::Unsupported {
                        field: "cpu.realtimeRuntime",
                        reason: "realtime scheduling limits do not exist on cgroup2".into(),
                    });
                }
            }
            None => return Err(missing("cpu", "cpu")),
        }
    }
    if c.cpus().is_some() || c.mems().is_some() {
        let dir = match target(cg, "cpuset", "cpuset") {
            Some(Target::V1(d) | Target::V2(d)) => d,
            None => return Err(missing("cpu.cpus", "cpuset")),
        };
        if let Some(cpus) = c.cpus() {
            write_file(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems() {
            write_file(dir, "cpuset.mems", mems)?;
        }
    }
    Ok(())
}

fn block_io(cg: &Cgroup, b: &LinuxBlockIo, warnings: &mut Vec<String>) -> Result<()> {
    match target(cg, "blkio", "io") {
        Some(Target::V1(d)) => {
            if let Some(w) = b.weight() {
                let file = if d.join("blkio.weight").exists() {
                    "blkio.weight"
                } else {
                    "blkio.bfq.weight"
                };
                write_optional(d, file, &w.to_string(), warnings)?;
            }
            if let Some(w) = b.leaf_weight() {
                write_optional(d, "blkio.leaf_weight", &w.to_string(), warnings)?;
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                    let file = if d.join("blkio.weight_device").exists() {
                        "blkio.weight_device"
                    } else {
                        "blkio.bfq.weight_device"
                    };
                    write_optional(d, file, &v, warnings)?;
                }
                if let Some(w) = wd.leaf_weight() {
                    let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                    write_optional(d, "blkio.leaf_weight_device", &v, warnings)?;
                }
            }
            let throttles = [
                (
                    "blkio.throttle.read_bps_device",
                    b.throttle_read_bps_device(),
                ),
                (
                    "blkio.throttle.write_bps_device",
                    b.throttle_write_bps_device(),
                ),
                (
                    "blkio.throttle.read_iops_device",
                    b.throttle_read_iops_device(),
                ),
                (
                    "blkio.throttle.write_iops_device",
                    b.throttle_write_iops_device(),
                ),
            ];
            for (file, list) in throttles {
                for t in list.iter().flatten() {
                    let v = format!("{}:{} {}", t.major(), t.minor(), t.rate());
                    write_optional(d, file, &v, warnings)?;
                }
            }
        }
        Some(Target::V2(d)) => {
            if let Some(w) = b.weight() {
                write_optional(d, "io.weight", &blkio_weight_to_io(w).to_string(), warnings)?;
            }
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight() {
                    let v = format!("{}:{} {}", wd.major(), wd.minor(), blkio_weight_to_io(w));
                    write_optional(d, "io.weight", &v, warnings)?;
                }
            }
            let leaf = b.leaf_weight().is_some()
                || b.weight_device()
                    .iter()
                    .flatten()
                    .any(|wd| wd.leaf_weight().is_some());
            if leaf {
                warnings.push("blockIO leaf weights have no cgroup2 equivalent; ignored".into());
            }
            let throttles = [
                ("rbps", b.throttle_read_bps_device()),
                ("wbps", b.throttle_write_bps_device()),
                ("riops", b.throttle_read_iops_device()),
                ("wiops", b.throttle_write_iops_device()),
            ];
            for (key, list) in throttles {
                for t in list.iter().flatten() {
                    let v = format!("{}:{} {}={}", t.major(), t.minor(), key, t.rate());
                    write_file(d, "io.max", &v)?;
                }
            }
        }
        None => warnings.push("blockIO: no blkio or io controller on this host; ignored".into()),
    }
    Ok(())
}

fn hugetlb(cg: &Cgroup, limits: &[LinuxHugepageLimit]) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let (dir, suffix) = match target(cg, "hugetlb", "hugetlb") {
        Some(Target::V1(d)) => (d, "limit_in_bytes"),
        Some(Target::V2(d)) => (d, "max"),
        None => return Err(missing("hugepageLimits", "hugetlb")),
    };
    for l in limits {
        let size = l.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(CgroupError::Unsupported {
                field: "hugepageLimits.pageSize",
                reason: format!("{size:?} is not a page size like 2MB"),
            });
        }
        let file = format!("hugetlb.{size}.{suffix}");
        if !dir.join(&file).exists() {
            return Err(CgroupError::Unsupported {
                field: "hugepageLimits.pageSize",
                reason: format!("this host has no {size} huge pages ({file} is absent)"),
            });
        }
        write_file(dir, &file, &limit_value(l.limit()))?;
    }
    Ok(())
}

fn network(cg: &Cgroup, n: &LinuxNetwork, warnings: &mut Vec<String>) -> Result<()> {
    if let Some(id) = n.class_id() {
        match cg.dir_for("net_cls") {
            Some(d) => write_file(d, "net_cls.classid", &id.to_string())?,
            None => warnings.push("network.classID: no net_cls controller; ignored".into()),
        }
    }
    if let Some(prios) = n.priorities() {
        match cg.dir_for("net_prio") {
            Some(d) => {
                for p in prios {
                    write_file(
                        d,
                        "net_prio.ifpriomap",
                        &format!("{} {}", p.name(), p.priority()),
                    )?;
                }
            }
            None => warnings.push("network.priorities: no net_prio controller; ignored".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
        assert_eq!(blkio_weight_to_io(500), 4950);
    }
}
