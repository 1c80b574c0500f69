//! /etc/resolv.conf and /etc/hosts for containers on a bridge network.
//!
//! A container has its own network namespace, so a nameserver on the
//! host's loopback (systemd-resolved's 127.0.0.53, dnsmasq's 127.0.0.1) is
//! unreachable from it. Such nameservers are dropped. When that leaves
//! none and systemd-resolved's upstream list exists, that list is used
//! instead. Otherwise the container gets no nameserver at all: hako adds no
//! public resolver of its own (8.8.8.8 and the like) behind the user's back;
//! the engine can pass `--dns` servers with [`ResolvConf::with_nameservers`].
//! IPv6 nameservers are dropped too, since hako's networks are IPv4-only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::attach::AttachedNetwork;

/// The host's resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of its upstream servers.
pub const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
/// The name /etc/hosts gives the host (the gateway of the first network).
pub const HOST_ALIAS: &str = "host.hako.internal";

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A resolv.conf for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
    /// Nameserver lines left out, and why, for logs.
    pub dropped: Vec<String>,
}

impl ResolvConf {
    /// Replaces the nameservers (the engine's `--dns`).
    pub fn with_nameservers(mut self, servers: Vec<IpAddr>) -> ResolvConf {
        self.nameservers = servers;
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// Filters a host resolv.conf's text for use inside a container netns.
pub fn filter_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(addr) = words.next() else { continue };
                match addr.parse::<IpAddr>() {
                    Ok(ip) if ip.is_loopback() => conf
                        .dropped
                        .push(format!("{addr}: a loopback address of the host")),
                    Ok(IpAddr::V6(_)) => conf
                        .dropped
                        .push(format!("{addr}: IPv6, and hako networks are IPv4-only")),
                    Ok(ip) => conf.nameservers.push(ip),
                    Err(_) => conf.dropped.push(format!("{addr}: not an IP address")),
                }
            }
            // The last search/domain line wins, as in resolv.conf(5).
            Some("search") | Some("domain") => conf.search = words.map(str::to_string).collect(),
            Some("options") => conf.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    conf
}

/// The host's resolv.conf filtered for containers; see the module doc.
pub fn host_resolv_conf() -> Result<ResolvConf, DnsError> {
    resolv_conf_from(Path::new(HOST_RESOLV_CONF), Path::new(RESOLVED_UPSTREAM))
}

/// [`host_resolv_conf`] with the two paths given.
pub fn resolv_conf_from(host: &Path, upstream: &Path) -> Result<ResolvConf, DnsError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| DnsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let text = match read(host) {
        Ok(t) => t,
        // No resolv.conf on the host: no DNS in the container either.
        Err(DnsError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ResolvConf::default())
        }
        Err(e) => return Err(e),
    };
    let conf = filter_resolv_conf(&text);
    if conf.nameservers.is_empty() && !conf.dropped.is_empty() && upstream.exists() {
        let mut up = filter_resolv_conf(&read(upstream)?);
        up.dropped.extend(conf.dropped);
        return Ok(up);
    }
    Ok(conf)
}

/// An /etc/hosts for a container named `hostname` on `networks`: the
/// loopback entries, the container's address on each network with its
/// hostname and aliases, [`HOST_ALIAS`] for the first network's gateway,
/// then `extra` (the engine's `--add-host`).
pub fn hosts_file(
    hostname: &str,
    networks: &[AttachedNetwork],
    extra: &[(String, IpAddr)],
) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for net in networks {
        let mut names = vec![hostname.to_string()];
        names.extend(net.aliases.iter().filter(|a| *a != hostname).cloned());
        out.push_str(&format!("{}\t{}\n", net.ip, names.join(" ")));
    }
    if let Some(gw) = networks.first().and_then(|n| n.gateway) {
        out.push_str(&format!("{gw}\t{HOST_ALIAS}\n"));
    }
    for (name, ip) in extra {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn loopback_and_v6_servers_are_dropped() {
        let c = filter_resolv_conf(
            "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\n\
             nameserver fd00::53\nsearch example.org lan\noptions edns0 trust-ad\nnameserver bogus\n",
        );
        assert_eq!(c.nameservers, vec![IpAddr::from([192, 0, 2, 53])]);
        assert_eq!(c.search, vec!["example.org", "lan"]);
        assert_eq!(c.options, vec!["edns0", "trust-ad"]);
        assert_eq!(c.dropped.len(), 4, "{:?}", c.dropped);
        assert_eq!(
            c.render(),
            "search example.org lan\nnameserver 192.0.2.53\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn resolved_stub_falls_back_to_upstream() {
        let dir = std::env::temp_dir().join(format!("hako-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test fixture");
        let host = dir.join("resolv.conf");
        let up = dir.join("upstream.conf");
        std::fs::write(&host, "nameserver 127.0.0.53\nsearch lan\n").expect("test fixture");
        // No upstream file: nothing left, no public fallback.
        let c = resolv_conf_from(&host, &up).expect("test fixture");
        assert!(c.nameservers.is_empty());
        assert_eq!(c.search, vec!["lan"]);
        std::fs::write(&up, "nameserver 198.51.100.1\nsearch corp\n").expect("test fixture");
        let c = resolv_conf_from(&host, &up).expect("test fixture");
        assert_eq!(c.nameservers, vec![IpAddr::from([198, 51, 100, 1])]);
        assert_eq!(c.search, vec!["corp"]);
        std::fs::remove_dir_all(&dir).expect("test fixture");
    }

    #[test]
    fn hosts() {
        let n = AttachedNetwork {
            network: "web".into(),
            interface: "eth0".into(),
            ip: Ipv4Addr::new(10, 90, 1, 2),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 90, 1, 1)),
            mac: String::new(),
            bridge: "hako1".into(),
            ports: vec![],
            aliases: vec!["db".into()],
        };
        let text = hosts_file("c1", &[n], &[("reg".into(), IpAddr::from([192, 0, 2, 9]))]);
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.90.1.2\tc1 db\n10.90.1.1\thost.hako.internal\n192.0.2.9\treg\n"
        );
    }
}
