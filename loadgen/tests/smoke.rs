//! CI smoke tests: a small W1 and a small W4 against an embedded cluster (3 `stoa-node` processes
//! next to the load generator's binary) must audit clean. Never asserts timings: the machine may
//! be busy.

use std::process::Command;

/// Runs `stoa-loadgen` with `args` and `--json`; answers the report and its text, after checking
/// the exit status and that the last line printed is the workload's summary.
fn run(args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_stoa-loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run stoa-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "stoa-loadgen failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("{} ", args[0])),
        "the last line is the summary: {last}"
    );
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    let report = serde_json::from_str(&text).expect("one JSON object");
    (report, text)
}

/// Nothing lost, duplicated, reordered or invented, and something was posted.
fn assert_clean(report: &serde_json::Value, text: &str) {
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} is a number in {text}"))
    };
    for key in ["lost", "duplicates", "reordered", "phantom"] {
        assert_eq!(n(key), 0, "{key} in {text}");
    }
    assert!(n("posts_acked") > 0, "{text}");
    assert_eq!(n("expected_deliveries"), n("received_deliveries"), "{text}");
}

#[test]
fn w1_embedded_small_run_audits_clean() {
    let (report, text) = run(&[
        "w1",
        "--embedded",
        "--users",
        "200",
        "--rooms",
        "20",
        "--publishers",
        "20",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--drain-timeout",
        "30",
    ]);
    assert_clean(&report, &text);
    for key in [
        "acked_posts_per_s",
        "deliveries_per_s",
        "lat_p50_ms",
        "lat_p99_ms",
        "lat_p999_ms",
        "ack_p50_ms",
        "ack_p99_ms",
        "loadgen_peak_rss_kb",
        "users",
        "rooms",
        "rooms_per_user",
        "publishers",
        "inflight",
        "size",
        "duration_s",
        "rate_target",
    ] {
        assert!(report[key].is_number(), "{key} in {text}");
    }
    assert_eq!(
        report["server_peak_rss_kb"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(report["server_cpu_s"].as_array().map(Vec::len), Some(3));
    // Packet counts come from the clients' QUIC counters and the nodes' metrics endpoints: a
    // run that delivered anything sent datagrams and proposed posts in Raft entries.
    for key in [
        "client_datagrams_received_per_delivery",
        "server_datagrams_sent_per_delivery",
        "posts_per_proposal",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {text}"
        );
    }
}

#[test]
fn w4_embedded_small_big_room_audits_clean_and_measures_memory_per_connection() {
    let (report, text) = run(&[
        "w4",
        "--embedded",
        "--members",
        "150",
        "--publishers",
        "5",
        "--rate",
        "50",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--endpoints",
        "2",
    ]);
    assert_clean(&report, &text);
    assert_eq!(
        (report["rooms"].as_u64(), report["users"].as_u64()),
        (Some(1), Some(150))
    );
    // Every member connection is on some node, and each node reports what it holds.
    let held: u64 = report["node_connections"]
        .as_array()
        .expect("node_connections")
        .iter()
        .map(|v| v.as_u64().expect("every node answered"))
        .sum();
    assert!(held >= 150, "{held} connections held: {text}");
    // A figure per node; one is null only if the node's memory shrank over the setup (the
    // allocator returning pages), and the size is the allocator's business: not asserted.
    let per = report["node_rss_per_connection_kb"].as_array().unwrap();
    assert_eq!(per.len(), 3, "{text}");
    assert!(per.iter().any(|v| v.is_number()), "{text}");
}
