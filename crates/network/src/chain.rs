//! Running a network configuration list (a conflist) as the CNI spec's
//! "network configuration list" section says: ADD in order with each
//! plugin's result as the next one's `prevResult`; DEL in reverse with the
//! cached final ADD result; CHECK in order with the cached result.

use std::path::Path;

use serde_json::{Map, Value};

use crate::cache::AttachmentRecord;
use crate::cni::{self, CniCommand, CniError, CniPath, Invocation};
use crate::masq;

/// Who and where a chain runs for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
}

/// An ADD that failed, after DEL was run over the whole list to undo it.
#[derive(Debug)]
pub(crate) struct AddFailure {
    pub error: Box<CniError>,
    /// DEL failures while undoing; empty when the undo was clean.
    pub rollback: Vec<CniError>,
}

/// The conflist's name and spec version, and its plugin objects.
fn parts(list: &Value) -> (&str, &str, &[Value]) {
    let name = list.get("name").and_then(Value::as_str).unwrap_or_default();
    let version = list
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(cni::SPEC_VERSIONS[0]);
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    (name, version, plugins)
}

fn plugin_type(plugin: &Value) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The stdin of one plugin: its own object plus the list's `name` and
/// `cniVersion`, the `runtimeConfig` entries of the capabilities it declares,
/// and `prevResult`.
fn plugin_config(
    plugin: &Value,
    name: &str,
    version: &str,
    runtime: &Map<String, Value>,
    prev: Option<&Value>,
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), Value::from(name));
    conf.insert("cniVersion".into(), Value::from(version));
    let mut rc = Map::new();
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = runtime.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    Value::Object(conf)
}

/// Checks that every plugin of the list is installed before anything runs,
/// so a missing plugin fails with nothing to undo.
pub(crate) fn preflight(cni: &CniPath, list: &Value) -> Result<(), CniError> {
    let (name, _, plugins) = parts(list);
    for p in plugins {
        cni.find(plugin_type(p), name)?;
    }
    Ok(())
}

/// ADD over the list. On a failure, DEL runs over the whole list in reverse
/// (DEL is idempotent, and the failing plugin may have left something, as
/// `bridge` leaves its veth when IPAM fails), with the last good result.
pub(crate) fn add(
    cni: &CniPath,
    list: &Value,
    target: &Target<'_>,
    runtime: &Map<String, Value>,
) -> Result<Value, AddFailure> {
    if let Err(error) = preflight(cni, list) {
        return Err(AddFailure {
            error: Box::new(error),
            rollback: Vec::new(),
        });
    }
    let (name, version, plugins) = parts(list);
    let inv = Invocation {
        command: CniCommand::Add,
        container_id: target.container_id,
        netns: target.netns,
        ifname: target.ifname,
    };
    let mut prev: Option<Value> = None;
    for plugin in plugins {
        let conf = plugin_config(plugin, name, version, runtime, prev.as_ref());
        match cni::exec(cni, plugin_type(plugin), name, &inv, &conf) {
            Ok(result) => prev = Some(result),
            Err(error) => {
                let rollback = del(cni, list, target, runtime, prev.as_ref());
                return Err(AddFailure {
                    error: Box::new(error),
                    rollback,
                });
            }
        }
    }
    prev.ok_or_else(|| AddFailure {
        error: Box::new(CniError::BadResult {
            plugin: String::new(),
            network: name.to_string(),
            command: CniCommand::Add,
            reason: "the network configuration list has no plugins".into(),
            output: String::new(),
        }),
        rollback: Vec::new(),
    })
}

/// DEL over the list in reverse. Every plugin is run even when one fails, so
/// as much as possible is released; the failures are returned.
pub(crate) fn del(
    cni: &CniPath,
    list: &Value,
    target: &Target<'_>,
    runtime: &Map<String, Value>,
    cached: Option<&Value>,
) -> Vec<CniError> {
    let (name, version, plugins) = parts(list);
    let inv = Invocation {
        command: CniCommand::Del,
        container_id: target.container_id,
        netns: target.netns,
        ifname: target.ifname,
    };
    let mut errors = Vec::new();
    for plugin in plugins.iter().rev() {
        let conf = plugin_config(plugin, name, version, runtime, cached);
        if let Err(e) = cni::exec(cni, plugin_type(plugin), name, &inv, &conf) {
            errors.push(e);
        }
    }
    errors
}

/// DEL of a cached attachment in `netns` (`None`: the namespace is gone),
/// then the bridge plugin's masquerade rule removed if it is still there
/// (it is when the namespace or the interface in it was already gone).
pub(crate) fn del_cached(
    cni: &CniPath,
    rec: &AttachmentRecord,
    netns: Option<&Path>,
) -> Vec<CniError> {
    let target = Target {
        container_id: &rec.container_id,
        netns,
        ifname: &rec.ifname,
    };
    let mut errors = del(
        cni,
        &rec.config,
        &target,
        &rec.runtime_config(),
        Some(&rec.result),
    );
    if errors.is_empty() {
        if let Err(e) = masq::sweep(&rec.config, &rec.container_id, &rec.result) {
            errors.push(e);
        }
    }
    errors
}

/// CHECK over the list with the cached result (spec 0.4.0 and later only;
/// older lists pass without running anything).
pub(crate) fn check(
    cni: &CniPath,
    list: &Value,
    target: &Target<'_>,
    runtime: &Map<String, Value>,
    cached: &Value,
) -> Result<(), CniError> {
    let (name, version, plugins) = parts(list);
    if version.starts_with("0.1") || version.starts_with("0.2") || version.starts_with("0.3") {
        return Ok(());
    }
    if list.get("disableCheck").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let inv = Invocation {
        command: CniCommand::Check,
        container_id: target.container_id,
        netns: target.netns,
        ifname: target.ifname,
    };
    for plugin in plugins {
        let conf = plugin_config(plugin, name, version, runtime, Some(cached));
        cni::exec(cni, plugin_type(plugin), name, &inv, &conf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugin_config_has_only_declared_capabilities() {
        let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true, "ips": false}, "snat": true});
        let mut rt = Map::new();
        rt.insert("portMappings".into(), json!([{"hostPort": 1}]));
        rt.insert("ips".into(), json!(["10.0.0.2"]));
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let conf = plugin_config(&plugin, "net", "1.0.0", &rt, Some(&prev));
        assert_eq!(
            conf,
            json!({
                "type": "portmap", "snat": true, "name": "net", "cniVersion": "1.0.0",
                "capabilities": {"portMappings": true, "ips": false},
                "runtimeConfig": {"portMappings": [{"hostPort": 1}]},
                "prevResult": prev,
            })
        );
        let bare = plugin_config(&json!({"type": "firewall"}), "net", "1.0.0", &rt, None);
        assert_eq!(
            bare,
            json!({"type": "firewall", "name": "net", "cniVersion": "1.0.0"})
        );
    }
}
