//! `stoa room ...` and `stoa search ...`: their flags and how they run.

use crate::{output, show};
use clap::{ArgGroup, Args, Subcommand};
use std::io::Write;
use stoa_client::{Client, Invitations, Privacy, Role, RoomChange, RoomFilter, RoomSpec, RoomType};

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room in a category (closed and normal unless told otherwise). Without
    /// --category: the old form, an open, normal room in the category `default`.
    Create(CreateArgs),
    /// List the rooms you can see (name, description, shard).
    List,
    /// Show a room's settings, and its role lists if you may see them.
    Show { room: String },
    /// Change a room's settings (its managers and administrators).
    Update(UpdateArgs),
    /// Make USER a member of ROOM.
    AddMember(RoleArgs),
    /// Make USER a manager of ROOM.
    AddManager(RoleArgs),
    /// Make USER a presenter of ROOM (auditoriums only).
    AddPresenter(RoleArgs),
    /// Take USER's membership of ROOM away.
    RemoveMember(RoleArgs),
    /// Take USER's manager role in ROOM away.
    RemoveManager(RoleArgs),
    /// Take USER's presenter role in ROOM away.
    RemovePresenter(RoleArgs),
    /// Disable a room: everyone is disconnected at once and joins are refused.
    Disable { room: String },
    /// Enable a disabled room again.
    Enable { room: String },
    /// Delete a room and its history (administrators only).
    Delete { room: String },
    /// Move a room to another category; role holders it does not admit are dropped.
    Move { room: String, category: String },
    /// Print who is connected to ROOM now, on any node (one name per line), or only how many
    /// when they are more than the cluster's participant_update_limit.
    Participants { room: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Room name.
    pub name: String,
    /// Category to create the room in (you must be an administrator or one of its creators).
    #[arg(long, value_name = "CAT")]
    pub category: Option<String>,
    /// What the room is for.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
    /// Who finds and enters the room [default: closed].
    #[arg(long, value_name = "open|closed|secret", requires = "category")]
    pub privacy: Option<Privacy>,
    /// An auditorium lets only its presenters post [default: normal].
    #[arg(long = "type", value_name = "normal|auditorium", requires = "category")]
    pub room_type: Option<RoomType>,
    /// Whether new members are invited as the category says, or never [default: inherit].
    #[arg(long, value_name = "inherit|off", requires = "category")]
    pub invitations: Option<Invitations>,
    /// Attach a registered add-in.
    #[arg(long, value_name = "NAME", requires = "category")]
    pub addin: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["description", "privacy", "room_type", "invitations", "addin", "no_addin"])
))]
pub struct UpdateArgs {
    pub room: String,
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    #[arg(long, value_name = "open|closed|secret")]
    pub privacy: Option<Privacy>,
    #[arg(long = "type", value_name = "normal|auditorium")]
    pub room_type: Option<RoomType>,
    #[arg(long, value_name = "inherit|off")]
    pub invitations: Option<Invitations>,
    /// Attach this registered add-in.
    #[arg(long, value_name = "NAME", conflicts_with = "no_addin")]
    pub addin: Option<String>,
    /// Detach the room's add-in.
    #[arg(long)]
    pub no_addin: bool,
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    pub room: String,
    pub user: String,
}

#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Rooms you may find whose name or description holds every word of TEXT (case-insensitive),
    /// matching every given filter.
    Rooms(SearchRoomsArgs),
    /// Messages holding every word of TEXT, in the rooms you may read (or --room), newest first.
    Messages {
        text: String,
        #[arg(long, value_name = "ROOM")]
        room: Option<String>,
        #[arg(long, value_name = "USER")]
        author: Option<String>,
        /// Only messages posted at or after this time (ms since the epoch).
        #[arg(long, value_name = "MS")]
        from_ms: Option<u64>,
        /// Only messages posted at or before this time (ms since the epoch).
        #[arg(long, value_name = "MS")]
        to_ms: Option<u64>,
        /// Results per page (at most 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Results to skip (for the next pages).
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
}

#[derive(Debug, Args)]
pub struct SearchRoomsArgs {
    /// Words to look for; none matches every room.
    #[arg(default_value = "")]
    pub text: String,
    #[arg(long, value_name = "CAT")]
    pub category: Option<String>,
    /// Rooms USER is a member of.
    #[arg(long, value_name = "USER")]
    pub member: Option<String>,
    /// Rooms USER manages.
    #[arg(long, value_name = "USER")]
    pub manager: Option<String>,
    #[arg(long, value_name = "open|closed|secret")]
    pub privacy: Option<Privacy>,
    #[arg(long = "type", value_name = "normal|auditorium")]
    pub room_type: Option<RoomType>,
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub disabled: Option<bool>,
}

pub async fn room(
    client: &Client,
    command: RoomCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use RoomCommand as C;
    let (verb, target, human) = match command {
        C::Create(a) => {
            let info = match a.category {
                None => client.create_room(&a.name, &a.description).await?,
                Some(category) => {
                    client
                        .room_create(RoomSpec {
                            name: a.name,
                            category,
                            description: a.description,
                            privacy: a.privacy.unwrap_or(Privacy::Closed),
                            room_type: a.room_type.unwrap_or(RoomType::Normal),
                            invitations: a.invitations.unwrap_or(Invitations::Inherit),
                            addin: a.addin,
                        })
                        .await?
                }
            };
            writeln!(out, "{}", output::room_created(&info, as_json))?;
            return Ok(());
        }
        C::List => {
            for info in client.list_rooms().await? {
                writeln!(out, "{}", output::room(&info, as_json))?;
            }
            return Ok(());
        }
        C::Show { room } => {
            let detail = client.room_show(&room).await?;
            writeln!(out, "{}", show::room_detail(&detail, as_json))?;
            return Ok(());
        }
        C::Participants { room } => {
            let roster = client.participants(&room).await?;
            for line in output::participants(&room, &roster, as_json) {
                writeln!(out, "{line}")?;
            }
            return Ok(());
        }
        C::Update(a) => {
            let change = RoomChange {
                description: a.description,
                privacy: a.privacy,
                room_type: a.room_type,
                invitations: a.invitations,
                addin: match (a.addin, a.no_addin) {
                    (Some(name), _) => Some(Some(name)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
            };
            client.room_update(&a.room, change).await?;
            let human = format!("updated room {}", a.room);
            ("room update", a.room, human)
        }
        C::AddMember(a) => role(client, a, Role::Member, true).await?,
        C::AddManager(a) => role(client, a, Role::Manager, true).await?,
        C::AddPresenter(a) => role(client, a, Role::Presenter, true).await?,
        C::RemoveMember(a) => role(client, a, Role::Member, false).await?,
        C::RemoveManager(a) => role(client, a, Role::Manager, false).await?,
        C::RemovePresenter(a) => role(client, a, Role::Presenter, false).await?,
        C::Disable { room } => {
            client.room_set_disabled(&room, true).await?;
            let human = format!("disabled room {room}");
            ("room disable", room, human)
        }
        C::Enable { room } => {
            client.room_set_disabled(&room, false).await?;
            let human = format!("enabled room {room}");
            ("room enable", room, human)
        }
        C::Delete { room } => {
            client.room_delete(&room).await?;
            let human = format!("deleted room {room}");
            ("room delete", room, human)
        }
        C::Move { room, category } => {
            client.room_move(&room, &category).await?;
            let human = format!("moved room {room} to category {category}");
            ("room move", room, human)
        }
    };
    writeln!(out, "{}", show::done(verb, &target, &human, as_json))?;
    Ok(())
}

/// Adds or removes a role; answers what `show::done` prints.
async fn role(
    client: &Client,
    a: RoleArgs,
    role: Role,
    add: bool,
) -> anyhow::Result<(&'static str, String, String)> {
    client.room_role(&a.room, role, &a.user, add).await?;
    let (verb, human) = match (role, add) {
        (Role::Member, true) => ("room add-member", "is now a member of"),
        (Role::Manager, true) => ("room add-manager", "is now a manager of"),
        (Role::Presenter, true) => ("room add-presenter", "is now a presenter of"),
        (Role::Member, false) => ("room remove-member", "is no longer a member of"),
        (Role::Manager, false) => ("room remove-manager", "is no longer a manager of"),
        (Role::Presenter, false) => ("room remove-presenter", "is no longer a presenter of"),
    };
    let human = format!("{} {human} {}", a.user, a.room);
    Ok((verb, a.room, human))
}

pub async fn search(
    client: &Client,
    command: SearchCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let a = match command {
        SearchCommand::Rooms(a) => a,
        SearchCommand::Messages {
            text,
            room,
            author,
            from_ms,
            to_ms,
            limit,
            offset,
        } => {
            let query = stoa_proto::MessageQuery {
                text,
                room,
                author,
                from_ms,
                to_ms,
                offset,
                limit,
            };
            for m in client.search_messages(query).await? {
                writeln!(out, "{}", crate::output::message(&m, as_json))?;
            }
            return Ok(());
        }
    };
    let filter = RoomFilter {
        text: a.text,
        category: a.category,
        member: a.member,
        manager: a.manager,
        privacy: a.privacy,
        room_type: a.room_type,
        disabled: a.disabled,
    };
    for detail in client.room_search(filter).await? {
        writeln!(out, "{}", show::room_found(&detail, as_json))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::{error::ErrorKind, Parser};

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("stoa").chain(args.iter().copied())).map(|c| c.command)
    }

    fn room(args: &[&str]) -> RoomCommand {
        let mut all = vec!["room"];
        all.extend_from_slice(args);
        match parse(&all).unwrap() {
            Command::Room(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_legacy_and_in_a_category() {
        match room(&["create", "dev", "--description", "the devs"]) {
            RoomCommand::Create(a) => {
                assert_eq!(
                    (a.name.as_str(), a.description.as_str()),
                    ("dev", "the devs")
                );
                assert_eq!((a.category, a.privacy, a.room_type), (None, None, None));
            }
            other => panic!("{other:?}"),
        }
        let c = room(&[
            "create",
            "talks",
            "--category",
            "eng",
            "--privacy",
            "secret",
            "--type",
            "auditorium",
            "--invitations",
            "off",
            "--addin",
            "wiki",
        ]);
        match c {
            RoomCommand::Create(a) => {
                assert_eq!(a.category.as_deref(), Some("eng"));
                assert_eq!(a.privacy, Some(Privacy::Secret));
                assert_eq!(a.room_type, Some(RoomType::Auditorium));
                assert_eq!(a.invitations, Some(Invitations::Off));
                assert_eq!(a.addin.as_deref(), Some("wiki"));
            }
            other => panic!("{other:?}"),
        }
        // Settings the legacy request cannot carry need a category.
        let e = parse(&["room", "create", "x", "--privacy", "closed"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = parse(&[
            "room",
            "create",
            "x",
            "--category",
            "c",
            "--privacy",
            "hidden",
        ]);
        assert_eq!(e.unwrap_err().kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn update_needs_a_change_and_one_addin_flag() {
        match room(&["update", "ops", "--type", "normal", "--no-addin"]) {
            RoomCommand::Update(a) => {
                assert_eq!(a.room_type, Some(RoomType::Normal));
                assert!(a.no_addin && a.addin.is_none());
            }
            other => panic!("{other:?}"),
        }
        let e = parse(&["room", "update", "ops"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = parse(&["room", "update", "ops", "--addin", "w", "--no-addin"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn roles_state_and_moves() {
        for (verb, want) in [
            ("add-member", "AddMember"),
            ("add-manager", "AddManager"),
            ("add-presenter", "AddPresenter"),
            ("remove-member", "RemoveMember"),
            ("remove-manager", "RemoveManager"),
            ("remove-presenter", "RemovePresenter"),
        ] {
            let c = room(&[verb, "ops", "bob"]);
            let text = format!("{c:?}");
            assert!(text.starts_with(want), "{verb}: {text}");
            assert!(text.contains("room: \"ops\", user: \"bob\""), "{text}");
        }
        assert!(
            matches!(room(&["disable", "ops"]), RoomCommand::Disable { room } if room == "ops")
        );
        assert!(matches!(
            room(&["enable", "ops"]),
            RoomCommand::Enable { .. }
        ));
        assert!(matches!(
            room(&["delete", "ops"]),
            RoomCommand::Delete { .. }
        ));
        assert!(matches!(room(&["show", "ops"]), RoomCommand::Show { .. }));
        assert!(matches!(
            room(&["participants", "ops"]),
            RoomCommand::Participants { room } if room == "ops"
        ));
        assert!(matches!(room(&["list"]), RoomCommand::List));
        assert!(matches!(
            room(&["move", "ops", "eng"]),
            RoomCommand::Move { room, category } if room == "ops" && category == "eng"
        ));
        let e = parse(&["room", "add-member", "ops"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn search_rooms_and_messages() {
        let c = parse(&[
            "search",
            "rooms",
            "deploy notes",
            "--category",
            "eng",
            "--member",
            "ann",
            "--manager",
            "bob",
            "--privacy",
            "closed",
            "--type",
            "normal",
            "--disabled",
            "false",
        ])
        .unwrap();
        match c {
            Command::Search(SearchCommand::Rooms(a)) => {
                assert_eq!(a.text, "deploy notes");
                assert_eq!(a.category.as_deref(), Some("eng"));
                assert_eq!(a.member.as_deref(), Some("ann"));
                assert_eq!(a.manager.as_deref(), Some("bob"));
                assert_eq!(a.privacy, Some(Privacy::Closed));
                assert_eq!(a.room_type, Some(RoomType::Normal));
                assert_eq!(a.disabled, Some(false));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["search", "rooms"]).unwrap() {
            Command::Search(SearchCommand::Rooms(a)) => assert!(a.text.is_empty()),
            other => panic!("{other:?}"),
        }
        let e = parse(&["search", "rooms", "x", "--disabled", "maybe"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        match parse(&[
            "search", "messages", "hi", "--room", "ops", "--author", "ann",
        ])
        .unwrap()
        {
            Command::Search(SearchCommand::Messages {
                text,
                room,
                author,
                limit,
                ..
            }) => {
                assert_eq!(
                    (text.as_str(), room.as_deref(), author.as_deref(), limit),
                    ("hi", Some("ops"), Some("ann"), 20)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
