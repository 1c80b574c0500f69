//! The foreground terminal of `run` without `--console-socket`: the
//! runtime receives the pty master itself and copies between it and its
//! own stdin/stdout (raw mode on a real terminal), forwarding signals and
//! window-size changes, until the container's init exits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Puts a terminal in raw mode and restores it when dropped.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enable(fd: RawFd) -> Option<RawMode> {
        // SAFETY: isatty on any fd number is sound.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcgetattr(fd, &mut t) } < 0 {
            return None;
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the local struct; tcsetattr reads it.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes saved from the same fd.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

fn copy_window_size(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data; the ioctls read/write it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: data is valid for reads of its length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Proxies between our stdio and `master` until `pid` exits. `set` is the
/// signal set the caller blocked; those signals are forwarded to `pid`.
/// Returns the exit code (128+N for a signal).
pub fn proxy(master: &OwnedFd, pid: i32, set: &libc::sigset_t) -> io::Result<i32> {
    // SAFETY: signalfd on a valid, initialised set creates a new fd.
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC) };
    if sfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by no one else.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    let _raw = RawMode::enable(0);
    copy_window_size(0, master.as_raw_fd());
    let mut stdin_open = true;
    let mut master_open = true;
    let mut exit: Option<i32> = None;
    let mut buf = [0u8; 16384];
    loop {
        if exit.is_some() && !master_open {
            break;
        }
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if master_open { master.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open && exit.is_none() { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // After init exited, only drain what the pty still holds.
        let timeout = if exit.is_some() { 100 } else { -1 };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 && exit.is_some() {
            break;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // SAFETY: signalfd_siginfo is plain data.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: reading one siginfo record into the struct.
            let r = unsafe {
                libc::read(
                    sfd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if r > 0 {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    loop {
                        let mut status = 0;
                        // SAFETY: reaping exited children without blocking.
                        let w = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                        if w == pid {
                            exit = Some(crate::container::exit_code(status));
                        }
                        if w <= 0 {
                            break;
                        }
                    }
                } else if sig == libc::SIGWINCH {
                    copy_window_size(0, master.as_raw_fd());
                } else if sig != libc::SIGURG {
                    // SAFETY: kill with integer arguments.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_fd(master.as_raw_fd(), &mut buf) {
                Ok(0) => master_open = false,
                Ok(n) => {
                    let _ = write_all(1, &buf[..n]);
                }
                // EIO: every slave fd is closed.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => master_open = false,
            }
        }
        if fds[2].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_fd(0, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = write_all(master.as_raw_fd(), &buf[..n]);
                }
            }
        }
    }
    Ok(exit.unwrap_or(255))
}
