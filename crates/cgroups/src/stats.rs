//! Usage statistics of a container's cgroup, in the shape runc's
//! `events --stats` prints (cpu, memory with swap and kernel, pids,
//! hugetlb), read from v1 controllers or cgroup2, whichever holds each.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::cgroup::Cgroup;

#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    /// Nanoseconds.
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Throttling {
    pub periods: u64,
    #[serde(rename = "throttledPeriods")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(rename = "throttledTime")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pids {
    pub current: u64,
    /// 0 when unlimited.
    pub limit: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Hugetlb {
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

/// Everything `events --stats` reports.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| {
            let s = s.trim();
            if s == "max" {
                Some(u64::MAX)
            } else {
                s.parse().ok()
            }
        })
        .unwrap_or(0)
}

/// "key value" lines (memory.stat, cpu.stat, cpuacct.stat).
fn read_keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The directory holding `file` for a controller: its v1 hierarchy, else
/// the cgroup2 directory.
fn dir_with<'a>(cg: &'a Cgroup, controller: &str, file: &str) -> Option<&'a Path> {
    cg.dir_for(controller)
        .or_else(|| cg.unified_dir().filter(|d| d.join(file).exists()))
}

/// Reads the current statistics. Missing files read as zero.
pub fn read(cg: &Cgroup) -> Stats {
    let mut s = Stats::default();
    // cpu
    if let Some(d) = cg.dir_for("cpuacct") {
        s.cpu.usage.total = read_u64(d, "cpuacct.usage");
        s.cpu.usage.percpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // cpuacct.stat is in USER_HZ (100 per second) ticks.
        let st = read_keyed(d, "cpuacct.stat");
        s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * 10_000_000;
        s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * 10_000_000;
    } else if let Some(d) = cg.unified_dir() {
        let st = read_keyed(d, "cpu.stat");
        s.cpu.usage.total = st.get("usage_usec").copied().unwrap_or(0) * 1000;
        s.cpu.usage.user = st.get("user_usec").copied().unwrap_or(0) * 1000;
        s.cpu.usage.kernel = st.get("system_usec").copied().unwrap_or(0) * 1000;
    }
    if let Some(d) = dir_with(cg, "cpu", "cpu.stat") {
        let st = read_keyed(d, "cpu.stat");
        s.cpu.throttling.periods = st.get("nr_periods").copied().unwrap_or(0);
        s.cpu.throttling.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
        s.cpu.throttling.throttled_time = st
            .get("throttled_time")
            .copied()
            .or_else(|| st.get("throttled_usec").map(|u| u * 1000))
            .unwrap_or(0);
    }
    // memory
    if let Some(d) = cg.dir_for("memory") {
        let entry = |prefix: &str| MemoryEntry {
            limit: read_u64(d, &format!("{prefix}.limit_in_bytes")),
            usage: read_u64(d, &format!("{prefix}.usage_in_bytes")),
            max: read_u64(d, &format!("{prefix}.max_usage_in_bytes")),
            failcnt: read_u64(d, &format!("{prefix}.failcnt")),
        };
        s.memory.usage = entry("memory");
        s.memory.swap = entry("memory.memsw");
        s.memory.kernel = entry("memory.kmem");
        s.memory.raw = read_keyed(d, "memory.stat");
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    } else if let Some(d) = cg
        .unified_dir()
        .filter(|d| d.join("memory.current").exists())
    {
        let events = read_keyed(d, "memory.events");
        s.memory.usage = MemoryEntry {
            limit: read_u64(d, "memory.max"),
            usage: read_u64(d, "memory.current"),
            max: read_u64(d, "memory.peak"),
            failcnt: events.get("max").copied().unwrap_or(0),
        };
        s.memory.swap = MemoryEntry {
            limit: read_u64(d, "memory.swap.max"),
            usage: read_u64(d, "memory.swap.current"),
            ..MemoryEntry::default()
        };
        s.memory.raw = read_keyed(d, "memory.stat");
        s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
    }
    // pids
    if let Some(d) = dir_with(cg, "pids", "pids.current") {
        s.pids.current = read_u64(d, "pids.current");
        let limit = read_u64(d, "pids.max");
        s.pids.limit = if limit == u64::MAX { 0 } else { limit };
    }
    // hugetlb: one entry per page size present.
    if let Some(d) = cg.dir_for("hugetlb").or_else(|| cg.unified_dir()) {
        let v1 = cg.dir_for("hugetlb").is_some();
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let size = if v1 {
                    name.strip_prefix("hugetlb.")
                        .and_then(|r| r.strip_suffix(".usage_in_bytes"))
                } else {
                    name.strip_prefix("hugetlb.")
                        .and_then(|r| r.strip_suffix(".current"))
                };
                let Some(size) = size.filter(|s| !s.contains('.')) else {
                    continue;
                };
                let h = if v1 {
                    Hugetlb {
                        usage: read_u64(d, &format!("hugetlb.{size}.usage_in_bytes")),
                        max: read_u64(d, &format!("hugetlb.{size}.max_usage_in_bytes")),
                        failcnt: read_u64(d, &format!("hugetlb.{size}.failcnt")),
                    }
                } else {
                    Hugetlb {
                        usage: read_u64(d, &format!("hugetlb.{size}.current")),
                        max: 0,
                        failcnt: read_keyed(d, &format!("hugetlb.{size}.events"))
                            .get("max")
                            .copied()
                            .unwrap_or(0),
                    }
                };
                s.hugetlb.insert(size.to_string(), h);
            }
        }
    }
    s
}

/// How many processes the kernel's OOM killer has killed in the cgroup
/// (v1 memory.oom_control, cgroup2 memory.events).
pub fn oom_kills(cg: &Cgroup) -> u64 {
    if let Some(d) = cg.dir_for("memory") {
        return read_keyed(d, "memory.oom_control")
            .get("oom_kill")
            .copied()
            .unwrap_or(0);
    }
    cg.unified_dir()
        .map(|d| {
            read_keyed(d, "memory.events")
                .get("oom_kill")
                .copied()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
