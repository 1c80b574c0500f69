//! A workaround for the `bridge` plugin (Debian's 1.1.1): its DEL learns the
//! container's addresses from the interface inside the namespace, so when
//! the namespace is already gone it releases the IPAM lease but leaves its
//! `ipMasq` rule and chain in the nat table:
//!
//! ```text
//! -A POSTROUTING -s IP/32 -m comment --comment "name: \"NET\" id: \"ID\"" -j CNI-…
//! ```
//!
//! The same happens when the interface inside the namespace was deleted.
//! After every DEL, hako removes that rule and chain itself if they are
//! still there, matched by the plugin's comment and the cached address.

use std::net::Ipv4Addr;
use std::process::Command;

use serde_json::Value;

use crate::cni::CniError;

/// Whether the conflist's bridge plugin masquerades.
fn masquerades(list: &Value) -> bool {
    list.get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| {
            p.get("type").and_then(Value::as_str) == Some("bridge")
                && p.get("ipMasq").and_then(Value::as_bool) == Some(true)
        })
}

/// The IPv4 addresses of a CNI result.
fn addresses(result: &Value) -> Vec<Ipv4Addr> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("address")?.as_str()?.split('/').next()?.parse().ok())
        .collect()
}

/// Removes the bridge plugin's masquerade rule and chain for the container,
/// if they are still there.
pub(crate) fn sweep(list: &Value, container_id: &str, result: &Value) -> Result<(), CniError> {
    if !masquerades(list) {
        return Ok(());
    }
    let network = list.get("name").and_then(Value::as_str).unwrap_or_default();
    let failed = |args: &[&str], output: String| CniError::MasqCleanup {
        network: network.to_string(),
        container: container_id.to_string(),
        command: format!("iptables {}", args.join(" ")),
        output,
    };
    let save_args = ["-t", "nat", "-S", "POSTROUTING"];
    let out = iptables(&save_args).map_err(|o| failed(&save_args, o))?;
    // `iptables -S` prints the comment as `--comment "name: \"NET\" id: \"ID\""`.
    let saved_comment = format!("name: \\\"{network}\\\" id: \\\"{container_id}\\\"");
    let comment = format!("name: \"{network}\" id: \"{container_id}\"");
    for ip in addresses(result) {
        let source = format!("{ip}/32");
        let Some(chain) = out
            .lines()
            .filter(|l| l.starts_with("-A POSTROUTING "))
            .filter(|l| l.contains(&format!("-s {source} ")) && l.contains(&saved_comment))
            .find_map(|l| l.rsplit_once(" -j ").map(|(_, c)| c.trim().to_string()))
        else {
            continue;
        };
        let del: [&str; 11] = [
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            &source,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
        ];
        let mut del = del.to_vec();
        del.push(&chain);
        iptables(&del).map_err(|o| failed(&del, o))?;
        // The chain is the container's own; flush and delete it.
        for op in ["-F", "-X"] {
            let args = ["-t", "nat", op, &chain];
            iptables(&args).map_err(|o| failed(&args, o))?;
        }
    }
    Ok(())
}

/// Runs `iptables -w ARGS`; its output, or its error text.
fn iptables(args: &[&str]) -> Result<String, String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_masquerading_bridges() {
        assert!(masquerades(
            &json!({"plugins": [{"type": "bridge", "ipMasq": true}]})
        ));
        assert!(!masquerades(
            &json!({"plugins": [{"type": "bridge", "ipMasq": false}]})
        ));
        assert_eq!(
            addresses(&json!({"ips": [{"address": "10.1.2.3/24"}, {"address": "fd00::1/64"}]})),
            vec![Ipv4Addr::new(10, 1, 2, 3)]
        );
    }
}
