//! `stoa-loadgen` binary: parses the flags, sets up logging (`STOA_LOG`, default `error`), runs the
//! workload on a Tokio runtime and prints the report. The workloads live in the library
//! (`src/lib.rs` has the layout).
//!
//! Exit status: 0 when every check passed, 1 when the audit found a fault, 2 when the run could
//! not be made. Ctrl-C or SIGTERM stops the run (and the embedded cluster) and exits with 2.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use stoa_loadgen::args::Cli;

/// The same allocator as the nodes (see stoa-node's main): glibc's malloc took a tenth of the
/// load generator's CPU, and every cycle the load generator spends is one the nodes do not get.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STOA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let json = cli.workload.json();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = stoa_loadgen::run(cli) => r,
            _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = json {
        if let Err(e) = report.write_json(&path) {
            eprintln!("error: {e:#}");
            println!("{}", report.line());
            return ExitCode::from(2);
        }
    }
    println!("{}", report.line());
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
