//! The channel between the runtime and the container's init while the
//! container is being created: a SOCK_SEQPACKET socket pair, one message per
//! packet, so a message is never split or merged.
//!
//! ```text
//!   runtime (parent)                      init (child, in new namespaces)
//!   clone ─────────────────────────────▶  waits
//!   cgroup, uid/gid maps, state.json
//!   Go(pid)   ──────────────────────────────▶  joins namespaces, mounts
//!                         ◀────────────── RunCreateHooks
//!   prestart + createRuntime hooks
//!   HooksDone ─────────────────────────▶  createContainer hooks, pivot_root,
//!                                         masks, console, caps, user
//!                         ◀────────────── Ready  (or Error(msg) at any step)
//!   state.json "created", exit            blocks on exec.fifo until `start`
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A message on the create channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Carries init's host pid (for the state hooks are given).
    Go(String),
    RunCreateHooks,
    HooksDone,
    Ready,
    /// Two-stage init: the user namespace exists, write its id maps.
    MapIds,
    /// The id maps are written.
    IdsMapped,
    /// The child's pid as seen by the parent (used by exec's helper).
    Pid(i32),
    Error(String),
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Go(s) => {
                let mut v = vec![1];
                v.extend_from_slice(s.as_bytes());
                v
            }
            Message::RunCreateHooks => vec![2],
            Message::HooksDone => vec![3],
            Message::Ready => vec![4],
            Message::MapIds => vec![7],
            Message::IdsMapped => vec![8],
            Message::Pid(p) => {
                let mut v = vec![5];
                v.extend_from_slice(&p.to_le_bytes());
                v
            }
            Message::Error(s) => {
                let mut v = vec![6];
                v.extend_from_slice(s.as_bytes());
                v
            }
        }
    }

    fn decode(b: &[u8]) -> io::Result<Message> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sync message");
        let (&tag, rest) = b.split_first().ok_or_else(bad)?;
        Ok(match tag {
            1 => Message::Go(String::from_utf8_lossy(rest).into_owned()),
            2 => Message::RunCreateHooks,
            3 => Message::HooksDone,
            4 => Message::Ready,
            7 => Message::MapIds,
            8 => Message::IdsMapped,
            5 => Message::Pid(i32::from_le_bytes(rest.try_into().map_err(|_| bad())?)),
            6 => Message::Error(String::from_utf8_lossy(rest).into_owned()),
            _ => return Err(bad()),
        })
    }
}

/// One end of the channel.
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair (both ends close-on-exec).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints for the kernel to fill.
        let ret = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by no one else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, m: &Message) -> io::Result<()> {
        let buf = m.encode();
        loop {
            // SAFETY: buf is valid for its length; MSG_NOSIGNAL avoids SIGPIPE.
            let ret = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if ret < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            return Ok(());
        }
    }

    /// Receives one message; `Ok(None)` when the other end closed.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let ret =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if ret < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            if ret == 0 {
                return Ok(None);
            }
            return Message::decode(&buf[..ret as usize]).map(Some);
        }
    }

    /// Waits for `want`; an Error message or a closed channel is an error.
    pub fn expect(&self, want: &Message) -> io::Result<()> {
        match self.recv()? {
            Some(m) if &m == want => Ok(()),
            Some(Message::Error(e)) => Err(io::Error::other(e)),
            Some(m) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {want:?}, got {m:?}"),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other side exited",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (a, b) = Channel::pair().expect("pair");
        for m in [
            Message::Go("{}".into()),
            Message::Pid(42),
            Message::Error("boom".into()),
            Message::Ready,
        ] {
            a.send(&m).expect("send");
            assert_eq!(b.recv().expect("recv"), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().expect("recv"), None);
    }
}
