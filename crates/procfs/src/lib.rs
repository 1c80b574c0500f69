//! What /proc says of a process: enough to tell a live process from a
//! reused pid (the runtime's state, the engine's lock files and the
//! monitor's attach marks name processes as `PID START`). No dependencies:
//! the runtime and the monitor are kept small.

/// The state letter and field 22 of `/proc/PID/stat` (start time in clock
/// ticks since boot); None when there is no such process.
pub fn stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
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

#[cfg(test)]
mod tests {
    use super::*;

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
