//! A minimal D-Bus client: just enough of the wire protocol to call methods
//! of systemd's manager and read their replies.
//!
//! What is implemented (from the D-Bus specification):
//! - transport: a unix stream socket, `AUTH EXTERNAL` with our uid, no
//!   unix fd passing;
//! - messages: little-endian `METHOD_CALL`s out; `METHOD_RETURN`, `ERROR`
//!   and `SIGNAL`s (skipped) in, either endianness;
//! - types: the basic ones plus arrays, structs, dict entries and variants.
//!
//! Wire format in one picture (every value aligned to its own alignment,
//! counted from the start of the message; the body starts 8-aligned):
//!
//! ```text
//! 'l' type flags 1 | u32 body length | u32 serial | a(yv) header fields | pad to 8 | body
//! ```

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// systemd's private socket: direct to PID 1, root only, no bus daemon.
pub const SYSTEMD_PRIVATE_SOCKET: &str = "/run/systemd/private";
/// The system bus, when a bus daemon runs.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// The longest message the specification allows (2^27 bytes).
const MAX_MESSAGE: usize = 1 << 27;
/// How long one call may take before we give up on the peer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

/// Header field codes.
const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SIGNATURE: u8 = 8;

/// A failure talking D-Bus.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    /// No socket could be connected (each one tried, with its error).
    #[error("cannot connect to systemd over D-Bus: {0}")]
    Connect(String),
    /// Reading or writing the socket failed.
    #[error("D-Bus socket {socket}: {source}")]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The peer refused our `AUTH EXTERNAL`.
    #[error("D-Bus socket {socket}: authentication refused (reply {reply:?})")]
    Auth { socket: PathBuf, reply: String },
    /// The peer sent something that is not a D-Bus message we understand.
    #[error("D-Bus socket {socket}: malformed message: {reason}")]
    Protocol { socket: PathBuf, reason: String },
    /// The method returned an error.
    #[error("{name}: {message}")]
    Remote { name: String, message: String },
}

/// A D-Bus value. Arrays carry their element signature so an empty array
/// still knows its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Double(f64),
    Str(String),
    ObjectPath(String),
    Signature(String),
    /// Unix fd index (`h`): only ever read, never sent.
    Fd(u32),
    Array(String, Vec<Value>),
    Struct(Vec<Value>),
    DictEntry(Box<Value>, Box<Value>),
    Variant(Box<Value>),
}

impl Value {
    /// `s` from anything string-like.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// `v` wrapping `inner`.
    pub fn variant(inner: Value) -> Value {
        Value::Variant(Box::new(inner))
    }

    /// The type signature of this value.
    pub fn signature(&self) -> String {
        match self {
            Value::Byte(_) => "y".into(),
            Value::Bool(_) => "b".into(),
            Value::I16(_) => "n".into(),
            Value::U16(_) => "q".into(),
            Value::I32(_) => "i".into(),
            Value::U32(_) => "u".into(),
            Value::I64(_) => "x".into(),
            Value::U64(_) => "t".into(),
            Value::Double(_) => "d".into(),
            Value::Str(_) => "s".into(),
            Value::ObjectPath(_) => "o".into(),
            Value::Signature(_) => "g".into(),
            Value::Fd(_) => "h".into(),
            Value::Array(elem, _) => format!("a{elem}"),
            Value::Struct(fields) => {
                let inner: String = fields.iter().map(Value::signature).collect();
                format!("({inner})")
            }
            Value::DictEntry(k, v) => format!("{{{}{}}}", k.signature(), v.signature()),
            Value::Variant(_) => "v".into(),
        }
    }

    /// The string of an `s`, `o` or `g` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::ObjectPath(s) | Value::Signature(s) => Some(s),
            _ => None,
        }
    }
}

/// Alignment of a type by the first character of its signature.
fn alignment(code: u8) -> usize {
    match code {
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b's' | b'o' | b'a' | b'h' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 1, // y, g, v
    }
}

/// Little-endian marshalling into a buffer whose offset 0 is the start of
/// the message (or of the body, which starts 8-aligned: the same padding).
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }

    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    fn signature(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Byte(b) => self.buf.push(*b),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::I16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::I32(n) => {
                self.pad(4);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U32(n) | Value::Fd(n) => self.u32(*n),
            Value::I64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Double(d) => {
                self.pad(8);
                self.buf.extend_from_slice(&d.to_le_bytes());
            }
            Value::Str(s) | Value::ObjectPath(s) => self.string(s),
            Value::Signature(s) => self.signature(s),
            Value::Array(elem, items) => {
                self.u32(0);
                let len_at = self.buf.len() - 4;
                // The length counts from the first element, after its padding.
                self.pad(alignment(elem.as_bytes().first().copied().unwrap_or(b'y')));
                let start = self.buf.len();
                for item in items {
                    self.value(item);
                }
                let len = (self.buf.len() - start) as u32;
                self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Value::Struct(fields) => {
                self.pad(8);
                for f in fields {
                    self.value(f);
                }
            }
            Value::DictEntry(k, v) => {
                self.pad(8);
                self.value(k);
                self.value(v);
            }
            Value::Variant(inner) => {
                self.signature(&inner.signature());
                self.value(inner);
            }
        }
    }
}

/// Marshals the body values (no padding needed before: offset 0 is 8-aligned).
pub fn encode_body(body: &[Value]) -> Vec<u8> {
    let mut w = Writer::default();
    for v in body {
        w.value(v);
    }
    w.buf
}

/// A method call to send.
#[derive(Debug, Clone)]
pub struct MethodCall<'a> {
    pub destination: Option<&'a str>,
    pub path: &'a str,
    pub interface: Option<&'a str>,
    pub member: &'a str,
    pub body: Vec<Value>,
}

impl MethodCall<'_> {
    /// The complete message with serial `serial`.
    pub fn encode(&self, serial: u32) -> Vec<u8> {
        let body = encode_body(&self.body);
        let signature: String = self.body.iter().map(Value::signature).collect();
        let mut fields = vec![(FIELD_PATH, Value::ObjectPath(self.path.into()))];
        if let Some(i) = self.interface {
            fields.push((FIELD_INTERFACE, Value::str(i)));
        }
        fields.push((FIELD_MEMBER, Value::str(self.member)));
        if let Some(d) = self.destination {
            fields.push((FIELD_DESTINATION, Value::str(d)));
        }
        if !signature.is_empty() {
            fields.push((FIELD_SIGNATURE, Value::Signature(signature)));
        }
        let mut w = Writer::default();
        w.buf.extend_from_slice(&[b'l', METHOD_CALL, 0, 1]);
        w.u32(body.len() as u32);
        w.u32(serial);
        w.value(&Value::Array(
            "(yv)".into(),
            fields
                .into_iter()
                .map(|(code, v)| Value::Struct(vec![Value::Byte(code), Value::variant(v)]))
                .collect(),
        ));
        w.pad(8);
        w.buf.extend_from_slice(&body);
        w.buf
    }
}

/// A received message, as far as a caller needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub error_name: Option<String>,
    pub body: Vec<Value>,
}

/// Unmarshalling of one complete message in either byte order.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> Reader<'a> {
    fn align(&mut self, align: usize) -> Result<(), String> {
        let to = self.pos.div_ceil(align) * align;
        if to > self.buf.len() {
            return Err("padding runs past the end".into());
        }
        self.pos = to;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("value runs past the end")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.align(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        if !self.little {
            a.reverse();
        }
        Ok(a) // now little-endian
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.fixed::<4>()?))
    }

    fn text(&mut self, len: usize) -> Result<String, String> {
        let bytes = self.take(len)?;
        if self.take(1)? != [0] {
            return Err("string without its NUL".into());
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".into())
    }

    fn signature(&mut self) -> Result<String, String> {
        let len = self.take(1)?[0] as usize;
        self.text(len)
    }

    /// Reads one value of the single complete type at the start of `sig`,
    /// returning it and the rest of `sig`.
    fn value<'s>(&mut self, sig: &'s [u8], depth: u32) -> Result<(Value, &'s [u8]), String> {
        if depth > 64 {
            return Err("values nested too deeply".into());
        }
        let (&code, rest) = sig.split_first().ok_or("empty signature")?;
        let v = match code {
            b'y' => Value::Byte(self.take(1)?[0]),
            b'b' => Value::Bool(self.u32()? != 0),
            b'n' => Value::I16(i16::from_le_bytes(self.fixed::<2>()?)),
            b'q' => Value::U16(u16::from_le_bytes(self.fixed::<2>()?)),
            b'i' => Value::I32(i32::from_le_bytes(self.fixed::<4>()?)),
            b'u' => Value::U32(self.u32()?),
            b'h' => Value::Fd(self.u32()?),
            b'x' => Value::I64(i64::from_le_bytes(self.fixed::<8>()?)),
            b't' => Value::U64(u64::from_le_bytes(self.fixed::<8>()?)),
            b'd' => Value::Double(f64::from_le_bytes(self.fixed::<8>()?)),
            b's' | b'o' => {
                let len = self.u32()? as usize;
                let s = self.text(len)?;
                if code == b's' {
                    Value::Str(s)
                } else {
                    Value::ObjectPath(s)
                }
            }
            b'g' => Value::Signature(self.signature()?),
            b'v' => {
                let inner_sig = self.signature()?;
                let (inner, left) = self.value(inner_sig.as_bytes(), depth + 1)?;
                if !left.is_empty() {
                    return Err(format!("variant signature {inner_sig:?} is not one type"));
                }
                Value::variant(inner)
            }
            b'a' => {
                let len = self.u32()? as usize;
                let elem_len = single_type_len(rest)?;
                let elem = &rest[..elem_len];
                self.align(alignment(elem[0]))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or("array runs past the end")?;
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value(elem, depth + 1)?.0);
                }
                if self.pos != end {
                    return Err("array elements overrun its length".into());
                }
                let elem_sig = String::from_utf8_lossy(elem).into_owned();
                return Ok((Value::Array(elem_sig, items), &rest[elem_len..]));
            }
            b'(' | b'{' => {
                self.align(8)?;
                let close = if code == b'(' { b')' } else { b'}' };
                let mut fields = Vec::new();
                let mut inner = rest;
                loop {
                    match inner.first() {
                        Some(c) if *c == close => break,
                        Some(_) => {
                            let (v, left) = self.value(inner, depth + 1)?;
                            fields.push(v);
                            inner = left;
                        }
                        None => return Err("unclosed struct in signature".into()),
                    }
                }
                let v = if code == b'(' {
                    Value::Struct(fields)
                } else {
                    let mut it = fields.into_iter();
                    match (it.next(), it.next(), it.next()) {
                        (Some(k), Some(v), None) => Value::DictEntry(Box::new(k), Box::new(v)),
                        _ => return Err("dict entry without exactly two fields".into()),
                    }
                };
                return Ok((v, &inner[1..]));
            }
            other => return Err(format!("unknown type code {:?}", other as char)),
        };
        Ok((v, rest))
    }
}

/// Length of the single complete type at the start of `sig`.
fn single_type_len(sig: &[u8]) -> Result<usize, String> {
    match sig.first() {
        None => Err("array without an element type".into()),
        Some(b'a') => Ok(1 + single_type_len(&sig[1..])?),
        Some(b'(') | Some(b'{') => {
            let mut depth = 0usize;
            for (i, c) in sig.iter().enumerate() {
                match c {
                    b'(' | b'{' => depth += 1,
                    b')' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
            }
            Err("unclosed struct in signature".into())
        }
        Some(_) => Ok(1),
    }
}

/// Total length of the message whose first 16 bytes are `head`.
fn message_len(head: &[u8; 16]) -> Result<usize, String> {
    let little = match head[0] {
        b'l' => true,
        b'B' => false,
        other => return Err(format!("unknown byte order {other:#x}")),
    };
    let word = |at: usize| {
        let mut b = [head[at], head[at + 1], head[at + 2], head[at + 3]];
        if !little {
            b.reverse();
        }
        u32::from_le_bytes(b) as usize
    };
    let fields = word(12);
    let body = word(4);
    let total = (16 + fields).div_ceil(8) * 8 + body;
    if total > MAX_MESSAGE {
        return Err(format!("message of {total} bytes is too large"));
    }
    Ok(total)
}

/// Parses one complete message.
pub fn decode(buf: &[u8]) -> Result<Message, String> {
    if buf.len() < 16 {
        return Err("message shorter than its header".into());
    }
    let mut r = Reader {
        buf,
        pos: 0,
        little: buf[0] == b'l',
    };
    let head = r.take(4)?;
    let (kind, version) = (head[1], head[3]);
    if version != 1 {
        return Err(format!("protocol version {version}"));
    }
    let body_len = r.u32()? as usize;
    let serial = r.u32()?;
    let Value::Array(_, fields) = r.value(b"a(yv)", 0)?.0 else {
        return Err("header fields are not an array".into());
    };
    r.align(8)?;
    if r.buf.len() - r.pos != body_len {
        return Err(format!(
            "body is {} bytes, header says {body_len}",
            r.buf.len() - r.pos
        ));
    }
    let mut msg = Message {
        kind,
        serial,
        reply_serial: None,
        error_name: None,
        body: Vec::new(),
    };
    let mut signature = String::new();
    for f in fields {
        let Value::Struct(parts) = f else { continue };
        let (Some(Value::Byte(code)), Some(Value::Variant(v))) = (parts.first(), parts.get(1))
        else {
            continue;
        };
        match (*code, v.as_ref()) {
            (FIELD_REPLY_SERIAL, Value::U32(s)) => msg.reply_serial = Some(*s),
            (FIELD_ERROR_NAME, Value::Str(s)) => msg.error_name = Some(s.clone()),
            (FIELD_SIGNATURE, Value::Signature(s)) => signature = s.clone(),
            _ => {}
        }
    }
    // The body is aligned from its own start, which is 8-aligned: reading
    // it with positions relative to the whole message gives the same padding.
    let mut sig = signature.as_bytes();
    while !sig.is_empty() {
        let (v, rest) = r.value(sig, 0)?;
        msg.body.push(v);
        sig = rest;
    }
    if r.pos != r.buf.len() {
        return Err("bytes left after the body".into());
    }
    Ok(msg)
}

/// A connection to systemd (or the bus daemon in front of it).
pub struct Connection {
    stream: UnixStream,
    socket: PathBuf,
    serial: u32,
}

impl Connection {
    /// Connects to systemd: its private socket first (root, no bus daemon
    /// needed), the system bus otherwise.
    pub fn systemd() -> Result<Connection, DbusError> {
        let mut tried = Vec::new();
        for (path, via_bus) in [(SYSTEMD_PRIVATE_SOCKET, false), (SYSTEM_BUS_SOCKET, true)] {
            match Connection::open(Path::new(path), via_bus) {
                Ok(c) => return Ok(c),
                Err(e) => tried.push(format!("{path}: {e}")),
            }
        }
        Err(DbusError::Connect(tried.join("; ")))
    }

    /// Connects and authenticates; on a bus, also registers with `Hello`.
    pub fn open(socket: &Path, via_bus: bool) -> Result<Connection, DbusError> {
        let io = |source| DbusError::Io {
            socket: socket.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(io)?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        let mut conn = Connection {
            stream,
            socket: socket.to_path_buf(),
            serial: 0,
        };
        conn.authenticate()?;
        if via_bus {
            conn.call(&MethodCall {
                destination: Some("org.freedesktop.DBus"),
                path: "/org/freedesktop/DBus",
                interface: Some("org.freedesktop.DBus"),
                member: "Hello",
                body: Vec::new(),
            })?;
        }
        Ok(conn)
    }

    fn io_err(&self) -> impl Fn(std::io::Error) -> DbusError + '_ {
        |source| DbusError::Io {
            socket: self.socket.clone(),
            source,
        }
    }

    fn protocol_err(&self, reason: impl Into<String>) -> DbusError {
        DbusError::Protocol {
            socket: self.socket.clone(),
            reason: reason.into(),
        }
    }

    /// The SASL exchange: a NUL byte, `AUTH EXTERNAL <uid as hex ASCII>`,
    /// `OK <guid>` back, then `BEGIN`.
    fn authenticate(&mut self) -> Result<(), DbusError> {
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let hex: String = uid
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let hello = format!("\0AUTH EXTERNAL {hex}\r\n");
        self.stream
            .write_all(hello.as_bytes())
            .map_err(self.io_err())?;
        // Byte by byte: nothing may be read past the line, though the
        // server sends nothing more before BEGIN anyway.
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            if line.len() > 512 {
                return Err(self.protocol_err("authentication reply line too long"));
            }
            let mut b = [0u8; 1];
            match self.stream.read(&mut b).map_err(self.io_err())? {
                0 => return Err(self.protocol_err("connection closed during authentication")),
                _ => line.push(b[0]),
            }
        }
        let reply = String::from_utf8_lossy(&line).trim_end().to_string();
        if !reply.starts_with("OK ") {
            return Err(DbusError::Auth {
                socket: self.socket.clone(),
                reply,
            });
        }
        self.stream.write_all(b"BEGIN\r\n").map_err(self.io_err())?;
        // systemd's sd-bus (252 at least) reads BEGIN with whatever follows
        // it in the socket, and a message read along with BEGIN is left in
        // its buffer with no wake-up to process it: the call then hangs
        // (seen in the systemd VM). So the first message goes only once
        // the server has consumed BEGIN.
        let start = std::time::Instant::now();
        let mut delay = Duration::from_micros(100);
        loop {
            if unread_bytes(&self.stream).map_err(self.io_err())? == 0 {
                return Ok(());
            }
            if start.elapsed() > CALL_TIMEOUT {
                return Err(self.protocol_err("the server never read our BEGIN"));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// Calls a method and waits for its reply; an `ERROR` reply becomes
    /// [`DbusError::Remote`]. Signals and other traffic are skipped.
    pub fn call(&mut self, call: &MethodCall) -> Result<Vec<Value>, DbusError> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let serial = self.serial;
        self.stream
            .write_all(&call.encode(serial))
            .map_err(self.io_err())?;
        loop {
            let msg = self.receive()?;
            if msg.reply_serial != Some(serial) {
                continue;
            }
            match msg.kind {
                METHOD_RETURN => return Ok(msg.body),
                ERROR => {
                    return Err(DbusError::Remote {
                        name: msg.error_name.unwrap_or_else(|| "(unnamed error)".into()),
                        message: msg
                            .body
                            .first()
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    })
                }
                _ => continue,
            }
        }
    }

    /// Reads one whole message.
    fn receive(&mut self) -> Result<Message, DbusError> {
        let mut head = [0u8; 16];
        self.stream.read_exact(&mut head).map_err(self.io_err())?;
        let total = message_len(&head).map_err(|e| self.protocol_err(e))?;
        if total < 16 {
            return Err(self.protocol_err("message shorter than its header"));
        }
        let mut buf = vec![0u8; total];
        buf[..16].copy_from_slice(&head);
        self.stream
            .read_exact(&mut buf[16..])
            .map_err(self.io_err())?;
        decode(&buf).map_err(|e| self.protocol_err(e))
    }
}

/// Send-buffer bytes of `stream` still held for data the peer has not
/// read yet (on unix sockets including the kernel's per-buffer overhead):
/// zero once the peer has read everything.
fn unread_bytes(stream: &UnixStream) -> std::io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (the same number as TIOCOUTQ) stores one int
    // through the pointer, which points to `n`, alive for the call; the fd
    // is open for as long as `stream` is borrowed.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `M("hi")` on object `/o` of destination `d`, serial 7, laid out by
    /// hand from the specification:
    /// - 0..16: 'l', METHOD_CALL, flags 0, version 1, body length 7,
    ///   serial 7, header field array length 55 (bytes 16..71);
    /// - 16: PATH (1), signature "o", pad to 20, string "/o";
    /// - 32 (struct alignment 8): MEMBER (3), "s", pad to 36, "M";
    /// - 48: DESTINATION (6), "s", pad to 52, "d";
    /// - 64: SIGNATURE (8), "g", signature "s" (no padding: alignment 1);
    /// - pad 71 to 72, body: string "hi".
    #[test]
    fn method_call_golden_bytes() {
        let call = MethodCall {
            destination: Some("d"),
            path: "/o",
            interface: None,
            member: "M",
            body: vec![Value::str("hi")],
        };
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            b'l', 1, 0, 1,  7, 0, 0, 0,  7, 0, 0, 0,  55, 0, 0, 0,
            // 16: PATH
            1, 1, b'o', 0,  2, 0, 0, 0,  b'/', b'o', 0, 0, 0, 0, 0, 0,
            // 32: MEMBER
            3, 1, b's', 0,  1, 0, 0, 0,  b'M', 0, 0, 0, 0, 0, 0, 0,
            // 48: DESTINATION
            6, 1, b's', 0,  1, 0, 0, 0,  b'd', 0, 0, 0, 0, 0, 0, 0,
            // 64: SIGNATURE, then one byte of padding
            8, 1, b'g', 0,  1, b's', 0,  0,
            // 72: body
            2, 0, 0, 0, b'h', b'i', 0,
        ];
        assert_eq!(call.encode(7), want);
    }

    /// `a(sv)` holding ("D", <true>): array length 16 counts from the
    /// first element at 8 (after 4 bytes of padding to struct alignment);
    /// the variant's boolean is aligned to 4 (bytes 17..20 are padding).
    #[test]
    fn property_array_golden_bytes() {
        let props = Value::Array(
            "(sv)".into(),
            vec![Value::Struct(vec![
                Value::str("D"),
                Value::variant(Value::Bool(true)),
            ])],
        );
        assert_eq!(props.signature(), "a(sv)");
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            16, 0, 0, 0,  0, 0, 0, 0,
            1, 0, 0, 0, b'D', 0,  1, b'b', 0,  0, 0, 0,  1, 0, 0, 0,
        ];
        assert_eq!(encode_body(&[props]), want);
        // An empty array still aligns for its (absent) first element.
        let empty = Value::Array("(sa(sv))".into(), Vec::new());
        assert_eq!(encode_body(&[empty]), vec![0, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// A METHOD_RETURN for serial 7 with an object path, and an ERROR.
    #[test]
    fn decodes_replies() {
        #[rustfmt::skip]
        let ret: Vec<u8> = vec![
            b'l', 2, 1, 1,  7, 0, 0, 0,  9, 0, 0, 0,  15, 0, 0, 0,
            // 16: REPLY_SERIAL (5) = u32 7
            5, 1, b'u', 0,  7, 0, 0, 0,
            // 24: SIGNATURE (8) = "o", then padding to 32
            8, 1, b'g', 0,  1, b'o', 0,  0,
            // 32: body
            2, 0, 0, 0, b'/', b'j', 0,
        ];
        let msg = decode(&ret).expect("decodes");
        assert_eq!(msg.kind, METHOD_RETURN);
        assert_eq!(msg.serial, 9);
        assert_eq!(msg.reply_serial, Some(7));
        assert_eq!(msg.body, vec![Value::ObjectPath("/j".into())]);
        assert_eq!(
            message_len(ret[..16].try_into().expect("16")),
            Ok(ret.len())
        );

        #[rustfmt::skip]
        let err: Vec<u8> = vec![
            b'l', 3, 1, 1,  7, 0, 0, 0,  10, 0, 0, 0,  31, 0, 0, 0,
            // 16: ERROR_NAME (4) = "a.B"
            4, 1, b's', 0,  3, 0, 0, 0,  b'a', b'.', b'B', 0,  0, 0, 0, 0,
            // 32: REPLY_SERIAL (5) = 2
            5, 1, b'u', 0,  2, 0, 0, 0,
            // 40: SIGNATURE = "s", padding to 48
            8, 1, b'g', 0,  1, b's', 0,  0,
            // 48: body "no"
            2, 0, 0, 0, b'n', b'o', 0,
        ];
        // Field array: 16..47 is 31 bytes (the last field ends at 47).
        let msg = decode(&err).expect("decodes");
        assert_eq!(msg.kind, ERROR);
        assert_eq!(msg.error_name.as_deref(), Some("a.B"));
        assert_eq!(msg.reply_serial, Some(2));
        assert_eq!(msg.body, vec![Value::str("no")]);
    }

    #[test]
    fn round_trips_nested_types() {
        let body = vec![
            Value::str("u.scope"),
            Value::Array(
                "(sv)".into(),
                vec![
                    Value::Struct(vec![
                        Value::str("PIDs"),
                        Value::variant(Value::Array("u".into(), vec![Value::U32(42)])),
                    ]),
                    Value::Struct(vec![
                        Value::str("MemoryMax"),
                        Value::variant(Value::U64(1 << 30)),
                    ]),
                ],
            ),
            Value::Array(
                "{sv}".into(),
                vec![Value::DictEntry(
                    Box::new(Value::str("k")),
                    Box::new(Value::variant(Value::I16(-3))),
                )],
            ),
        ];
        let call = MethodCall {
            destination: None,
            path: "/",
            interface: Some("x.Y"),
            member: "Z",
            body: body.clone(),
        };
        let bytes = call.encode(3);
        let msg = decode(&bytes).expect("decodes its own encoding");
        assert_eq!(msg.kind, METHOD_CALL);
        assert_eq!(msg.serial, 3);
        assert_eq!(msg.body, body);
    }

    #[test]
    fn unread_bytes_drop_when_the_peer_reads() {
        let (mut a, mut b) = UnixStream::pair().expect("socketpair");
        a.write_all(b"BEGIN\r\n").expect("write");
        // Counted with the kernel's overhead: more than the 7 bytes.
        assert!(unread_bytes(&a).expect("ioctl") >= 7);
        let mut buf = [0u8; 7];
        b.read_exact(&mut buf).expect("read");
        assert_eq!(unread_bytes(&a).expect("ioctl"), 0);
    }

    #[test]
    fn rejects_truncated_and_bad_messages() {
        assert!(decode(b"l\x02\x01\x01").is_err());
        let call = MethodCall {
            destination: None,
            path: "/",
            interface: None,
            member: "Z",
            body: vec![Value::str("abc")],
        };
        let bytes = call.encode(1);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'x';
        assert!(message_len(bad[..16].try_into().expect("16")).is_err());
    }
}
