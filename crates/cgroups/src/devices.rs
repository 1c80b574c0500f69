//! Device access control: `linux.resources.devices`, the default devices
//! and `linux.devices`, enforced by the v1 devices controller or, on
//! cgroup2, by an eBPF program.
//!
//! A [`DeviceRule`] allows or denies read, write and mknod access to
//! devices of one kind (char, block or all) and number (major and minor,
//! each possibly a wildcard). A container's rules are, in this order
//! ([`container_rules`]): its `linux.resources.devices`, the devices every
//! container gets ([`DEFAULT_RULES`]) and an allow-all-access rule for each
//! node in its `linux.devices`.
//!
//! Meaning: rules apply in order and later ones override earlier ones, per
//! access bit. For each bit a request has (mknod, read, write), the last
//! rule that matches the device and includes that bit decides it; with no
//! such rule the bit is denied (runc's cgroup2 default). A request is
//! allowed when all its bits are. So `allow a *:* rwm` allows everything
//! later rules do not deny, and an empty list denies everything. (runc and
//! the v1 kernel want one rule to cover all the bits of a request: `allow c
//! 1:* r` then `allow c 1:3 w` lets hako open 1:3 read-write, them not.)
//!
//! Enforcement ([`apply`]):
//! - A host with a v1 devices hierarchy: the cgroup first denies everything
//!   (`a` to `devices.deny`, unless the first rule is itself an `a` rule),
//!   then each rule is written in order to `devices.allow` or
//!   `devices.deny`. The kernel keeps a list of exceptions there, which
//!   gives the same result for the rules containers use (deny all, then
//!   allows, then narrower denials of what was allowed); it differs for
//!   unusual lists, e.g. a wildcard denial after an exact allow does not
//!   remove the exact one, and an `a` rule resets everything whatever its
//!   numbers and access.
//! - Otherwise, with a cgroup2 directory: the rules are compiled
//!   ([`program::compile`]) into a `BPF_PROG_TYPE_CGROUP_DEVICE` program,
//!   attached to the directory ([`attach_bpf`]). The kernel enforces it on
//!   hybrid hosts too, for the processes in that cgroup2 directory.

mod bpf;
pub mod program;

use std::fmt;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::cgroup::Cgroup;
use crate::error::{CgroupError, Result};
use crate::fs::write_file;

/// Which devices a rule concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Char and block devices (`a`).
    All,
    /// Character devices (`c`; OCI's `u` too).
    Char,
    /// Block devices (`b`).
    Block,
}

/// A set of access bits, valued as the eBPF context spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    /// `rwm`.
    pub const ALL: Access = Access(7);

    /// The set with these bits (mknod 1, read 2, write 4; others dropped).
    pub const fn from_bits(bits: u8) -> Access {
        Access(bits & 7)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True when every bit of `other` is in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses a non-empty combination of `r`, `w` and `m`.
    pub fn parse(text: &str) -> Option<Access> {
        if text.is_empty() {
            return None;
        }
        let mut bits = 0;
        for c in text.chars() {
            bits |= match c {
                'r' => Self::READ.0,
                'w' => Self::WRITE.0,
                'm' => Self::MKNOD.0,
                _ => return None,
            };
        }
        Some(Access(bits))
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(Self::READ, 'r'), (Self::WRITE, 'w'), (Self::MKNOD, 'm')] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One device rule. Displayed in the v1 form: `c 1:3 rwm`, `a *:* rwm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// None: any major.
    pub major: Option<u32>,
    /// None: any minor.
    pub minor: Option<u32>,
    pub access: Access,
}

/// The devices every container may use (runc's list): null, zero, full,
/// tty, random, urandom, ptmx, the pty slaves and /dev/console.
pub const DEFAULT_RULES: [DeviceRule; 9] = [
    DeviceRule::allow_char(1, Some(3)), // /dev/null
    DeviceRule::allow_char(1, Some(5)), // /dev/zero
    DeviceRule::allow_char(1, Some(7)), // /dev/full
    DeviceRule::allow_char(5, Some(0)), // /dev/tty
    DeviceRule::allow_char(1, Some(8)), // /dev/random
    DeviceRule::allow_char(1, Some(9)), // /dev/urandom
    DeviceRule::allow_char(5, Some(2)), // /dev/ptmx
    DeviceRule::allow_char(136, None),  // /dev/pts/*
    DeviceRule::allow_char(5, Some(1)), // /dev/console
];

impl DeviceRule {
    /// Allows `rwm` on the char device `major:minor` (None: any minor).
    pub const fn allow_char(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access: Access::ALL,
        }
    }

    /// The rule an entry of `linux.resources.devices` gives: None for
    /// type `p` (a pipe is not a device the cgroup controls). A missing
    /// type means all devices, a missing or negative number any number, a
    /// missing access `rwm`.
    pub fn from_oci(rule: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>> {
        let describe = || {
            let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
            format!(
                "{} {} {}:{} {:?}",
                if rule.allow() { "allow" } else { "deny" },
                rule.typ().unwrap_or_default().as_str(),
                num(rule.major()),
                num(rule.minor()),
                rule.access().as_deref().unwrap_or("rwm"),
            )
        };
        let kind = match rule.typ() {
            None | Some(LinuxDeviceType::A) => DeviceKind::All,
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => DeviceKind::Char,
            Some(LinuxDeviceType::B) => DeviceKind::Block,
            Some(LinuxDeviceType::P) => return Ok(None),
        };
        let access = match rule.access() {
            None => Access::ALL,
            Some(text) => Access::parse(text).ok_or_else(|| CgroupError::InvalidDeviceRule {
                rule: describe(),
                reason: format!("access {text:?} must be a non-empty combination of r, w and m"),
            })?,
        };
        let number = |n: Option<i64>, what: &str| match n {
            Some(n) if n >= 0 => {
                u32::try_from(n)
                    .map(Some)
                    .map_err(|_| CgroupError::InvalidDeviceRule {
                        rule: describe(),
                        reason: format!("{what} {n} is not a device number"),
                    })
            }
            _ => Ok(None),
        };
        Ok(Some(DeviceRule {
            allow: rule.allow(),
            kind,
            major: number(rule.major(), "major")?,
            minor: number(rule.minor(), "minor")?,
            access,
        }))
    }

    /// The rule that lets a container use a node of its `linux.devices`:
    /// allow `rwm` on that char or block device. None for a pipe.
    pub fn for_node(dev: &LinuxDevice) -> Result<Option<DeviceRule>> {
        let kind = match dev.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P | LinuxDeviceType::A => return Ok(None),
        };
        let number = |n: i64, what: &str| {
            u32::try_from(n).map_err(|_| CgroupError::InvalidDeviceRule {
                rule: format!("for {}", dev.path().display()),
                reason: format!("{what} {n} is not a device number"),
            })
        };
        Ok(Some(DeviceRule {
            allow: true,
            kind,
            major: Some(number(dev.major(), "major")?),
            minor: Some(number(dev.minor(), "minor")?),
            access: Access::ALL,
        }))
    }

    /// Parses the v1 form (`c 1:3 rwm`, `b 8:* r`, `a *:* rwm` or just `a`)
    /// into an allow (`allow`) or deny rule.
    pub fn parse_v1(allow: bool, text: &str) -> Result<DeviceRule> {
        let invalid = |reason: &str| CgroupError::InvalidDeviceRule {
            rule: format!("{text:?}"),
            reason: reason.to_string(),
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields == ["a"] {
            return Ok(DeviceRule {
                allow,
                kind: DeviceKind::All,
                major: None,
                minor: None,
                access: Access::ALL,
            });
        }
        let [kind, numbers, access] = fields[..] else {
            return Err(invalid("expected TYPE MAJOR:MINOR ACCESS, like c 1:3 rwm"));
        };
        let kind = match kind {
            "a" => DeviceKind::All,
            "c" => DeviceKind::Char,
            "b" => DeviceKind::Block,
            _ => return Err(invalid("the type must be a, c or b")),
        };
        let number = |n: &str| match n {
            "*" => Ok(None),
            _ => n
                .parse()
                .map(Some)
                .map_err(|_| invalid("major and minor must be numbers or *")),
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| invalid("expected MAJOR:MINOR"))?;
        Ok(DeviceRule {
            allow,
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access: Access::parse(access)
                .ok_or_else(|| invalid("access must be a non-empty combination of r, w and m"))?,
        })
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        write!(
            f,
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

/// A container's rules: `resources` (its `linux.resources.devices`) in
/// order, then [`DEFAULT_RULES`], then an allow for each char or block
/// device of `nodes` (its `linux.devices`), so those stay usable whatever
/// `resources` denied.
pub fn container_rules(
    resources: &[LinuxDeviceCgroup],
    nodes: &[LinuxDevice],
) -> Result<Vec<DeviceRule>> {
    let at = |field: String, e: CgroupError| match e {
        CgroupError::InvalidDeviceRule { rule, reason } => CgroupError::InvalidDeviceRule {
            rule: format!("{field} ({rule})"),
            reason,
        },
        other => other,
    };
    let mut rules = Vec::with_capacity(resources.len() + DEFAULT_RULES.len() + nodes.len());
    for (i, r) in resources.iter().enumerate() {
        let rule =
            DeviceRule::from_oci(r).map_err(|e| at(format!("linux.resources.devices[{i}]"), e))?;
        rules.extend(rule);
    }
    rules.extend(DEFAULT_RULES);
    for (i, d) in nodes.iter().enumerate() {
        let rule = DeviceRule::for_node(d).map_err(|e| at(format!("linux.devices[{i}]"), e))?;
        rules.extend(rule);
    }
    Ok(rules)
}

/// Makes `rules` the device rules of `cg`, replacing the ones it had: in
/// the v1 devices controller when the host has one, otherwise as an eBPF
/// program on the cgroup2 directory. Returns a warning when the host has
/// neither, so nothing enforces the rules.
pub fn apply(cg: &Cgroup, rules: &[DeviceRule]) -> Result<Vec<String>> {
    if let Some(dir) = cg.dir_for("devices") {
        write_v1(dir, rules)?;
        return Ok(Vec::new());
    }
    if let Some(dir) = cg.unified_dir() {
        attach_bpf(dir, rules)?;
        return Ok(Vec::new());
    }
    Ok(vec![
        "devices: this host has neither a devices controller nor cgroup2; device rules are not enforced"
            .into(),
    ])
}

/// Writes `rules` in order to a v1 devices cgroup, after denying
/// everything so that what no rule allows is denied.
fn write_v1(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    if !rules.first().is_some_and(|r| r.kind == DeviceKind::All) {
        write_file(dir, "devices.deny", "a")?;
    }
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write_file(dir, file, &r.to_string())?;
    }
    Ok(())
}

/// The name hako's device programs are loaded with, which tells them
/// apart from programs others attached to the same cgroup.
pub const PROGRAM_NAME: &str = "hako_devices";

/// Compiles `rules` and attaches the program to the cgroup2 directory
/// `dir`, then detaches the device programs hako attached there before.
/// The new program is in place before the old ones go, so there is no
/// moment without a filter; programs others attached stay (the kernel
/// requires every attached program to allow an access).
pub fn attach_bpf(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let insns = program::compile(rules)?;
    let prog =
        bpf::load_device_program(&insns, PROGRAM_NAME).map_err(|e| CgroupError::BpfVerifier {
            path: dir.to_path_buf(),
            source: e.source,
            log: e.log,
        })?;
    let cgroup = open_dir(dir)?;
    let failed = |command: &'static str| {
        move |source| CgroupError::Bpf {
            path: dir.to_path_buf(),
            command,
            source,
        }
    };
    let old = bpf::query_device_programs(cgroup.as_fd()).map_err(failed("BPF_PROG_QUERY"))?;
    bpf::attach_device_program(cgroup.as_fd(), prog.as_fd()).map_err(failed("BPF_PROG_ATTACH"))?;
    for id in old {
        let old_prog = match bpf::program_by_id(id) {
            Ok(fd) => fd,
            // Detached and freed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(failed("BPF_PROG_GET_FD_BY_ID")(e)),
        };
        let name = bpf::program_name(old_prog.as_fd()).map_err(failed("BPF_OBJ_GET_INFO_BY_FD"))?;
        if name != PROGRAM_NAME {
            continue;
        }
        match bpf::detach_device_program(cgroup.as_fd(), old_prog.as_fd()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(failed("BPF_PROG_DETACH")(e)),
        }
    }
    Ok(())
}

/// The ids of the device programs attached directly to the cgroup2
/// directory `dir` (by hako or anyone else).
pub fn attached_programs(dir: &Path) -> Result<Vec<u32>> {
    let cgroup = open_dir(dir)?;
    bpf::query_device_programs(cgroup.as_fd()).map_err(|source| CgroupError::Bpf {
        path: dir.to_path_buf(),
        command: "BPF_PROG_QUERY",
        source,
    })
}

fn open_dir(dir: &Path) -> Result<File> {
    File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceCgroupBuilder};

    /// A `linux.resources.devices` entry from `key=value` fields.
    fn oci(desc: &str) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default();
        for field in desc.split_whitespace() {
            let (k, v) = field.split_once('=').expect("key=value");
            b = match k {
                "allow" => b.allow(v == "true"),
                "type" => b.typ(match v {
                    "a" => LinuxDeviceType::A,
                    "b" => LinuxDeviceType::B,
                    "c" => LinuxDeviceType::C,
                    "u" => LinuxDeviceType::U,
                    _ => LinuxDeviceType::P,
                }),
                "major" => b.major(v.parse::<i64>().expect("number")),
                "minor" => b.minor(v.parse::<i64>().expect("number")),
                "access" => b.access(v.trim_matches('"')),
                _ => panic!("unknown field {k}"),
            };
        }
        b.build().expect("builds")
    }

    #[test]
    fn rules_from_oci() {
        let r = DeviceRule::from_oci(&oci("allow=false access=rwm")).expect("valid");
        assert_eq!(
            r,
            Some(DeviceRule {
                allow: false,
                kind: DeviceKind::All,
                major: None,
                minor: None,
                access: Access::ALL
            })
        );
        let r = DeviceRule::from_oci(&oci("allow=true type=u major=1 minor=-1 access=rw"))
            .expect("valid")
            .expect("a device rule");
        assert_eq!(r.to_string(), "c 1:* rw");
        let r = DeviceRule::from_oci(&oci("allow=true type=b major=8"))
            .expect("valid")
            .expect("a device rule");
        assert_eq!(r.to_string(), "b 8:* rwm");
        assert_eq!(
            DeviceRule::from_oci(&oci("allow=true type=p access=rwm")).expect("valid"),
            None
        );
    }

    #[test]
    fn bad_oci_rules_are_refused() {
        for (desc, want) in [
            ("allow=true type=c major=1 minor=3 access=rwx", "\"rwx\""),
            ("allow=true type=c major=1 minor=3 access=\"\"", "non-empty"),
            (
                "allow=true type=c major=4294967296 access=r",
                "major 4294967296",
            ),
        ] {
            let err = DeviceRule::from_oci(&oci(desc))
                .expect_err(desc)
                .to_string();
            assert!(err.contains(want), "{desc}: {err}");
        }
        let err = container_rules(&[oci("allow=false type=c access=x")], &[])
            .expect_err("invalid")
            .to_string();
        assert_eq!(
            err,
            "device rule linux.resources.devices[0] (deny c *:* \"x\"): \
             access \"x\" must be a non-empty combination of r, w and m"
        );
    }

    #[test]
    fn v1_form_round_trips() {
        for text in ["c 1:3 rwm", "b 8:* r", "a *:* rwm", "c *:5 wm", "a 1:2 m"] {
            let r = DeviceRule::parse_v1(true, text).expect(text);
            assert_eq!(r.to_string(), text);
        }
        let a = DeviceRule::parse_v1(false, "a").expect("a");
        assert_eq!(a.to_string(), "a *:* rwm");
        assert!(!a.allow);
        assert_eq!(
            DeviceRule::parse_v1(true, " c  1:3   mr ")
                .map(|r| r.to_string())
                .ok(),
            Some("c 1:3 rm".to_string())
        );
        for bad in [
            "",
            "c 1:3",
            "x 1:3 r",
            "c 1-3 r",
            "c a:3 r",
            "c 1:3 rx",
            "c 1:3 r w",
        ] {
            assert!(DeviceRule::parse_v1(true, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_runcs_list() {
        let text: Vec<String> = DEFAULT_RULES.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            text,
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 5:0 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 5:1 rwm"
            ]
        );
        assert!(DEFAULT_RULES.iter().all(|r| r.allow));
    }

    /// The kernel's verifier accepts what the compiler makes, for rule
    /// lists of every shape (needs root; skipped otherwise).
    #[test]
    fn kernel_accepts_compiled_programs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let parse = |text: &[&str]| -> Vec<DeviceRule> {
            text.iter()
                .map(|t| {
                    let (verb, rule) = t.split_once(' ').expect("verb rule");
                    DeviceRule::parse_v1(verb == "allow", rule).expect("valid")
                })
                .collect()
        };
        let mut defaults = parse(&["deny a"]);
        defaults.extend(DEFAULT_RULES);
        let lists = [
            Vec::new(),
            defaults,
            parse(&["allow a"]),
            parse(&["deny a"]),
            parse(&["allow a", "deny c 1:5 rwm", "deny c 1:7 w"]),
            parse(&["allow c 1:3 r", "deny c 1:3 w", "allow b *:* m"]),
            parse(&["allow a 1:* rw", "allow c *:5 m", "deny a *:3 r"]),
        ];
        for rules in lists {
            let insns = program::compile(&rules).expect("compiles");
            if let Err(e) = bpf::load_device_program(&insns, "hako_test") {
                panic!("{rules:?}: {}\n{}", e.source, e.log);
            }
        }
    }

    #[test]
    fn container_rules_order() {
        let node = |typ, major, minor| {
            LinuxDeviceBuilder::default()
                .path("/dev/x")
                .typ(typ)
                .major(major)
                .minor(minor)
                .build()
                .expect("builds")
        };
        let rules = container_rules(
            &[
                oci("allow=false access=rwm"),
                oci("allow=true type=p access=rwm"),
                oci("allow=true type=b major=8 minor=0 access=r"),
            ],
            &[
                node(LinuxDeviceType::C, 10, 200),
                node(LinuxDeviceType::P, 0, 0),
                node(LinuxDeviceType::B, 7, 1),
            ],
        )
        .expect("valid");
        let text: Vec<String> = rules
            .iter()
            .map(|r| format!("{} {r}", if r.allow { "allow" } else { "deny" }))
            .collect();
        let mut want = vec!["deny a *:* rwm".to_string(), "allow b 8:0 r".to_string()];
        want.extend(DEFAULT_RULES.iter().map(|r| format!("allow {r}")));
        want.extend([
            "allow c 10:200 rwm".to_string(),
            "allow b 7:1 rwm".to_string(),
        ]);
        assert_eq!(text, want);
        let err = container_rules(&[], &[node(LinuxDeviceType::C, -1, 0)])
            .expect_err("negative major")
            .to_string();
        assert!(
            err.contains("linux.devices[0]") && err.contains("major -1"),
            "{err}"
        );
    }
}
