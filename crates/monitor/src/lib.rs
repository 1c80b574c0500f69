//! hako's container monitor (like podman's conmon) and the library the
//! engine drives it with.
//!
//! One `hako-monitor` process per container is the container's parent and
//! subreaper: it holds the container's stdio, writes its log (CRI format,
//! [`logs`]), serves attach clients on `RUN/attach` ([`protocol`],
//! [`attach`]), records the exit status in `RUN/exit`
//! ([`protocol::ExitRecord`]) and survives the CLI that started it. The
//! process model is drawn in the [`daemon`] module.
//!
//! The engine:
//! 1. creates the run dir (mode 0700) and calls [`spawn`] with
//!    [`MonitorOptions`]: the monitor runs `RUNTIME create` and `spawn`
//!    returns [`Started`] or the runtime's error ([`MonitorError::Create`]);
//! 2. optionally connects attach clients ([`Attach::connect`],
//!    [`attach_stdio`]) — before `start`, they see all output;
//! 3. runs `RUNTIME start ID` itself;
//! 4. reads `RUN/exit` ([`protocol::ExitRecord::read`]) and the log
//!    ([`logs::read_log`]).
//!
//! Files in the run dir: `monitor.pid`, `pid` (the runtime's pid file),
//! `attach` (socket), `console.sock` (terminal only, removed once the pty
//! master arrived), `exit`.

pub mod attach;
pub mod daemon;
pub mod logs;
pub mod protocol;
pub mod spawn;
pub mod time;

pub use attach::{
    attach_stdio, attach_stdio_with, parse_detach_keys, Attach, AttachError, AttachStdio,
    DEFAULT_DETACH_KEYS,
};
pub use logs::{join_partials, read_log, Follow, LogLine, LogRecord, Stream};
pub use protocol::{ExitRecord, Frame};
pub use spawn::{spawn, MonitorError, MonitorOptions, Started};
pub use time::Timestamp;
