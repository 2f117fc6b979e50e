//! `stoa`: the command-line client. Parses flags, connects with the SDK, runs one command and
//! prints the result.
//!
//! Layout (`stoa/`): `args.rs` the top-level flags and commands; `rooms.rs` the room and search
//! commands, `directory.rs` the category, group, policy, config and add-in commands,
//! `moderation.rs` the file and moderation commands (each with its flags and its execution); `output.rs` and `show.rs` the output formats.

#[path = "stoa/args.rs"]
mod args;
#[path = "stoa/directory.rs"]
mod directory;
#[path = "stoa/moderation.rs"]
mod moderation;
#[path = "stoa/output.rs"]
mod output;
#[path = "stoa/rooms.rs"]
mod rooms;
#[path = "stoa/show.rs"]
mod show;

use anyhow::Context;
use args::{Cli, Command, Global, UserCommand};
use clap::Parser;
use std::{
    io::{self, Write},
    process::ExitCode,
    time::Duration,
};
use stoa_client::{Client, ClientConfig, ClientError, Seq};

/// How long `stoa tail` waits for a message before it checks whether its room was closed.
const TAIL_CLOSED_CHECK: Duration = Duration::from_millis(500);

/// A mistake in how `stoa` was invoked (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version: not a failure.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{}", clap_error_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = client_config(&cli.global)?;
    let client = Client::connect(cfg).await?;
    let result = execute(&client, cli.command, cli.global.json).await;
    client.close().await;
    result
}

fn client_config(global: &Global) -> anyhow::Result<ClientConfig> {
    let token = match (&global.token, &global.token_file) {
        (Some(token), _) if !token.trim().is_empty() => token.trim().to_string(),
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(UsageError(format!("token file {} is empty", path.display())).into());
            }
            token.to_string()
        }
        _ => {
            return Err(UsageError(
                "no token: pass --token or --token-file, or set STOA_TOKEN or STOA_TOKEN_FILE"
                    .into(),
            )
            .into())
        }
    };
    let Some(ca) = &global.ca else {
        return Err(UsageError("no cluster CA: pass --ca FILE or set STOA_CA".into()).into());
    };
    let servers: Vec<String> = global
        .servers
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        return Err(UsageError("no server: pass --server ADDR or set STOA_SERVER".into()).into());
    }
    Ok(ClientConfig::from_files(servers, token, ca)?)
}

async fn execute(client: &Client, command: Command, as_json: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match command {
        Command::User(UserCommand::Add { name, admin, site }) => {
            let token = match &site {
                None => client.create_user(&name, admin).await?,
                Some(site) => client.create_user_at(&name, admin, Some(site)).await?,
            };
            let line = output::user_created(&name, &token, admin, site.as_deref(), as_json);
            writeln!(out, "{line}")?;
        }
        Command::Room(c) => rooms::room(client, c, as_json, &mut out).await?,
        Command::Search(c) => rooms::search(client, c, as_json, &mut out).await?,
        Command::Category(c) => directory::category(client, c, as_json, &mut out).await?,
        Command::Group(c) => directory::group(client, c, as_json, &mut out).await?,
        Command::Policy(c) => directory::policy(client, c, as_json, &mut out).await?,
        Command::Config(c) => directory::config(client, c, as_json, &mut out).await?,
        Command::Addin(c) => directory::addin(client, c, as_json, &mut out).await?,
        Command::File(c) => moderation::file(client, c, as_json, &mut out).await?,
        Command::Moderate(c) => moderation::moderate(client, c, as_json, &mut out).await?,
        Command::Post {
            room,
            text,
            client_id,
            alert,
        } => {
            let id = client_id.unwrap_or_else(stoa_client::new_client_msg_id);
            let posted = client.post_with_id(&room, &text, &id, alert).await?;
            writeln!(out, "{}", output::posted(&room, &posted, as_json))?;
        }
        Command::History {
            room,
            limit,
            before,
        } => {
            let (messages, _) = client.history(&room, before.map(Seq), None, limit).await?;
            for m in &messages {
                writeln!(out, "{}", output::message(m, as_json))?;
            }
        }
        Command::Tail { room, from, count } => {
            let mut events = client.events().context("event stream already taken")?;
            let mut roster = client
                .roster_events()
                .context("roster stream already taken")?;
            client.subscribe(&room, from.map(Seq)).await?;
            let mut printed = 0u64;
            while count.is_none_or(|n| printed < n) {
                let next = tokio::time::timeout(TAIL_CLOSED_CHECK, async {
                    tokio::select! {
                        m = events.next() => Ok(m),
                        Some(e) = roster.next() => Err(e),
                    }
                })
                .await;
                // Roster events are printed as they come; --count counts messages only.
                let next = match next {
                    Ok(Err(e)) => {
                        if e.room == room {
                            writeln!(out, "{}", output::roster_event(&e, as_json))?;
                            out.flush()?;
                        }
                        continue;
                    }
                    Ok(Ok(m)) => Ok(m),
                    Err(elapsed) => Err(elapsed),
                };
                for m in client.replaced().into_iter().filter(|m| m.room == room) {
                    writeln!(out, "{}", output::replaced(&m, as_json))?;
                    out.flush()?;
                }
                let Ok(next) = next else {
                    // Quiet for a while: every message before a close notice has been printed.
                    if let Some((_, reason)) =
                        client.closed_rooms().into_iter().find(|(r, _)| *r == room)
                    {
                        return Err(ClientError::Api(reason).into());
                    }
                    continue;
                };
                let Some(m) = next else {
                    return Err(match client.status() {
                        stoa_client::Status::Failed(e) => e.into(),
                        _ => ClientError::Closed.into(),
                    });
                };
                if m.room != room {
                    continue;
                }
                writeln!(out, "{}", output::message(&m, as_json))?;
                out.flush()?;
                printed += 1;
            }
        }
        Command::Whoami => {
            let me = client.whoami().await?;
            writeln!(out, "{}", output::whoami(&me, as_json))?;
        }
        Command::Invitations => {
            for room in client.invitations().await? {
                let line = if as_json {
                    serde_json::json!({ "room": room }).to_string()
                } else {
                    room
                };
                writeln!(out, "{line}")?;
            }
        }
        Command::Follow { room } => {
            client.follow(&room, true).await?;
            writeln!(
                out,
                "{}",
                show::done("follow", &room, &format!("following {room}"), as_json)
            )?;
        }
        Command::Unfollow { room } => {
            client.follow(&room, false).await?;
            writeln!(
                out,
                "{}",
                show::done(
                    "unfollow",
                    &room,
                    &format!("no longer following {room}"),
                    as_json
                )
            )?;
        }
        Command::Followed => {
            for f in client.followed().await? {
                let line = if as_json {
                    serde_json::json!({ "room": f.room, "last_seq": f.last_seq.0, "read_seq": f.read_seq.0, "unread": f.unread })
                        .to_string()
                } else {
                    format!(
                        "{}  {} unread (read to #{}, last #{})",
                        f.room, f.unread, f.read_seq, f.last_seq
                    )
                };
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The one stderr line for a failure: `error: <code>: <message>` for API errors.
fn error_line(e: &anyhow::Error) -> String {
    let text = match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api(api)) => format!("{}: {}", api.code, api.message),
        _ => format!("{e:#}"),
    };
    format!("error: {}", one_line(&text))
}

/// clap's message without the usage block, on one line.
fn clap_error_line(rendered: &str) -> String {
    let head = rendered.split("\n\n").next().unwrap_or(rendered);
    let line = one_line(head);
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoa_client::{ApiError, ErrorCode};

    #[test]
    fn api_errors_print_their_code() {
        let e: anyhow::Error =
            ClientError::Api(ApiError::new(ErrorCode::NotFound, "no room dev\nat all")).into();
        assert_eq!(error_line(&e), "error: not_found: no room dev at all");
        let e: anyhow::Error = ClientError::Closed.into();
        assert_eq!(error_line(&e), "error: client is closed");
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <TEXT>\n\nUsage: stoa post <ROOM> <TEXT>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered),
            "error: the following required arguments were not provided: <TEXT>"
        );
    }

    fn global(token: Option<&str>, ca: Option<&str>) -> Global {
        Global {
            servers: vec!["127.0.0.1:7400".into()],
            token: token.map(Into::into),
            token_file: None,
            ca: ca.map(Into::into),
            json: false,
        }
    }

    #[test]
    fn a_missing_token_or_ca_names_the_flag_and_variable() {
        let e = client_config(&global(None, Some("/ca.pem"))).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        let line = error_line(&e);
        assert!(
            line.contains("--token") && line.contains("STOA_TOKEN"),
            "{line}"
        );
        let e = client_config(&global(Some("t"), None)).unwrap_err();
        let line = error_line(&e);
        assert!(line.contains("--ca") && line.contains("STOA_CA"), "{line}");
    }

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("stoa-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tok, ca) = (dir.join("token"), dir.join("ca.pem"));
        std::fs::write(&tok, "  secret\n").unwrap();
        std::fs::write(&ca, "pem").unwrap();
        let mut g = global(None, Some(ca.to_str().unwrap()));
        g.token_file = Some(tok.clone());
        assert_eq!(client_config(&g).unwrap().token, "secret");
        std::fs::write(&tok, "\n").unwrap();
        assert!(client_config(&g)
            .unwrap_err()
            .downcast_ref::<UsageError>()
            .is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
