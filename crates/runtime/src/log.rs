//! A small logger for the runtime: text or runc-style JSON lines to a file
//! (`--log`) or stderr. Deliberately tiny: it runs on the start-up path.
//!
//! runc writes `{"level":"error","msg":"…","time":"…"}` lines; containerd's
//! shim and podman read the last error from there, so the format matters.

use std::io::Write;
use std::sync::OnceLock;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

/// Output format of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Sink {
    file: Option<std::fs::File>,
    format: Format,
    min: Level,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Configures the logger once. Without a call, warnings and errors go to
/// stderr as text.
pub fn init(file: Option<std::fs::File>, format: Format, debug: bool) {
    let min = if debug { Level::Debug } else { Level::Warn };
    let _ = SINK.set(Sink { file, format, min });
}

/// True when debug lines are written (avoid formatting them otherwise).
pub fn debug_enabled() -> bool {
    SINK.get().is_some_and(|s| s.min <= Level::Debug)
}

/// True when a log file was configured.
pub fn has_file() -> bool {
    SINK.get().is_some_and(|s| s.file.is_some())
}

/// Writes one log line.
pub fn log(level: Level, msg: &str) {
    let (file, format, min) = match SINK.get() {
        Some(s) => (s.file.as_ref(), s.format, s.min),
        None => (None, Format::Text, Level::Warn),
    };
    if level < min {
        return;
    }
    let line = match format {
        Format::Json => format!(
            "{{\"level\":\"{}\",\"msg\":{},\"time\":\"{}\"}}\n",
            level.as_str(),
            serde_json::Value::String(msg.to_string()),
            rfc3339_now()
        ),
        Format::Text => format!(
            "time=\"{}\" level={} msg={:?}\n",
            rfc3339_now(),
            level.as_str(),
            msg
        ),
    };
    match file {
        Some(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Logs at debug level; the message is only built when debug is on.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::log($crate::log::Level::Debug, &format!($($arg)*));
        }
    };
}

/// Logs a warning.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Warn, &format!($($arg)*))
    };
}

/// The current time in RFC 3339 with nanoseconds, UTC.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// Formats seconds since the epoch (UTC) as RFC 3339.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_rfc3339() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000, 5),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(
            super::rfc3339(951_782_400, 0),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
