//! Writing to stdout. A reader that went away (`hako ps | head -1`) ends
//! hako the way it ends C and Go tools, by SIGPIPE and without a message;
//! `println!` would panic instead (Rust ignores SIGPIPE).

use std::io::Write;

/// `println!`, minding a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!`, minding a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

pub fn write(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        failed(&e);
    }
}

/// Ends the process after a failed write to stdout.
pub fn failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: restoring the default action of a signal and raising it
        // in this process; no handler code runs.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    eprintln!("hako: writing to stdout: {e}");
    std::process::exit(125);
}
