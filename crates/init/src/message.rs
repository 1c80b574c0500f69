//! Messages to stderr, built in a fixed buffer (no allocator) and written
//! with one write(2) so concurrent writers do not interleave them.

use crate::sys;

pub struct Message {
    buf: [u8; 512],
    len: usize,
}

impl Message {
    /// A message that starts with "hako-init: ".
    pub fn new() -> Message {
        let mut m = Message {
            buf: [0; 512],
            len: 0,
        };
        m.push(b"hako-init: ");
        m
    }

    /// Appends `s`, truncating what does not fit.
    pub fn push(&mut self, s: &[u8]) -> &mut Message {
        if let Some(room) = self.buf.get_mut(self.len..) {
            let n = s.len().min(room.len());
            if let (Some(dst), Some(src)) = (room.get_mut(..n), s.get(..n)) {
                dst.copy_from_slice(src);
                self.len += n;
            }
        }
        self
    }

    pub fn push_str(&mut self, s: &str) -> &mut Message {
        self.push(s.as_bytes())
    }

    pub fn push_int(&mut self, n: i64) -> &mut Message {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        if n < 0 {
            self.push(b"-");
        }
        self.push(digits.get(i..).unwrap_or_default())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Ends the line and writes it to stderr (errors are ignored: there is
    /// nobody left to tell).
    pub fn print(&mut self) {
        self.push(b"\n");
        let _ = sys::write_all(2, self.as_bytes());
    }
}

impl Default for Message {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_truncates() {
        let mut m = Message::new();
        m.push(b"x: ")
            .push_int(0)
            .push(b" ")
            .push_int(-127)
            .push(b" ")
            .push_int(i64::MIN);
        assert_eq!(m.as_bytes(), b"hako-init: x: 0 -127 -9223372036854775808");
        m.push(&[b'a'; 1000]);
        assert_eq!(m.as_bytes().len(), 512);
    }
}
