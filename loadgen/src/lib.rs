//! `stoa-loadgen`: the reference workloads of `WORKLOADS.md` (W1 fan-out, W2 reconnect storm, W3
//! failover under load, W4 big room) against a running cluster (`--servers`) or one it starts itself
//! (`--embedded`), with an auditor that checks every delivery.
//!
//! Layout:
//! - `main.rs`: flags, logging, runtime, exit status.
//! - [`args`]: the flags of each workload and their validation.
//! - [`setup`]: the cluster ([`setup::Target`]: started or given, always stopped), the load user
//!   and rooms, memberships (seeded), connections.
//! - [`workload`]: the engine every workload runs: receivers, publishers (closed or open loop),
//!   progress, drain, audit.
//! - [`storm`] (W2) and [`failover`] (W3): what happens at the event time, and the checks after.
//! - [`audit`]: the pure auditor (lost, duplicates, reordered, phantom; history checks).
//! - [`payload`]: the post text (publisher, counter, send time, padding).
//! - [`stats`]: latency histograms and counters by phase of the run.
//! - [`procstat`]: peak RSS and CPU of processes from `/proc`.
//! - [`report`]: the table, the JSON report and the one-line summary.
//!
//! A run: setup → warm-up (posts not measured) → measured period (for W2/W3 split at the event)
//! → stop posting, wait for posts in flight → drain (every member up to its rooms' last seq, or
//! `--drain-timeout`) → audit → report. Every phase has a deadline.

pub mod args;
pub mod audit;
pub mod failover;
pub mod payload;
pub mod procstat;
pub mod report;
pub mod scrape;
pub mod setup;
pub mod stats;
pub mod storm;
pub mod workload;

use anyhow::{bail, Result};
use args::{Cli, LoadArgs, Workload};
use procstat::NodeStats;
use report::{Failover, Report, Storm};
use setup::Target;
use std::time::Duration;
use workload::{Finished, Load};

/// Runs the chosen workload and returns its report (printing is the caller's).
pub async fn run(cli: Cli) -> Result<Report> {
    let (args, event) = match cli.workload {
        Workload::W1(args) => {
            args.validate()?;
            (args, Event::None)
        }
        Workload::W2(e) => {
            e.validate()?;
            let at = Duration::from_secs_f64(e.at);
            (e.fixed_load(), Event::Storm(at))
        }
        Workload::W3(e) => {
            e.validate()?;
            if !e.load.target.embedded {
                bail!("w3 kills and restarts a node, so it runs only with --embedded");
            }
            let at = Duration::from_secs_f64(e.at);
            (e.fixed_load(), Event::Kill(at))
        }
        Workload::W4(b) => {
            b.validate()?;
            (b.load(), Event::BigRoom)
        }
    };
    let target = Target::open(&args.target).await?;
    let outcome = match event {
        Event::None | Event::BigRoom => w1(&target, &args).await,
        Event::Storm(at) => w2(&target, &args, at).await,
        Event::Kill(at) => w3(&target, &args, at).await,
    };
    // Always stop the embedded nodes, also after an error; the temporary directory goes with
    // `target` at the end of this function.
    let logs = target.stop(args.target.node_logs.as_deref());
    let (fin, nodes, storm, failover) = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Ok(logs) = &logs {
                for line in &logs.first_errors {
                    eprintln!("{line}");
                }
            }
            return Err(e);
        }
    };
    Ok(Report::new(
        event.name(),
        &args,
        &fin,
        &nodes,
        &logs?,
        storm,
        failover,
    ))
}

/// What happens during the measured period, and when.
#[derive(Clone, Copy)]
enum Event {
    /// W1.
    None,
    /// W2: every connection dropped.
    Storm(Duration),
    /// W3: node 1 killed.
    Kill(Duration),
    /// W4: W1's engine on one room that every connection is a member of.
    BigRoom,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::None => "w1",
            Event::Storm(_) => "w2",
            Event::Kill(_) => "w3",
            Event::BigRoom => "w4",
        }
    }
}

type Outcome = (Finished, NodeStats, Option<Storm>, Option<Failover>);

async fn w1(target: &Target, args: &LoadArgs) -> Result<Outcome> {
    let load = Load::start(target, args, None).await?;
    let (fin, nodes) = load.finish().await?;
    Ok((fin, nodes, None, None))
}

async fn w2(target: &Target, args: &LoadArgs, at: Duration) -> Result<Outcome> {
    let load = Load::start(target, args, Some(at)).await?;
    load.event().await;
    eprintln!("w2: dropping every connection");
    let storm = storm::run(&load.clients, args.run.seed).await;
    let (fin, nodes) = load.finish().await?;
    Ok((fin, nodes, Some(storm), None))
}

async fn w3(target: &Target, args: &LoadArgs, at: Duration) -> Result<Outcome> {
    let load = Load::start(target, args, Some(at)).await?;
    load.event().await;
    let killed_at = failover::kill(target, &load)?;
    eprintln!("w3: node {} killed (SIGKILL)", failover::KILLED + 1);
    let (fin, nodes) = load.finish().await?;
    let f = failover::check(target, &fin, killed_at).await?;
    Ok((fin, nodes, None, Some(f)))
}
