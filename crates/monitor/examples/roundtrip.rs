//! One spawn → start → exit round through hako-monitor, timed from inside
//! (for bench/monitor.sh): prints the microseconds from `spawn` to the
//! Exit frame of an attach client connected before `start`.
//!
//! Then the part of it spent in `spawn` (the monitor starting and the
//! runtime's create) and in `start`, in microseconds.
//!
//! Usage: roundtrip MONITOR RUNTIME STATE_ROOT BUNDLE RUN_DIR LOG ID

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use hako_monitor::{Attach, Frame, MonitorOptions};

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [monitor, runtime, root, bundle, run_dir, log, id] = a.as_slice() else {
        eprintln!("usage: roundtrip MONITOR RUNTIME STATE_ROOT BUNDLE RUN_DIR LOG ID");
        return ExitCode::from(2);
    };
    let mut opts = MonitorOptions::new(monitor, id, bundle, run_dir, log);
    opts.runtime = Some(runtime.into());
    opts.runtime_args = vec!["--root".into(), root.into()];
    let t0 = Instant::now();
    if let Err(e) = hako_monitor::spawn(&opts) {
        eprintln!("roundtrip: {e}");
        return ExitCode::FAILURE;
    }
    let spawned = t0.elapsed();
    let attach = match Attach::connect(run_dir.as_ref()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("roundtrip: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Command::new(runtime)
        .args(["--root", root, "start", id])
        .stdin(Stdio::null())
        .status();
    if !started.is_ok_and(|s| s.success()) {
        eprintln!("roundtrip: {runtime} start {id} failed");
        return ExitCode::FAILURE;
    }
    let start_done = t0.elapsed();
    loop {
        match attach.read_frame() {
            Ok(Some(Frame::Exit(_))) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                eprintln!("roundtrip: no exit frame");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{} {} {}",
        t0.elapsed().as_micros(),
        spawned.as_micros(),
        (start_done - spawned).as_micros()
    );
    ExitCode::SUCCESS
}
