//! The command line: `hako-init [-g] [--] CMD ARGS...`, `--pause`,
//! `--version`, `--help`. Pure parsing, so it is unit-tested.

/// What hako-init was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Run the command at argument index `command`, forward signals to it
    /// (to its whole process group with `-g`), reap, pass its status on.
    Run {
        command: usize,
        group: bool,
    },
    /// Hold the namespaces: sleep, reap, exit 0 on SIGTERM/SIGINT.
    Pause,
    Version,
    Help,
}

/// Why the command line was refused (exit status 2).
#[derive(Debug, PartialEq, Eq)]
pub enum UsageError {
    MissingCommand,
    /// The index of an option hako-init does not know.
    UnknownOption(usize),
    /// `--pause`, `--version` and `--help` stand alone.
    NotAlone(usize),
}

pub const USAGE: &str = "usage: hako-init [-g] [--] COMMAND [ARG...]\n       \
     hako-init --pause\n       hako-init --version\n";

pub const HELP: &str = "\n\
  Runs COMMAND as a child, forwards the signals hako-init receives to it,\n\
  reaps every zombie and exits with COMMAND's status (128+N if it was\n\
  killed by signal N; 127 if COMMAND is not found, 126 if it cannot be\n\
  executed). Meant to be process 1 of a container.\n\
\n\
  -g        forward signals to COMMAND's process group, not just COMMAND\n\
  --pause   sleep until SIGTERM or SIGINT (then exit 0), reaping zombies:\n\
            the infra process holding a pod's namespaces\n";

/// Parses the arguments after argv[0]. `Run::command` indexes `args`.
pub fn parse<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Result<Mode, UsageError> {
    let mut group = false;
    let mut args = args.into_iter().enumerate().peekable();
    while let Some((i, arg)) = args.next() {
        let next = args.peek().map(|&(j, _)| j);
        let alone = |mode| match (i, next) {
            (0, None) => Ok(mode),
            (0, Some(j)) => Err(UsageError::NotAlone(j)),
            _ => Err(UsageError::NotAlone(i)),
        };
        match arg {
            b"--" => {
                return match args.next() {
                    Some((command, _)) => Ok(Mode::Run { command, group }),
                    None => Err(UsageError::MissingCommand),
                }
            }
            b"-g" => group = true,
            b"--pause" => return alone(Mode::Pause),
            b"--version" | b"-V" => return alone(Mode::Version),
            b"--help" | b"-h" => return alone(Mode::Help),
            [b'-', _, ..] => return Err(UsageError::UnknownOption(i)),
            _ => return Ok(Mode::Run { command: i, group }),
        }
    }
    Err(UsageError::MissingCommand)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Mode, UsageError> {
        parse(args.iter().map(|a| a.as_bytes()))
    }

    #[test]
    fn commands() {
        assert_eq!(
            p(&["sh", "-c", "x"]),
            Ok(Mode::Run {
                command: 0,
                group: false
            })
        );
        assert_eq!(
            p(&["--", "-weird"]),
            Ok(Mode::Run {
                command: 1,
                group: false
            })
        );
        assert_eq!(
            p(&["-g", "sh"]),
            Ok(Mode::Run {
                command: 1,
                group: true
            })
        );
        assert_eq!(
            p(&["-g", "--", "--pause"]),
            Ok(Mode::Run {
                command: 2,
                group: true
            })
        );
        // A lone "-" is a command name, not an option.
        assert_eq!(
            p(&["-"]),
            Ok(Mode::Run {
                command: 0,
                group: false
            })
        );
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["--pause"]), Ok(Mode::Pause));
        assert_eq!(p(&["--version"]), Ok(Mode::Version));
        assert_eq!(p(&["-h"]), Ok(Mode::Help));
    }

    #[test]
    fn usage_errors() {
        assert_eq!(p(&[]), Err(UsageError::MissingCommand));
        assert_eq!(p(&["--"]), Err(UsageError::MissingCommand));
        assert_eq!(p(&["-g"]), Err(UsageError::MissingCommand));
        assert_eq!(p(&["-x", "sh"]), Err(UsageError::UnknownOption(0)));
        assert_eq!(p(&["--pause", "sh"]), Err(UsageError::NotAlone(1)));
        assert_eq!(p(&["-g", "--pause"]), Err(UsageError::NotAlone(1)));
    }
}
