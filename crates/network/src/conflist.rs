//! A hako network as a CNI network configuration list, and back.
//!
//! ```json
//! {
//!   "cniVersion": "1.0.0",
//!   "name": "web",
//!   "hako": { "id": "…", "created": 1700000000, "internal": false, "labels": {} },
//!   "plugins": [
//!     { "type": "bridge", "bridge": "hako1", "isGateway": true, "ipMasq": true,
//!       "hairpinMode": true, "capabilities": { "ips": true },
//!       "ipam": { "type": "host-local", "dataDir": "<root>/networks/ipam",
//!                 "ranges": [[{ "subnet": "10.90.1.0/24", "gateway": "10.90.1.1" }]],
//!                 "routes": [{ "dst": "0.0.0.0/0" }] } },
//!     { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
//!     { "type": "firewall", "backend": "iptables" }
//!   ]
//! }
//! ```
//!
//! The top-level `hako` object is hako's own metadata; a list's top-level
//! keys are never passed to plugins. An internal network has no `ipMasq`,
//! no default route and no `portmap`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::subnet::Ipv4Net;

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// 64 hex digits, random.
    pub id: String,
    /// The Linux bridge the `bridge` plugin creates on first attach.
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The bridge's address, the containers' default route.
    pub gateway: Ipv4Addr,
    /// No masquerading, no default route, no published ports.
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// The CNI spec version of the conflist.
    pub cni_version: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Where the conflist is.
    pub config_path: PathBuf,
}

#[derive(Serialize, Deserialize, Default)]
struct Meta {
    #[serde(default)]
    id: String,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The conflist of `net`, with host-local leases kept in `ipam_dir`.
pub(crate) fn build(net: &Network, ipam_dir: &Path) -> Value {
    let routes = if net.internal {
        json!([])
    } else {
        json!([{ "dst": "0.0.0.0/0" }])
    };
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": net.bridge,
        "isGateway": true,
        "ipMasq": !net.internal,
        "hairpinMode": true,
        "capabilities": { "ips": true },
        "ipam": {
            "type": "host-local",
            "dataDir": ipam_dir,
            "ranges": [[{ "subnet": net.subnet.to_string(), "gateway": net.gateway.to_string() }]],
            "routes": routes,
        },
    })];
    if !net.internal {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
    plugins.push(json!({ "type": "firewall", "backend": "iptables" }));
    json!({
        "cniVersion": net.cni_version,
        "name": net.name,
        "hako": Meta {
            id: net.id.clone(),
            created: net.created,
            internal: net.internal,
            labels: net.labels.clone(),
        },
        "plugins": plugins,
    })
}

/// Reads a network back from its conflist; the error says what is missing.
pub(crate) fn parse(list: &Value, path: &Path) -> Result<Network, String> {
    let name = list
        .get("name")
        .and_then(Value::as_str)
        .ok_or("no \"name\"")?;
    let cni_version = list
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or("no \"cniVersion\"")?;
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or("no \"plugins\" list")?;
    let bridge = plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
        .ok_or("no \"bridge\" plugin")?;
    let bridge_name = bridge
        .get("bridge")
        .and_then(Value::as_str)
        .ok_or("the bridge plugin names no \"bridge\"")?;
    let range = bridge
        .pointer("/ipam/ranges/0/0")
        .ok_or("the bridge plugin's ipam has no ranges[0][0]")?;
    let subnet: Ipv4Net = range
        .get("subnet")
        .and_then(Value::as_str)
        .ok_or("ranges[0][0] has no \"subnet\"")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let gateway = match range.get("gateway").and_then(Value::as_str) {
        Some(g) => g
            .parse()
            .map_err(|_| format!("ranges[0][0].gateway {g:?} is not an IPv4 address"))?,
        None => subnet.host(1).ok_or("subnet has no first host")?,
    };
    let meta: Meta = match list.get("hako") {
        Some(m) => serde_json::from_value(m.clone()).map_err(|e| format!("\"hako\": {e}"))?,
        None => Meta {
            internal: bridge.get("ipMasq").and_then(Value::as_bool) != Some(true),
            ..Meta::default()
        },
    };
    Ok(Network {
        name: name.to_string(),
        id: meta.id,
        bridge: bridge_name.to_string(),
        subnet,
        gateway,
        internal: meta.internal,
        labels: meta.labels,
        cni_version: cni_version.to_string(),
        created: meta.created,
        config_path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(internal: bool) -> Network {
        Network {
            name: "web".into(),
            id: "ab".repeat(32),
            bridge: "hako3".into(),
            subnet: "10.90.3.0/24".parse().expect("test fixture"),
            gateway: Ipv4Addr::new(10, 90, 3, 1),
            internal,
            labels: [("a".to_string(), "b".to_string())].into(),
            cni_version: "1.0.0".into(),
            created: 7,
            config_path: PathBuf::from("/x/web.conflist"),
        }
    }

    #[test]
    fn round_trip() {
        for internal in [false, true] {
            let n = net(internal);
            let list = build(&n, Path::new("/x/ipam"));
            assert_eq!(
                parse(&list, Path::new("/x/web.conflist")).expect("test fixture"),
                n
            );
            let types: Vec<&str> = list["plugins"]
                .as_array()
                .expect("test fixture")
                .iter()
                .map(|p| p["type"].as_str().expect("test fixture"))
                .collect();
            if internal {
                assert_eq!(types, ["bridge", "firewall"]);
                assert_eq!(list["plugins"][0]["ipMasq"], false);
                assert_eq!(list["plugins"][0]["ipam"]["routes"], json!([]));
            } else {
                assert_eq!(types, ["bridge", "portmap", "firewall"]);
                assert_eq!(list["plugins"][0]["ipMasq"], true);
            }
            assert_eq!(list["plugins"][0]["ipam"]["dataDir"], "/x/ipam");
        }
    }

    #[test]
    fn parse_names_what_is_missing() {
        let e = parse(
            &json!({"name": "n", "cniVersion": "1.0.0", "plugins": []}),
            Path::new("p"),
        )
        .expect_err("no bridge plugin");
        assert!(e.contains("bridge"), "{e}");
    }
}
