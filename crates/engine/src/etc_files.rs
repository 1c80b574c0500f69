//! The /etc/hosts, /etc/hostname and /etc/resolv.conf a container gets,
//! written in its directory and bound over the image's.

use std::path::{Path, PathBuf};

use crate::options::{bad, OptionError};

#[derive(Debug, Clone, Default)]
pub struct EtcInput<'a> {
    pub hostname: &'a str,
    /// The container's own addresses (for its hostname line).
    pub addresses: Vec<String>,
    /// `--add-host NAME:IP` entries.
    pub add_hosts: &'a [String],
    /// `--dns` servers (replace the host's).
    pub dns: &'a [String],
    /// `--dns-search` domains and `--dns-option` options (replace the
    /// host's).
    pub dns_search: &'a [String],
    pub dns_options: &'a [String],
    /// The host's network: its files, not generated ones.
    pub host_network: bool,
    /// Other names that resolve to this container (pod members …).
    pub aliases: Vec<String>,
    /// The other containers on its user networks: (address, names).
    pub peers: Vec<(String, Vec<String>)>,
}

/// Checks `--add-host` and `--dns` values (before anything is made).
pub fn validate(add_hosts: &[String], dns: &[String]) -> Result<(), OptionError> {
    for h in add_hosts {
        let (name, ip) = h
            .split_once(':')
            .or_else(|| h.split_once('='))
            .ok_or_else(|| bad("--add-host", h, "expected NAME:IP"))?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad("--add-host", h, "bad host name"));
        }
        if ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("--add-host", h, "not an IP address"));
        }
    }
    for d in dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("--dns", d, "not an IP address"));
        }
    }
    Ok(())
}

/// Checks a `--hostname`: RFC 1123 labels (letters, digits, inner `-`)
/// joined by dots, at most 64 bytes (the kernel's limit), as docker
/// checks it. It is written into /etc/hosts and /etc/hostname, so
/// anything else (a newline above all) must not get through.
pub fn validate_hostname(h: &str) -> Result<(), OptionError> {
    if h.is_empty() || h.len() > 64 {
        return Err(bad("--hostname", h, "must be 1 to 64 characters long"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !h.split('.').all(label_ok) {
        return Err(bad(
            "--hostname",
            h,
            "expected letters, digits and inner '-', in labels joined by '.'",
        ));
    }
    Ok(())
}

/// Whether `h` passes [`validate_hostname`].
pub fn is_valid_hostname(h: &str) -> bool {
    validate_hostname(h).is_ok()
}

/// Writes the three files into `dir`; returns (path, container path).
pub fn write(dir: &Path, input: &EtcInput<'_>) -> std::io::Result<Vec<(PathBuf, &'static str)>> {
    let hosts = dir.join("hosts");
    let hostname = dir.join("hostname");
    let resolv = dir.join("resolv.conf");
    std::fs::write(&hosts, hosts_text(input))?;
    std::fs::write(&hostname, format!("{}\n", input.hostname))?;
    std::fs::write(&resolv, resolv_conf(input))?;
    Ok(vec![
        (hosts, "/etc/hosts"),
        (hostname, "/etc/hostname"),
        (resolv, "/etc/resolv.conf"),
    ])
}

/// The container's /etc/hosts.
pub fn hosts_text(input: &EtcInput<'_>) -> String {
    let mut h = String::new();
    if input.host_network {
        h.push_str(&std::fs::read_to_string("/etc/hosts").unwrap_or_default());
        if !h.ends_with('\n') && !h.is_empty() {
            h.push('\n');
        }
    } else {
        h.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    }
    for e in input.add_hosts {
        if let Some((name, ip)) = e.split_once(':').or_else(|| e.split_once('=')) {
            h.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    let names = std::iter::once(input.hostname.to_string())
        .chain(input.aliases.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    if input.addresses.is_empty() {
        h.push_str(&format!("127.0.1.1\t{names}\n"));
    }
    for a in &input.addresses {
        h.push_str(&format!("{a}\t{names}\n"));
    }
    for (address, names) in &input.peers {
        h.push_str(&format!("{address}\t{}\n", names.join(" ")));
    }
    h
}

/// The host's resolv.conf for a container: as it is on the host's
/// network; elsewhere filtered by hako-network (loopback and IPv6
/// nameservers cannot be reached from another network namespace; a
/// systemd-resolved stub is replaced by its upstream servers). `--dns`
/// replaces the nameservers.
fn resolv_conf(input: &EtcInput<'_>) -> String {
    let servers: Vec<std::net::IpAddr> = input.dns.iter().filter_map(|d| d.parse().ok()).collect();
    let changed =
        !servers.is_empty() || !input.dns_search.is_empty() || !input.dns_options.is_empty();
    let mut conf = if input.host_network {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        if !changed {
            return host;
        }
        hako_network::dns::filter_resolv_conf(&host)
    } else {
        hako_network::dns::host_resolv_conf().unwrap_or_default()
    };
    if !servers.is_empty() {
        conf = conf.with_nameservers(servers);
    }
    if !input.dns_search.is_empty() {
        conf.search = input.dns_search.to_vec();
    }
    if !input.dns_options.is_empty() {
        conf.options = input.dns_options.to_vec();
    }
    conf.render()
}

#[cfg(test)]
mod tests {
    use super::validate_hostname;

    #[test]
    fn hostnames_as_docker_takes_them() {
        for ok in ["a", "web-1", "db.example.org", "A1", &"x".repeat(64)] {
            assert!(validate_hostname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "bad host",
            "a\n6.6.6.6 evil",
            "-a",
            "a-",
            "a..b",
            "a_b",
            ".a",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }
}
