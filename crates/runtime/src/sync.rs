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
//!
//! A profile with SCMP_ACT_NOTIFY adds one message, [`Message::SeccompListener`],
//! sent by the process that loaded the filter right after loading it, with
//! the listener fd attached (SCM_RIGHTS): the runtime hands it on to the
//! seccomp agent (see [`crate::seccomp_agent`]) and waits on as before.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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
    /// A seccomp filter with SCMP_ACT_NOTIFY is loaded; its listener fd
    /// comes with this message (see [`Channel::send_seccomp_listener`]).
    SeccompListener,
    /// Init is in its cgroup (sent after `Go` when the runtime joins it
    /// while init sets up its mounts; see `InitArgs::cgroup_joined_later`).
    CgroupJoined,
}

const TAG_SECCOMP_LISTENER: u8 = 9;
const TAG_CGROUP_JOINED: u8 = 10;

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
            Message::SeccompListener => vec![TAG_SECCOMP_LISTENER],
            Message::CgroupJoined => vec![TAG_CGROUP_JOINED],
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
            TAG_SECCOMP_LISTENER if rest.is_empty() => Message::SeccompListener,
            TAG_CGROUP_JOINED if rest.is_empty() => Message::CgroupJoined,
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

    /// Sends [`Message::SeccompListener`] with `fd` attached (SCM_RIGHTS).
    ///
    /// Called right after a filter with SCMP_ACT_NOTIFY was loaded: until
    /// this message is out, a syscall the profile notifies would wait for
    /// an agent that cannot have the fd yet. So this makes one syscall,
    /// sendmsg (which [`crate::seccomp::check_notify`] keeps out of
    /// notification), and allocates nothing: no brk or mmap either.
    pub fn send_seccomp_listener(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut tag = [TAG_SECCOMP_LISTENER];
        let mut iov = libc::iovec {
            iov_base: tag.as_mut_ptr().cast(),
            iov_len: tag.len(),
        };
        // Room for one cmsghdr with one int (CMSG_SPACE(4) is 24 on 64-bit
        // Linux), as u64s so it is aligned for cmsghdr.
        let mut control = [0u64; 4];
        let fd_len = std::mem::size_of::<RawFd>() as libc::c_uint;
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes. msg_control
        // points to `control`, aligned for cmsghdr and large enough for one
        // header and one int (asserted), so CMSG_FIRSTHDR is non-null and
        // the header and its data lie inside `control`.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(fd_len) as usize;
            assert!(msg.msg_controllen <= std::mem::size_of_val(&control));
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
        }
        loop {
            // SAFETY: msg and everything it points to (iov, tag, control)
            // live until the call returns; MSG_NOSIGNAL avoids SIGPIPE.
            let ret = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if ret >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// Receives one message; `Ok(None)` when the other end closed. A
    /// descriptor sent along is closed.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// Receives one message and the descriptor sent along with it, if any
    /// (close-on-exec); `Ok(None)` when the other end closed.
    pub fn recv_with_fd(&self) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut buf = vec![0u8; 65536];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut reset_seen = false;
        loop {
            let mut iov = [io::IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EINTR) => continue,
                // The other side closed with messages of ours unread. A
                // seqpacket socket reports that (once) before the messages
                // it queued before closing, such as its error: read on.
                Err(nix::errno::Errno::ECONNRESET) if !reset_seen => {
                    reset_seen = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut fd = None;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel installed this fd for us; we
                        // own it (extra ones are closed on drop).
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            let n = msg.bytes;
            if n == 0 {
                return Ok(None);
            }
            return Message::decode(&buf[..n]).map(|m| Some((m, fd)));
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

    #[test]
    fn seccomp_listener_carries_an_fd() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let (a, b) = Channel::pair().expect("pair");
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().expect("stream pair");
        a.send_seccomp_listener(theirs.as_fd()).expect("send fd");
        drop(theirs);
        let (m, fd) = b.recv_with_fd().expect("recv").expect("a message");
        assert_eq!(m, Message::SeccompListener);
        // The received fd is the other end of `ours`: bytes pass through.
        let mut received = std::os::unix::net::UnixStream::from(fd.expect("an fd came along"));
        ours.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        received.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
        a.send(&Message::Ready).expect("send");
        let (m, fd) = b.recv_with_fd().expect("recv").expect("a message");
        assert_eq!((m, fd.is_none()), (Message::Ready, true));
    }

    /// A side that exits with messages of ours unread resets the socket;
    /// its last words, queued before it closed, are still read.
    #[test]
    fn last_message_of_a_side_that_left_unread_messages() {
        let (parent, init) = Channel::pair().expect("pair");
        parent.send(&Message::Go("1".into())).expect("send go");
        init.send(&Message::Error("refused".into()))
            .expect("send error");
        drop(init);
        assert_eq!(
            parent.recv().expect("recv after a reset"),
            Some(Message::Error("refused".into()))
        );
        assert_eq!(parent.recv().expect("recv at the end"), None);
    }
}
