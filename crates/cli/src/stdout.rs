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

/// A table as docker prints it: columns as wide as their widest cell,
/// three spaces apart, the last one unpadded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        write(format_args!("{}", self.render()));
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let mut text = String::new();
        for r in &self.rows {
            for (c, cell) in r.iter().enumerate() {
                text.push_str(cell);
                if c + 1 < r.len() {
                    let pad = widths[c] - cell.chars().count() + 3;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_fit_their_widest_cell() {
        let mut t = Table::new(&["A", "CREATED", "NAME"]);
        t.row(vec![
            "x".into(),
            "Less than a second ago".into(),
            "n".into(),
        ]);
        t.row(vec!["long-id".into(), "1 hour ago".into(), "m".into()]);
        assert_eq!(
            t.render(),
            "A         CREATED                  NAME\n\
             x         Less than a second ago   n\n\
             long-id   1 hour ago               m\n"
        );
    }
}
