//! A cluster of real `stoa-node run` processes: certificates from `stoa-node certs`, one TOML file
//! per node, SIGKILL and restart. Used by the real-process tests and by `stoa-loadgen --embedded`.
//! Every child is killed when the cluster is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `stoa-node` binary: `STOA_NODE_BIN`, else next to the running executable (a binary in
/// `target/<profile>/` or a test in `target/<profile>/deps/`), built with cargo if missing there.
pub fn node_binary() -> PathBuf {
    if let Ok(p) = std::env::var("STOA_NODE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("path of the running executable");
    let mut profile_dir = exe
        .parent()
        .expect("an executable lives in a directory")
        .to_path_buf();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let bin = profile_dir.join("stoa-node");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "stoa-node", "--bin", "stoa-node"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for stoa-node");
        assert!(status.success(), "building stoa-node failed");
    }
    bin
}

pub struct ProcCluster {
    pub dir: TempDir,
    bin: PathBuf,
    pub addrs: Vec<SocketAddr>,
    /// Each node's metrics endpoint (TCP).
    pub metrics: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
}

impl ProcCluster {
    /// Write certificates and configs for `n` nodes and start them all.
    pub fn start(n: usize) -> ProcCluster {
        Self::start_with(n, 2, "")
    }

    /// Like [`ProcCluster::start`] with `shards` and extra TOML appended to every node's file.
    pub fn start_with(n: usize, shards: u32, extra_toml: &str) -> ProcCluster {
        let dir = TempDir::new().expect("temp dir");
        let bin = node_binary();
        let certs = dir.path().join("certs");
        let status = Command::new(&bin)
            .args(["certs", "--dir"])
            .arg(&certs)
            .args(["--nodes", &n.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("run stoa-node certs");
        assert!(status.success(), "stoa-node certs failed");
        let addrs = super::free_addrs(n);
        let metrics = free_tcp_addrs(n);
        let peers: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[cluster.peers]]\nid = {}\naddr = \"{a}\"\n", i + 1))
            .collect();
        for (i, a) in addrs.iter().enumerate() {
            let id = i + 1;
            let toml = format!(
                "[node]\nid = {id}\nlisten = \"{a}\"\ndata_dir = \"{data}\"\nmetrics_listen = \"{m}\"\n\n\
                 [cluster]\nshards = {shards}\nbootstrap = {boot}\n{peers}\n\
                 [tls]\nca_cert = \"{c}/ca.pem\"\nnode_cert = \"{c}/node-{id}.pem\"\nnode_key = \"{c}/node-{id}.key\"\n\n\
                 [raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nrpc_timeout_ms = 1000\n{extra_toml}",
                data = dir.path().join(format!("node-{id}")).display(),
                m = metrics[i],
                boot = id == 1,
                c = certs.display(),
            );
            std::fs::write(dir.path().join(format!("node{id}.toml")), toml).expect("write config");
        }
        let mut cluster = ProcCluster {
            dir,
            bin,
            addrs,
            metrics,
            children: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    pub fn spawn(&mut self, i: usize) {
        let id = i + 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("open node log");
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(self.dir.path().join(format!("node{id}.toml")))
            .env("STOA_LOG", "info,openraft=off")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn stoa-node run");
        self.children[i] = Some(child);
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// Process ids of the running nodes (`None` for a stopped one).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.children
            .iter()
            .map(|c| c.as_ref().map(Child::id))
            .collect()
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    pub fn servers(&self) -> Vec<String> {
        self.addrs.iter().map(|a| a.to_string()).collect()
    }

    /// The administrator token, once node 1 has written it.
    pub fn admin_token(&self, timeout: Duration) -> String {
        let file = self.dir.path().join("node-1/admin.token");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(t) = std::fs::read_to_string(&file) {
                return t.trim().to_string();
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("node-1.log")).unwrap_or_default();
                panic!("no admin token after {timeout:?}; node 1 log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

/// `n` loopback TCP addresses free a moment ago (for the nodes' metrics endpoints).
fn free_tcp_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound listener has an address"))
        .collect()
}
