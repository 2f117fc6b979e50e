//! The `stoa` binary against in-process fake nodes: output formats, exit codes, error lines.

mod fake_node;

use fake_node::{Cluster, GOOD_TOKEN};
use std::process::Output;
use tokio::process::Command;

struct Env {
    cluster: Cluster,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let cluster = Cluster::start(1);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &cluster.ca_pem).unwrap();
        Env { cluster, dir }
    }

    /// Runs `stoa` with server, token and CA from the environment variables.
    async fn stoa(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stoa"))
            .args(args)
            .env_clear()
            .env("STOA_SERVER", self.cluster.servers().join(","))
            .env("STOA_TOKEN", GOOD_TOKEN)
            .env("STOA_CA", self.dir.path().join("ca.pem"))
            .output()
            .await
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[tokio::test]
async fn post_history_and_tail() {
    let env = Env::new();
    let out = env.stoa(&["post", "lobby", "hello"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n");
    let out = env
        .stoa(&["post", "lobby", "second", "--alert", "--json"])
        .await;
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (v["room"].as_str(), v["seq"].as_u64()),
        (Some("lobby"), Some(2))
    );

    let out = env.stoa(&["history", "lobby"]).await;
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("#1 [2023-11-14 22:13:20] ann: hello"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("ann (alert): second"), "{}", lines[1]);
    let out = env
        .stoa(&["history", "lobby", "--json", "--limit", "1"])
        .await;
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (v["seq"].as_u64(), v["alert"].as_bool()),
        (Some(2), Some(true))
    );

    // --from 1 resumes after seq 1; --count ends it.
    let out = env
        .stoa(&["tail", "lobby", "--from", "1", "--count", "1", "--json"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["seq"].as_u64(), Some(2));
}

#[tokio::test]
async fn tail_prints_what_came_before_a_close_then_fails_with_its_reason() {
    let env = Env::new();
    let tail = Command::new(env!("CARGO_BIN_EXE_stoa"))
        .args(["tail", "lobby", "--from", "0", "--json"])
        .env_clear()
        .env("STOA_SERVER", env.cluster.servers().join(","))
        .env("STOA_TOKEN", GOOD_TOKEN)
        .env("STOA_CA", env.dir.path().join("ca.pem"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    while env.cluster.with(|st| st.subscribes) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = env.stoa(&["post", "lobby", "last words"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    env.cluster.close("lobby", "room \"lobby\" was disabled");
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), tail.wait_with_output())
        .await
        .expect("tail exits")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["text"], "last words");
    assert_eq!(
        stderr(&out),
        "error: forbidden: room \"lobby\" was disabled\n"
    );
}

#[tokio::test]
async fn other_commands() {
    let env = Env::new();
    let out = env.stoa(&["user", "add", "bob", "--admin", "--json"]).await;
    assert_eq!(
        stdout(&out).trim(),
        r#"{"user":"bob","token":"tok-bob","admin":true}"#
    );
    let out = env.stoa(&["user", "add", "carl"]).await;
    assert_eq!(stdout(&out), "tok-carl\n");
    let out = env
        .stoa(&["room", "create", "dev", "--description", "devs"])
        .await;
    assert_eq!(stdout(&out), "created room dev (shard 1)\n");
    let out = env.stoa(&["room", "list", "--json"]).await;
    assert_eq!(stdout(&out).lines().count(), 2);
    let out = env.stoa(&["whoami"]).await;
    assert_eq!(stdout(&out), "ann (administrator) on node 1\n");
    // The directory is the real node's: the fake refuses it, and the CLI says so in one line.
    let out = env.stoa(&["category", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: invalid: the fake node has no directory\n"
    );
    let out = env.stoa(&["search", "messages", "hello"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: invalid: the fake node has no directory\n"
    );
}

#[tokio::test]
async fn failures_print_one_line_and_exit_non_zero() {
    let env = Env::new();
    let out = env.stoa(&["post", "nowhere", "x"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: not_found: no room nowhere\n");
    assert!(stdout(&out).is_empty());

    let out = env.stoa(&["room", "create", "lobby"]).await;
    assert_eq!(stderr(&out), "error: already_exists: room lobby exists\n");

    let out = env.stoa(&["post", "lobby"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    let out = Command::new(env!("CARGO_BIN_EXE_stoa"))
        .args(["whoami"])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: no token: pass --token or --token-file, or set STOA_TOKEN or STOA_TOKEN_FILE\n"
    );

    let out = env.stoa(&["whoami", "--token", "wrong"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: unauthenticated: "),
        "{}",
        stderr(&out)
    );
}
