//! Published ports: docker's `-p` syntax and free host ports.
//!
//! Accepted forms (`PROTO` is `tcp`, `udp` or `sctp`, default `tcp`):
//!
//! | spec                    | meaning                                        |
//! |-------------------------|------------------------------------------------|
//! | `80`                    | container 80 on a free host port, all addresses |
//! | `8080:80`               | host 8080 → container 80                        |
//! | `127.0.0.1:8080:80`     | only on 127.0.0.1                               |
//! | `127.0.0.1::80`         | a free port on 127.0.0.1                        |
//! | `8080:80/udp`           | UDP                                             |
//! | `8000-8001:80-81`       | ranges of equal length, pairwise                |
//! | `80-81`                 | a container range on free host ports            |
//!
//! Networks are IPv4-only, so an IPv6 host address (`[::1]:8080:80`) is
//! refused with [`PortSpecError::Ipv6HostIp`] rather than silently ignored.
//! A host range with a single container port (docker's "any one of these")
//! is refused too.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl FromStr for Protocol {
    type Err = PortSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(PortSpecError::Protocol {
                spec: s.to_string(),
                protocol: s.to_string(),
            }),
        }
    }
}

/// One published port. `host_port` 0 means "pick a free one at attach".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; `None` is every address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:")?,
            None => f.write_str("0.0.0.0:")?,
        }
        write!(
            f,
            "{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// Why a `-p` spec was refused, or why no host port could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    /// Too many or too few `:`-separated parts, or an empty container port.
    #[error("port spec {spec:?}: expected [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/PROTOCOL]")]
    Syntax { spec: String },
    /// A port is not a number in 1..=65535.
    #[error("port spec {spec:?}: {port:?} is not a port number in 1..65535")]
    Port { spec: String, port: String },
    /// A range runs backwards (`81-80`).
    #[error("port spec {spec:?}: range {range:?} ends before it starts")]
    Range { spec: String, range: String },
    /// Host and container ranges have different lengths.
    #[error("port spec {spec:?}: host range has {host} ports but container range has {container}")]
    RangeLength {
        spec: String,
        host: usize,
        container: usize,
    },
    /// The protocol is not tcp, udp or sctp.
    #[error("port spec {spec:?}: unknown protocol {protocol:?} (use tcp, udp or sctp)")]
    Protocol { spec: String, protocol: String },
    /// The host address is not an IPv4 address.
    #[error("port spec {spec:?}: host address {ip:?} is not an IPv4 address")]
    HostIp { spec: String, ip: String },
    /// The host address is IPv6; hako's networks are IPv4-only.
    #[error(
        "port spec {spec:?}: IPv6 host address {ip} is not supported (hako networks are IPv4-only)"
    )]
    Ipv6HostIp { spec: String, ip: String },
    /// No free host port could be bound.
    #[error("finding a free {protocol} host port on {ip} (bind to port 0): {reason}")]
    NoFreePort {
        ip: Ipv4Addr,
        protocol: Protocol,
        reason: String,
    },
    /// An explicit host port is already in use by a process on the host.
    #[error("host port {ip}:{port}/{protocol} is already in use on the host: {reason}")]
    HostPortBusy {
        ip: Ipv4Addr,
        port: u16,
        protocol: Protocol,
        reason: String,
    },
}

/// Parses one `-p` spec into one mapping per port (ranges are expanded).
pub fn parse_port_spec(spec: &str) -> Result<Vec<PortMapping>, PortSpecError> {
    let syntax = || PortSpecError::Syntax {
        spec: spec.to_string(),
    };
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, proto)) => (
            rest,
            proto
                .parse::<Protocol>()
                .map_err(|_| PortSpecError::Protocol {
                    spec: spec.to_string(),
                    protocol: proto.to_string(),
                })?,
        ),
        None => (spec, Protocol::Tcp),
    };

    // A bracketed IPv6 address contains colons; take it off first.
    let (ip_text, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, tail) = after.split_once(']').ok_or_else(syntax)?;
        let tail = tail.strip_prefix(':').ok_or_else(syntax)?;
        (Some(ip), tail)
    } else {
        (None, rest)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip_text, host_text, container_text) = match (ip_text, parts.as_slice()) {
        (None, [c]) => (None, "", *c),
        (None, [h, c]) => (None, *h, *c),
        (None, [ip, h, c]) => (Some(*ip), *h, *c),
        (Some(ip), [h, c]) => (Some(ip), *h, *c),
        _ => return Err(syntax()),
    };
    if container_text.is_empty() {
        return Err(syntax());
    }

    let host_ip = match ip_text {
        None | Some("") => None,
        Some(text) => match text.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => None,
            Ok(std::net::IpAddr::V4(ip)) => Some(ip),
            Ok(std::net::IpAddr::V6(ip)) => {
                return Err(PortSpecError::Ipv6HostIp {
                    spec: spec.to_string(),
                    ip: ip.to_string(),
                })
            }
            Err(_) => {
                return Err(PortSpecError::HostIp {
                    spec: spec.to_string(),
                    ip: text.to_string(),
                })
            }
        },
    };

    let (c_start, c_end) = parse_range(spec, container_text)?;
    let container_len = usize::from(c_end - c_start) + 1;
    let host = if host_text.is_empty() {
        None
    } else {
        let (h_start, h_end) = parse_range(spec, host_text)?;
        let host_len = usize::from(h_end - h_start) + 1;
        if host_len != container_len {
            return Err(PortSpecError::RangeLength {
                spec: spec.to_string(),
                host: host_len,
                container: container_len,
            });
        }
        Some(h_start)
    };

    Ok((0..=(c_end - c_start))
        .map(|i| PortMapping {
            host_ip,
            host_port: host.map_or(0, |h| h + i),
            container_port: c_start + i,
            protocol,
        })
        .collect())
}

/// `N` or `N-M`, each in 1..=65535.
fn parse_range(spec: &str, text: &str) -> Result<(u16, u16), PortSpecError> {
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (parse_port(spec, a)?, parse_port(spec, b)?),
        None => {
            let p = parse_port(spec, text)?;
            (p, p)
        }
    };
    if end < start {
        return Err(PortSpecError::Range {
            spec: spec.to_string(),
            range: text.to_string(),
        });
    }
    Ok((start, end))
}

fn parse_port(spec: &str, text: &str) -> Result<u16, PortSpecError> {
    let bad = || PortSpecError::Port {
        spec: spec.to_string(),
        port: text.to_string(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(p) => Ok(p),
    }
}

/// Gives every mapping with `host_port` 0 a free port, found by binding port
/// 0 on its host address with its protocol (SCTP is probed with TCP). The
/// probe sockets stay open until all ports are chosen, so one call never
/// hands out the same port twice; the port is free again when this returns
/// (the CNI portmap plugin only adds DNAT rules, nothing listens).
///
/// Explicit host ports are checked the same way: a port a host process
/// already listens on is refused, as docker does. A free port that is in
/// `taken` (published by another container: DNAT rules bind nothing) is
/// skipped.
pub fn assign_host_ports(
    ports: &mut [PortMapping],
    taken: &[PortMapping],
) -> Result<(), PortSpecError> {
    let mut held: Vec<Probe> = Vec::new();
    for port in ports.iter_mut() {
        let ip = port.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        if port.host_port != 0 {
            // Two mappings of one call may share a host port only if their
            // protocols differ; the caller checks duplicates, so skip binding
            // a port this call already holds.
            let already = held
                .iter()
                .any(|p| p.port == port.host_port && p.protocol == port.protocol);
            if !already {
                let probe = Probe::bind(ip, port.host_port, port.protocol).map_err(|e| {
                    PortSpecError::HostPortBusy {
                        ip,
                        port: port.host_port,
                        protocol: port.protocol,
                        reason: e.to_string(),
                    }
                })?;
                held.push(probe);
            }
            continue;
        }
        let mut found = None;
        for _ in 0..64 {
            let probe =
                Probe::bind(ip, 0, port.protocol).map_err(|e| PortSpecError::NoFreePort {
                    ip,
                    protocol: port.protocol,
                    reason: e.to_string(),
                })?;
            let candidate = PortMapping {
                host_port: probe.port,
                ..*port
            };
            let clash = taken.iter().any(|t| conflicts(&candidate, t));
            // A clashing probe stays held, so the next bind gets another port.
            let port_no = probe.port;
            held.push(probe);
            if !clash {
                found = Some(port_no);
                break;
            }
        }
        port.host_port = found.ok_or(PortSpecError::NoFreePort {
            ip,
            protocol: port.protocol,
            reason: "64 free ports in a row were published by containers".into(),
        })?;
    }
    Ok(())
}

/// A bound socket that keeps a port taken while ports are being chosen.
struct Probe {
    port: u16,
    protocol: Protocol,
    _socket: ProbeSocket,
}

enum ProbeSocket {
    Tcp(#[allow(dead_code)] TcpListener),
    Udp(#[allow(dead_code)] UdpSocket),
}

impl Probe {
    fn bind(ip: Ipv4Addr, port: u16, protocol: Protocol) -> std::io::Result<Probe> {
        let addr = SocketAddrV4::new(ip, port);
        let (socket, port) = match protocol {
            Protocol::Tcp | Protocol::Sctp => {
                let l = TcpListener::bind(addr)?;
                let port = l.local_addr()?.port();
                (ProbeSocket::Tcp(l), port)
            }
            Protocol::Udp => {
                let s = UdpSocket::bind(addr)?;
                let port = s.local_addr()?.port();
                (ProbeSocket::Udp(s), port)
            }
        };
        Ok(Probe {
            port,
            protocol,
            _socket: socket,
        })
    }
}

/// Whether two mappings would claim the same host socket.
pub fn conflicts(a: &PortMapping, b: &PortMapping) -> bool {
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && match (a.host_ip, b.host_ip) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> PortMapping {
        let v = parse_port_spec(spec).expect("test fixture");
        assert_eq!(v.len(), 1, "{spec}");
        v[0]
    }

    fn pm(ip: Option<[u8; 4]>, h: u16, c: u16, p: Protocol) -> PortMapping {
        PortMapping {
            host_ip: ip.map(Ipv4Addr::from),
            host_port: h,
            container_port: c,
            protocol: p,
        }
    }

    #[test]
    fn docker_forms() {
        use Protocol::*;
        assert_eq!(one("80"), pm(None, 0, 80, Tcp));
        assert_eq!(one("8080:80"), pm(None, 8080, 80, Tcp));
        assert_eq!(
            one("127.0.0.1:8080:80"),
            pm(Some([127, 0, 0, 1]), 8080, 80, Tcp)
        );
        assert_eq!(one("127.0.0.1::80"), pm(Some([127, 0, 0, 1]), 0, 80, Tcp));
        assert_eq!(one("8080:80/udp"), pm(None, 8080, 80, Udp));
        assert_eq!(one("8080:80/TCP"), pm(None, 8080, 80, Tcp));
        assert_eq!(one("53/sctp"), pm(None, 0, 53, Sctp));
        assert_eq!(one("0.0.0.0:8080:80"), pm(None, 8080, 80, Tcp));
        assert_eq!(one(":8080:80"), pm(None, 8080, 80, Tcp));
        assert_eq!(
            parse_port_spec("8000-8001:80-81").expect("test fixture"),
            vec![pm(None, 8000, 80, Tcp), pm(None, 8001, 81, Tcp)]
        );
        assert_eq!(
            parse_port_spec("127.0.0.1::80-82/udp").expect("test fixture"),
            vec![
                pm(Some([127, 0, 0, 1]), 0, 80, Udp),
                pm(Some([127, 0, 0, 1]), 0, 81, Udp),
                pm(Some([127, 0, 0, 1]), 0, 82, Udp)
            ]
        );
        assert_eq!(one("65535:1"), pm(None, 65535, 1, Tcp));
    }

    #[test]
    fn bad_forms() {
        type Check = fn(&PortSpecError) -> bool;
        let cases: &[(&str, Check)] = &[
            (
                "0",
                |e| matches!(e, PortSpecError::Port { port, .. } if port == "0"),
            ),
            (
                "65536:80",
                |e| matches!(e, PortSpecError::Port { port, .. } if port == "65536"),
            ),
            ("8080:0", |e| matches!(e, PortSpecError::Port { .. })),
            ("8080:-1", |e| matches!(e, PortSpecError::Port { .. })),
            ("abc", |e| matches!(e, PortSpecError::Port { .. })),
            ("+80", |e| matches!(e, PortSpecError::Port { .. })),
            ("", |e| matches!(e, PortSpecError::Syntax { .. })),
            ("8080:", |e| matches!(e, PortSpecError::Syntax { .. })),
            ("1:2:3:4", |e| matches!(e, PortSpecError::Syntax { .. })),
            ("8000-8002:80-81", |e| {
                matches!(
                    e,
                    PortSpecError::RangeLength {
                        host: 3,
                        container: 2,
                        ..
                    }
                )
            }),
            ("8000-8010:80", |e| {
                matches!(e, PortSpecError::RangeLength { .. })
            }),
            ("81-80", |e| matches!(e, PortSpecError::Range { .. })),
            (
                "80/icmp",
                |e| matches!(e, PortSpecError::Protocol { protocol, .. } if protocol == "icmp"),
            ),
            ("80/", |e| matches!(e, PortSpecError::Protocol { .. })),
            (
                "[::1]:8080:80",
                |e| matches!(e, PortSpecError::Ipv6HostIp { ip, .. } if ip == "::1"),
            ),
            ("[::1:8080:80", |e| {
                matches!(e, PortSpecError::Syntax { .. })
            }),
            ("localhost:8080:80", |e| {
                matches!(e, PortSpecError::HostIp { .. })
            }),
            ("300.0.0.1:8080:80", |e| {
                matches!(e, PortSpecError::HostIp { .. })
            }),
        ];
        for (spec, ok) in cases {
            match parse_port_spec(spec) {
                Ok(v) => panic!("{spec:?} parsed as {v:?}"),
                Err(e) => {
                    assert!(ok(&e), "{spec:?}: unexpected error {e:?}");
                    // Every message quotes the spec it is about.
                    if !matches!(e, PortSpecError::Syntax { .. }) || !spec.is_empty() {
                        assert!(e.to_string().contains(&format!("{spec:?}")), "{e}");
                    }
                }
            }
        }
    }

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let mut ports = parse_port_spec("127.0.0.1::80-83").expect("test fixture");
        ports.extend(parse_port_spec("127.0.0.1::53/udp").expect("test fixture"));
        assign_host_ports(&mut ports, &[]).expect("test fixture");
        let mut seen: Vec<u16> = ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.host_port)
            .collect();
        assert!(seen.iter().all(|&p| p != 0));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 4);
        assert_ne!(ports[4].host_port, 0);
        // Released again: the port can be bound right away.
        TcpListener::bind(("127.0.0.1", ports[0].host_port)).expect("test fixture");
    }

    #[test]
    fn busy_explicit_port_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").expect("test fixture");
        let port = l.local_addr().expect("test fixture").port();
        let mut ports = parse_port_spec(&format!("127.0.0.1:{port}:80")).expect("test fixture");
        assert!(matches!(
            assign_host_ports(&mut ports, &[]),
            Err(PortSpecError::HostPortBusy { port: p, .. }) if p == port
        ));
    }
}
