//! hako-network against the real CNI plugins, real namespaces, real
//! iptables. Needs root. Every test has its own root, names, subnets and
//! bridges, and its `Env` guard removes them even when it fails.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hako_network::attach::AttachError;
use hako_network::cni::CniError;
use hako_network::{
    parse_port_spec, Netns, NetnsError, NetworkAttachment, NetworkSpec, NetworkStore, StoreError,
};

fn spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.to_string(),
        ..NetworkSpec::default()
    }
}

#[test]
fn create_list_inspect_remove() {
    require_root();
    let mut env = Env::new("crud");
    let a_name = env.name("a");
    let b_name = env.name("b");
    let bridge = env.bridge();
    let subnet = env.subnet();
    let a = env
        .create(&NetworkSpec {
            name: a_name.clone(),
            subnet: Some(subnet),
            gateway: Some(subnet.host(254).expect("a host address")),
            bridge: Some(bridge.clone()),
            labels: [("team".to_string(), "web".to_string())].into(),
            ..NetworkSpec::default()
        })
        .expect("creating a");
    assert_eq!(a.subnet, subnet);
    assert_eq!(a.gateway, subnet.host(254).expect("a host address"));
    assert_eq!(a.bridge, bridge);
    assert_eq!(a.cni_version, "1.0.0", "Debian's bridge speaks 1.0.0");
    assert_eq!(a.id.len(), 64);

    // Automatic subnet and bridge: a /24 of 10.90.0.0/16 past the default's.
    let b = env.create(&spec(&b_name)).expect("creating b");
    let pool: hako_network::Ipv4Net = "10.90.0.0/16".parse().expect("pool");
    assert!(
        pool.overlaps(&b.subnet) && b.subnet.prefix() == 24,
        "{}",
        b.subnet
    );
    assert_ne!(b.subnet.to_string(), "10.90.0.0/24");
    assert!(
        b.bridge.starts_with("hako") && b.bridge != "hako0",
        "{}",
        b.bridge
    );
    assert_eq!(b.gateway, b.subnet.host(1).expect("a host address"));

    let names: Vec<String> = env
        .store
        .list()
        .expect("list")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec![a_name.clone(), b_name.clone()]);
    assert_eq!(env.store.inspect(&a_name).expect("inspect"), a);

    // The conflist on disk is a CNI list the plugins can run.
    let text = std::fs::read_to_string(&a.config_path).expect("reading the conflist");
    let list: serde_json::Value = serde_json::from_str(&text).expect("JSON conflist");
    assert_eq!(list["name"], a_name.as_str());
    assert_eq!(list["plugins"][0]["bridge"], bridge.as_str());
    assert_eq!(
        list["plugins"][0]["ipam"]["dataDir"],
        env.store.ipam_dir().to_string_lossy().as_ref()
    );
    assert_eq!(list["hako"]["labels"]["team"], "web");

    // Errors.
    assert!(matches!(
        env.store.create(&spec(&a_name)),
        Err(StoreError::Exists { name }) if name == a_name
    ));
    let overlap = env.store.create(&NetworkSpec {
        subnet: Some(
            hako_network::Ipv4Net::new(subnet.network(), 23)
                .unwrap_or_else(|_| "10.0.0.0/8".parse().expect("a subnet")),
        ),
        ..spec(&env.name("c"))
    });
    assert!(
        matches!(&overlap, Err(StoreError::Overlap { other, .. }) if *other == a_name),
        "{overlap:?}"
    );
    let msg = overlap.expect_err("an overlap").to_string();
    assert!(
        msg.contains(&a_name) && msg.contains(&subnet.to_string()),
        "{msg}"
    );
    for bad in ["-x", "a b", "", "x/y", ".hidden"] {
        assert!(
            matches!(
                env.store.create(&spec(bad)),
                Err(StoreError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        env.store.create(&spec("none")),
        Err(StoreError::Reserved { .. })
    ));
    let gw = env.store.create(&NetworkSpec {
        subnet: Some(env.subnet()),
        gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..spec(&env.name("d"))
    });
    assert!(matches!(gw, Err(StoreError::Gateway { .. })), "{gw:?}");
    let taken = env.store.create(&NetworkSpec {
        bridge: Some(bridge.clone()),
        ..spec(&env.name("e"))
    });
    assert!(
        matches!(taken, Err(StoreError::BridgeTaken { .. })),
        "{taken:?}"
    );
    assert_eq!(
        env.store.list().expect("list").len(),
        2,
        "failed creates leave no file"
    );

    // Remove.
    env.store.remove(&a_name, false).expect("removing a");
    assert!(!a.config_path.exists());
    assert!(matches!(
        env.store.inspect(&a_name),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        env.store.remove(&a_name, false),
        Err(StoreError::NotFound { .. })
    ));
    // The subnet is free again.
    env.create(&NetworkSpec {
        subnet: Some(subnet),
        ..spec(&a_name)
    })
    .expect("re-creating a on the same subnet");
}

#[test]
fn default_network_is_created_once() {
    require_root();
    let mut env = Env::new("default");
    // Claims of its own: a real store on this host may hold hako0.
    env.store = env.store.clone().with_claims_dir(env.dir.join("claims"));
    // A hako0 on this host (another engine's store) is skipped, and so is
    // its subnet (routed on the host).
    let hako0_taken = Path::new("/sys/class/net/hako0").exists();
    let d = env.store.default_network().expect("default network");
    assert_eq!(d.name, "hako");
    if hako0_taken {
        assert!(d.bridge.starts_with("hako") && d.bridge != "hako0", "{d:?}");
        assert_ne!(d.subnet.to_string(), "10.90.0.0/24", "{d:?}");
    } else {
        assert_eq!(d.bridge, "hako0");
        assert_eq!(d.subnet.to_string(), "10.90.0.0/24");
        assert_eq!(d.gateway, Ipv4Addr::new(10, 90, 0, 1));
    }
    assert!(!d.internal);
    let again = env.store.default_network().expect("default network again");
    assert_eq!(again.id, d.id);
    // No attach here: hako0 is the real engine's bridge name.
}

/// How many different subnets and bridges `nets` have.
fn distinct_subnets_and_bridges(nets: &[hako_network::conflist::Network]) -> (usize, usize) {
    let subnets: std::collections::BTreeSet<_> = nets.iter().map(|n| n.subnet).collect();
    let bridges: std::collections::BTreeSet<_> = nets.iter().map(|n| &n.bridge).collect();
    (subnets.len(), bridges.len())
}

#[test]
fn concurrent_creators_get_distinct_subnets_and_bridges() {
    require_root();
    let env = Env::new("concurrent");
    let root = env.dir.join("root");
    let run = env.dir.join("run");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (root, run) = (root.clone(), run.clone());
            let prefix = env.name(&format!("t{t}"));
            std::thread::spawn(move || {
                let store = NetworkStore::new(root, run);
                (0..3)
                    .map(|i| {
                        store
                            .create(&spec(&format!("{prefix}-{i}")))
                            .expect("create")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let nets: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a creator thread"))
        .collect();
    assert_eq!(distinct_subnets_and_bridges(&nets), (12, 12), "{nets:?}");
    assert_eq!(env.store.list().expect("list").len(), 12);
    let leftovers: Vec<_> = std::fs::read_dir(env.store.networks_dir())
        .expect("listing")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn stores_on_different_roots_never_share_a_bridge_or_subnet() {
    require_root();
    let env = Env::new("roots");
    let claims = env.dir.join("claims");
    // Four engines with their own --root, all making their default
    // network and two more at once: nothing is attached, so no bridge
    // exists yet for the kernel to tell them apart.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let dir = env.dir.join(format!("store{t}"));
            let claims = claims.clone();
            let prefix = env.name(&format!("r{t}"));
            std::thread::spawn(move || {
                let store =
                    NetworkStore::new(dir.join("root"), dir.join("run")).with_claims_dir(claims);
                let mut nets = vec![store.default_network().expect("default")];
                for i in 0..2 {
                    nets.push(
                        store
                            .create(&spec(&format!("{prefix}-{i}")))
                            .expect("create"),
                    );
                }
                (store, nets)
            })
        })
        .collect();
    let made: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("a creator thread"))
        .collect();
    let nets: Vec<_> = made.iter().flat_map(|(_, n)| n.clone()).collect();
    assert_eq!(distinct_subnets_and_bridges(&nets), (12, 12), "{nets:?}");
    // An explicit bridge or subnet another root holds is refused, naming it.
    let (first, theirs) = &made[0];
    let (second, _) = &made[1];
    let e = second
        .create(&NetworkSpec {
            bridge: Some(theirs[1].bridge.clone()),
            ..spec(&env.name("taken"))
        })
        .expect_err("a bridge of another store");
    assert!(matches!(e, StoreError::BridgeTaken { .. }), "{e}");
    assert!(e.to_string().contains(&theirs[1].name), "{e}");
    let e = second
        .create(&NetworkSpec {
            subnet: Some(theirs[1].subnet),
            ..spec(&env.name("taken"))
        })
        .expect_err("a subnet of another store");
    assert!(matches!(e, StoreError::Overlap { .. }), "{e}");
    // Removed, a network's bridge and subnet are free for the others.
    first.remove(&theirs[1].name, false).expect("remove");
    let n = second
        .create(&NetworkSpec {
            bridge: Some(theirs[1].bridge.clone()),
            subnet: Some(theirs[1].subnet),
            ..spec(&env.name("reused"))
        })
        .expect("the freed bridge and subnet");
    assert_eq!(n.bridge, theirs[1].bridge);
    for (store, nets) in &made {
        for n in nets {
            let _ = store.remove(&n.name, true);
        }
    }
    let _ = second.remove(&n.name, true);
    let left: Vec<_> = std::fs::read_dir(&claims)
        .expect("claims")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "claims left: {left:?}");
}

#[test]
fn two_containers_on_one_network_ping_each_other() {
    require_root();
    let mut env = Env::new("ping");
    let net = env.network("net", false);
    let ns1 = env.netns("c1");
    let ns2 = env.netns("c2");
    let (id1, id2) = (env.name("c1"), env.name("c2"));
    let att = [NetworkAttachment::new(net.name.clone(), "eth0")];
    env.track_container(ns1.path(), &id1);
    let r1 = env.store.attach(ns1.path(), &id1, &att).expect("attach c1");
    env.track_container(ns2.path(), &id2);
    let r2 = env.store.attach(ns2.path(), &id2, &att).expect("attach c2");
    let (a, b) = (&r1.networks[0], &r2.networks[0]);
    for r in [a, b] {
        assert!(net.subnet.is_host(r.ip), "{r:?}");
        assert_eq!(r.prefix, 24);
        assert_eq!(r.gateway, Some(net.gateway));
        assert_eq!(r.interface, "eth0");
        assert_eq!(r.bridge, net.bridge);
        assert_eq!(r.mac.len(), 17, "{r:?}");
    }
    assert_ne!(a.ip, b.ip);
    let (ok, out) = ping(ns1.path(), b.ip);
    assert!(ok, "c1 → c2 ({}): {out}", b.ip);
    let (ok, out) = ping(ns2.path(), a.ip);
    assert!(ok, "c2 → c1 ({}): {out}", a.ip);
    let (ok, out) = ping(ns1.path(), net.gateway);
    assert!(ok, "c1 → gateway: {out}");
    // The address is on eth0 inside, with a default route via the gateway.
    let (_, addr) = in_netns(ns1.path(), "ip", &["-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{}/24", a.ip)), "{addr}");
    let (_, route) = in_netns(ns1.path(), "ip", &["route"]);
    assert!(
        route.contains(&format!("default via {}", net.gateway)),
        "{route}"
    );
    // CHECK agrees.
    env.store.check(ns1.path(), &id1).expect("CHECK c1");
    assert_eq!(
        env.store.container_networks(&id1).expect("cached networks")[0],
        *a
    );
    // A netns can join a second network as eth1.
    let net2 = env.network("net2", false);
    let r = env
        .store
        .attach(
            ns1.path(),
            &id1,
            &[NetworkAttachment::new(net2.name.clone(), "eth1")],
        )
        .expect("attach c1 to net2");
    assert!(net2.subnet.is_host(r.networks[0].ip));
    assert_eq!(
        links_in(ns1.path()),
        vec!["eth0".to_string(), "eth1".to_string()]
    );
    let again = env.store.attach(ns1.path(), &id1, &att);
    assert!(
        matches!(again, Err(AttachError::AlreadyAttached { .. })),
        "{again:?}"
    );
}

#[test]
fn published_ports_reach_the_container_from_the_host() {
    require_root();
    let mut env = Env::new("ports");
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    let _tcp = tcp_server(ns.path(), 80, "hello from the netns");
    let _udp = udp_server(ns.path(), 5353, "echo:");
    let mut ports = parse_port_spec("80").expect("spec");
    ports.extend(parse_port_spec("5353/udp").expect("spec"));
    let att = [NetworkAttachment {
        ports,
        ..NetworkAttachment::new(net.name.clone(), "eth0")
    }];
    env.track_container(ns.path(), &id);
    let r = env.store.attach(ns.path(), &id, &att).expect("attach");
    let tcp_port = r.networks[0].ports[0].host_port;
    let udp_port = r.networks[0].ports[1].host_port;
    assert_ne!(tcp_port, 0);
    assert_ne!(udp_port, 0);

    let (ok, body) = curl(&format!("http://127.0.0.1:{tcp_port}/"));
    assert!(
        ok && body.contains("hello from the netns"),
        "127.0.0.1:{tcp_port}: {body}"
    );
    let host = host_ip();
    let (ok, body) = curl(&format!("http://{host}:{tcp_port}/"));
    assert!(
        ok && body.contains("hello from the netns"),
        "{host}:{tcp_port}: {body}"
    );
    let reply = udp_ask((Ipv4Addr::LOCALHOST, udp_port), "ping");
    assert_eq!(
        reply.as_deref(),
        Some("echo:ping"),
        "UDP 127.0.0.1:{udp_port}"
    );
    let reply = udp_ask((host, udp_port), "pong");
    assert_eq!(reply.as_deref(), Some("echo:pong"), "UDP {host}:{udp_port}");

    // A second container may not take the same host port.
    let ns2 = env.netns("c2");
    let id2 = env.name("c2");
    let clash = env.store.attach(
        ns2.path(),
        &id2,
        &[NetworkAttachment {
            ports: parse_port_spec(&format!("{tcp_port}:80")).expect("spec"),
            ..NetworkAttachment::new(net.name.clone(), "eth0")
        }],
    );
    assert!(
        matches!(&clash, Err(AttachError::PortConflict { other, .. }) if *other == id),
        "{clash:?}"
    );

    env.store.detach(ns.path(), &id, &att).expect("detach");
    let (ok, body) = curl(&format!("http://127.0.0.1:{tcp_port}/"));
    assert!(!ok, "still reachable after detach: {body}");
}

#[test]
fn bound_host_address_only() {
    require_root();
    let mut env = Env::new("hostip");
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    let _tcp = tcp_server(ns.path(), 80, "loopback only");
    let att = [NetworkAttachment {
        ports: parse_port_spec("127.0.0.1::80").expect("spec"),
        ..NetworkAttachment::new(net.name.clone(), "eth0")
    }];
    env.track_container(ns.path(), &id);
    let r = env.store.attach(ns.path(), &id, &att).expect("attach");
    let p = r.networks[0].ports[0];
    assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
    let (ok, body) = curl(&format!("http://127.0.0.1:{}/", p.host_port));
    assert!(ok && body.contains("loopback only"), "{body}");
    let (ok, body) = curl(&format!("http://{}:{}/", host_ip(), p.host_port));
    assert!(
        !ok,
        "published on 127.0.0.1 only, yet the host address answered: {body}"
    );
}

#[test]
fn detach_removes_veth_lease_and_rules() {
    require_root();
    let mut env = Env::new("detach");
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    let att = [NetworkAttachment {
        ports: parse_port_spec("127.0.0.1::80").expect("spec"),
        ..NetworkAttachment::new(net.name.clone(), "eth0")
    }];
    env.track_container(ns.path(), &id);
    let r = env.store.attach(ns.path(), &id, &att).expect("attach");
    let ip = r.networks[0].ip;

    let rec = &env.store.attachments(Some(&net.name)).expect("records")[0];
    let veth = rec.result["interfaces"]
        .as_array()
        .and_then(|ifs| {
            ifs.iter()
                .find(|i| i.get("sandbox").is_none() && i["name"] != net.bridge.as_str())
        })
        .and_then(|i| i["name"].as_str())
        .expect("a host-side veth in the result")
        .to_string();
    let lease = env.store.ipam_dir().join(&net.name).join(ip.to_string());
    assert!(
        Path::new("/sys/class/net").join(&veth).exists(),
        "veth {veth}"
    );
    assert!(lease.exists(), "lease {}", lease.display());
    let rules = iptables_lines(&needles(&id, ip));
    let chains = own_chains(&rules);
    assert!(
        rules
            .iter()
            .any(|l| l.contains("MASQUERADE") || l.contains("-j CNI-")),
        "{rules:?}"
    );
    assert!(
        rules.iter().any(|l| l.contains("DNAT")),
        "portmap rules: {rules:?}"
    );
    assert!(!chains.is_empty(), "{rules:?}");

    env.store.detach(ns.path(), &id, &att).expect("detach");
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "veth {veth} left"
    );
    assert!(!lease.exists(), "lease {} left", lease.display());
    assert_eq!(iptables_lines(&needles(&id, ip)), Vec::<String>::new());
    assert_eq!(chains_left(&chains), Vec::<String>::new());
    assert!(links_in(ns.path()).is_empty());
    assert!(env.store.attachments(None).expect("records").is_empty());
    // Again: idempotent.
    env.store
        .detach(ns.path(), &id, &att)
        .expect("second detach");
    env.store
        .detach_all(ns.path(), &id)
        .expect("detach_all with nothing cached");

    // Detach after the namespace is gone (a crash, a reboot).
    let r = env
        .store
        .attach(ns.path(), &id, &att)
        .expect("attach again");
    let ip = r.networks[0].ip;
    let lease = env.store.ipam_dir().join(&net.name).join(ip.to_string());
    assert!(lease.exists());
    // The handle holds the namespace open: drop it, as a dead container's
    // last process would.
    let path = ns.path().to_path_buf();
    drop(ns);
    Netns::remove(&path).expect("removing the netns");
    let chains = own_chains(&iptables_lines(&needles(&id, ip)));
    assert!(!chains.is_empty());
    env.store
        .detach_all(&path, &id)
        .expect("detach without a netns");
    assert!(!lease.exists(), "lease {} left", lease.display());
    assert_eq!(iptables_lines(&needles(&id, ip)), Vec::<String>::new());
    assert_eq!(chains_left(&chains), Vec::<String>::new());
    // The kernel destroys a namespace (and its veth) asynchronously.
    let brif = Path::new("/sys/class/net").join(&net.bridge).join("brif");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(&brif).map(|d| d.count()).unwrap_or(0) > 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = std::fs::read_dir(&brif)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "ports left on the bridge: {left:?}");

    // Removing the network deletes its bridge and leases.
    env.store.remove(&net.name, false).expect("remove");
    assert!(!Path::new("/sys/class/net").join(&net.bridge).exists());
    assert!(!env.store.ipam_dir().join(&net.name).exists());
}

/// After a reboot the namespace, veth and iptables rules are gone but the
/// cache and the IPAM lease (both under the persistent root) are not:
/// detach_all must release the lease and succeed.
#[test]
fn detach_after_a_reboot_releases_the_lease() {
    require_root();
    let mut env = Env::new("reboot");
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    let att = [NetworkAttachment {
        ports: parse_port_spec("127.0.0.1::80").expect("spec"),
        ..NetworkAttachment::new(net.name.clone(), "eth0")
    }];
    env.track_container(ns.path(), &id);
    let r = env.store.attach(ns.path(), &id, &att).expect("attach");
    let lease = env
        .store
        .ipam_dir()
        .join(&net.name)
        .join(r.networks[0].ip.to_string());
    let cache = env.dir.join("root/networks/cache").join(&id);
    let saved_cache = env.dir.join("saved-cache");
    let saved_lease = std::fs::read(&lease).expect("reading the lease");
    std::fs::create_dir_all(&saved_cache).expect("mkdir");
    let record = cache.join(format!("{}.json", net.name));
    std::fs::copy(&record, saved_cache.join("r.json")).expect("saving the record");
    // "Reboot": everything volatile goes; the persistent files come back.
    env.store.detach(ns.path(), &id, &att).expect("detach");
    let path = ns.path().to_path_buf();
    drop(ns);
    Netns::remove(&path).expect("removing the netns");
    std::fs::create_dir_all(&cache).expect("mkdir");
    std::fs::copy(saved_cache.join("r.json"), &record).expect("restoring the record");
    std::fs::write(&lease, saved_lease).expect("restoring the lease");

    assert_eq!(env.store.attachments(None).expect("records").len(), 1);
    env.store
        .detach_all(&path, &id)
        .expect("detach after the reboot");
    assert!(!lease.exists(), "lease {} left", lease.display());
    assert!(env.store.attachments(None).expect("records").is_empty());
}

#[test]
fn remove_refuses_while_attached_unless_forced() {
    require_root();
    let mut env = Env::new("inuse");
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    env.track_container(ns.path(), &id);
    let r = env
        .store
        .attach(
            ns.path(),
            &id,
            &[NetworkAttachment::new(net.name.clone(), "eth0")],
        )
        .expect("attach");
    let ip = r.networks[0].ip;
    let busy = env.store.remove(&net.name, false);
    assert!(
        matches!(&busy, Err(StoreError::InUse { containers, .. }) if containers == &vec![id.clone()]),
        "{busy:?}"
    );
    env.store.remove(&net.name, true).expect("forced remove");
    assert!(links_in(ns.path()).is_empty(), "eth0 left in the netns");
    assert!(!Path::new("/sys/class/net").join(&net.bridge).exists());
    assert_eq!(iptables_lines(&needles(&id, ip)), Vec::<String>::new());
    assert!(env.store.attachments(None).expect("records").is_empty());
}

/// Everything a failed attach of `id` must not leave behind.
fn assert_nothing_left(env: &Env, ns: &Path, id: &str, net: &hako_network::Network) {
    assert!(links_in(ns).is_empty(), "interfaces left in the netns");
    let leases: Vec<String> = std::fs::read_dir(env.store.ipam_dir().join(&net.name))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.starts_with(id)))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "leases left for {id}: {leases:?}");
    let rules = iptables_lines(&[format!("\"{id}\"")]);
    assert!(rules.is_empty(), "rules left for {id}: {rules:?}");
    assert!(
        env.store
            .attachments(None)
            .expect("records")
            .iter()
            .all(|r| r.container_id != id),
        "cache entry left for {id}"
    );
}

#[test]
fn add_of_a_leased_address_fails_and_leaves_nothing() {
    require_root();
    let mut env = Env::new("leased");
    let net = env.network("net", false);
    let want = net.subnet.host(50).expect("a host address");
    let (ns1, ns2) = (env.netns("c1"), env.netns("c2"));
    let (id1, id2) = (env.name("c1"), env.name("c2"));
    let att = [NetworkAttachment {
        ip: Some(want),
        ports: parse_port_spec("127.0.0.1::80").expect("spec"),
        ..NetworkAttachment::new(net.name.clone(), "eth0")
    }];
    env.track_container(ns1.path(), &id1);
    let r = env.store.attach(ns1.path(), &id1, &att).expect("attach c1");
    assert_eq!(r.networks[0].ip, want);

    env.track_container(ns2.path(), &id2);
    let err = env
        .store
        .attach(ns2.path(), &id2, &att)
        .expect_err("the address is taken");
    match &err {
        AttachError::Add {
            source, rollback, ..
        } => {
            assert!(
                matches!(&**source, CniError::Plugin { plugin, .. } if plugin == "bridge"),
                "{source:?}"
            );
            assert!(rollback.is_empty(), "{rollback:?}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&net.name) && msg.contains("bridge") && msg.contains(&want.to_string()),
        "{msg}"
    );
    assert_nothing_left(&env, ns2.path(), &id2, &net);
    // c1 is untouched.
    assert!(env
        .store
        .ipam_dir()
        .join(&net.name)
        .join(want.to_string())
        .exists());
    let (_, brif) = run("ls", &[&format!("/sys/class/net/{}/brif", net.bridge)]);
    assert_eq!(brif.split_whitespace().count(), 1, "bridge ports: {brif}");
}

/// A plugin directory whose `firewall` fails ADD for networks whose name
/// contains "failme" and otherwise runs the real one.
fn failing_plugin_dir(env: &Env) -> String {
    let dir = env.dir.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    for p in ["bridge", "host-local", "portmap"] {
        std::os::unix::fs::symlink(format!("/usr/lib/cni/{p}"), dir.join(p)).expect("symlink");
    }
    let script = dir.join("firewall");
    std::fs::write(
        &script,
        "#!/bin/sh\nconf=$(cat)\nif [ \"$CNI_COMMAND\" = ADD ]; then case \"$conf\" in *failme*)\n\
         printf '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected failure\",\"details\":\"test plugin\"}'\n\
         exit 1;; esac; fi\nprintf '%s' \"$conf\" | exec /usr/lib/cni/firewall\n",
    )
    .expect("writing the fake plugin");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir.to_string_lossy().into_owned()
}

#[test]
fn plugin_failure_mid_chain_is_undone() {
    require_root();
    let mut env = Env::new("midchain");
    let dir = failing_plugin_dir(&env);
    env.with_cni_path(&dir);
    let good = env.network("good", false);
    let bad = env.network("failme", false);
    let ns = env.netns("c");
    let id = env.name("c");
    env.track_container(ns.path(), &id);
    let err = env
        .store
        .attach(
            ns.path(),
            &id,
            &[
                NetworkAttachment {
                    ports: parse_port_spec("127.0.0.1::80").expect("spec"),
                    ..NetworkAttachment::new(good.name.clone(), "eth0")
                },
                NetworkAttachment {
                    ports: parse_port_spec("127.0.0.1::81").expect("spec"),
                    ..NetworkAttachment::new(bad.name.clone(), "eth1")
                },
            ],
        )
        .expect_err("the fake firewall fails");
    match &err {
        AttachError::Add {
            network, source, ..
        } => {
            assert_eq!(network, &bad.name);
            assert!(
                matches!(&**source, CniError::Plugin { plugin, code: 999, msg, details, .. }
                    if plugin == "firewall" && msg == "injected failure" && details == "test plugin"),
                "{source:?}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("firewall") && msg.contains("injected failure") && msg.contains(&bad.name),
        "{msg}"
    );
    // Both the failing network and the one attached before it are undone.
    assert_nothing_left(&env, ns.path(), &id, &good);
    assert_nothing_left(&env, ns.path(), &id, &bad);
}

#[test]
fn missing_plugin_fails_before_anything_runs() {
    require_root();
    let mut env = Env::new("missing");
    let dir = env.dir.join("only-bridge");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    for p in ["bridge", "host-local"] {
        std::os::unix::fs::symlink(format!("/usr/lib/cni/{p}"), dir.join(p)).expect("symlink");
    }
    env.with_cni_path(&dir.to_string_lossy());
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    env.track_container(ns.path(), &id);
    let err = env
        .store
        .attach(
            ns.path(),
            &id,
            &[NetworkAttachment::new(net.name.clone(), "eth0")],
        )
        .expect_err("portmap is missing");
    match &err {
        AttachError::Add { source, .. } => assert!(
            matches!(&**source, CniError::NotFound { plugin, network, .. } if plugin == "portmap" && *network == net.name),
            "{source:?}"
        ),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        err.to_string()
            .contains(&dir.to_string_lossy().into_owned()),
        "{err}"
    );
    assert_nothing_left(&env, ns.path(), &id, &net);
    assert!(
        !Path::new("/sys/class/net").join(&net.bridge).exists(),
        "no bridge was made"
    );
}

#[test]
fn internal_network_has_no_masquerade_and_no_default_route() {
    require_root();
    let mut env = Env::new("internal");
    let inet = env.network("int", true);
    let enet = env.network("ext", false);
    assert!(inet.internal && !enet.internal);
    let (ns_i, ns_e) = (env.netns("ci"), env.netns("ce"));
    let (id_i, id_e) = (env.name("ci"), env.name("ce"));
    env.track_container(ns_i.path(), &id_i);
    let ri = env
        .store
        .attach(
            ns_i.path(),
            &id_i,
            &[NetworkAttachment::new(inet.name.clone(), "eth0")],
        )
        .expect("attach internal");
    env.track_container(ns_e.path(), &id_e);
    let re = env
        .store
        .attach(
            ns_e.path(),
            &id_e,
            &[NetworkAttachment::new(enet.name.clone(), "eth0")],
        )
        .expect("attach external");
    let nat = |ip: Ipv4Addr| {
        let (_, out) = run("iptables-save", &["-t", "nat"]);
        out.lines()
            .filter(|l| l.contains(&format!("-s {ip}/32")))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        !nat(re.networks[0].ip).is_empty(),
        "the external network masquerades"
    );
    assert_eq!(
        nat(ri.networks[0].ip),
        Vec::<String>::new(),
        "internal: no NAT"
    );
    let (_, route) = in_netns(ns_i.path(), "ip", &["route"]);
    assert!(!route.contains("default"), "internal: {route}");
    let (_, route) = in_netns(ns_e.path(), "ip", &["route"]);
    assert!(route.contains("default"), "external: {route}");
    // It still reaches its gateway.
    let (ok, out) = ping(ns_i.path(), inet.gateway);
    assert!(ok, "{out}");
    // And publishes nothing.
    let ns3 = env.netns("c3");
    let err = env.store.attach(
        ns3.path(),
        &env.name("c3"),
        &[NetworkAttachment {
            ports: parse_port_spec("80").expect("spec"),
            ..NetworkAttachment::new(inet.name.clone(), "eth0")
        }],
    );
    assert!(
        matches!(err, Err(AttachError::InternalPorts { .. })),
        "{err:?}"
    );
}

#[test]
fn netns_create_remove_leaves_no_mount() {
    require_root();
    let env = Env::new("netns");
    let path = env.store.netns_path("n1");
    // Other tests make namespaces at the same time: count only ours.
    let dir = env.dir.to_string_lossy().into_owned();
    let mounts_here = || {
        mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&dir))
            .count()
    };
    let ns = Netns::create(&path).expect("create");
    let p = path.to_string_lossy().into_owned();
    assert!(mount_points().contains(&p), "{p} is not mounted");
    assert!(matches!(
        Netns::create(&path),
        Err(NetnsError::Exists { .. })
    ));
    // lo is up, and it is a different namespace from ours.
    let (ok, out) = in_netns(&path, "ip", &["-o", "link", "show", "lo"]);
    assert!(ok && out.contains("UP"), "{out}");
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    let theirs = ns
        .run(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .expect("run in netns")
        .expect("its netns");
    assert_ne!(ours, theirs);
    Netns::open(&path).expect("open");
    drop(ns);
    Netns::remove(&path).expect("remove");
    assert!(!path.exists());
    assert!(!mount_points().contains(&p), "{p} still mounted");
    Netns::remove(&path).expect("remove again");
    for i in 0..20 {
        let p = env.store.netns_path(&format!("loop{i}"));
        Netns::create(&p).expect("create");
        Netns::remove(&p).expect("remove");
    }
    assert_eq!(mounts_here(), 0, "mounts leaked under {dir}");
    std::fs::write(env.dir.join("plain"), b"").expect("plain file");
    assert!(matches!(
        Netns::open(&env.dir.join("plain")),
        Err(NetnsError::NotNetns { .. })
    ));
}

#[test]
fn check_notices_a_broken_attachment() {
    require_root();
    let mut env = Env::new("check");
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    env.track_container(ns.path(), &id);
    let r = env
        .store
        .attach(
            ns.path(),
            &id,
            &[NetworkAttachment::new(net.name.clone(), "eth0")],
        )
        .expect("attach");
    let ip = r.networks[0].ip;
    env.store
        .check(ns.path(), &id)
        .expect("CHECK of a good attachment");
    let (ok, out) = in_netns(ns.path(), "ip", &["link", "del", "eth0"]);
    assert!(ok, "{out}");
    let err = env.store.check(ns.path(), &id).expect_err("eth0 is gone");
    assert!(matches!(err, AttachError::Check { .. }), "{err:?}");
    let chains = own_chains(&iptables_lines(&needles(&id, ip)));
    env.store
        .detach_all(ns.path(), &id)
        .expect("detach still works");
    // Without eth0 the bridge plugin cannot find its masquerade rule; hako
    // removes it.
    assert_eq!(iptables_lines(&needles(&id, ip)), Vec::<String>::new());
    assert_eq!(chains_left(&chains), Vec::<String>::new());
    assert_nothing_left(&env, ns.path(), &id, &net);
}

/// Attach+detach of one container with one published port, measured.
#[test]
fn attach_detach_latency() {
    require_root();
    let mut env = Env::new("latency");
    let net = env.network("net", false);
    let ns = env.netns("c");
    let id = env.name("c");
    env.track_container(ns.path(), &id);
    let att = [NetworkAttachment {
        ports: parse_port_spec("127.0.0.1::80").expect("spec"),
        ..NetworkAttachment::new(net.name.clone(), "eth0")
    }];
    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        env.store.attach(ns.path(), &id, &att).expect("attach");
        attach.push(t.elapsed());
        let t = Instant::now();
        env.store.detach(ns.path(), &id, &att).expect("detach");
        detach.push(t.elapsed());
    }
    attach.sort();
    detach.sort();
    eprintln!(
        "attach median {:?} (min {:?}), detach median {:?} (min {:?})",
        attach[3], attach[0], detach[3], detach[0]
    );
    assert!(attach[3] < Duration::from_secs(5) && detach[3] < Duration::from_secs(5));
}
