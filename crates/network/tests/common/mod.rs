//! Fixtures of the hako-network integration tests: a temporary store with
//! unique network, bridge and container names, and a Drop guard that tears
//! down everything a test made (attachments, namespaces, networks, bridges,
//! leases) even when the test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hako_network::{Ipv4Net, Netns, Network, NetworkSpec, NetworkStore};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// One test's world.
pub struct Env {
    pub dir: PathBuf,
    pub store: NetworkStore,
    tag: String,
    networks: Vec<String>,
    subnets: Vec<Ipv4Net>,
    netns: Vec<PathBuf>,
    containers: Vec<(PathBuf, String)>,
}

impl Env {
    pub fn new(test: &str) -> Env {
        let n = next();
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let dir = std::env::temp_dir().join(format!("hako-net-{test}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let store = NetworkStore::new(dir.join("root"), dir.join("run"))
            .with_cni_path(hako_network::CniPath::parse(Some("/usr/lib/cni")));
        Env {
            dir,
            store,
            tag,
            networks: Vec::new(),
            subnets: Vec::new(),
            netns: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// A store on the same root with another plugin path.
    pub fn with_cni_path(&mut self, dirs: &str) {
        self.store = self
            .store
            .clone()
            .with_cni_path(hako_network::CniPath::parse(Some(dirs)));
    }

    /// A unique name for this test: `<what>-<tag>`.
    pub fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.tag)
    }

    /// A unique bridge name (at most 15 bytes).
    pub fn bridge(&self) -> String {
        let b = format!("hkt{}", next() + 1000 * (std::process::id() % 1000));
        assert!(b.len() <= 15);
        b
    }

    /// A /24 no other test of this run uses: 10.(100+pid%100).N.0/24.
    pub fn subnet(&self) -> Ipv4Net {
        let second = 100 + (std::process::id() % 100) as u8;
        let third = (next() % 250) as u8 + 1;
        Ipv4Net::new(Ipv4Addr::new(10, second, third, 0), 24).expect("a valid subnet")
    }

    /// Creates a network with a unique subnet and bridge.
    pub fn network(&mut self, what: &str, internal: bool) -> Network {
        let spec = NetworkSpec {
            name: self.name(what),
            subnet: Some(self.subnet()),
            internal,
            bridge: Some(self.bridge()),
            ..NetworkSpec::default()
        };
        self.create(&spec).expect("creating a test network")
    }

    /// `store.create`, remembering the network for cleanup.
    pub fn create(&mut self, spec: &NetworkSpec) -> Result<Network, hako_network::StoreError> {
        let net = self.store.create(spec)?;
        self.networks.push(net.name.clone());
        self.subnets.push(net.subnet);
        Ok(net)
    }

    /// Remembers a network made some other way.
    pub fn track_network(&mut self, name: &str) {
        self.networks.push(name.to_string());
    }

    /// A new netns at `<runroot>/netns/<name>`.
    pub fn netns(&mut self, what: &str) -> Netns {
        let path = self.store.netns_path(&self.name(what));
        self.netns.push(path.clone());
        Netns::create(&path).expect("creating a test netns")
    }

    /// Remembers an attached container for `detach_all` at the end.
    pub fn track_container(&mut self, netns: &Path, id: &str) {
        self.containers.push((netns.to_path_buf(), id.to_string()));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (ns, id) in self.containers.iter().rev() {
            if let Err(e) = self.store.detach_all(ns, id) {
                eprintln!("cleanup: detach {id}: {e}");
            }
        }
        for ns in &self.netns {
            if let Err(e) = Netns::remove(ns) {
                eprintln!("cleanup: netns {}: {e}", ns.display());
            }
        }
        for net in &self.networks {
            match self.store.remove(net, true) {
                Ok(()) | Err(hako_network::StoreError::NotFound { .. }) => {}
                Err(e) => eprintln!("cleanup: network {net}: {e}"),
            }
        }
        // A safety net for failed tests: rules that a broken attach or
        // detach left (hako's own cleanup is what the tests check).
        let mut needles: Vec<String> = self
            .containers
            .iter()
            .map(|(_, id)| format!("id: \\\"{id}\\\""))
            .collect();
        needles.extend(self.subnets.iter().map(|s| {
            let o = s.network().octets();
            format!(" {}.{}.{}.", o[0], o[1], o[2])
        }));
        let left = sweep_iptables(&needles);
        if left > 0 {
            eprintln!("cleanup: removed {left} leftover iptables rules");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes the rules whose `iptables-save` line contains a needle, and the
/// per-container chains they jump to. Returns how many rules went.
fn sweep_iptables(needles: &[String]) -> usize {
    let mut removed = 0;
    for table in ["nat", "filter"] {
        let (_, out) = run("iptables-save", &["-t", table]);
        let rules: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("-A ") && needles.iter().any(|n| l.contains(n.as_str())))
            .collect();
        let chains = own_chains(&rules.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        let jumps: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.starts_with("-A ") && chains.iter().any(|c| l.ends_with(&format!("-j {c}")))
            })
            .collect();
        for rule in rules.iter().chain(jumps.iter()) {
            let mut args = vec!["-w".to_string(), "-t".to_string(), table.to_string()];
            let mut words = split_rule(rule);
            if let Some(first) = words.first_mut() {
                *first = "-D".into();
            }
            args.extend(words);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            if run("iptables", &refs).0 {
                removed += 1;
            }
        }
        for c in &chains {
            run("iptables", &["-w", "-t", table, "-F", c]);
            run("iptables", &["-w", "-t", table, "-X", c]);
        }
    }
    removed
}

/// Splits an `iptables-save` rule into arguments (double quotes group,
/// `\"` is a quote).
fn split_rule(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Runs a command; returns (success, stdout+stderr).
pub fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `nsenter --net=PATH CMD ARGS…`.
pub fn in_netns(ns: &Path, cmd: &str, args: &[&str]) -> (bool, String) {
    let net = format!("--net={}", ns.display());
    let mut all = vec![net.as_str(), cmd];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// One ping from inside the namespace.
pub fn ping(ns: &Path, ip: Ipv4Addr) -> (bool, String) {
    in_netns(ns, "busybox", &["ping", "-c1", "-W2", &ip.to_string()])
}

/// The host's first global IPv4 address.
pub fn host_ip() -> Ipv4Addr {
    let (_, out) = run("ip", &["-4", "-o", "addr", "show", "scope", "global"]);
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet")?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .next()
        .expect("the host has a global IPv4 address")
}

/// The lines of `iptables-save` (all tables) containing any needle.
pub fn iptables_lines(needles: &[String]) -> Vec<String> {
    let (ok, out) = run("iptables-save", &[]);
    assert!(ok, "iptables-save: {out}");
    out.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
        .map(str::to_string)
        .collect()
}

/// Chains that plugins share between containers; they stay.
const SHARED_CHAINS: &[&str] = &[
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
    "CNI-FORWARD",
    "CNI-ADMIN",
];

/// The per-container chains (`-j CNI-…`) the given rules jump to.
pub fn own_chains(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("-j CNI-")?;
            let name = format!("CNI-{}", rest.split_whitespace().next()?);
            (!SHARED_CHAINS.contains(&name.as_str())).then_some(name)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether any chain of `chains` is still declared or has rules.
pub fn chains_left(chains: &[String]) -> Vec<String> {
    let (_, out) = run("iptables-save", &[]);
    out.lines()
        .filter(|l| {
            chains
                .iter()
                .any(|c| l.starts_with(&format!(":{c} ")) || l.starts_with(&format!("-A {c} ")))
        })
        .map(str::to_string)
        .collect()
}

/// What identifies a container's rules: its id, and its IP as rules print
/// it (`IP/32`, `IP:port`).
pub fn needles(id: &str, ip: Ipv4Addr) -> Vec<String> {
    vec![format!("\"{id}\""), format!("{ip}/32"), format!("{ip}:")]
}

/// Interfaces inside a namespace, `lo` excluded.
pub fn links_in(ns: &Path) -> Vec<String> {
    let (ok, out) = in_netns(ns, "ip", &["-o", "link", "show"]);
    assert!(ok, "ip link in {}: {out}", ns.display());
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|s| s.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| n != "lo")
        .collect()
}

/// A TCP server on 0.0.0.0:`port` inside a namespace answering every
/// connection with a tiny HTTP response containing `body`; it stops when
/// the returned guard is dropped (and after 60 s at most).
pub struct Server {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn tcp_server(ns: &Path, port: u16, body: &str) -> Server {
    let ns = Netns::open(ns).expect("opening the server's netns");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let body = body.to_string();
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        ns.enter_current_thread()
            .expect("setns into the server's netns");
        let l = TcpListener::bind(("0.0.0.0", port)).expect("binding the server");
        l.set_nonblocking(true).expect("nonblocking listener");
        ready_tx.send(()).expect("signalling readiness");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let text = format!("{body} peer={}", peer.ip());
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server started");
    Server {
        stop,
        thread: Some(thread),
    }
}

/// A UDP echo server on 0.0.0.0:`port` inside a namespace that prefixes
/// replies with `tag`.
pub fn udp_server(ns: &Path, port: u16, tag: &str) -> Server {
    let ns = Netns::open(ns).expect("opening the server's netns");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let tag = tag.to_string();
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        ns.enter_current_thread()
            .expect("setns into the server's netns");
        let s = UdpSocket::bind(("0.0.0.0", port)).expect("binding the UDP server");
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        ready_tx.send(()).expect("signalling readiness");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 512];
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                let mut reply = tag.as_bytes().to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, peer);
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the UDP server started");
    Server {
        stop,
        thread: Some(thread),
    }
}

/// `curl -s` a URL with a short timeout.
pub fn curl(url: &str) -> (bool, String) {
    run("curl", &["-s", "--max-time", "5", url])
}

/// Sends `msg` to `addr` over UDP from the host and waits for a reply.
pub fn udp_ask(addr: (Ipv4Addr, u16), msg: &str) -> Option<String> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut buf = [0u8; 512];
    for _ in 0..6 {
        s.send_to(msg.as_bytes(), addr).ok()?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

/// Mount points listed in /proc/self/mountinfo.
pub fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("reading mountinfo")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect()
}

/// These tests need root and Debian's plugins; say so instead of failing
/// obscurely.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the hako-network integration tests need root (network namespaces, bridges, iptables)"
    );
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "/usr/lib/cni/bridge is missing: run scripts/install-deps.sh (containernetworking-plugins)"
    );
}
