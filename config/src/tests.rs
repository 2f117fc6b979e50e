use crate::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use stoa_proto::NodeId;

const EXAMPLES: [(&str, &str); 3] = [
    ("node1.toml", include_str!("../examples/node1.toml")),
    ("node2.toml", include_str!("../examples/node2.toml")),
    ("node3.toml", include_str!("../examples/node3.toml")),
];

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The error of `from_toml_str(text)` with no environment, as a message.
fn refused(text: &str) -> String {
    match NodeConfig::from_toml_str(text, &[]) {
        Ok(config) => panic!("accepted:\n{text}\n{config:#?}"),
        Err(e) => e.to_string(),
    }
}

/// The error of validating the default config changed by `change`, as a message.
fn refused_by_validate(change: impl FnOnce(&mut NodeConfig)) -> String {
    let mut config = NodeConfig::default();
    change(&mut config);
    config
        .validate()
        .expect_err("validate accepted")
        .to_string()
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} does not mention {part:?}"
        );
    }
}

fn three_peers() -> Vec<PeerConfig> {
    (1..=3)
        .map(|n| PeerConfig {
            id: NodeId(n),
            addr: addr(&format!("127.0.0.1:740{n}")),
        })
        .collect()
}

#[test]
fn defaults_are_the_documented_values_and_validate() {
    let c = NodeConfig::default();
    c.validate().unwrap();
    assert_eq!(c.node.id, NodeId(1));
    assert_eq!(c.node.listen, addr("127.0.0.1:7400"));
    assert_eq!(c.node.data_dir, PathBuf::from("stoa-data"));
    assert_eq!(c.cluster.shards, 2);
    assert!(c.cluster.peers.is_empty());
    assert!(!c.cluster.bootstrap);
    assert_eq!(c.tls.ca_cert, PathBuf::from("ca.pem"));
    assert_eq!(c.tls.node_cert, PathBuf::from("node.pem"));
    assert_eq!(c.tls.node_key, PathBuf::from("node.key"));
    assert_eq!(c.raft.heartbeat_interval_ms, 100);
    assert_eq!(c.raft.election_timeout_min_ms, 500);
    assert_eq!(c.raft.election_timeout_max_ms, 1000);
    assert_eq!(c.raft.rpc_timeout_ms, 2000);
    assert_eq!(c.raft.snapshot_logs_since_last, 50_000);
    assert_eq!(c.raft.max_payload_entries, 256);
    assert_eq!(c.raft.logs_kept_after_snapshot, 1000);
    assert_eq!(c.raft.log_segment_bytes, 64 << 20);
    assert_eq!(c.limits.frame_bytes_max, 1 << 20);
    assert_eq!(c.limits.message_text_bytes_max, 16384);
    assert_eq!(c.limits.history_page_max, 500);
    assert_eq!(c.limits.subscribe_backlog_max, 1000);
    assert_eq!(c.limits.send_queue_frames_max, 4096);
    assert_eq!(c.limits.connections_max, 20000);
    assert_eq!(c.limits.requests_in_flight_max, 64);
    assert_eq!(c.limits.proposal_batch_posts_max, 512);
    assert_eq!(c.limits.proposal_queue_posts_max, 16384);
    assert_eq!(c.limits.proposals_in_flight_max, 1);
    assert_eq!(c.limits.room_mailbox_max, 4096);
    assert_eq!(c.limits.client_idle_timeout_ms, 30000);
    assert_eq!(c.limits.posts_per_s_per_connection_max, 2000);
    assert_eq!(c.limits.upload_bytes_in_flight_max, 256 << 20);
    assert_eq!(c.limits.storage_cache_bytes, 64 << 20);
    assert_eq!(c.chat.default_chat_history, 30);
}

#[test]
fn empty_text_gives_defaults() {
    assert_eq!(
        NodeConfig::from_toml_str("", &[]).unwrap(),
        NodeConfig::default()
    );
}

#[test]
fn a_full_file_parses() {
    let text = r#"
        [node]
        id = 2
        listen = "0.0.0.0:7402"
        data_dir = "/var/lib/stoa"
        metrics_listen = "0.0.0.0:9402"

        [cluster]
        shards = 8
        bootstrap = true
        spread_leaders = true
        peers = [
            { id = 1, addr = "10.0.0.1:7401" },
            { id = 2, addr = "10.0.0.2:7402" },
        ]

        [tls]
        ca_cert = "/etc/stoa/ca.pem"
        node_cert = "n2.pem"
        node_key = "n2.key"

        [raft]
        heartbeat_interval_ms = 50
        election_timeout_min_ms = 300
        election_timeout_max_ms = 600
        rpc_timeout_ms = 1000
        snapshot_logs_since_last = 1000
        max_payload_entries = 64

        [limits]
        frame_bytes_max = 65536
        message_text_bytes_max = 4096
        history_page_max = 100
        subscribe_backlog_max = 200
        send_queue_frames_max = 128
        connections_max = 10
        requests_in_flight_max = 4
        proposal_batch_posts_max = 32
        proposal_queue_posts_max = 1024
        proposals_in_flight_max = 2
        proposal_linger_ms = 5
        proposal_linger_after_posts = 8
        room_mailbox_max = 64
        client_idle_timeout_ms = 5000
        posts_per_s_per_connection_max = 0
        directory_writes_per_s_per_user_max = 5
        upload_bytes_in_flight_max = 1048576
        storage_cache_bytes = 16777216

        [chat]
        default_chat_history = 50
        search_commit_interval_ms = 2000
    "#;
    let c = NodeConfig::from_toml_str(text, &[]).unwrap();
    let expected = NodeConfig {
        node: NodeSection {
            id: NodeId(2),
            listen: addr("0.0.0.0:7402"),
            data_dir: "/var/lib/stoa".into(),
            metrics_listen: "0.0.0.0:9402".into(),
        },
        cluster: ClusterSection {
            shards: 8,
            bootstrap: true,
            spread_leaders: true,
            peers: vec![
                PeerConfig {
                    id: NodeId(1),
                    addr: addr("10.0.0.1:7401"),
                },
                PeerConfig {
                    id: NodeId(2),
                    addr: addr("10.0.0.2:7402"),
                },
            ],
        },
        tls: TlsSection {
            ca_cert: "/etc/stoa/ca.pem".into(),
            node_cert: "n2.pem".into(),
            node_key: "n2.key".into(),
        },
        raft: RaftSection {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            rpc_timeout_ms: 1000,
            snapshot_logs_since_last: 1000,
            max_payload_entries: 64,
            logs_kept_after_snapshot: 1000,
            log_segment_bytes: 64 << 20,
        },
        limits: LimitsSection {
            frame_bytes_max: 65536,
            message_text_bytes_max: 4096,
            history_page_max: 100,
            subscribe_backlog_max: 200,
            send_queue_frames_max: 128,
            connections_max: 10,
            requests_in_flight_max: 4,
            proposal_batch_posts_max: 32,
            proposal_queue_posts_max: 1024,
            proposals_in_flight_max: 2,
            proposal_linger_ms: 5,
            proposal_linger_after_posts: 8,
            room_mailbox_max: 64,
            client_idle_timeout_ms: 5000,
            posts_per_s_per_connection_max: 0,
            directory_writes_per_s_per_user_max: 5,
            upload_bytes_in_flight_max: 1 << 20,
            storage_cache_bytes: 1 << 24,
        },
        chat: ChatSection {
            default_chat_history: 50,
            search_commit_interval_ms: 2000,
        },
        presence: PresenceSection::default(),
    };
    assert_eq!(c, expected);
}

#[test]
fn missing_fields_take_defaults() {
    let c = NodeConfig::from_toml_str("[limits]\nconnections_max = 7\n", &[]).unwrap();
    assert_eq!(c.limits.connections_max, 7);
    assert_eq!(
        c.limits.frame_bytes_max,
        LimitsSection::default().frame_bytes_max
    );
    assert_eq!(c.raft, RaftSection::default());
}

#[test]
fn unknown_fields_and_sections_are_refused_by_name() {
    let m = refused("[limits]\nframe_byte_max = 2048\n");
    assert_mentions(&m, &["<string>", "frame_byte_max"]);
    let m = refused("[limit]\nframe_bytes_max = 2048\n");
    assert_mentions(&m, &["limit"]);
    let m = refused("[[cluster.peers]]\nid = 1\naddr = \"127.0.0.1:7400\"\nport = 1\n");
    assert_mentions(&m, &["port"]);
}

#[test]
fn wrong_types_and_bad_addresses_are_refused() {
    assert_mentions(&refused("[node]\nid = \"one\"\n"), &["id"]);
    assert_mentions(&refused("[node]\nlisten = \"localhost\"\n"), &["listen"]);
    assert_mentions(
        &refused("[node]\nmetrics_listen = \"localhost:9400\"\n"),
        &["node.metrics_listen", "localhost:9400"],
    );
    assert_mentions(&refused("[cluster]\nshards = -1\n"), &["shards"]);
    // A peer has no defaults.
    assert_mentions(&refused("[[cluster.peers]]\nid = 1\n"), &["addr"]);
}

#[test]
fn validate_refuses_out_of_range_shards_and_history() {
    assert_mentions(
        &refused_by_validate(|c| c.cluster.shards = 0),
        &["cluster.shards (0)", "1..=64"],
    );
    assert_mentions(
        &refused_by_validate(|c| c.cluster.shards = 65),
        &["cluster.shards (65)"],
    );
    NodeConfig::from_toml_str("[cluster]\nshards = 64\n", &[]).unwrap();
    assert_mentions(
        &refused_by_validate(|c| c.chat.default_chat_history = 0),
        &["chat.default_chat_history (0)", "1..=500"],
    );
    assert_mentions(
        &refused_by_validate(|c| c.chat.default_chat_history = 501),
        &["chat.default_chat_history (501)"],
    );
}

#[test]
fn validate_refuses_bad_raft_timing() {
    assert_eq!(
        refused_by_validate(|c| {
            c.raft.election_timeout_min_ms = 800;
            c.raft.election_timeout_max_ms = 500;
        }),
        "raft.election_timeout_min_ms (800) must be below raft.election_timeout_max_ms (500)"
    );
    assert_mentions(
        &refused_by_validate(|c| c.raft.election_timeout_max_ms = 500),
        &[
            "raft.election_timeout_min_ms (500)",
            "raft.election_timeout_max_ms (500)",
        ],
    );
    assert_mentions(
        &refused_by_validate(|c| c.raft.heartbeat_interval_ms = 500),
        &[
            "raft.heartbeat_interval_ms (500)",
            "raft.election_timeout_min_ms (500)",
        ],
    );
}

#[test]
fn validate_refuses_bad_frame_and_text_sizes() {
    assert_mentions(
        &refused_by_validate(|c| {
            c.limits.frame_bytes_max = 1023;
            c.limits.message_text_bytes_max = 100;
        }),
        &["limits.frame_bytes_max (1023)", "1024..=16777216"],
    );
    assert_mentions(
        &refused_by_validate(|c| c.limits.frame_bytes_max = (16 << 20) + 1),
        &["limits.frame_bytes_max (16777217)"],
    );
    let mut at_bounds = NodeConfig::default();
    at_bounds.limits.frame_bytes_max = 16 << 20;
    at_bounds.validate().unwrap();
    at_bounds.limits.frame_bytes_max = 1024;
    at_bounds.limits.message_text_bytes_max = 1023;
    at_bounds.validate().unwrap();
    assert_mentions(
        &refused_by_validate(|c| c.limits.message_text_bytes_max = c.limits.frame_bytes_max),
        &["limits.message_text_bytes_max (1048576) must be below limits.frame_bytes_max"],
    );
}

#[test]
fn validate_refuses_batches_and_default_history_above_their_bounds() {
    assert_mentions(
        &refused_by_validate(|c| c.limits.proposal_batch_posts_max = 16385),
        &[
            "limits.proposal_batch_posts_max (16385)",
            "limits.proposal_queue_posts_max (16384)",
        ],
    );
    assert_mentions(
        &refused_by_validate(|c| c.limits.history_page_max = 10),
        &[
            "chat.default_chat_history (30)",
            "limits.history_page_max (10)",
        ],
    );
}

/// Every raft field and every limit except the post and directory rates and proposal_linger_ms
/// (0: unlimited, off) must be above 0. Set through the environment so the test reaches every
/// field by its serialized name.
#[test]
fn validate_refuses_zero_limits_except_rates_and_linger() {
    let defaults = toml::Table::try_from(NodeConfig::default()).unwrap();
    let mut checked = 0;
    for section in ["raft", "limits"] {
        for field in defaults[section].as_table().unwrap().keys() {
            let var = format!("STOA_{section}_{field}").to_uppercase();
            let result = NodeConfig::from_toml_str("", &env(&[(&var, "0")]));
            if field == "posts_per_s_per_connection_max" {
                assert_eq!(result.unwrap().limits.posts_per_s_per_connection_max, 0);
                continue;
            }
            if field == "directory_writes_per_s_per_user_max" {
                let limits = result.unwrap().limits;
                assert_eq!(limits.directory_writes_per_s_per_user_max, 0);
                continue;
            }
            if field == "proposal_linger_ms" {
                assert_eq!(result.unwrap().limits.proposal_linger_ms, 0);
                continue;
            }
            let message = result.expect_err(&var).to_string();
            assert_mentions(&message, &[&format!("{section}.{field}")]);
            checked += 1;
        }
    }
    assert_eq!(checked, 8 + 15);
}

#[test]
fn validate_checks_peers() {
    let with_peers = |c: &mut NodeConfig| {
        c.cluster.peers = three_peers();
        c.node.listen = addr("0.0.0.0:7401");
    };
    let mut ok = NodeConfig::default();
    with_peers(&mut ok);
    ok.validate().unwrap();

    assert_mentions(
        &refused_by_validate(|c| {
            with_peers(c);
            c.cluster.peers[2].id = NodeId(2);
        }),
        &["cluster.peers", "node id 2"],
    );
    assert_mentions(
        &refused_by_validate(|c| {
            with_peers(c);
            c.cluster.peers[2].addr = addr("127.0.0.1:7402");
        }),
        &["cluster.peers", "127.0.0.1:7402", "nodes 2 and 3"],
    );
    assert_mentions(
        &refused_by_validate(|c| {
            with_peers(c);
            c.node.id = NodeId(4);
        }),
        &["cluster.peers", "node.id (4)"],
    );
    assert_mentions(
        &refused_by_validate(|c| {
            with_peers(c);
            c.node.listen = addr("127.0.0.1:7400");
        }),
        &[
            "cluster.peers",
            "127.0.0.1:7401",
            "node.listen (127.0.0.1:7400)",
        ],
    );
}

#[test]
fn bootstrap_without_peers_is_a_single_node_cluster() {
    let c = NodeConfig::from_toml_str("[cluster]\nbootstrap = true\n", &[]).unwrap();
    assert!(c.cluster.bootstrap && c.cluster.peers.is_empty());
}

#[test]
fn env_overrides_int_bool_addr_and_path() {
    let vars = env(&[
        ("STOA_NODE_ID", "2"),
        ("STOA_NODE_LISTEN", "127.0.0.1:7402"),
        ("STOA_NODE_DATA_DIR", "1234"),
        ("STOA_LIMITS_FRAME_BYTES_MAX", "2048"),
        ("STOA_LIMITS_MESSAGE_TEXT_BYTES_MAX", "1024"),
        ("STOA_CLUSTER_BOOTSTRAP", "true"),
    ]);
    let c = NodeConfig::from_toml_str("[node]\nid = 7\n", &vars).unwrap();
    assert_eq!(c.node.id, NodeId(2));
    assert_eq!(c.node.listen, addr("127.0.0.1:7402"));
    assert_eq!(c.node.data_dir, PathBuf::from("1234"));
    assert_eq!(c.limits.frame_bytes_max, 2048);
    assert!(c.cluster.bootstrap);
}

#[test]
fn env_ignores_unknown_and_client_variables() {
    let vars = env(&[
        ("STOA_SERVER", "127.0.0.1:7401"),
        ("STOA_TOKEN", "secret"),
        ("STOA_CA", "ca.pem"),
        ("STOA_NODE_COLOR", "blue"),
        ("STOA_WHATEVER_ID", "3"),
        ("NODE_ID", "3"),
    ]);
    assert_eq!(
        NodeConfig::from_toml_str("", &vars).unwrap(),
        NodeConfig::default()
    );
}

#[test]
fn env_values_that_do_not_fit_name_the_variable_and_field() {
    let m = NodeConfig::from_toml_str("", &env(&[("STOA_NODE_ID", "two")]))
        .unwrap_err()
        .to_string();
    assert_mentions(&m, &["STOA_NODE_ID", "node.id", "integer"]);
    let m = NodeConfig::from_toml_str("", &env(&[("STOA_CLUSTER_BOOTSTRAP", "yes")]))
        .unwrap_err()
        .to_string();
    assert_mentions(&m, &["STOA_CLUSTER_BOOTSTRAP", "cluster.bootstrap"]);
    let m = NodeConfig::from_toml_str("", &env(&[("STOA_NODE_LISTEN", "nowhere")]))
        .unwrap_err()
        .to_string();
    assert_mentions(&m, &["STOA_NODE_LISTEN", "node.listen"]);
    let m = NodeConfig::from_toml_str("", &env(&[("STOA_CLUSTER_SHARDS", "-1")]))
        .unwrap_err()
        .to_string();
    assert_mentions(&m, &["STOA_CLUSTER_SHARDS", "cluster.shards"]);
    let m = NodeConfig::from_toml_str("", &env(&[("STOA_CLUSTER_PEERS", "1@127.0.0.1:1")]))
        .unwrap_err()
        .to_string();
    assert_mentions(&m, &["STOA_CLUSTER_PEERS", "cluster.peers", "config file"]);
}

#[test]
fn env_overrides_are_validated() {
    let m = NodeConfig::from_toml_str("", &env(&[("STOA_RAFT_ELECTION_TIMEOUT_MAX_MS", "400")]))
        .unwrap_err()
        .to_string();
    assert_mentions(&m, &["raft.election_timeout_max_ms (400)"]);
}

#[test]
fn documented_defaults_parse_back_to_default_and_document_every_field() {
    let text = documented_defaults();
    assert_eq!(
        NodeConfig::from_toml_str(&text, &[]).unwrap(),
        NodeConfig::default()
    );
    let defaults = toml::Table::try_from(NodeConfig::default()).unwrap();
    for (section, fields) in &defaults {
        assert!(text.contains(&format!("\n[{section}]\n")), "[{section}]");
        for field in fields.as_table().unwrap().keys() {
            let at = text
                .find(&format!("\n{field} = "))
                .unwrap_or_else(|| panic!("{section}.{field} missing"));
            let comment = text[..at].lines().last().unwrap();
            assert!(comment.starts_with("# "), "{section}.{field} undocumented");
        }
    }
}

#[test]
fn examples_validate_and_write_out_every_field() {
    let defaults = toml::Table::try_from(NodeConfig::default()).unwrap();
    for (n, (name, text)) in EXAMPLES.iter().enumerate() {
        let c = NodeConfig::from_toml_str(text, &[]).expect(name);
        let n = n as u64 + 1;
        assert_eq!(c.node.id, NodeId(n), "{name}");
        assert_eq!(c.node.listen, addr(&format!("127.0.0.1:740{n}")), "{name}");
        assert_eq!(c.node.data_dir, PathBuf::from(format!("data/node{n}")));
        assert_eq!(
            c.node.metrics_addr().unwrap(),
            Some(addr(&format!("127.0.0.1:940{n}")))
        );
        assert_eq!(c.cluster.peers, three_peers(), "{name}");
        assert_eq!(c.cluster.bootstrap, n == 1, "{name}");
        assert_eq!(c.tls.node_key, PathBuf::from(format!("certs/node-{n}.key")));
        let table: toml::Table = text.parse().unwrap();
        for (section, fields) in &defaults {
            for field in fields.as_table().unwrap().keys() {
                assert!(
                    table[section].as_table().unwrap().contains_key(field),
                    "{name} does not set {section}.{field}"
                );
            }
        }
    }
}

#[test]
fn load_resolves_tls_paths_against_the_file_directory_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node2.toml");
    std::fs::write(&path, EXAMPLES[1].1).unwrap();
    let c = load_with_env(&path, &env(&[("STOA_TLS_NODE_KEY", "/abs/node.key")])).unwrap();
    assert_eq!(c.tls.ca_cert, dir.path().join("certs/ca.pem"));
    assert_eq!(c.tls.node_cert, dir.path().join("certs/node-2.pem"));
    assert_eq!(c.tls.node_key, PathBuf::from("/abs/node.key"));
    assert_eq!(c.node.data_dir, PathBuf::from("data/node2"));
}

#[test]
fn load_names_the_file_in_io_and_parse_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let e = NodeConfig::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert_mentions(&e.to_string(), &["missing.toml"]);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nid = 1\nid = 2\n").unwrap();
    let e = load_with_env(&bad, &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }));
    assert_mentions(&e.to_string(), &["bad.toml"]);
}

#[test]
fn validate_checks_presence_timing_and_bounds() {
    for field in [
        "report_interval_ms",
        "expiry_ms",
        "entries_per_node_max",
        "journal_changes_max",
    ] {
        let var = format!("STOA_PRESENCE_{field}").to_uppercase();
        let message = NodeConfig::from_toml_str("", &env(&[(&var, "0")]))
            .expect_err(&var)
            .to_string();
        assert_mentions(&message, &[&format!("presence.{field}")]);
    }
    assert_mentions(
        &refused_by_validate(|c| c.presence.expiry_ms = c.presence.report_interval_ms),
        &["presence.report_interval_ms (1000)", "presence.expiry_ms"],
    );
}

#[test]
fn metrics_endpoint_is_off_unless_an_address_is_given() {
    assert_eq!(NodeConfig::default().node.metrics_addr().unwrap(), None);
    let c =
        NodeConfig::from_toml_str("[node]\nmetrics_listen = \"127.0.0.1:9401\"\n", &[]).unwrap();
    assert_eq!(c.node.metrics_addr().unwrap(), Some(addr("127.0.0.1:9401")));
}
