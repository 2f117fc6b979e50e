//! W3, failover under load (embedded cluster only): at the event time node 1 is killed with
//! SIGKILL. Node 1 bootstraps every Raft group and so leads them all once the cluster is up; the
//! node has no interface that tells leaders, so it is taken as the one leading the most shards.
//!
//! After the load has drained: the whole history of every room is read from a surviving node and
//! checked against the acknowledgements ([`audit::check_history`]); then node 1 is started again,
//! the run waits until it has every room up to the survivors' last seq and checks that its
//! history equals theirs.

use crate::audit::{self, HistoryFindings, RoomLedger};
use crate::payload;
use crate::report::{r3, Failover};
use crate::setup::{connect_patiently, Target};
use crate::stats::quantile_ms;
use crate::workload::{Finished, Load};
use anyhow::{anyhow, bail, Context, Result};
use std::time::Duration;
use stoa_client::{Client, Message, Seq};
use tokio::time::{sleep, Instant};

/// Index of the node killed: node 1.
pub const KILLED: usize = 0;
/// Messages per history page (the node's default `history_page_max`).
const PAGE: u32 = 500;
/// Longest wait for the restarted node to answer and to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills node 1 now. The caller reads the node processes first, to keep its CPU figures.
pub fn kill(target: &Target, load: &Load) -> Result<Instant> {
    // Reads the cluster's processes under its lock: before taking it here.
    load.observe_nodes();
    target
        .embedded_cluster()
        .ok_or_else(|| anyhow!("w3 needs --embedded"))?
        .kill9(KILLED);
    Ok(Instant::now())
}

/// The checks after the drain: history on the survivors, restart, history on the restarted node.
pub async fn check(target: &Target, fin: &Finished, killed_at: Instant) -> Result<Failover> {
    let t = &fin.totals;
    let mut f = Failover {
        killed_node: KILLED as u64 + 1,
        killed_at_s: r3((killed_at - fin.clock.start).as_secs_f64()),
        ack_gap_end_s: r3(fin.ack_gap_end_s),
        lat_p50_before_ms: r3(quantile_ms(&t.latency[1], 0.5)),
        lat_p99_before_ms: r3(quantile_ms(&t.latency[1], 0.99)),
        lat_p50_after_ms: r3(quantile_ms(&t.latency[2], 0.5)),
        lat_p99_after_ms: r3(quantile_ms(&t.latency[2], 0.99)),
        ack_p99_before_ms: r3(quantile_ms(&t.ack_latency[1], 0.99)),
        ack_p99_after_ms: r3(quantile_ms(&t.ack_latency[2], 0.99)),
        ..Failover::default()
    };

    eprintln!("w3: reading every room's history from the survivors");
    let survivors: Vec<String> = target
        .servers
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != KILLED)
        .map(|(_, s)| s.clone())
        .collect();
    let client = connect_patiently(
        target.config(&target.admin_token, Some(survivors)),
        CONNECT_TIMEOUT,
    )
    .await?;
    let mut found = HistoryFindings::default();
    let mut reference = Vec::with_capacity(fin.room_names.len());
    for (name, ledger) in fin.room_names.iter().zip(&fin.ledgers) {
        let history = read_history(&client, name).await?;
        found.add(&check_room(ledger, &history, &fin.author, fin.size));
        reference.push(history);
    }
    client.close().await;
    f.history_messages = found.messages;
    f.history_lost = found.lost;
    f.history_duplicates = found.duplicates;
    f.history_gaps = found.gaps;

    eprintln!("w3: restarting node {}", KILLED + 1);
    target
        .embedded_cluster()
        .ok_or_else(|| anyhow!("w3 needs --embedded"))?
        .spawn(KILLED);
    let restarted_at = Instant::now();
    let only = vec![target.servers[KILLED].clone()];
    let client = connect_patiently(
        target.config(&target.admin_token, Some(only)),
        CONNECT_TIMEOUT,
    )
    .await?;
    eprintln!(
        "w3: node {} answers {:.2} s after its restart; waiting for it to catch up",
        KILLED + 1,
        restarted_at.elapsed().as_secs_f64()
    );
    let deadline = restarted_at + CATCH_UP_TIMEOUT;
    let targets: Vec<u64> = reference
        .iter()
        .map(|h| h.last().map_or(0, |m| m.seq.0))
        .collect();
    loop {
        let mut behind = false;
        for (name, &want) in fin.room_names.iter().zip(&targets) {
            // A node answers from its own replica, so its last seq shows how far it applied.
            match client.history(name, None, None, 1).await {
                Ok((_, last)) if last.0 >= want => {}
                _ => {
                    behind = true;
                    break;
                }
            }
        }
        if !behind {
            f.restart_catch_up_s = Some(r3(restarted_at.elapsed().as_secs_f64()));
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    for (name, want) in fin.room_names.iter().zip(&reference) {
        let got = read_history(&client, name).await?;
        if &got != want {
            f.restart_rooms_differing += 1;
        }
    }
    client.close().await;
    f.restart_history_equal = f.restart_rooms_differing == 0;
    Ok(f)
}

/// The whole history of `room`, oldest first.
pub async fn read_history(client: &Client, room: &str) -> Result<Vec<Message>> {
    let mut out: Vec<Message> = Vec::new();
    let mut after = 0;
    loop {
        let (page, last) = client
            .history(room, None, Some(Seq(after)), PAGE)
            .await
            .with_context(|| format!("history of {room} after {after}"))?;
        let Some(newest) = page.last().map(|m| m.seq.0) else {
            break;
        };
        if newest <= after {
            bail!("history of {room} after {after} answered seq {newest}");
        }
        after = newest;
        out.extend(page);
        if after >= last.0 {
            break;
        }
    }
    Ok(out)
}

fn check_room(
    ledger: &RoomLedger,
    history: &[Message],
    author: &str,
    size: usize,
) -> HistoryFindings {
    let entries: Vec<(u64, Option<payload::Stamp>)> = history
        .iter()
        .map(|m| {
            let stamp = (m.author == author)
                .then(|| payload::decode(&m.text, size))
                .flatten();
            (m.seq.0, stamp)
        })
        .collect();
    audit::check_history(ledger, &entries)
}
