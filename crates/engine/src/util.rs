//! Small helpers: IDs, names, times, files written atomically, process
//! identity.

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// 32 random bytes as 64 hex digits (docker's container ID form).
pub fn random_id() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly",
    "keen", "lucid", "merry", "nimble", "proud", "quiet", "rapid", "sharp", "steady", "swift",
    "tidy", "vivid", "warm", "witty", "zesty",
];
const NOUNS: &[&str] = &[
    "otter", "heron", "lynx", "panda", "falcon", "badger", "marten", "ibis", "koala", "gecko",
    "bison", "crane", "dingo", "egret", "ferret", "gibbon", "hare", "jackal", "lemur", "magpie",
    "newt", "okapi", "puffin", "quokka", "robin",
];

/// A docker-style name (`adjective_noun`) from an ID's random bytes.
pub fn name_from_id(id: &str, attempt: u32) -> String {
    let n = u64::from_str_radix(&id[..12.min(id.len())], 16).unwrap_or(0);
    let n = n.wrapping_add(u64::from(attempt).wrapping_mul(7919));
    let a = ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize];
    let b = NOUNS[(n / ADJECTIVES.len() as u64 % NOUNS.len() as u64) as usize];
    if attempt < 4 {
        format!("{a}_{b}")
    } else {
        format!("{a}_{b}_{attempt}")
    }
}

/// docker's rule for container, volume, network and pod names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 253
}

/// Now in nanoseconds since the epoch.
pub fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Nanoseconds since the epoch → RFC 3339 UTC with nanoseconds.
pub fn rfc3339_nanos(nanos: i128) -> String {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let frac = nanos.rem_euclid(1_000_000_000);
    let base = hako_image::store::rfc3339(secs);
    format!("{}.{frac:09}Z", base.trim_end_matches('Z'))
}

/// RFC 3339 (with optional fraction) → nanoseconds since the epoch.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    let secs = hako_image::store::parse_rfc3339(s)?;
    let frac = s
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map(|r| {
            let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
            let mut d = digits;
            d.truncate(9);
            while d.len() < 9 {
                d.push('0');
            }
            d.parse::<i128>().unwrap_or(0)
        })
        .unwrap_or(0);
    Some(i128::from(secs) * 1_000_000_000 + frac)
}

/// "3 seconds ago", "2 hours ago"… (docker's ps form).
pub fn ago(nanos: i128) -> String {
    let secs = ((now_nanos() - nanos) / 1_000_000_000).max(0) as u64;
    human_duration(secs) + " ago"
}

/// "Less than a second", "3 seconds", "About a minute", "5 minutes"…
pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// Writes `data` to `path` through a temporary file in the same
/// directory and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Parses docker's byte sizes: `512`, `512b`, `64k`, `512m`, `2g` (binary
/// units, as docker).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let v = n * mult as f64;
    (v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let n = 1_764_689_762_123_456_789i128;
        let s = rfc3339_nanos(n);
        assert_eq!(s, "2025-12-02T15:36:02.123456789Z");
        assert_eq!(parse_rfc3339_nanos(&s), Some(n));
        assert_eq!(
            parse_rfc3339_nanos("2025-12-02T15:36:02Z"),
            Some(1_764_689_762_000_000_000)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("1.5k"), Some(1536));
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-web"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        let id = random_id().expect("id");
        assert_eq!(id.len(), 64);
        assert!(valid_name(&name_from_id(&id, 0)));
        assert_ne!(name_from_id(&id, 0), name_from_id(&id, 1));
    }
}
