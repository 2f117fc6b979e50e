//! Real `stoa-node run` processes, each in a network namespace of its own, so a test can cut the
//! real network between them. Root only, and `ip` (iproute2) must exist: [`NetnsCluster::start`]
//! says why it cannot run otherwise, and the test reports itself skipped.
//!
//! Layout (tag `s<pid>`): a hub namespace `<tag>h` with a bridge; node `i` in namespace
//! `<tag>n<i>` with address `10.213.<x>.<i>` on a veth into the bridge; the test process reaches
//! them through one more veth `<tag>r` (`10.213.<x>.254`) in its own namespace. A cut between
//! two nodes is a policy rule in each of their namespaces that drops packets *arriving* from the
//! other (`ip rule add from <peer> blackhole`; the `local` rule moves behind it), so no sender
//! ever sees a local error: to QUIC it looks like a lossy network. Dropping the cluster (also
//! while unwinding from a panic) kills the processes and deletes every namespace and link.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const PORT: u16 = 7400;
/// Priority of the cut rules; the `local` lookup moves from 0 to [`LOCAL_PREF`], behind them.
const CUT_PREF: u32 = 10;
const LOCAL_PREF: u32 = 100;

/// Why this machine cannot run network-namespace tests, if it cannot.
pub fn unsupported() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!(
            "needs root to make network namespaces (effective uid {uid})"
        ));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("`ip -V` failed: {}", o.status)),
        Err(e) => Some(format!("no `ip` command (iproute2): {e}")),
    }
}

/// Runs `ip` with `args`; the error carries the command and its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip` inside namespace `ns`.
fn ip_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all)
}

pub struct NetnsCluster {
    tag: String,
    /// Third octet of the cluster's 10.213.x.0/24.
    octet: u8,
    pub dir: TempDir,
    bin: PathBuf,
    children: Vec<Option<Child>>,
    namespaces: Vec<String>,
    root_link: Option<String>,
    cuts: BTreeSet<(usize, usize)>,
}

impl NetnsCluster {
    /// Make the namespaces and links, certificates and configurations for `n` nodes, and start
    /// them all. An error says why (and what was made is removed again).
    pub fn start(n: usize, shards: u32) -> Result<NetnsCluster, String> {
        if let Some(why) = unsupported() {
            return Err(why);
        }
        let pid = std::process::id();
        let dir = TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
        let mut c = NetnsCluster {
            tag: format!("s{}", pid % 1_000_000),
            octet: (pid % 250) as u8 + 1,
            dir,
            bin: crate::fresh_node_binary(),
            children: (0..n).map(|_| None).collect(),
            namespaces: Vec::new(),
            root_link: None,
            cuts: BTreeSet::new(),
        };
        c.make_network(n)?;
        c.write_configs(n, shards)?;
        for i in 0..n {
            c.spawn(i);
        }
        Ok(c)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{}", self.tag, i + 1)
    }

    fn hub(&self) -> String {
        format!("{}h", self.tag)
    }

    fn ip_of(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.octet, i + 1)
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        format!("{}:{PORT}", self.ip_of(i))
            .parse()
            .expect("a well-formed address")
    }

    pub fn servers(&self) -> Vec<String> {
        (0..self.children.len())
            .map(|i| self.addr(i).to_string())
            .collect()
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    fn make_network(&mut self, n: usize) -> Result<(), String> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        self.namespaces.push(hub.clone());
        ip_in(&hub, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&hub, &["link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = self.ns(i);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let (inner, outer) = (
                format!("{}v{}", self.tag, i + 1),
                format!("{}b{}", self.tag, i + 1),
            );
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "netns", &hub])?;
            ip_in(&hub, &["link", "set", &outer, "master", "br0"])?;
            ip_in(&hub, &["link", "set", &outer, "up"])?;
            let cidr = format!("{}/24", self.ip_of(i));
            ip_in(&ns, &["addr", "add", &cidr, "dev", &inner])?;
            ip_in(&ns, &["link", "set", &inner, "up"])?;
            ip_in(&ns, &["link", "set", "lo", "up"])?;
            // Cut rules must come before the local table, which normally is rule 0.
            let local = LOCAL_PREF.to_string();
            ip_in(&ns, &["rule", "add", "pref", &local, "lookup", "local"])?;
            ip_in(&ns, &["rule", "del", "pref", "0"])?;
        }
        let (root, outer) = (format!("{}r", self.tag), format!("{}rb", self.tag));
        ip(&["link", "add", &root, "type", "veth", "peer", "name", &outer])?;
        self.root_link = Some(root.clone());
        ip(&["link", "set", &outer, "netns", &hub])?;
        ip_in(&hub, &["link", "set", &outer, "master", "br0"])?;
        ip_in(&hub, &["link", "set", &outer, "up"])?;
        let cidr = format!("10.213.{}.254/24", self.octet);
        ip(&["addr", "add", &cidr, "dev", &root])?;
        ip(&["link", "set", &root, "up"])?;
        Ok(())
    }

    fn write_configs(&self, n: usize, shards: u32) -> Result<(), String> {
        let certs = self.dir.path().join("certs");
        let status = Command::new(&self.bin)
            .args(["certs", "--dir"])
            .arg(&certs)
            .args(["--nodes", &n.to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("stoa-node certs: {e}"))?;
        if !status.success() {
            return Err(format!("stoa-node certs: {status}"));
        }
        let peers: String = (0..n)
            .map(|i| {
                format!(
                    "[[cluster.peers]]\nid = {}\naddr = \"{}\"\n",
                    i + 1,
                    self.addr(i)
                )
            })
            .collect();
        for i in 0..n {
            let id = i + 1;
            let toml = format!(
                "[node]\nid = {id}\nlisten = \"{a}\"\ndata_dir = \"{data}\"\n\n\
                 [cluster]\nshards = {shards}\nbootstrap = {boot}\n{peers}\n\
                 [tls]\nca_cert = \"{c}/ca.pem\"\nnode_cert = \"{c}/node-{id}.pem\"\nnode_key = \"{c}/node-{id}.key\"\n\n\
                 [raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nrpc_timeout_ms = 1000\n",
                a = self.addr(i),
                data = self.dir.path().join(format!("node-{id}")).display(),
                boot = id == 1,
                c = certs.display(),
            );
            std::fs::write(self.config(i), toml).map_err(|e| format!("write config: {e}"))?;
        }
        Ok(())
    }

    fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{}.toml", i + 1))
    }

    /// Start node `i` (again) in its namespace.
    pub fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .expect("open node log");
        // `ip netns exec` enters the namespace and execs the node: the child is the node.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(&self.bin)
            .args(["run", "--config"])
            .arg(self.config(i))
            .env("STOA_LOG", "info,openraft=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn stoa-node run in its namespace");
        self.children[i] = Some(child);
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{}.log", i + 1))
    }

    /// The end of node `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The administrator token, once node 1 has written it.
    pub fn admin_token(&self, timeout: Duration) -> Result<String, String> {
        let file = self.dir.path().join("node-1/admin.token");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(t) = std::fs::read_to_string(&file) {
                return Ok(t.trim().to_string());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no admin token after {timeout:?}; node 1 log:\n{}",
                    self.log_tail(0)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Drop every packet between nodes `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        let (a, b) = (a.min(b), a.max(b));
        if !self.cuts.insert((a, b)) {
            return;
        }
        for (at, from) in [(a, b), (b, a)] {
            let (ns, src) = (self.ns(at), self.ip_of(from));
            ip_in(
                &ns,
                &[
                    "rule",
                    "add",
                    "pref",
                    &CUT_PREF.to_string(),
                    "from",
                    &src,
                    "blackhole",
                ],
            )
            .expect("add a cut rule");
        }
    }

    /// Cut node `i` off from every other node (clients in the test's namespace still reach it).
    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.children.len() {
            if j != i {
                self.cut(i, j);
            }
        }
    }

    /// Remove every cut.
    pub fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cuts) {
            for (at, from) in [(a, b), (b, a)] {
                let (ns, src) = (self.ns(at), self.ip_of(from));
                ip_in(
                    &ns,
                    &[
                        "rule",
                        "del",
                        "pref",
                        &CUT_PREF.to_string(),
                        "from",
                        &src,
                        "blackhole",
                    ],
                )
                .expect("remove a cut rule");
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Some(link) = self.root_link.take() {
            // Usually gone with the hub namespace (a veth pair dies with either end).
            let _ = ip(&["link", "del", &link]);
        }
    }
}
