//! `stoa-node`: run one node, a local dev cluster, or make certificates.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use stoa_config::NodeConfig;
use stoa_node::dev::{LocalCluster, DEMO_ROOM};
use stoa_node::net::tls::{self, NodeTls};
use stoa_proto::NodeId;

#[derive(Parser)]
#[command(name = "stoa-node", version, about = "A Stoa persistent-chat node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node of a multi-process cluster.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a local cluster in this process, with a demo room; keeps its data in --data-dir.
    Dev {
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        #[arg(long, default_value = "stoa-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        #[arg(long, default_value_t = 2)]
        shards: u32,
    },
    /// Make a cluster CA and node certificates: DIR/ca.pem, ca.key, node-N.pem, node-N.key.
    Certs {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
    /// Print the first administrator's token, left in the bootstrapping node's data directory.
    AdminToken {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the default configuration, every field documented.
    ConfigDefaults,
}

/// jemalloc rather than glibc's malloc: under W1 saturation glibc's allocator was a sixth of a
/// node's CPU (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`, ...); with jemalloc a node
/// used about 7 % less CPU per post, at a peak RSS of 234 – 267 MB instead of 165 – 204 MB
/// (docs/BENCHMARKS.md). mimalloc was as fast but peaked at 290 – 430 MB. With glibc the node
/// had to cap its malloc arenas at 2 to stay under 200 MB; jemalloc needs no tuning for that.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// openraft logs every failed heartbeat to an unreachable peer at error level, which buries
/// everything else during an outage; its logs are off by default (`STOA_LOG=info,openraft=warn`
/// turns them on). Stoa's own logs report what matters to an operator.
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STOA_LOG")
                .unwrap_or_else(|_| "info,openraft=off,sled=warn,quinn=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Run { config } => {
            let config = NodeConfig::load(&config)?;
            let tls = NodeTls::load(
                &config.tls.ca_cert,
                &config.tls.node_cert,
                &config.tls.node_key,
            )?;
            runtime()?.block_on(async {
                let node = stoa_node::start(config, tls).await?;
                match node.metrics_addr() {
                    Some(m) => println!(
                        "node {} listening on {}, metrics on http://{m}/metrics",
                        node.id(),
                        node.addr()
                    ),
                    None => println!("node {} listening on {}", node.id(), node.addr()),
                }
                shutdown_signal().await;
                node.shutdown().await;
                Ok(())
            })
        }
        Cmd::Dev {
            nodes,
            data_dir,
            base_port,
            shards,
        } => {
            if nodes == 0 || nodes > 9 {
                bail!("--nodes must be 1..=9");
            }
            runtime()?.block_on(dev(nodes, data_dir, base_port, shards))
        }
        Cmd::Certs { dir, nodes } => {
            let ids: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
            let certs = tls::generate(&ids)?;
            tls::write_generated(&dir, &certs)?;
            println!(
                "wrote a cluster CA and {nodes} node certificates to {}",
                dir.display()
            );
            Ok(())
        }
        Cmd::AdminToken { config } => {
            let config = NodeConfig::load(&config)?;
            let file = config.node.data_dir.join(stoa_node::node::ADMIN_TOKEN_FILE);
            let token = std::fs::read_to_string(&file).with_context(|| {
                format!("no token at {} (only the node with cluster.bootstrap = true writes it, once the cluster is up)", file.display())
            })?;
            println!("{}", token.trim());
            Ok(())
        }
        Cmd::ConfigDefaults => {
            print!("{}", stoa_config::documented_defaults());
            Ok(())
        }
    }
}

async fn dev(nodes: u32, dir: PathBuf, base_port: u16, shards: u32) -> anyhow::Result<()> {
    let addrs: Vec<_> = (0..nodes)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], base_port + i as u16)))
        .collect();
    let mut configs = LocalCluster::configs(&dir, &addrs, shards);
    for c in &mut configs {
        // Any free port: the address is printed below.
        c.node.metrics_listen = "127.0.0.1:0".into();
        c.validate()?;
    }
    let cluster = LocalCluster::start(&dir, configs).await?;
    for n in cluster.nodes.iter().flatten() {
        let metrics = n
            .metrics_addr()
            .map_or_else(String::new, |a| format!(", metrics on http://{a}/metrics"));
        println!(
            "node {} listening on {} (udp), data in {}{metrics}",
            n.id(),
            n.addr(),
            n.ctx.config.node.data_dir.display()
        );
    }
    cluster.ready(Duration::from_secs(60)).await?;
    let servers: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    println!("ready: room {DEMO_ROOM:?} is open; connect with");
    println!(
        "  export STOA_SERVER={} STOA_CA={} STOA_TOKEN_FILE={}",
        servers.join(","),
        dir.join("ca.pem").display(),
        dir.join("admin.token").display()
    );
    println!("  stoa post {DEMO_ROOM} 'hello'   # and: stoa tail {DEMO_ROOM}");
    shutdown_signal().await;
    println!("stopping");
    cluster.shutdown().await;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stoa-worker")
        .build()?)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
