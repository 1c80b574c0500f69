//! The systemd cgroup driver (`--systemd-cgroup`): systemd owns the
//! container's cgroup as a transient unit, as with runc.
//!
//! `linux.cgroupsPath` is `slice:prefix:name`: `system.slice:hako:abc` makes
//! the scope `hako-abc.scope` in `system.slice`, whose cgroup is
//! `/system.slice/hako-abc.scope`. Slices nest by their dashes
//! (`a-b.slice` is `/a.slice/a-b.slice`). A name ending in `.slice` makes
//! the unit that slice itself.
//!
//! ```text
//! create: clone init ─▶ StartTransientUnit(unit, "replace", [PIDs=[init], Slice,
//!         Delegate, …]) ─▶ wait until init is in the unit's cgroup ─▶ limits
//!         written to its files ─▶ Go
//! delete: kill ─▶ StopUnit(unit, "replace") ─▶ wait until the cgroup is gone
//! ```
//!
//! Module map: [`dbus`] is the wire protocol; this module knows systemd's
//! names and methods.

pub mod dbus;

use std::path::Path;
use std::time::{Duration, Instant};

use dbus::{Connection, DbusError, MethodCall, Value};
use oci_spec::runtime::LinuxResources;

use crate::error::{CgroupError, Result};
use crate::layout::Mode;

/// How long systemd gets to put a unit's cgroup in place or take it away.
pub const UNIT_TIMEOUT: Duration = Duration::from_secs(30);

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";

/// The unit prefix when `linux.cgroupsPath` is absent (runc uses "runc").
pub const DEFAULT_PREFIX: &str = "hako";
/// The slice when the path leaves it empty.
pub const DEFAULT_SLICE: &str = "system.slice";

/// A container's systemd unit, resolved from `linux.cgroupsPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPath {
    /// The unit: `hako-abc.scope`, or a slice.
    pub unit: String,
    /// The slice the unit goes in (for a slice unit: the slice it wants).
    pub slice: String,
    /// The unit's cgroup, e.g. `/system.slice/hako-abc.scope`.
    pub cgroup: String,
}

impl UnitPath {
    /// Resolves `linux.cgroupsPath` (absent: `system.slice:hako:<id>`).
    pub fn from_config(path: Option<&Path>, id: &str) -> Result<UnitPath> {
        let raw = path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let invalid = |reason: &'static str| CgroupError::InvalidPath {
            path: raw.clone(),
            reason,
        };
        let (slice, prefix, name) = if raw.is_empty() {
            ("", DEFAULT_PREFIX, id)
        } else {
            let parts: Vec<&str> = raw.split(':').collect();
            let [slice, prefix, name] = parts[..] else {
                return Err(invalid(
                    "with --systemd-cgroup it must be slice:prefix:name (e.g. system.slice:hako:abc)",
                ));
            };
            (slice, prefix, name)
        };
        if name.is_empty() {
            return Err(invalid("the name part of slice:prefix:name is empty"));
        }
        if !valid_unit_chars(prefix) || !valid_unit_chars(name) {
            return Err(invalid(
                "prefix and name may only hold letters, digits and _ . @ -",
            ));
        }
        let slice = if slice.is_empty() {
            DEFAULT_SLICE
        } else {
            slice
        };
        let parent = expand_slice(slice).map_err(invalid)?;
        let (unit, cgroup) = if name.ends_with(".slice") {
            (name.to_string(), expand_slice(name).map_err(invalid)?)
        } else {
            let unit = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            let cgroup = format!("{}/{unit}", parent.trim_end_matches('/'));
            (unit, cgroup)
        };
        if unit.len() > 255 {
            return Err(invalid("the unit name is longer than 255 bytes"));
        }
        Ok(UnitPath {
            unit,
            slice: slice.to_string(),
            cgroup,
        })
    }

    /// True when the unit is a slice (no process is handed to systemd).
    pub fn is_slice(&self) -> bool {
        self.unit.ends_with(".slice")
    }
}

fn valid_unit_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

/// The cgroup path of a slice: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` is the root.
pub fn expand_slice(slice: &str) -> std::result::Result<String, &'static str> {
    if slice == "-.slice" {
        return Ok("/".into());
    }
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err("the slice part must be a unit name ending in .slice");
    };
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
        || !valid_unit_chars(stem)
    {
        return Err("invalid slice name (letters, digits, _ . @, and single dashes between parts)");
    }
    let mut path = String::new();
    for (i, _) in stem.match_indices('-') {
        path.push('/');
        path.push_str(&stem[..i]);
        path.push_str(".slice");
    }
    path.push('/');
    path.push_str(slice);
    Ok(path)
}

/// Resource limits systemd itself should know about, so that it does not
/// reset them when it re-applies the unit's settings (cgroup2 only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitLimits {
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
}

impl UnitLimits {
    /// The memory and pids limits of `res` (cgroup2 hosts only: on v1
    /// systemd's properties mean other files, which we write ourselves).
    pub fn from_resources(mode: Mode, res: Option<&LinuxResources>) -> UnitLimits {
        let (Mode::Unified, Some(res)) = (mode, res) else {
            return UnitLimits::default();
        };
        let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
        UnitLimits {
            memory_max: res
                .memory()
                .as_ref()
                .and_then(|m| m.limit())
                .and_then(positive),
            tasks_max: res.pids().as_ref().and_then(|p| positive(p.limit())),
        }
    }
}

/// Starts the transient unit with `pid` in it (for a scope) and returns the
/// job's object path. The job may still be running: wait for its effect.
pub fn start_unit(
    unit: &UnitPath,
    pid: i32,
    description: &str,
    limits: UnitLimits,
) -> Result<String> {
    let prop = |name: &str, v: Value| Value::Struct(vec![Value::str(name), Value::variant(v)]);
    let mut props = vec![
        prop("Description", Value::str(description)),
        prop("DefaultDependencies", Value::Bool(false)),
        // Collected once it stops, even if it failed, so the name is free.
        prop("CollectMode", Value::str("inactive-or-failed")),
    ];
    if unit.is_slice() {
        // A slice's place follows from its name; its parent is wanted.
        props.push(prop(
            "Wants",
            Value::Array("s".into(), vec![Value::str(&unit.slice)]),
        ));
    } else {
        props.push(prop("Slice", Value::str(&unit.slice)));
        props.push(prop("Delegate", Value::Bool(true)));
        props.push(prop(
            "PIDs",
            Value::Array("u".into(), vec![Value::U32(pid as u32)]),
        ));
    }
    if let Some(m) = limits.memory_max {
        props.push(prop("MemoryMax", Value::U64(m)));
    }
    if let Some(t) = limits.tasks_max {
        props.push(prop("TasksMax", Value::U64(t)));
    }
    let body = vec![
        Value::str(&unit.unit),
        Value::str("replace"),
        Value::Array("(sv)".into(), props),
        Value::Array("(sa(sv))".into(), Vec::new()),
    ];
    let reply = manager_call(&unit.unit, "StartTransientUnit", body)?;
    Ok(reply
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string())
}

/// Stops `unit`. A unit systemd no longer knows (it stops and is collected
/// by itself once its processes are gone) counts as stopped.
pub fn stop_unit(unit: &str) -> Result<()> {
    match manager_call(
        unit,
        "StopUnit",
        vec![Value::str(unit), Value::str("replace")],
    ) {
        Ok(_) => Ok(()),
        Err(CgroupError::Systemd {
            source: DbusError::Remote { name, .. },
            ..
        }) if name == "org.freedesktop.systemd1.NoSuchUnit" => Ok(()),
        Err(e) => Err(e),
    }
}

fn manager_call(unit: &str, method: &'static str, body: Vec<Value>) -> Result<Vec<Value>> {
    let err = |source| CgroupError::Systemd {
        unit: unit.to_string(),
        method,
        source,
    };
    let mut conn = Connection::systemd().map_err(err)?;
    conn.call(&MethodCall {
        destination: Some(DESTINATION),
        path: MANAGER_PATH,
        interface: Some(MANAGER_INTERFACE),
        member: method,
        body,
    })
    .map_err(err)
}

/// Polls `done` every few milliseconds for up to [`UNIT_TIMEOUT`].
pub fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + UNIT_TIMEOUT;
    let mut delay = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// True when `/proc/PID/cgroup` puts `pid` in `cgroup` in some hierarchy.
pub fn pid_in_cgroup(pid: i32, cgroup: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|text| {
            crate::layout::parse_proc_cgroup(&text)
                .iter()
                .any(|(_, p)| p == cgroup)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Result<UnitPath> {
        UnitPath::from_config(Some(Path::new(p)), "c1")
    }

    #[test]
    fn slices_expand_to_nested_paths() {
        assert_eq!(expand_slice("system.slice"), Ok("/system.slice".into()));
        assert_eq!(
            expand_slice("a-b-c.slice"),
            Ok("/a.slice/a-b.slice/a-b-c.slice".into())
        );
        assert_eq!(expand_slice("-.slice"), Ok("/".into()));
        for bad in [
            "system",
            ".slice",
            "-a.slice",
            "a-.slice",
            "a--b.slice",
            "a/b.slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn unit_paths_from_config() {
        let u = parse("system.slice:hako:abc").expect("valid");
        assert_eq!(u.unit, "hako-abc.scope");
        assert_eq!(u.slice, "system.slice");
        assert_eq!(u.cgroup, "/system.slice/hako-abc.scope");
        assert!(!u.is_slice());

        let u = parse(":hako:abc").expect("empty slice");
        assert_eq!(u.cgroup, "/system.slice/hako-abc.scope");

        let u = parse("hako-test.slice:x:y").expect("nested slice");
        assert_eq!(u.cgroup, "/hako.slice/hako-test.slice/x-y.scope");

        let u = parse("-.slice::y").expect("root slice, no prefix");
        assert_eq!(
            (u.unit.as_str(), u.cgroup.as_str()),
            ("y.scope", "/y.scope")
        );

        let u = parse("system.slice:hako:mine-a.slice").expect("slice unit");
        assert!(u.is_slice());
        assert_eq!(u.unit, "mine-a.slice");
        assert_eq!(u.cgroup, "/mine.slice/mine-a.slice");

        let u = UnitPath::from_config(None, "id9").expect("default");
        assert_eq!(u.cgroup, "/system.slice/hako-id9.scope");
    }

    #[test]
    fn bad_unit_paths_name_the_field() {
        for bad in [
            "not-a-valid-path",
            "/a/b",
            "a:b",
            "a:b:c:d",
            "system.slice:hako:",
            "system:hako:x",
            "system.slice:ha/ko:x",
            "system.slice:hako:x y",
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.starts_with("linux.cgroupsPath"), "{bad}: {e}");
        }
    }
}
