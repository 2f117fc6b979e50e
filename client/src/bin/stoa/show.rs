//! How directory results are printed, for people and as JSON (one object per line). Pure: they
//! return the lines, the callers write them. Enums and principals are printed as their words
//! (`closed`, `auditorium`, `user:ann`, `group:eng`, `everyone`), the same words the flags take.

use crate::output::{clean, json};
use serde::Serialize;
use stoa_client::{AddInInfo, CategoryInfo, ClusterSettings, GroupInfo, PolicyInfo, RoomDetail};

/// A change the cluster applied: `{"ok":true,"command":"room disable","target":"ops"}`, or the
/// sentence `human` for people.
pub fn done(command: &str, target: &str, human: &str, as_json: bool) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        ok: bool,
        command: &'a str,
        target: &'a str,
    }
    if as_json {
        json(&Out {
            ok: true,
            command,
            target,
        })
    } else {
        clean(human).into_owned()
    }
}

fn words<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// `a, b, c`, or `-` for none.
fn list_human(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        clean(&items.join(", ")).into_owned()
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

pub fn category(c: &CategoryInfo, as_json: bool) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        name: &'a str,
        description: &'a str,
        allowed: Vec<String>,
        denied: Vec<String>,
        creators: Vec<String>,
        file_upload: bool,
        invitations: bool,
        chat_history: bool,
        rooms: u32,
    }
    let s = &c.spec;
    if as_json {
        return json(&Out {
            name: &s.name,
            description: &s.description,
            allowed: words(&s.allowed),
            denied: words(&s.denied),
            creators: words(&s.creators),
            file_upload: s.file_upload,
            invitations: s.invitations,
            chat_history: s.chat_history,
            rooms: c.rooms,
        });
    }
    let description = if s.description.is_empty() {
        String::new()
    } else {
        format!("  {}", clean(&s.description))
    };
    let plural = if c.rooms == 1 { "" } else { "s" };
    format!(
        "{} ({} room{plural}; allowed: {}; denied: {}; creators: {}; file upload {}, invitations {}, history {}){description}",
        clean(&s.name),
        c.rooms,
        list_human(&words(&s.allowed)),
        list_human(&words(&s.denied)),
        list_human(&words(&s.creators)),
        on_off(s.file_upload),
        on_off(s.invitations),
        on_off(s.chat_history),
    )
}

#[derive(Serialize)]
struct RoomOut<'a> {
    name: &'a str,
    category: &'a str,
    description: &'a str,
    privacy: &'static str,
    room_type: &'static str,
    invitations: &'static str,
    disabled: bool,
    addin: Option<&'a str>,
    members: &'a [String],
    managers: &'a [String],
    presenters: &'a [String],
}

fn room_json(r: &RoomDetail) -> String {
    json(&RoomOut {
        name: &r.name,
        category: &r.category,
        description: &r.description,
        privacy: r.privacy.as_str(),
        room_type: r.room_type.as_str(),
        invitations: r.invitations.as_str(),
        disabled: r.disabled,
        addin: r.addin.as_deref(),
        members: &r.members,
        managers: &r.managers,
        presenters: &r.presenters,
    })
}

/// `stoa room show`: one block of `field: value` lines for people.
pub fn room_detail(r: &RoomDetail, as_json: bool) -> String {
    if as_json {
        return room_json(r);
    }
    let lines = [
        ("room", clean(&r.name).into_owned()),
        ("category", clean(&r.category).into_owned()),
        ("description", clean(&r.description).into_owned()),
        ("privacy", r.privacy.to_string()),
        ("type", r.room_type.to_string()),
        ("invitations", r.invitations.to_string()),
        (
            "add-in",
            clean(r.addin.as_deref().unwrap_or("-")).into_owned(),
        ),
        (
            "disabled",
            if r.disabled { "yes" } else { "no" }.to_string(),
        ),
        ("members", list_human(&r.members)),
        ("managers", list_human(&r.managers)),
        ("presenters", list_human(&r.presenters)),
    ];
    lines
        .iter()
        .map(|(k, v)| format!("{:<12} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line per room found by `stoa search rooms`.
pub fn room_found(r: &RoomDetail, as_json: bool) -> String {
    if as_json {
        return room_json(r);
    }
    let disabled = if r.disabled { ", disabled" } else { "" };
    let description = if r.description.is_empty() {
        String::new()
    } else {
        format!("  {}", clean(&r.description))
    };
    format!(
        "{} ({}, {}, {}{disabled}){description}",
        clean(&r.name),
        clean(&r.category),
        r.privacy,
        r.room_type
    )
}

pub fn group(g: &GroupInfo, as_json: bool) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        name: &'a str,
        members: Vec<String>,
    }
    if as_json {
        json(&Out {
            name: &g.name,
            members: words(&g.members),
        })
    } else {
        format!("{}: {}", clean(&g.name), list_human(&words(&g.members)))
    }
}

/// `ann: enabled (user: -, site paris: disabled, global: enabled)`.
pub fn policy(p: &PolicyInfo, as_json: bool) -> String {
    if as_json {
        return json(p);
    }
    let setting = |s: Option<bool>| match s {
        Some(true) => "enabled",
        Some(false) => "disabled",
        None => "-",
    };
    let site = match &p.site {
        Some(site) => format!("site {}: {}", clean(site), setting(p.site_setting)),
        None => "no site".to_string(),
    };
    format!(
        "{}: {} (user: {}, {site}, global: {})",
        clean(&p.user),
        setting(Some(p.enabled)),
        setting(p.user_setting),
        setting(Some(p.global)),
    )
}

pub fn settings(s: &ClusterSettings, as_json: bool) -> String {
    if as_json {
        return json(s);
    }
    format!(
        "default_chat_history: {}\nmax_file_size_kb: {}\nparticipant_update_limit: {}",
        s.default_chat_history, s.max_file_size_kb, s.participant_update_limit
    )
}

pub fn addin(a: &AddInInfo, as_json: bool) -> String {
    if as_json {
        json(a)
    } else {
        format!("{}  {}", clean(&a.name), clean(&a.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoa_client::{CategorySpec, Invitations, Principal, Privacy, RoomType};

    fn detail() -> RoomDetail {
        RoomDetail {
            name: "ops".into(),
            category: "eng".into(),
            description: "operations".into(),
            privacy: Privacy::Closed,
            room_type: RoomType::Auditorium,
            invitations: Invitations::Off,
            disabled: true,
            addin: Some("wiki".into()),
            members: vec!["ann".into(), "bob".into()],
            managers: vec!["ann".into()],
            presenters: vec![],
        }
    }

    #[test]
    fn rooms() {
        assert_eq!(
            room_detail(&detail(), true),
            r#"{"name":"ops","category":"eng","description":"operations","privacy":"closed","room_type":"auditorium","invitations":"off","disabled":true,"addin":"wiki","members":["ann","bob"],"managers":["ann"],"presenters":[]}"#
        );
        let human = room_detail(&detail(), false);
        assert!(human.starts_with("room:        ops\n"), "{human}");
        assert!(human.contains("\nmembers:     ann, bob\n"), "{human}");
        assert!(human.ends_with("\npresenters:  -"), "{human}");
        assert_eq!(
            room_found(&detail(), false),
            "ops (eng, closed, auditorium, disabled)  operations"
        );
    }

    #[test]
    fn categories_and_groups() {
        let c = CategoryInfo {
            spec: CategorySpec {
                name: "eng".into(),
                description: String::new(),
                allowed: vec![Principal::Group("devs".into()), Principal::Everyone],
                denied: vec![Principal::User("mal".into())],
                creators: vec![],
                file_upload: false,
                invitations: true,
                chat_history: true,
            },
            rooms: 2,
        };
        assert_eq!(
            category(&c, true),
            r#"{"name":"eng","description":"","allowed":["group:devs","everyone"],"denied":["user:mal"],"creators":[],"file_upload":false,"invitations":true,"chat_history":true,"rooms":2}"#
        );
        assert_eq!(
            category(&c, false),
            "eng (2 rooms; allowed: group:devs, everyone; denied: user:mal; creators: -; file upload off, invitations on, history on)"
        );
        let g = GroupInfo {
            name: "devs".into(),
            members: vec![
                Principal::User("ann".into()),
                Principal::Group("ops".into()),
            ],
        };
        assert_eq!(group(&g, false), "devs: user:ann, group:ops");
        assert_eq!(
            group(&g, true),
            r#"{"name":"devs","members":["user:ann","group:ops"]}"#
        );
    }

    #[test]
    fn policy_settings_addins_and_changes() {
        let p = PolicyInfo {
            user: "cy".into(),
            user_setting: None,
            site: Some("paris".into()),
            site_setting: Some(false),
            global: true,
            enabled: false,
        };
        assert_eq!(
            policy(&p, false),
            "cy: disabled (user: -, site paris: disabled, global: enabled)"
        );
        assert_eq!(
            policy(&p, true),
            r#"{"user":"cy","user_setting":null,"site":"paris","site_setting":false,"global":true,"enabled":false}"#
        );
        let s = ClusterSettings::default();
        assert_eq!(
            settings(&s, true),
            r#"{"default_chat_history":30,"max_file_size_kb":20000,"participant_update_limit":75}"#
        );
        assert!(settings(&s, false).starts_with("default_chat_history: 30\n"));
        let a = AddInInfo {
            name: "wiki".into(),
            url: "https://wiki.example".into(),
        };
        assert_eq!(addin(&a, false), "wiki  https://wiki.example");
        assert_eq!(
            addin(&a, true),
            r#"{"name":"wiki","url":"https://wiki.example"}"#
        );
        assert_eq!(
            done("room disable", "ops", "disabled room ops", true),
            r#"{"ok":true,"command":"room disable","target":"ops"}"#
        );
        assert_eq!(
            done("room disable", "ops", "disabled room ops", false),
            "disabled room ops"
        );
    }
}
