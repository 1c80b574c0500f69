//! What /proc says of a process: enough to tell a live process from a
//! reused pid. The runtime's state records its init as pid and start
//! time; the engine's `attached` mark names the attached `hako` as
//! `PID START`, and the monitor reads it back. No dependencies: the
//! runtime and the monitor are kept small.

/// The state letter and field 22 of `/proc/PID/stat` (start time in clock
/// ticks since boot); None when there is no such process.
pub fn stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of `pid` (field 22 of /proc/PID/stat).
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// Whether `pid` is still the process that started at `start_time`, and
/// not a zombie.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    matches!(stat(pid), Some((s, start)) if s != 'Z' && s != 'X' && start == start_time)
}

/// This process as `PID START`: the text of a mark file that
/// [`marked_process_alive`] reads back.
pub fn own_mark() -> String {
    let pid = std::process::id() as i32;
    format!("{pid} {}", process_start_time(pid).unwrap_or(0))
}

/// Whether the process that `file` names as `PID START` (see
/// [`own_mark`]) is alive; false when the file is missing or malformed.
pub fn marked_process_alive(file: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    let mut it = text.split_whitespace();
    match (
        it.next().and_then(|p| p.parse::<i32>().ok()),
        it.next().and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(pid), Some(start)) => process_alive(pid, start),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_process_is_alive_only_with_its_start_time() {
        let dir = std::env::temp_dir().join(format!("hako-procfs-mark-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let f = dir.join("attached");
        std::fs::write(&f, own_mark()).unwrap_or_else(|e| panic!("{e}"));
        assert!(marked_process_alive(&f));
        std::fs::write(&f, format!("{} 1", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
        assert!(!marked_process_alive(&f), "a reused pid counted");
        std::fs::write(&f, "garbage").unwrap_or_else(|e| panic!("{e}"));
        assert!(!marked_process_alive(&f));
        assert!(!marked_process_alive(&dir.join("missing")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn this_process_is_alive_with_its_own_start_time_only() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).expect("our start time");
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1), "a reused pid counted");
        assert!(!process_alive(0, start));
        assert!(!process_alive(-1, start));
    }
}
