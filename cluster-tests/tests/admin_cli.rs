//! The `stoa` binary against a 3-node cluster, as an administrator and users would drive it: users
//! (one with a site), nested groups, categories with allowed / denied / creators, rooms of each
//! privacy and an auditorium, the chat policy, settings and add-ins; users post and are refused
//! where they should be; a post on one node reaches `stoa tail` on another. Every answer is read
//! as `--json`, every refusal as its one `error: <code>: <message>` line.
//!
//! Directory changes answer once applied by the meta group's leader; a node that did not propose
//! the change may apply it a moment later. So a command whose outcome depends on an earlier change
//! is run again until it gives the outcome the test expects (for at most `SETTLE`).

use cluster_tests::{init_tracing, TestCluster};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::time::{timeout, Instant};
use tracing::info;

/// How long an outcome may take to reach every node.
const SETTLE: Duration = Duration::from_secs(5);
/// How long a `stoa tail` may take to print or exit.
const TAIL_WAIT: Duration = Duration::from_secs(10);

/// The `stoa` binary: `STOA_BIN`, else next to this test (`target/<profile>/stoa`). It is built
/// with cargo first (a no-op when up to date), since this crate does not depend on the binary.
fn stoa_binary() -> PathBuf {
    if let Ok(p) = std::env::var("STOA_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("path of the running test");
    let mut profile_dir = exe
        .parent()
        .expect("a test lives in a directory")
        .to_path_buf();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", "stoa-client", "--bin", "stoa"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build for stoa");
    assert!(status.success(), "building stoa failed");
    let bin = profile_dir.join("stoa");
    assert!(bin.exists(), "no stoa binary at {}", bin.display());
    bin
}

/// A command line split at blanks; `'...'` keeps blanks inside one argument.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in {line:?}");
    if any {
        out.push(cur);
    }
    out
}

#[derive(Clone)]
struct User {
    name: String,
    token: String,
}

struct Stoa {
    bin: PathBuf,
    ca: PathBuf,
    addrs: Vec<String>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Stoa {
    /// `stoa LINE --json` as `who`, talking to node `node` (0-based) only.
    fn command(&self, who: &User, node: usize, line: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(words(line))
            .arg("--json")
            .env_clear()
            .env("STOA_SERVER", &self.addrs[node])
            .env("STOA_TOKEN", &who.token)
            .env("STOA_CA", &self.ca)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, who: &User, node: usize, line: &str) -> Output {
        self.command(who, node, line)
            .output()
            .await
            .expect("run stoa")
    }

    /// Runs until it succeeds with JSON lines that `check` accepts; answers them.
    async fn ok_when(
        &self,
        who: &User,
        node: usize,
        line: &str,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let out = self.run(who, node, line).await;
            let lines: Option<Vec<Value>> = out.status.success().then(|| {
                text(&out.stdout)
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
                    .collect()
            });
            if let Some(lines) = lines.filter(|l| check(l)) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "stoa {line} as {} on node {node}: {}\nstdout: {}stderr: {}",
                who.name,
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            );
            tracing::debug!(line, who = %who.name, node, "not yet; running again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ok(&self, who: &User, node: usize, line: &str) -> Vec<Value> {
        self.ok_when(who, node, line, |_| true).await
    }

    /// Runs until it succeeds with exactly one JSON object that `check` accepts.
    async fn one_when(
        &self,
        who: &User,
        node: usize,
        line: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut lines = self
            .ok_when(who, node, line, |l| l.len() == 1 && check(&l[0]))
            .await;
        lines.remove(0)
    }

    async fn one(&self, who: &User, node: usize, line: &str) -> Value {
        self.one_when(who, node, line, |_| true).await
    }

    /// A change: one `{"ok":true,"command":...}` line.
    async fn done(&self, who: &User, node: usize, line: &str) {
        let v = self.one(who, node, line).await;
        assert_eq!(v["ok"], json!(true), "stoa {line}: {v}");
    }

    /// Runs until it exits 1 with nothing on stdout and one stderr line starting with `want`.
    async fn refused(&self, who: &User, node: usize, line: &str, want: &str) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            let out = self.run(who, node, line).await;
            let err = text(&out.stderr);
            if out.status.code() == Some(1)
                && out.stdout.is_empty()
                && err.lines().count() == 1
                && err.starts_with(want)
            {
                return err.trim_end().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "stoa {line} as {} on node {node}: wanted {want:?}, got {}\nstdout: {}stderr: {err}",
                who.name,
                out.status,
                text(&out.stdout),
            );
            tracing::debug!(line, who = %who.name, node, "not refused yet; running again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a user (as the administrator, on node 0) and answers it with its token.
    async fn add_user(&self, admin: &User, name: &str, site: Option<&str>) -> User {
        let line = match site {
            Some(site) => format!("user add {name} --site {site}"),
            None => format!("user add {name}"),
        };
        let v = self.one(admin, 0, &line).await;
        assert_eq!(
            (v["user"].as_str(), v["admin"].as_bool(), v["site"].as_str()),
            (Some(name), Some(false), site),
            "{v}"
        );
        User {
            name: name.to_string(),
            token: v["token"].as_str().expect("a token").to_string(),
        }
    }
}

/// A JSON array of strings, sorted.
fn strs(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect();
    out.sort();
    out
}

/// The sorted `name`s of JSON lines.
fn names(lines: &[Value]) -> Vec<String> {
    strs(&Value::Array(
        lines.iter().map(|l| l["name"].clone()).collect(),
    ))
}

fn has(lines: &[Value], name: &str) -> bool {
    lines.iter().any(|l| l["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_administrator_sets_up_the_directory_and_users_live_in_it() {
    init_tracing();
    let bin = stoa_binary();
    let tc = TestCluster::start(3).await;
    let s = Stoa {
        bin,
        ca: tc.cluster.ca_pem_path(),
        addrs: (0..3).map(|i| tc.addr(i)).collect(),
    };
    let admin = User {
        name: "admin".into(),
        token: tc.admin_token.clone(),
    };

    info!("--- the administrator creates users; cy works at site paris");
    let ann = s.add_user(&admin, "ann", None).await;
    let bob = s.add_user(&admin, "bob", None).await;
    let cy = s.add_user(&admin, "cy", Some("paris")).await;
    let dan = s.add_user(&admin, "dan", None).await;
    let mal = s.add_user(&admin, "mal", None).await;
    let eve = s.add_user(&admin, "eve", None).await;
    s.refused(&admin, 0, "user add ann", "error: already_exists: ")
        .await;
    s.refused(&ann, 1, "user add zed", "error: forbidden: ")
        .await;
    let me = s.one(&cy, 2, "whoami").await;
    assert_eq!(me, json!({"user": "cy", "admin": false, "node": 3}));

    info!("--- nested groups: leads (ann) inside devs (with bob, cy, mal)");
    s.done(&admin, 0, "group create devs").await;
    s.done(&admin, 0, "group create leads").await;
    s.done(&admin, 0, "group add leads user:ann").await;
    for m in ["group:leads", "user:bob", "user:cy", "user:mal", "user:eve"] {
        s.done(&admin, 0, &format!("group add devs {m}")).await;
    }
    s.done(&admin, 0, "group remove devs user:eve").await;
    s.done(&admin, 0, "group create tmp").await;
    s.done(&admin, 0, "group delete tmp").await;
    let groups = s
        .ok_when(&admin, 0, "group list", |l| {
            l.len() == 2
                && l[0]["members"].as_array().is_some_and(|m| m.len() == 4)
                && !l[0]["members"].to_string().contains("eve")
        })
        .await;
    assert_eq!(groups[0]["name"], "devs");
    assert_eq!(
        strs(&groups[0]["members"]),
        ["group:leads", "user:bob", "user:cy", "user:mal"]
    );
    assert_eq!(groups[1], json!({"name": "leads", "members": ["user:ann"]}));
    s.refused(
        &admin,
        0,
        "group add leads group:devs",
        "error: invalid: group",
    )
    .await;
    s.refused(
        &admin,
        0,
        "group add devs everyone",
        "error: invalid: everyone cannot be a group member",
    )
    .await;
    s.refused(&bob, 1, "group list", "error: forbidden: ").await;

    info!("--- category eng: devs and dan allowed, mal denied, leads create rooms");
    s.done(
        &admin,
        0,
        "category create eng --description Engineering --allow group:devs --allow user:dan \
         --deny user:mal --creator group:leads --no-history",
    )
    .await;
    s.done(
        &admin,
        0,
        "category update eng --description 'Engineering rooms' --history true",
    )
    .await;
    s.done(&admin, 0, "category allow eng user:eve").await;
    s.done(&admin, 0, "category unallow eng user:eve").await;
    s.done(&admin, 0, "category deny eng user:eve").await;
    s.done(&admin, 0, "category undeny eng user:eve").await;
    s.done(&admin, 0, "category creator eng user:dan").await;
    s.done(&admin, 0, "category uncreator eng user:dan").await;
    s.refused(
        &admin,
        0,
        "category unallow eng user:eve",
        "error: not_found: user:eve is not in eng's allowed list",
    )
    .await;
    let eng = |l: &[Value]| {
        l.iter().any(|c| {
            c["name"] == "eng"
                && c["description"] == "Engineering rooms"
                && c["denied"] == json!(["user:mal"])
                && c["creators"] == json!(["group:leads"])
        })
    };
    let cats = s.ok_when(&admin, 0, "category list", eng).await;
    let c = cats.iter().find(|c| c["name"] == "eng").unwrap();
    assert_eq!(strs(&c["allowed"]), ["group:devs", "user:dan"]);
    assert_eq!(strs(&c["denied"]), ["user:mal"]);
    assert_eq!(strs(&c["creators"]), ["group:leads"]);
    assert_eq!(
        [
            &c["file_upload"],
            &c["invitations"],
            &c["chat_history"],
            &c["rooms"]
        ],
        [&json!(false), &json!(true), &json!(true), &json!(0)]
    );
    s.refused(&admin, 0, "category create eng", "error: already_exists: ")
        .await;
    s.refused(
        &admin,
        0,
        "category create x --allow user:nobody",
        "error: not_found: no user \"nobody\"",
    )
    .await;
    s.refused(
        &admin,
        0,
        "group delete devs",
        "error: invalid: group \"devs\" is still named by category \"eng\"",
    )
    .await;
    s.refused(&bob, 1, "category create mine", "error: forbidden: ")
        .await;
    // Users list the categories they are in scope of.
    let bobs = s.ok_when(&bob, 1, "category list", eng).await;
    assert!(has(&bobs, "eng"));
    let eves = s.ok(&eve, 2, "category list").await;
    assert!(!has(&eves, "eng") && has(&eves, "demo"), "{eves:?}");

    info!("--- rooms of each privacy and an auditorium");
    let general = s
        .one(
            &admin,
            0,
            "room create general --category eng --privacy open --description 'all of engineering'",
        )
        .await;
    assert_eq!(
        (general["name"].as_str(), general["description"].as_str()),
        (Some("general"), Some("all of engineering"))
    );
    // A room in a category is closed unless told otherwise.
    s.one(&admin, 0, "room create core --category eng").await;
    s.one(
        &admin,
        0,
        "room create vault --category eng --privacy secret",
    )
    .await;
    s.one(
        &admin,
        0,
        "room create keynote --category eng --privacy open --type auditorium",
    )
    .await;
    s.done(&admin, 0, "room add-member core bob").await;
    s.done(&admin, 0, "room add-member vault ann").await;
    s.done(&admin, 0, "room add-presenter keynote ann").await;
    s.refused(
        &admin,
        0,
        "room add-member core mal",
        "error: forbidden: mal is not allowed in category \"eng\"",
    )
    .await;
    s.refused(
        &admin,
        0,
        "room add-presenter general ann",
        "error: invalid: room \"general\" is normal; only an auditorium has presenters",
    )
    .await;
    s.refused(
        &admin,
        0,
        "room update keynote --type normal",
        "error: invalid: room \"keynote\" has presenters",
    )
    .await;
    s.refused(
        &admin,
        0,
        "room create general --category eng",
        "error: already_exists: room \"general\" exists already",
    )
    .await;
    s.refused(
        &admin,
        0,
        &format!("room create {} --category eng", "r".repeat(257)),
        "error: too_large: room name has 257 characters",
    )
    .await;
    let core = s
        .one_when(&admin, 0, "room show core", |v| {
            v["members"] == json!(["bob"])
        })
        .await;
    assert_eq!(
        core,
        json!({"name": "core", "category": "eng", "description": "", "privacy": "closed",
               "room_type": "normal", "invitations": "inherit", "disabled": false, "addin": null,
               "members": ["bob"], "managers": [], "presenters": []})
    );
    // The old form still works: an open room in the category `default`, for any user.
    s.one(&eve, 2, "room create scratch --description 'eve was here'")
        .await;
    let scratch = s.one(&eve, 2, "room show scratch").await;
    assert_eq!(
        (scratch["category"].as_str(), scratch["privacy"].as_str()),
        (Some("default"), Some("open"))
    );

    info!("--- posting follows privacy and type; refusals are clear");
    s.one(&bob, 1, "post general 'hello engineering'").await;
    s.one(&bob, 1, "post core 'core team here'").await;
    s.refused(
        &cy,
        2,
        "post core 'let me in'",
        "error: forbidden: room \"core\" is closed: only its members enter",
    )
    .await;
    s.refused(&cy, 2, "history core", "error: forbidden: ")
        .await;
    // cy is in scope of a closed room: finds it and sees who is in it.
    let seen = s.one(&cy, 2, "room show core").await;
    assert_eq!(seen["members"], json!(["bob"]));
    s.refused(
        &bob,
        1,
        "post keynote 'may I?'",
        "error: forbidden: only presenters post in auditorium \"keynote\"",
    )
    .await;
    s.one(&ann, 0, "post keynote 'welcome to the keynote'")
        .await;
    s.done(&admin, 0, "room add-presenter keynote bob").await;
    s.one(&bob, 1, "post keynote 'a word from bob'").await;
    s.done(&admin, 0, "room remove-presenter keynote bob").await;
    // Wait until node 2 has the change, so a refused post cannot slip into the history.
    s.one_when(&admin, 1, "room show keynote", |v| {
        v["presenters"] == json!(["ann"])
    })
    .await;
    s.refused(
        &bob,
        1,
        "post keynote 'one more'",
        "error: forbidden: only presenters post",
    )
    .await;
    let heard = s.ok(&bob, 1, "history keynote").await;
    assert_eq!(
        heard
            .iter()
            .map(|m| (m["author"].as_str().unwrap(), m["text"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("ann", "welcome to the keynote"),
            ("bob", "a word from bob")
        ]
    );
    // A denied user is outside the category: its rooms do not exist for mal.
    s.refused(
        &mal,
        1,
        "post general hi",
        "error: not_found: no room \"general\"",
    )
    .await;
    let mals = s.ok(&mal, 1, "room list").await;
    assert_eq!(names(&mals), ["lobby", "scratch"]);

    info!("--- a secret room: not_found to outsiders, exactly like a room that does not exist");
    let missing = s
        .refused(&cy, 2, "room show nonesuch", "error: not_found: ")
        .await;
    let secret = s
        .refused(&cy, 2, "room show vault", "error: not_found: ")
        .await;
    assert_eq!(secret, missing.replace("nonesuch", "vault"));
    s.refused(
        &cy,
        2,
        "post vault x",
        "error: not_found: no room \"vault\"",
    )
    .await;
    s.refused(
        &cy,
        2,
        "room add-member vault cy",
        "error: not_found: no room \"vault\"",
    )
    .await;
    let secret = s
        .refused(&cy, 2, "room participants vault", "error: not_found: ")
        .await;
    let missing = s
        .refused(&cy, 2, "room participants nonesuch", "error: not_found: ")
        .await;
    assert_eq!(secret, missing.replace("nonesuch", "vault"));
    let v = s.one(&ann, 0, "room participants vault").await;
    assert_eq!(
        v,
        json!({"room": "vault", "count": 0, "over_limit": false, "participants": []})
    );
    let cys = s.ok(&cy, 2, "room list").await;
    assert_eq!(
        names(&cys),
        ["core", "general", "keynote", "lobby", "scratch"]
    );
    let found = s.ok(&cy, 2, "search rooms --category eng").await;
    assert_eq!(names(&found), ["core", "general", "keynote"]);
    let found = s.ok(&cy, 2, "search rooms vault").await;
    assert!(found.is_empty(), "{found:?}");
    let anns = s
        .ok(&ann, 0, "search rooms --category eng --privacy secret")
        .await;
    assert_eq!(names(&anns), ["vault"]);
    s.one(&ann, 0, "post vault 'members only'").await;
    let found = s
        .ok(&admin, 0, "search rooms ENGINEERING --type normal")
        .await;
    assert_eq!(names(&found), ["general"]);
    let found = s.ok(&admin, 0, "search rooms --member bob").await;
    assert_eq!(names(&found), ["core"]);
    // Message search: a member finds the secret room's post (the index commits about once a
    // second, so ask until it shows); an outsider's search never reveals it.
    let found = s
        .ok_when(&ann, 0, "search messages members", |lines| {
            lines.iter().any(|m| m["text"] == "members only")
        })
        .await;
    assert!(found.iter().all(|m| m["room"] == "vault"), "{found:?}");
    let found = s.ok(&cy, 2, "search messages members").await;
    assert!(found.iter().all(|m| m["room"] != "vault"), "{found:?}");

    info!("--- disabling a room cuts its live followers off and hides it from members");
    let last = s.ok(&bob, 1, "history core --limit 1").await;
    let last = last[0]["seq"].as_u64().expect("a seq");
    let mut tail = s
        .command(&bob, 1, &format!("tail core --from {last}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stoa tail");
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    s.one(&bob, 1, "post core 'still here'").await;
    // Roster events (objects with `roster`) come first; the post is the first line with a seq.
    let m: Value = loop {
        let line = timeout(TAIL_WAIT, lines.next_line())
            .await
            .expect("tail prints the post")
            .unwrap()
            .expect("a line");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("seq").is_some() {
            break v;
        }
        assert!(v.get("roster").is_some(), "{line}");
    };
    // bob follows core on node 2 through tail: every node's roster read shows him.
    s.one_when(&admin, 0, "room participants core", |v| {
        v["participants"] == json!(["bob"])
    })
    .await;
    assert_eq!(
        (m["author"].as_str(), m["text"].as_str()),
        (Some("bob"), Some("still here"))
    );
    s.done(&admin, 0, "room disable core").await;
    let status = timeout(TAIL_WAIT, tail.wait())
        .await
        .expect("tail exits once the room is closed")
        .unwrap();
    let mut err = String::new();
    let mut stderr = tail.stderr.take().unwrap();
    stderr.read_to_string(&mut err).await.unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err, "error: forbidden: room \"core\" was disabled\n");
    s.refused(
        &bob,
        1,
        "post core hello?",
        "error: not_found: no room \"core\"",
    )
    .await;
    s.one_when(&admin, 0, "room show core", |v| v["disabled"] == true)
        .await;
    let found = s.ok(&admin, 0, "search rooms --disabled true").await;
    assert_eq!(names(&found), ["core"]);
    s.done(&admin, 0, "room enable core").await;
    s.one(&bob, 1, "post core 'back again'").await;

    info!("--- policy: a disabled site refuses its users; the user's own setting wins");
    let p = s.one(&cy, 2, "policy show cy").await;
    assert_eq!(
        p,
        json!({"user": "cy", "user_setting": null, "site": "paris", "site_setting": null,
               "global": true, "enabled": true})
    );
    s.done(&admin, 0, "policy set --site paris --disable").await;
    let disabled = "error: forbidden: chat is disabled for cy by policy";
    s.refused(&cy, 2, "post general bonjour", disabled).await;
    s.refused(&cy, 2, "history general", disabled).await;
    let p = s.one(&cy, 2, "policy show cy").await;
    assert_eq!(
        (&p["site_setting"], &p["enabled"]),
        (&json!(false), &json!(false))
    );
    s.one(&bob, 1, "post general 'bob is not in paris'").await;
    s.done(&admin, 0, "policy set --user cy --enable").await;
    s.one(&cy, 2, "post general bonjour").await;
    s.done(&admin, 0, "policy set --user cy --clear").await;
    s.refused(&cy, 2, "post general encore", disabled).await;
    s.done(&admin, 0, "policy set --site paris --clear").await;
    s.one(&cy, 2, "post general encore").await;
    s.refused(
        &admin,
        0,
        "policy set --global --clear",
        "error: invalid: the global policy cannot be cleared",
    )
    .await;
    s.refused(&cy, 2, "policy show bob", "error: forbidden: ")
        .await;

    info!("--- a creator (ann, in leads in devs) creates a room and manages it");
    let team = s
        .one(&ann, 2, "room create team --category eng --privacy closed")
        .await;
    assert_eq!(team["name"], "team");
    let team = s.one(&ann, 2, "room show team").await;
    assert_eq!(
        (&team["managers"], &team["members"]),
        (&json!(["ann"]), &json!(["ann"]))
    );
    s.done(&ann, 2, "room add-member team bob").await;
    s.done(&ann, 2, "room add-member team dan").await;
    s.done(&ann, 2, "room add-member team cy").await;
    s.done(&ann, 2, "room remove-member team cy").await;
    s.done(&ann, 2, "room add-manager team dan").await;
    s.done(&ann, 2, "room remove-manager team dan").await;
    s.refused(
        &ann,
        2,
        "room remove-manager team dan",
        "error: not_found: dan is not a manager of \"team\"",
    )
    .await;
    s.done(&ann, 2, "room update team --description 'the team of ann'")
        .await;
    s.one(&bob, 1, "post team 'glad to be here'").await;
    s.refused(
        &bob,
        1,
        "room create bobs --category eng",
        "error: forbidden: bob may not create rooms in category \"eng\"",
    )
    .await;
    s.refused(
        &bob,
        1,
        "room add-member team cy",
        "error: forbidden: bob does not manage room \"team\"",
    )
    .await;
    s.refused(
        &ann,
        2,
        "room delete team",
        "error: forbidden: only administrators delete rooms",
    )
    .await;

    info!("--- moving a room drops the role holders the new category does not admit");
    s.done(
        &admin,
        0,
        "category create lab --allow user:ann --allow user:dan",
    )
    .await;
    let before = s
        .one_when(&admin, 0, "room show team", |v| {
            v["members"].as_array().is_some_and(|m| m.len() == 3)
        })
        .await;
    s.done(&admin, 0, "room move team lab").await;
    let after = s
        .one_when(&admin, 0, "room show team", |v| v["category"] == "lab")
        .await;
    let dropped: Vec<String> = strs(&before["members"])
        .into_iter()
        .filter(|u| !strs(&after["members"]).contains(u))
        .collect();
    info!(?dropped, "role holders dropped by the move");
    assert_eq!(dropped, ["bob"]);
    assert_eq!(
        (&after["members"], &after["managers"], &after["description"]),
        (
            &json!(["ann", "dan"]),
            &json!(["ann"]),
            &json!("the team of ann")
        )
    );
    s.refused(
        &bob,
        1,
        "room show team",
        "error: not_found: no room \"team\"",
    )
    .await;
    s.one(&dan, 2, "post team 'still in'").await;
    s.refused(
        &admin,
        0,
        "category remove lab",
        "error: invalid: category \"lab\" still holds 1 room(s)",
    )
    .await;
    s.done(&admin, 0, "room delete team").await;
    s.done(&admin, 0, "category remove lab").await;
    let cats = s
        .ok_when(&admin, 0, "category list", |l| !has(l, "lab"))
        .await;
    assert_eq!(names(&cats), ["default", "demo", "eng"]);

    info!("--- cluster settings: shown, changed, validated, seen on every node");
    let shown = s.one(&bob, 1, "config show").await;
    assert_eq!(
        shown,
        json!({"default_chat_history": 30, "max_file_size_kb": 20000,
               "participant_update_limit": 75})
    );
    let want = json!({"default_chat_history": 50, "max_file_size_kb": 20000,
                      "participant_update_limit": 10});
    // The answer is the answering node's view; set again (same values) until it shows them.
    s.one_when(
        &admin,
        0,
        "config set --default-chat-history 50 --participant-update-limit 10",
        |v| *v == want,
    )
    .await;
    for node in 0..3 {
        s.one_when(&bob, node, "config show", |v| *v == want).await;
    }
    s.refused(
        &admin,
        0,
        "config set --default-chat-history 501",
        "error: invalid: default_chat_history 501 is not in 1..=500",
    )
    .await;
    s.refused(
        &bob,
        1,
        "config set --max-file-size-kb 1",
        "error: forbidden: ",
    )
    .await;

    info!("--- add-ins: register, attach to a room, list, update, remove once detached");
    s.done(&admin, 0, "addin register wiki https://wiki.example/hook")
        .await;
    s.refused(
        &admin,
        0,
        "addin register ftp ftp://files.example",
        "error: invalid: add-in URL",
    )
    .await;
    s.refused(
        &admin,
        0,
        "addin register wiki https://other.example",
        "error: already_exists: ",
    )
    .await;
    s.refused(
        &admin,
        0,
        "room create x --category eng --addin nosuch",
        "error: not_found: no add-in \"nosuch\"",
    )
    .await;
    s.done(&admin, 0, "room update general --addin wiki").await;
    s.one_when(&admin, 0, "room show general", |v| v["addin"] == "wiki")
        .await;
    s.done(&admin, 0, "addin update wiki https://wiki2.example/hook")
        .await;
    let list = s
        .ok_when(&bob, 1, "addin list", |l| {
            l.first()
                .is_some_and(|a| a["url"] == "https://wiki2.example/hook")
        })
        .await;
    assert_eq!(
        list,
        [json!({"name": "wiki", "url": "https://wiki2.example/hook"})]
    );
    s.refused(
        &admin,
        0,
        "addin remove wiki",
        "error: invalid: add-in \"wiki\" is attached to room \"general\"",
    )
    .await;
    s.done(&admin, 0, "room update general --no-addin").await;
    s.done(&admin, 0, "addin remove wiki").await;
    s.ok_when(&admin, 0, "addin list", |l| l.is_empty()).await;

    info!("--- a post by dan through node 3 reaches bob's `stoa tail --count 1` on node 2");
    let last = s.ok(&bob, 1, "history general --limit 1").await;
    let last = last[0]["seq"].as_u64().expect("a seq");
    let tail = s
        .command(&bob, 1, &format!("tail general --from {last} --count 1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stoa tail");
    let posted = s.one(&dan, 2, "post general 'from node 3'").await;
    assert_eq!(posted["seq"].as_u64(), Some(last + 1));
    let out = timeout(TAIL_WAIT, tail.wait_with_output())
        .await
        .expect("tail exits after one message")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The message is the last line; roster events (bob joining) may come before it.
    let stdout = text(&out.stdout);
    let line = stdout.trim().lines().last().expect("a line");
    let m: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        (&m["room"], &m["seq"], &m["author"], &m["text"]),
        (
            &json!("general"),
            &json!(last + 1),
            &json!("dan"),
            &json!("from node 3")
        )
    );

    info!("--- files: refused while eng forbids uploads, then dan uploads and bob downloads");
    let files = tempfile::TempDir::new().unwrap();
    let notes = files.path().join("notes.txt");
    let content: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&notes, &content).unwrap();
    let upload = format!(
        "file upload general {} --text 'meeting notes'",
        notes.display()
    );
    s.refused(
        &dan,
        2,
        &upload,
        "error: forbidden: the category of \"general\" does not allow file uploads",
    )
    .await;
    s.done(&admin, 0, "category update eng --file-upload true")
        .await;
    let up = s.one(&dan, 2, &upload).await;
    assert_eq!(up["file"]["name"], "notes.txt");
    assert_eq!(up["file"]["size"], json!(content.len()));
    let file_id = up["file"]["id"].as_str().expect("a file id").to_string();
    let copy = files.path().join("copy.txt");
    let saved = s
        .one(
            &bob,
            1,
            &format!("file download general {file_id} -o {}", copy.display()),
        )
        .await;
    assert_eq!(saved["file"]["id"], json!(file_id));
    assert!(
        std::fs::read(&copy).unwrap() == content,
        "downloaded copy differs"
    );
    let history = s
        .ok_when(&bob, 1, "history general --limit 1", |l| {
            l.first().is_some_and(|m| m["file"]["id"] == json!(file_id))
        })
        .await;
    assert_eq!(history[0]["text"], "meeting notes");
    let settings = s.one(&admin, 0, "config set --max-file-size-kb 100").await;
    assert_eq!(settings["max_file_size_kb"], 100);
    s.refused(&dan, 2, &upload, "error: too_large: file of 300000 bytes")
        .await;

    info!("--- moderation: dan cannot; the administrator replaces a message, then clears the room");
    let secret = s
        .one(&dan, 2, "post general 'the password is hunter2'")
        .await;
    let secret_seq = secret["seq"].as_u64().expect("a seq");
    s.refused(
        &dan,
        2,
        "moderate remove --room general --author dan",
        "error: forbidden: only administrators moderate messages",
    )
    .await;
    s.refused(
        &admin,
        0,
        "moderate remove",
        "error: invalid: a moderation filter needs",
    )
    .await;
    let replaced = s
        .one(
            &admin,
            0,
            "moderate replace --room general --keyword HUNTER2 --text '[redacted]'",
        )
        .await;
    assert_eq!(replaced, json!({"replaced": 1}));
    let seen = s
        .ok_when(&bob, 1, "history general --limit 1", |l| {
            l.first().is_some_and(|m| m["moderated"] == "replaced")
        })
        .await;
    assert_eq!(
        (&seen[0]["seq"], &seen[0]["text"], &seen[0]["author"]),
        (&json!(secret_seq), &json!("[redacted]"), &json!("dan"))
    );
    s.ok_when(&bob, 1, "search messages hunter2", |l| l.is_empty())
        .await;
    let cleared = s
        .one(&admin, 0, "moderate clear general --through 2100-01-01")
        .await;
    assert!(
        cleared["removed"].as_u64().is_some_and(|n| n >= 3),
        "{cleared}"
    );
    let all = s
        .ok_when(&bob, 1, "history general --limit 100", |l| {
            l.iter()
                .all(|m| m["moderated"] == "removed" && m["text"] == "")
        })
        .await;
    assert_eq!(all.last().unwrap()["seq"], json!(secret_seq));
    s.refused(
        &bob,
        1,
        &format!(
            "file download general {file_id} -o {}",
            files.path().join("again").display()
        ),
        "error: not_found: ",
    )
    .await;

    tc.shutdown().await;
}

#[test]
fn command_lines_split_at_blanks_outside_quotes() {
    assert_eq!(
        words("post  general 'hello there' x''y"),
        ["post", "general", "hello there", "xy"]
    );
    assert_eq!(words("post r ''"), ["post", "r", ""]);
}
