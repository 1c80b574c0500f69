//! Seccomp user notification, runtime side: the listener fd of a filter
//! with SCMP_ACT_NOTIFY goes to the seccomp agent listening on the unix
//! socket at `linux.seccomp.listenerPath`, as runtime-spec describes and
//! runc does.
//!
//! ```text
//!  init or exec child          hako-runtime create|run|exec          agent
//!  load filter + listener
//!  SeccompListener + fd ─────▶ connect(listenerPath) ───────────────▶ accept
//!  close fd, go on             sendmsg(process state JSON + fd) ────▶ recvmsg
//!  (a notified syscall         close fd and the connection           SECCOMP_IOCTL_NOTIF_RECV
//!   waits for the agent)                                             / _SEND
//! ```
//!
//! The message is a single sendmsg on a SOCK_STREAM connection: the JSON of
//! runtime-spec's "container process state" (`ociVersion`, `fds:
//! ["seccompFd"]`, `pid`, `metadata`, `state`) with the fd in SCM_RIGHTS.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxSeccomp, SECCOMP_FD_NAME};
use serde::Serialize;

/// The listener fd could not be handed to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The profile notifies but names no agent (normally refused earlier).
    #[error("linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath, the seccomp agent's socket")]
    NoListenerPath,
    #[error("seccomp agent at linux.seccomp.listenerPath {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

/// runtime-spec's "container process state", what the agent receives.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProcessState<'a, S: Serialize> {
    pub oci_version: &'a str,
    /// Names of the fds in SCM_RIGHTS, in order: only the listener.
    pub fds: [&'a str; 1],
    /// The process that loaded the filter, as the runtime sees it.
    pub pid: i32,
    /// `linux.seccomp.listenerMetadata`, or empty.
    pub metadata: &'a str,
    /// The container's state, as `state` prints it.
    pub state: &'a S,
}

/// Sends `listener` and the process state of `pid` in container `state`
/// to the agent at `profile.listenerPath`, then closes our copy of the fd.
pub fn send_listener<S: Serialize>(
    profile: Option<&LinuxSeccomp>,
    pid: i32,
    state: &S,
    listener: OwnedFd,
) -> Result<(), AgentError> {
    let path = profile
        .and_then(|p| p.listener_path().clone())
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or(AgentError::NoListenerPath)?;
    let message = ContainerProcessState {
        oci_version: crate::spec::OCI_VERSION,
        fds: [SECCOMP_FD_NAME],
        pid,
        metadata: profile
            .and_then(|p| p.listener_metadata().as_deref())
            .unwrap_or(""),
        state,
    };
    let fail = |what: &'static str| {
        let path = path.clone();
        move |source: io::Error| AgentError::Io { path, what, source }
    };
    let json = serde_json::to_vec(&message)
        .map_err(|e| fail("encoding the container process state")(e.into()))?;
    let stream = UnixStream::connect(&path).map_err(fail("connecting"))?;
    send_with_fd(&stream, &json, &listener).map_err(fail("sending the listener fd"))?;
    drop(listener);
    Ok(())
}

/// Writes all of `data` on `stream`, with `fd` (SCM_RIGHTS) on the first
/// byte, as runc's agents expect it: one recvmsg gets both.
fn send_with_fd(stream: &UnixStream, data: &[u8], fd: &OwnedFd) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = loop {
        let iov = [io::IoSlice::new(data)];
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // A stream socket may take less than all of it (a signal mid-way):
    // the rest follows without the fd.
    io::Write::write_all(&mut &*stream, &data[sent.min(data.len())..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_state_has_runtime_spec_field_names() {
        let state = serde_json::json!({"id": "c1", "status": "creating"});
        let v = serde_json::to_value(ContainerProcessState {
            oci_version: "1.2.1",
            fds: [SECCOMP_FD_NAME],
            pid: 42,
            metadata: "m",
            state: &state,
        })
        .expect("serialises");
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": "1.2.1", "fds": ["seccompFd"], "pid": 42,
                               "metadata": "m", "state": {"id": "c1", "status": "creating"}})
        );
    }
}
