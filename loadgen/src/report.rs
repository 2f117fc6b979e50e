//! The report: a table for people, a JSON object (`--json`) with the keys of WORKLOADS.md plus the
//! parameters, and a one-line summary printed last.

use crate::args::LoadArgs;
use crate::procstat::{self, NodeStats};
use crate::setup::NodeLogs;
use crate::stats::quantile_ms;
use crate::workload::{Finished, Tick};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// W2 figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    /// Seconds from the start of the storm until 99 % of users were connected again (`null`:
    /// never).
    pub reconnect_99pct_s: Option<f64>,
    /// Seconds from the start of the storm until the last user was connected again.
    pub reconnect_all_s: Option<f64>,
    /// Per user, from its own drop to connected again: median and worst, seconds.
    pub reconnect_user_p50_s: f64,
    pub reconnect_user_max_s: f64,
    pub users_reconnected: u64,
    pub users_not_reconnected: u64,
}

/// W3 figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failover {
    /// 1-based id of the node killed.
    pub killed_node: u64,
    /// Seconds after the load started.
    pub killed_at_s: f64,
    /// Seconds after the load started at which the longest acknowledgement gap ended.
    pub ack_gap_end_s: f64,
    pub lat_p50_before_ms: f64,
    pub lat_p99_before_ms: f64,
    pub lat_p50_after_ms: f64,
    pub lat_p99_after_ms: f64,
    pub ack_p99_before_ms: f64,
    pub ack_p99_after_ms: f64,
    /// The whole history of every room, read from a surviving node.
    pub history_messages: u64,
    /// Acknowledged posts not stored, once, at their seq.
    pub history_lost: u64,
    pub history_duplicates: u64,
    pub history_gaps: u64,
    /// Seconds from the restart until the node had every room up to the survivors' last seq
    /// (`null`: not within the timeout).
    pub restart_catch_up_s: Option<f64>,
    /// Whether the restarted node's history of every room equals the survivors'.
    pub restart_history_equal: bool,
    /// Rooms whose history differs on the restarted node.
    pub restart_rooms_differing: u64,
}

impl Failover {
    pub fn clean(&self) -> bool {
        self.history_lost == 0
            && self.history_duplicates == 0
            && self.history_gaps == 0
            && self.restart_history_equal
    }
}

/// The JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    // Parameters.
    pub users: usize,
    pub rooms: usize,
    pub rooms_per_user: usize,
    pub publishers: usize,
    pub inflight: usize,
    pub size: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Posts/s asked for; 0: saturation.
    pub rate_target: f64,
    pub seed: u64,
    pub endpoints: usize,
    pub embedded: bool,
    /// The user every load connection signed in as.
    pub author: String,
    // Throughput and latency over the measured period.
    pub acked_posts_per_s: f64,
    pub deliveries_per_s: f64,
    pub lat_p50_ms: f64,
    pub lat_p99_ms: f64,
    pub lat_p999_ms: f64,
    pub lat_max_ms: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    /// Longest time without an acknowledgement during the measured period.
    pub ack_gap_max_ms: f64,
    // Audit over the whole run (warm-up included).
    pub posts_acked: u64,
    pub posts_acked_measured: u64,
    pub posts_failed: u64,
    pub post_errors: BTreeMap<String, u64>,
    pub sends_skipped: u64,
    pub expected_deliveries: u64,
    pub received_deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub phantom: u64,
    pub ack_conflicts: u64,
    pub committed_unacked: u64,
    pub streams_ended: u64,
    pub drain_s: f64,
    pub drained: bool,
    // Resources.
    pub server_peak_rss_kb: Vec<u64>,
    pub server_cpu_s: Vec<f64>,
    pub server_cpu_measured_s: Vec<f64>,
    pub server_log_errors: Vec<u64>,
    pub server_log_warnings: Vec<u64>,
    /// Datagrams each node's UDP socket dropped (receive buffer full).
    pub server_udp_drops: Vec<u64>,
    pub loadgen_peak_rss_kb: u64,
    pub loadgen_cpu_s: f64,
    pub loadgen_cpu_measured_s: f64,
    /// Datagrams the load generator's UDP sockets dropped (receive buffer full).
    pub loadgen_udp_drops: u64,
    /// QUIC datagrams the clients received and sent in the measured period, per delivery: what
    /// each delivery costs in packets (a connection that reconnects restarts its counters, so
    /// W2 undercounts).
    pub client_datagrams_received_per_delivery: f64,
    pub client_datagrams_sent_per_delivery: f64,
    pub client_bytes_per_datagram_received: f64,
    /// From the embedded nodes' metrics over the measured period (null with `--servers`, or
    /// unless every node answered both times without restarting in between, as in W3): datagrams and `sendmsg` calls the nodes spent on
    /// client connections per delivery, and posts per Raft entry the shard leaders proposed.
    pub server_datagrams_sent_per_delivery: Option<f64>,
    pub server_send_calls_per_delivery: Option<f64>,
    pub posts_per_proposal: Option<f64>,
    /// Each embedded node's client connections once the load was set up, and its resident
    /// memory growth per connection over the setup (KiB; W4's figure).
    pub node_connections: Vec<Option<u64>>,
    pub node_rss_per_connection_kb: Vec<Option<f64>>,
    /// ACK frames the clients sent per datagram they received.
    pub client_acks_per_datagram_received: f64,
    /// Every 500 ms: seconds since the load started, posts/s, deliveries/s, p99 of that interval.
    pub progress: Vec<Tick>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub storm: Option<Storm>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// Whether every check passed (the exit status is 0 exactly then).
    pub ok: bool,
    #[serde(skip)]
    pub notes: Vec<String>,
    #[serde(skip)]
    pub first_node_errors: Vec<String>,
}

/// `x` rounded to 3 decimals, for the JSON report.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    pub fn new(
        workload: &str,
        args: &LoadArgs,
        fin: &Finished,
        nodes: &NodeStats,
        logs: &NodeLogs,
        storm: Option<Storm>,
        failover: Option<Failover>,
    ) -> Report {
        let t = &fin.totals;
        let measured = 1..fin.timeline.phases() - 1;
        let lat = t.latency_over(measured.clone());
        let ack = t.ack_latency_over(measured.clone());
        let acks_measured: u64 = t.acks[measured.clone()].iter().sum();
        let deliveries_measured: u64 = t.deliveries[measured].iter().sum();
        let me = procstat::sample_self().unwrap_or_default();
        let (begin, end) = &fin.measured_bounds;
        let quic = end.clients.since(&begin.clients);
        let per_delivery = |v: f64| r3(v / deliveries_measured.max(1) as f64);
        // Only when every node answered both times and none restarted: a partial sum would
        // divide some nodes' packets by every node's deliveries.
        let nodes_delta = end
            .node_counters
            .iter()
            .zip(&begin.node_counters)
            .map(|(e, b)| e.as_ref()?.since(b.as_ref()?))
            .collect::<Option<Vec<_>>>()
            .and_then(|d| d.into_iter().reduce(|a, b| a.add(&b)));
        let f = &fin.findings;
        let failover_ok = failover.as_ref().is_none_or(Failover::clean);
        Report {
            workload: workload.to_string(),
            users: args.users,
            rooms: args.rooms,
            rooms_per_user: args.rooms_per_user,
            publishers: args.publishers,
            inflight: args.in_flight,
            size: args.run.size,
            duration_s: args.run.duration,
            warmup_s: args.run.warmup,
            rate_target: args.rate_target().unwrap_or(0.0),
            seed: args.run.seed,
            endpoints: args.endpoints,
            embedded: args.target.embedded,
            author: fin.author.clone(),
            acked_posts_per_s: r3(acks_measured as f64 / fin.measured_s),
            deliveries_per_s: r3(deliveries_measured as f64 / fin.measured_s),
            lat_p50_ms: r3(quantile_ms(&lat, 0.5)),
            lat_p99_ms: r3(quantile_ms(&lat, 0.99)),
            lat_p999_ms: r3(quantile_ms(&lat, 0.999)),
            lat_max_ms: r3(quantile_ms(&lat, 1.0)),
            ack_p50_ms: r3(quantile_ms(&ack, 0.5)),
            ack_p99_ms: r3(quantile_ms(&ack, 0.99)),
            ack_p999_ms: r3(quantile_ms(&ack, 0.999)),
            ack_gap_max_ms: r3(fin.ack_gap_max_ms),
            posts_acked: f.posts_acked,
            posts_acked_measured: acks_measured,
            posts_failed: fin.posts_failed,
            post_errors: fin.post_errors.clone(),
            sends_skipped: fin.sends_skipped,
            expected_deliveries: f.expected_deliveries,
            received_deliveries: f.received_deliveries,
            lost: f.lost,
            duplicates: f.duplicates,
            reordered: f.reordered,
            phantom: f.phantom,
            ack_conflicts: fin.ack_conflicts,
            committed_unacked: f.committed_unacked,
            streams_ended: fin.streams_ended,
            drain_s: r3(fin.drain_s),
            drained: fin.drained,
            server_peak_rss_kb: nodes.peak_rss_kb(),
            server_cpu_s: nodes.cpu_s().into_iter().map(r3).collect(),
            server_cpu_measured_s: end
                .nodes_s
                .iter()
                .zip(&begin.nodes_s)
                .map(|(e, b)| r3(e - b))
                .collect(),
            server_log_errors: logs.errors.clone(),
            server_log_warnings: logs.warnings.clone(),
            server_udp_drops: fin.server_udp_drops.clone(),
            loadgen_udp_drops: fin.loadgen_udp_drops,
            loadgen_peak_rss_kb: me.peak_rss_kb,
            loadgen_cpu_s: r3(me.cpu_s),
            loadgen_cpu_measured_s: r3(end.loadgen_s - begin.loadgen_s),
            client_datagrams_received_per_delivery: per_delivery(quic.datagrams_received as f64),
            client_datagrams_sent_per_delivery: per_delivery(quic.datagrams_sent as f64),
            server_datagrams_sent_per_delivery: nodes_delta.map(|d| per_delivery(d.datagrams_sent)),
            server_send_calls_per_delivery: nodes_delta.map(|d| per_delivery(d.send_calls)),
            posts_per_proposal: nodes_delta
                .filter(|d| d.proposal_batches > 0.0)
                .map(|d| r3(d.proposal_posts / d.proposal_batches)),
            node_connections: fin.connection_memory.connections.clone(),
            node_rss_per_connection_kb: fin
                .connection_memory
                .per_connection_kb()
                .into_iter()
                .map(|v| v.map(r3))
                .collect(),
            client_bytes_per_datagram_received: r3(
                quic.bytes_received as f64 / quic.datagrams_received.max(1) as f64
            ),
            client_acks_per_datagram_received: r3(
                quic.acks_sent as f64 / quic.datagrams_received.max(1) as f64
            ),
            progress: fin.ticks.clone(),
            ok: f.clean() && fin.ack_conflicts == 0 && failover_ok,
            storm,
            failover,
            notes: fin.notes.clone(),
            first_node_errors: logs.first_errors.clone(),
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("encode the JSON report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn load_line(&self) -> String {
        let mode = if self.rate_target > 0.0 {
            format!("fixed load {} posts/s (open loop)", self.rate_target)
        } else {
            format!(
                "saturation (closed loop, {} posts in flight per publisher)",
                self.inflight
            )
        };
        format!(
            "{mode}; {} users, {} rooms x {} per user, {} publishers, {} B posts, \
             {} s measured after {} s warm-up, seed {}",
            self.users,
            self.rooms,
            self.rooms_per_user,
            self.publishers,
            self.size,
            self.duration_s,
            self.warmup_s,
            self.seed
        )
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "stoa-loadgen {}: {}", self.workload, self.load_line());
        let _ = writeln!(
            w,
            "  load user {}{}",
            self.author,
            if self.embedded {
                ", embedded cluster of 3 nodes"
            } else {
                ""
            }
        );
        for n in &self.notes {
            let _ = writeln!(w, "  note: {n}");
        }
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "  throughput   acked posts/s {:>12.1}    deliveries/s {:>12.1}",
            self.acked_posts_per_s, self.deliveries_per_s
        );
        let _ = writeln!(
            w,
            "  post→deliver p50 {:>9.2} ms  p99 {:>9.2} ms  p99.9 {:>9.2} ms  max {:>9.2} ms",
            self.lat_p50_ms, self.lat_p99_ms, self.lat_p999_ms, self.lat_max_ms
        );
        let _ = writeln!(
            w,
            "  post→ack     p50 {:>9.2} ms  p99 {:>9.2} ms  p99.9 {:>9.2} ms  longest gap {:.1} ms",
            self.ack_p50_ms, self.ack_p99_ms, self.ack_p999_ms, self.ack_gap_max_ms
        );
        let errors = if self.post_errors.is_empty() {
            String::new()
        } else {
            format!(" {:?}", self.post_errors)
        };
        let _ = writeln!(
            w,
            "  posts        acked {} ({} in the measured period), failed or unanswered {}{errors}, \
             sends skipped {}",
            self.posts_acked, self.posts_acked_measured, self.posts_failed, self.sends_skipped
        );
        let _ = writeln!(
            w,
            "  audit        deliveries expected {} received {}; lost {} duplicates {} reordered {} \
             phantom {}; ack conflicts {}",
            self.expected_deliveries,
            self.received_deliveries,
            self.lost,
            self.duplicates,
            self.reordered,
            self.phantom,
            self.ack_conflicts
        );
        let _ = writeln!(
            w,
            "               drain {:.2} s{}; unacknowledged posts delivered {}; streams ended {}",
            self.drain_s,
            if self.drained { "" } else { " (TIMED OUT)" },
            self.committed_unacked,
            self.streams_ended
        );
        if let Some(st) = &self.storm {
            let _ = writeln!(
                w,
                "  storm        99 % of users reconnected after {} s, all after {} s; per user p50 {:.3} s max {:.3} s; not reconnected {}",
                opt_s(st.reconnect_99pct_s),
                opt_s(st.reconnect_all_s),
                st.reconnect_user_p50_s,
                st.reconnect_user_max_s,
                st.users_not_reconnected
            );
        }
        if let Some(f) = &self.failover {
            let _ = writeln!(
                w,
                "  failover     node {} killed at {:.1} s; longest ack gap {:.1} ms (ended at {:.1} s)",
                f.killed_node, f.killed_at_s, self.ack_gap_max_ms, f.ack_gap_end_s
            );
            let _ = writeln!(
                w,
                "               post→deliver p99 before {:.2} ms, after {:.2} ms; post→ack p99 before {:.2} ms, after {:.2} ms",
                f.lat_p99_before_ms, f.lat_p99_after_ms, f.ack_p99_before_ms, f.ack_p99_after_ms
            );
            let _ = writeln!(
                w,
                "               history on survivors: {} messages, lost {} duplicates {} gaps {}",
                f.history_messages, f.history_lost, f.history_duplicates, f.history_gaps
            );
            let _ = writeln!(
                w,
                "               restarted node caught up after {} s; history equal: {} ({} rooms differ)",
                opt_s(f.restart_catch_up_s),
                f.restart_history_equal,
                f.restart_rooms_differing
            );
        }
        for (i, (rss, cpu)) in self
            .server_peak_rss_kb
            .iter()
            .zip(&self.server_cpu_s)
            .enumerate()
        {
            let _ = writeln!(
                w,
                "  node {}       peak RSS {:>8} KiB  CPU {:>7.2} s (measured period {:>6.2} s)  UDP drops {}  log errors {} warnings {}",
                i + 1,
                rss,
                cpu,
                self.server_cpu_measured_s.get(i).copied().unwrap_or(0.0),
                self.server_udp_drops.get(i).copied().unwrap_or(0),
                self.server_log_errors.get(i).copied().unwrap_or(0),
                self.server_log_warnings.get(i).copied().unwrap_or(0),
            );
        }
        let _ = writeln!(
            w,
            "  loadgen      peak RSS {:>8} KiB  CPU {:>7.2} s (measured period {:>6.2} s)  UDP drops {}",
            self.loadgen_peak_rss_kb,
            self.loadgen_cpu_s,
            self.loadgen_cpu_measured_s,
            self.loadgen_udp_drops
        );
        let _ = writeln!(
            w,
            "  client QUIC  datagrams per delivery: {:.3} received ({:.0} bytes each), {:.3} sent; {:.2} ACKs sent per datagram received",
            self.client_datagrams_received_per_delivery,
            self.client_bytes_per_datagram_received,
            self.client_datagrams_sent_per_delivery,
            self.client_acks_per_datagram_received
        );
        if self.node_rss_per_connection_kb.iter().any(Option::is_some) {
            let per: Vec<String> = self
                .node_rss_per_connection_kb
                .iter()
                .zip(&self.node_connections)
                .map(|(kb, n)| match (kb, n) {
                    (Some(kb), Some(n)) => format!("{kb:.1} KiB ({n} connections)"),
                    _ => "-".to_string(),
                })
                .collect();
            let _ = writeln!(
                w,
                "  node memory  resident growth per client connection over the setup: {}",
                per.join(" / ")
            );
        }
        if let (Some(d), Some(c), Some(p)) = (
            self.server_datagrams_sent_per_delivery,
            self.server_send_calls_per_delivery,
            self.posts_per_proposal,
        ) {
            let _ = writeln!(
                w,
                "  node QUIC    datagrams sent to clients per delivery: {d:.3} in {c:.3} sendmsg calls; {p:.1} posts per Raft entry"
            );
        }
        for e in &self.first_node_errors {
            let _ = writeln!(w, "  {e}");
        }
        s
    }

    /// The one-line summary, printed last.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} acked_posts_per_s={:.1} deliveries_per_s={:.1} lat_p50_ms={:.2} lat_p99_ms={:.2} \
             lat_p999_ms={:.2} ack_p50_ms={:.2} ack_p99_ms={:.2} posts_acked={} lost={} \
             duplicates={} reordered={} phantom={}",
            self.workload,
            self.acked_posts_per_s,
            self.deliveries_per_s,
            self.lat_p50_ms,
            self.lat_p99_ms,
            self.lat_p999_ms,
            self.ack_p50_ms,
            self.ack_p99_ms,
            self.posts_acked,
            self.lost,
            self.duplicates,
            self.reordered,
            self.phantom
        );
        if let Some(st) = &self.storm {
            let _ = write!(
                s,
                " reconnect_99pct_s={} users_not_reconnected={}",
                opt_s(st.reconnect_99pct_s),
                st.users_not_reconnected
            );
        }
        if let Some(f) = &self.failover {
            let _ = write!(
                s,
                " ack_gap_max_ms={:.1} lat_p99_before_ms={:.2} lat_p99_after_ms={:.2} \
                 history_lost={} restart_history_equal={}",
                self.ack_gap_max_ms,
                f.lat_p99_before_ms,
                f.lat_p99_after_ms,
                f.history_lost,
                f.restart_history_equal
            );
        }
        let _ = write!(s, " result={}", if self.ok { "ok" } else { "FAILED" });
        s
    }
}

fn opt_s(x: Option<f64>) -> String {
    x.map_or_else(|| "never".into(), |v| format!("{v:.3}"))
}
