//! Command-line flags and subcommands of `stoa`. The room, search and other directory
//! subcommands are defined beside their execution, in `rooms.rs` and `directory.rs`.

use crate::directory::{AddinCommand, CategoryCommand, ConfigCommand, GroupCommand, PolicyCommand};
use crate::moderation::{FileCommand, ModerateCommand};
use crate::rooms::{RoomCommand, SearchCommand};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Stoa command-line client: users, categories, rooms and roles, groups, policy, settings,
/// add-ins, posting, history, following rooms live.
///
/// Prints for people by default and machine-readable JSON with --json (one object per line for
/// lists and streams). Exit code 0 on success, 2 for usage errors, 1 for other failures, with one
/// line on stderr: `error: <code>: <message>` for errors answered by the cluster.
#[derive(Debug, Parser)]
#[command(name = "stoa", version, arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Node addresses (host:port), comma-separated; others are tried when one fails.
    #[arg(
        long = "server",
        value_name = "ADDR[,ADDR...]",
        env = "STOA_SERVER",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400",
        global = true
    )]
    pub servers: Vec<String>,
    /// Token of the user to act as. Wins over --token-file.
    #[arg(
        long,
        value_name = "T",
        env = "STOA_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// File holding the token (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE", env = "STOA_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM file of the cluster CA, to verify the nodes' certificates.
    #[arg(long, value_name = "FILE", env = "STOA_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Print JSON instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage rooms and their roles.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Manage categories: scope (allowed minus denied), creators, switches.
    #[command(subcommand)]
    Category(CategoryCommand),
    /// Manage user groups (administrators only).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Enable or disable chat per user, site or globally.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show or change the cluster settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage add-ins (administrators only).
    #[command(subcommand)]
    Addin(AddinCommand),
    /// Search rooms or messages.
    #[command(subcommand)]
    Search(SearchCommand),
    /// Post a message; prints its seq.
    Post {
        /// Room to post to.
        room: String,
        /// Message text.
        text: String,
        /// Client message id: posting again with the same id is applied once [default: random].
        #[arg(long = "client-id", value_name = "ID")]
        client_id: Option<String>,
        /// Mark the message as an alert.
        #[arg(long)]
        alert: bool,
    },
    /// Print stored messages, oldest first: the newest page, or the page before --before.
    History {
        /// Room to read.
        room: String,
        /// Messages to print.
        #[arg(long, default_value_t = 30)]
        limit: u32,
        /// Print the messages just before this seq (scroll back).
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
    },
    /// Print a room's messages as they arrive, and who joins and leaves it (lines starting
    /// with `*`; JSON objects with `roster`), until interrupted. Exits 1 with
    /// `error: forbidden: <reason>` if the room is closed to you meanwhile (disabled, deleted,
    /// access removed).
    Tail {
        /// Room to follow.
        room: String,
        /// Resume after this seq: `--from 5` prints 6, 7, ... (stored ones first). Without it,
        /// only messages posted from now on.
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// Exit (with success) after printing this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print the user this token signs in as, and the node answering.
    Whoami,
    /// Print the rooms you were newly made a member of (the list is then cleared).
    Invitations,
    /// Follow a room: it is kept on the server and joined at sign-in.
    Follow { room: String },
    /// Stop following a room.
    Unfollow { room: String },
    /// Print the followed rooms with their unread counts.
    Followed,
    /// Upload and download files.
    #[command(subcommand)]
    File(FileCommand),
    /// Remove or replace messages, clear a room's history (administrators).
    #[command(subcommand)]
    Moderate(ModerateCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (administrators only); prints the new user's token.
    Add {
        /// User name.
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// The user's site, which the chat policy can enable or disable as a whole.
        #[arg(long, value_name = "SITE")]
        site: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{error::ErrorKind, CommandFactory};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stoa").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let cli = parse(&["--server", "a:1,b:2", "whoami", "--json", "--token", "t"]).unwrap();
        assert_eq!(cli.global.servers, vec!["a:1", "b:2"]);
        assert_eq!(cli.global.token.as_deref(), Some("t"));
        assert!(cli.global.json);
        assert!(matches!(cli.command, Command::Whoami));
        let cli = parse(&["whoami", "--ca", "/x/ca.pem", "--token-file", "/x/tok"]).unwrap();
        assert_eq!(cli.global.ca.unwrap(), PathBuf::from("/x/ca.pem"));
        assert_eq!(cli.global.token_file.unwrap(), PathBuf::from("/x/tok"));
    }

    #[test]
    fn server_defaults_to_localhost() {
        if std::env::var_os("STOA_SERVER").is_some() {
            return; // the environment overrides the default
        }
        assert_eq!(
            parse(&["whoami"]).unwrap().global.servers,
            vec!["127.0.0.1:7400"]
        );
    }

    #[test]
    fn subcommands_and_their_flags() {
        match parse(&["user", "add", "bob", "--admin"]).unwrap().command {
            Command::User(UserCommand::Add { name, admin, site }) => {
                assert_eq!((name.as_str(), admin, site), ("bob", true, None))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["user", "add", "cy", "--site", "paris"])
            .unwrap()
            .command
        {
            Command::User(UserCommand::Add { admin, site, .. }) => {
                assert_eq!((admin, site.as_deref()), (false, Some("paris")))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["post", "dev", "hi there", "--client-id", "c1", "--alert"])
            .unwrap()
            .command
        {
            Command::Post {
                room,
                text,
                client_id,
                alert,
            } => {
                assert_eq!(
                    (room.as_str(), text.as_str(), client_id.as_deref(), alert),
                    ("dev", "hi there", Some("c1"), true)
                )
            }
            other => panic!("{other:?}"),
        }
        match parse(&["history", "dev"]).unwrap().command {
            Command::History { limit, before, .. } => assert_eq!((limit, before), (30, None)),
            other => panic!("{other:?}"),
        }
        match parse(&["history", "dev", "--limit", "5", "--before", "40"])
            .unwrap()
            .command
        {
            Command::History { limit, before, .. } => assert_eq!((limit, before), (5, Some(40))),
            other => panic!("{other:?}"),
        }
        match parse(&["tail", "dev", "--from", "5", "--count", "3"])
            .unwrap()
            .command
        {
            Command::Tail { room, from, count } => {
                assert_eq!((room.as_str(), from, count), ("dev", Some(5), Some(3)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_reported() {
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(
            parse(&["post", "dev"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["history", "dev", "--limit", "x"])
                .unwrap_err()
                .kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["frobnicate"]).unwrap_err().kind(),
            ErrorKind::InvalidSubcommand
        );
        assert_eq!(
            parse(&["whoami", "--bogus"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
    }
}
