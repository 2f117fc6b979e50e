//! `stoa category|group|policy|config|addin ...`: their flags and how they run. A principal `P`
//! is `user:NAME`, `group:NAME` or `everyone`.

use crate::show;
use clap::{ArgAction, ArgGroup, Args, Subcommand};
use std::io::Write;
use stoa_client::{
    CategoryChange, CategorySpec, Client, PolicyScope, Principal, PrincipalList, SettingsChange,
};

#[derive(Debug, Subcommand)]
pub enum CategoryCommand {
    /// Create a category (administrators only). Without --allow nobody but administrators is in
    /// its scope.
    Create(CategoryCreateArgs),
    /// List the categories you are in scope of (all of them for administrators).
    List,
    /// Change a category's description or switches.
    Update(CategoryUpdateArgs),
    /// Remove a category that holds no room.
    Remove { name: String },
    /// Add P to the category's allowed list.
    Allow(PrincipalArgs),
    /// Add P to the category's denied list (denied wins over allowed).
    Deny(PrincipalArgs),
    /// Add P to the category's creators (who may create rooms in it).
    Creator(PrincipalArgs),
    /// Remove P from the category's allowed list.
    Unallow(PrincipalArgs),
    /// Remove P from the category's denied list.
    Undeny(PrincipalArgs),
    /// Remove P from the category's creators.
    Uncreator(PrincipalArgs),
}

#[derive(Debug, Args)]
pub struct CategoryCreateArgs {
    pub name: String,
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
    /// Admit P to the category's scope (repeatable).
    #[arg(long = "allow", value_name = "P")]
    pub allowed: Vec<Principal>,
    /// Keep P out of the scope even if allowed (repeatable).
    #[arg(long = "deny", value_name = "P")]
    pub denied: Vec<Principal>,
    /// Let P create rooms in the category (repeatable).
    #[arg(long = "creator", value_name = "P")]
    pub creators: Vec<Principal>,
    /// Allow file uploads to its rooms [default: off].
    #[arg(long)]
    pub file_upload: bool,
    /// Invitations off: users added to its rooms are not told in their "new" list [default: on].
    #[arg(long)]
    pub no_invitations: bool,
    /// Chat history off: messages are delivered live but not kept for users [default: on].
    #[arg(long)]
    pub no_history: bool,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["description", "file_upload", "invitations", "history"])
))]
pub struct CategoryUpdateArgs {
    pub name: String,
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    pub file_upload: Option<bool>,
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    pub invitations: Option<bool>,
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    pub history: Option<bool>,
}

#[derive(Debug, Args)]
pub struct PrincipalArgs {
    pub category: String,
    /// user:NAME, group:NAME or everyone.
    #[arg(value_name = "P")]
    pub principal: Principal,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create an empty group.
    Create { name: String },
    /// Delete a group no category names.
    Delete { name: String },
    /// Add a user or a group (user:NAME or group:NAME) to GROUP.
    Add {
        group: String,
        #[arg(value_name = "P")]
        member: Principal,
    },
    /// Remove a user or a group from GROUP.
    Remove {
        group: String,
        #[arg(value_name = "P")]
        member: Principal,
    },
    /// List every group and its direct members.
    List,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Enable, disable or clear chat for one user, one site or everyone (administrators only).
    /// A user's setting wins over their site's, which wins over the global one.
    Set(PolicySetArgs),
    /// How the policy resolves for USER (administrators, or USER themself).
    Show { user: String },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["user", "site", "global"])))]
#[command(group(ArgGroup::new("setting").required(true).args(["enable", "disable", "clear"])))]
pub struct PolicySetArgs {
    /// Set the policy of this user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Set the policy of every user of this site.
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,
    /// Set the global policy (it cannot be cleared).
    #[arg(long)]
    pub global: bool,
    /// Allow chat.
    #[arg(long)]
    pub enable: bool,
    /// Refuse chat (reading and posting) with a clear error.
    #[arg(long)]
    pub disable: bool,
    /// Remove the user's or site's setting, so the next scope decides.
    #[arg(long)]
    pub clear: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the cluster settings.
    Show,
    /// Change cluster settings (administrators only); prints the settings after the change.
    Set(ConfigSetArgs),
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["default_chat_history", "max_file_size_kb", "participant_update_limit"])
))]
pub struct ConfigSetArgs {
    /// Messages sent on join, 1..=500.
    #[arg(long, value_name = "N")]
    pub default_chat_history: Option<u32>,
    /// Largest file upload, KiB.
    #[arg(long, value_name = "N")]
    pub max_file_size_kb: Option<u32>,
    /// Above this many connected participants a room stops sending roster updates.
    #[arg(long, value_name = "N")]
    pub participant_update_limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum AddinCommand {
    /// Register an add-in: a unique name and an http(s) URL.
    Register { name: String, url: String },
    /// Change an add-in's URL.
    Update { name: String, url: String },
    /// Remove an add-in no room uses.
    Remove { name: String },
    /// List the registered add-ins.
    List,
}

/// Prints a change's confirmation.
fn done(
    out: &mut impl Write,
    command: &str,
    target: &str,
    human: String,
    as_json: bool,
) -> anyhow::Result<()> {
    writeln!(out, "{}", show::done(command, target, &human, as_json))?;
    Ok(())
}

pub async fn category(
    client: &Client,
    command: CategoryCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use CategoryCommand as C;
    let (list, add, a) = match command {
        C::Create(a) => {
            let name = a.name.clone();
            client
                .category_create(CategorySpec {
                    name: a.name,
                    description: a.description,
                    allowed: a.allowed,
                    denied: a.denied,
                    creators: a.creators,
                    file_upload: a.file_upload,
                    invitations: !a.no_invitations,
                    chat_history: !a.no_history,
                })
                .await?;
            let human = format!("created category {name}");
            return done(out, "category create", &name, human, as_json);
        }
        C::List => {
            for c in client.categories().await? {
                writeln!(out, "{}", show::category(&c, as_json))?;
            }
            return Ok(());
        }
        C::Update(a) => {
            let change = CategoryChange {
                description: a.description,
                file_upload: a.file_upload,
                invitations: a.invitations,
                chat_history: a.history,
            };
            client.category_update(&a.name, change).await?;
            let human = format!("updated category {}", a.name);
            return done(out, "category update", &a.name, human, as_json);
        }
        C::Remove { name } => {
            client.category_remove(&name).await?;
            let human = format!("removed category {name}");
            return done(out, "category remove", &name, human, as_json);
        }
        C::Allow(a) => (PrincipalList::Allowed, true, a),
        C::Deny(a) => (PrincipalList::Denied, true, a),
        C::Creator(a) => (PrincipalList::Creators, true, a),
        C::Unallow(a) => (PrincipalList::Allowed, false, a),
        C::Undeny(a) => (PrincipalList::Denied, false, a),
        C::Uncreator(a) => (PrincipalList::Creators, false, a),
    };
    client
        .category_principal(&a.category, list, a.principal.clone(), add)
        .await?;
    let (verb, human) = match (list, add) {
        (PrincipalList::Allowed, true) => ("category allow", "now allowed in"),
        (PrincipalList::Denied, true) => ("category deny", "now denied in"),
        (PrincipalList::Creators, true) => ("category creator", "now a creator in"),
        (PrincipalList::Allowed, false) => ("category unallow", "no longer allowed in"),
        (PrincipalList::Denied, false) => ("category undeny", "no longer denied in"),
        (PrincipalList::Creators, false) => ("category uncreator", "no longer a creator in"),
    };
    let human = format!("{} {human} {}", a.principal, a.category);
    done(out, verb, &a.category, human, as_json)
}

pub async fn group(
    client: &Client,
    command: GroupCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create { name } => {
            client.group_create(&name).await?;
            done(
                out,
                "group create",
                &name,
                format!("created group {name}"),
                as_json,
            )
        }
        GroupCommand::Delete { name } => {
            client.group_delete(&name).await?;
            done(
                out,
                "group delete",
                &name,
                format!("deleted group {name}"),
                as_json,
            )
        }
        GroupCommand::Add { group, member } => {
            client.group_member(&group, member.clone(), true).await?;
            let human = format!("{member} is now in group {group}");
            done(out, "group add", &group, human, as_json)
        }
        GroupCommand::Remove { group, member } => {
            client.group_member(&group, member.clone(), false).await?;
            let human = format!("{member} is no longer in group {group}");
            done(out, "group remove", &group, human, as_json)
        }
        GroupCommand::List => {
            for g in client.groups().await? {
                writeln!(out, "{}", show::group(&g, as_json))?;
            }
            Ok(())
        }
    }
}

impl PolicySetArgs {
    /// The scope and setting; clap's groups make exactly one of each present.
    fn request(&self) -> (PolicyScope, Option<bool>) {
        let scope = match (&self.user, &self.site) {
            (Some(u), _) => PolicyScope::User(u.clone()),
            (None, Some(s)) => PolicyScope::Site(s.clone()),
            (None, None) => PolicyScope::Global,
        };
        let enabled = if self.clear { None } else { Some(self.enable) };
        (scope, enabled)
    }
}

pub async fn policy(
    client: &Client,
    command: PolicyCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Set(a) => {
            let (scope, enabled) = a.request();
            client.policy_set(scope.clone(), enabled).await?;
            let target = match &scope {
                PolicyScope::User(u) => format!("user:{u}"),
                PolicyScope::Site(s) => format!("site:{s}"),
                PolicyScope::Global => "global".to_string(),
            };
            let what = match enabled {
                Some(true) => "enabled",
                Some(false) => "disabled",
                None => "cleared",
            };
            let human = format!("chat {what} for {target}");
            done(out, "policy set", &target, human, as_json)
        }
        PolicyCommand::Show { user } => {
            let p = client.policy_show(&user).await?;
            writeln!(out, "{}", show::policy(&p, as_json))?;
            Ok(())
        }
    }
}

pub async fn config(
    client: &Client,
    command: ConfigCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let settings = match command {
        ConfigCommand::Show => client.settings().await?,
        ConfigCommand::Set(a) => {
            client
                .settings_set(SettingsChange {
                    default_chat_history: a.default_chat_history,
                    max_file_size_kb: a.max_file_size_kb,
                    participant_update_limit: a.participant_update_limit,
                })
                .await?
        }
    };
    writeln!(out, "{}", show::settings(&settings, as_json))?;
    Ok(())
}

pub async fn addin(
    client: &Client,
    command: AddinCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        AddinCommand::Register { name, url } => {
            client.addin_register(&name, &url).await?;
            let human = format!("registered add-in {name} at {url}");
            done(out, "addin register", &name, human, as_json)
        }
        AddinCommand::Update { name, url } => {
            client.addin_update(&name, &url).await?;
            let human = format!("add-in {name} is now at {url}");
            done(out, "addin update", &name, human, as_json)
        }
        AddinCommand::Remove { name } => {
            client.addin_remove(&name).await?;
            done(
                out,
                "addin remove",
                &name,
                format!("removed add-in {name}"),
                as_json,
            )
        }
        AddinCommand::List => {
            for a in client.addins().await? {
                writeln!(out, "{}", show::addin(&a, as_json))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::{error::ErrorKind, Parser};

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("stoa").chain(args.iter().copied())).map(|c| c.command)
    }

    fn kind(args: &[&str]) -> ErrorKind {
        parse(args).unwrap_err().kind()
    }

    #[test]
    fn category_create_takes_principals_and_switches() {
        let c = parse(&[
            "category",
            "create",
            "eng",
            "--description",
            "Engineering",
            "--allow",
            "group:devs",
            "--allow",
            "user:ann",
            "--deny",
            "user:mal",
            "--creator",
            "everyone",
            "--file-upload",
            "--no-invitations",
        ])
        .unwrap();
        let Command::Category(CategoryCommand::Create(a)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            a.allowed,
            vec![
                Principal::Group("devs".into()),
                Principal::User("ann".into())
            ]
        );
        assert_eq!(a.denied, vec![Principal::User("mal".into())]);
        assert_eq!(a.creators, vec![Principal::Everyone]);
        assert!(a.file_upload && a.no_invitations && !a.no_history);
        assert_eq!(a.description, "Engineering");
        assert_eq!(
            kind(&["category", "create", "eng", "--allow", "ann"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn category_update_list_remove_and_principals() {
        let c = parse(&[
            "category",
            "update",
            "eng",
            "--file-upload",
            "true",
            "--history",
            "false",
        ])
        .unwrap();
        let Command::Category(CategoryCommand::Update(a)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (a.file_upload, a.invitations, a.history),
            (Some(true), None, Some(false))
        );
        assert_eq!(
            kind(&["category", "update", "eng"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["category", "update", "eng", "--invitations", "yes"]),
            ErrorKind::InvalidValue
        );
        assert!(matches!(
            parse(&["category", "list"]).unwrap(),
            Command::Category(CategoryCommand::List)
        ));
        assert!(matches!(
            parse(&["category", "remove", "eng"]).unwrap(),
            Command::Category(CategoryCommand::Remove { .. })
        ));
        for verb in ["allow", "deny", "creator", "unallow", "undeny", "uncreator"] {
            let c = parse(&["category", verb, "eng", "group:devs"]).unwrap();
            let text = format!("{c:?}");
            assert!(
                text.contains("category: \"eng\", principal: Group(\"devs\")"),
                "{verb}: {text}"
            );
        }
    }

    #[test]
    fn groups() {
        let c = parse(&["group", "add", "devs", "group:ops"]).unwrap();
        assert!(matches!(
            c,
            Command::Group(GroupCommand::Add { group, member: Principal::Group(g) })
                if group == "devs" && g == "ops"
        ));
        let c = parse(&["group", "remove", "devs", "user:ann"]).unwrap();
        assert!(matches!(c, Command::Group(GroupCommand::Remove { .. })));
        assert!(matches!(
            parse(&["group", "list"]).unwrap(),
            Command::Group(GroupCommand::List)
        ));
        assert!(matches!(
            parse(&["group", "create", "devs"]).unwrap(),
            Command::Group(GroupCommand::Create { .. })
        ));
        assert!(matches!(
            parse(&["group", "delete", "devs"]).unwrap(),
            Command::Group(GroupCommand::Delete { .. })
        ));
    }

    fn policy_set(args: &[&str]) -> Result<(PolicyScope, Option<bool>), ErrorKind> {
        let mut all = vec!["policy", "set"];
        all.extend_from_slice(args);
        match parse(&all) {
            Ok(Command::Policy(PolicyCommand::Set(a))) => Ok(a.request()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        }
    }

    #[test]
    fn policy_set_takes_exactly_one_scope_and_one_setting() {
        assert_eq!(
            policy_set(&["--user", "ann", "--disable"]),
            Ok((PolicyScope::User("ann".into()), Some(false)))
        );
        assert_eq!(
            policy_set(&["--site", "paris", "--clear"]),
            Ok((PolicyScope::Site("paris".into()), None))
        );
        assert_eq!(
            policy_set(&["--global", "--enable"]),
            Ok((PolicyScope::Global, Some(true)))
        );
        assert_eq!(
            policy_set(&["--global"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            policy_set(&["--enable"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            policy_set(&["--global", "--user", "ann", "--enable"]),
            Err(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            policy_set(&["--global", "--enable", "--disable"]),
            Err(ErrorKind::ArgumentConflict)
        );
        assert!(matches!(
            parse(&["policy", "show", "ann"]).unwrap(),
            Command::Policy(PolicyCommand::Show { user }) if user == "ann"
        ));
    }

    #[test]
    fn config_and_addins() {
        let c = parse(&[
            "config",
            "set",
            "--default-chat-history",
            "50",
            "--max-file-size-kb",
            "10",
        ])
        .unwrap();
        let Command::Config(ConfigCommand::Set(a)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (
                a.default_chat_history,
                a.max_file_size_kb,
                a.participant_update_limit
            ),
            (Some(50), Some(10), None)
        );
        assert_eq!(kind(&["config", "set"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["config", "set", "--participant-update-limit", "many"]),
            ErrorKind::ValueValidation
        );
        assert!(matches!(
            parse(&["config", "show"]).unwrap(),
            Command::Config(ConfigCommand::Show)
        ));
        assert!(matches!(
            parse(&["addin", "register", "wiki", "https://w.example"]).unwrap(),
            Command::Addin(AddinCommand::Register { name, url }) if name == "wiki" && url == "https://w.example"
        ));
        assert!(matches!(
            parse(&["addin", "update", "wiki", "https://x.example"]).unwrap(),
            Command::Addin(AddinCommand::Update { .. })
        ));
        assert!(matches!(
            parse(&["addin", "remove", "wiki"]).unwrap(),
            Command::Addin(AddinCommand::Remove { .. })
        ));
        assert!(matches!(
            parse(&["addin", "list"]).unwrap(),
            Command::Addin(AddinCommand::List)
        ));
    }
}
