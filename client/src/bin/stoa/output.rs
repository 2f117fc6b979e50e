//! How results are printed: one function per shape, for people and as JSON. Pure: they return
//! the lines, `main` writes them.

use serde::Serialize;
use std::borrow::Cow;
use stoa_client::{Message, Posted, RoomInfo, Roster, RosterChange, RosterEvent, WhoAmI};
use stoa_proto::{FileRef, Moderation};

/// One message: `#seq [YYYY-MM-DD HH:MM:SS] author: text` (UTC), alerts marked `(alert)` after
/// the author, a file as `[file NAME, N bytes, id ID]` after the text, and moderation said in
/// place of removed text or after replaced text. Control characters are escaped so a message
/// cannot drive the terminal.
pub fn message_human(m: &Message) -> String {
    let alert = if m.alert { " (alert)" } else { "" };
    let text = match m.moderated {
        Some(Moderation::Removed) => "(removed by an administrator)".to_string(),
        Some(Moderation::Replaced) => format!("{} (replaced)", clean(&m.text)),
        None => clean(&m.text).into_owned(),
    };
    let file = m.file.as_ref().map_or(String::new(), |f| {
        format!(" [file {}, {} bytes, id {}]", clean(&f.name), f.size, f.id)
    });
    format!(
        "#{} [{}] {}{alert}: {text}{file}",
        m.seq,
        utc(m.ts_ms),
        clean(&m.author),
    )
}

/// One message as a JSON object (one line): room, seq, author, text, ts_ms, alert, moderated
/// (null, "removed" or "replaced"), file (null or {id, name, size, sha256}).
pub fn message_json(m: &Message) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        room: &'a str,
        seq: u64,
        author: &'a str,
        text: &'a str,
        ts_ms: u64,
        alert: bool,
        moderated: Option<&'static str>,
        file: Option<FileJson<'a>>,
    }
    json(&Out {
        room: &m.room,
        seq: m.seq.0,
        author: &m.author,
        text: &m.text,
        ts_ms: m.ts_ms,
        alert: m.alert,
        moderated: m.moderated.map(|x| match x {
            Moderation::Removed => "removed",
            Moderation::Replaced => "replaced",
        }),
        file: m.file.as_ref().map(FileJson::from),
    })
}

#[derive(Serialize)]
struct FileJson<'a> {
    id: &'a str,
    name: &'a str,
    size: u64,
    sha256: &'a str,
}

impl<'a> From<&'a FileRef> for FileJson<'a> {
    fn from(f: &'a FileRef) -> Self {
        FileJson {
            id: &f.id,
            name: &f.name,
            size: f.size,
            sha256: &f.sha256,
        }
    }
}

pub fn file_posted(room: &str, p: &Posted, f: &FileRef, as_json: bool) -> String {
    if as_json {
        serde_json::json!({
            "room": room, "seq": p.seq.0, "ts_ms": p.ts_ms,
            "file": serde_json::to_value(FileJson::from(f)).unwrap_or_default(),
        })
        .to_string()
    } else {
        format!(
            "posted {} ({} bytes) to {room} as #{}; file id {}",
            clean(&f.name),
            f.size,
            p.seq,
            f.id
        )
    }
}

pub fn file_saved(f: &FileRef, path: &str, as_json: bool) -> String {
    if as_json {
        serde_json::json!({
            "saved": path,
            "file": serde_json::to_value(FileJson::from(f)).unwrap_or_default(),
        })
        .to_string()
    } else {
        format!(
            "saved {} ({} bytes, SHA-256 checked) to {}",
            clean(&f.name),
            f.size,
            clean(path)
        )
    }
}

/// A moderated message as `stoa tail` shows it: JSON gains `"event": "replaced"`.
pub fn replaced(m: &Message, as_json: bool) -> String {
    if as_json {
        let mut v: serde_json::Value = serde_json::from_str(&message_json(m)).unwrap_or_default();
        v["event"] = "replaced".into();
        v.to_string()
    } else {
        format!("moderated: {}", message_human(m))
    }
}

pub fn message(m: &Message, as_json: bool) -> String {
    if as_json {
        message_json(m)
    } else {
        message_human(m)
    }
}

pub fn posted(room: &str, p: &Posted, as_json: bool) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        room: &'a str,
        seq: u64,
        ts_ms: u64,
    }
    if as_json {
        json(&Out {
            room,
            seq: p.seq.0,
            ts_ms: p.ts_ms,
        })
    } else {
        p.seq.to_string()
    }
}

/// A new user: the bare token for people (so `$(stoa user add bob)` captures it). JSON has
/// `site` only when the user has one.
pub fn user_created(
    user: &str,
    token: &str,
    admin: bool,
    site: Option<&str>,
    as_json: bool,
) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        user: &'a str,
        token: &'a str,
        admin: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        site: Option<&'a str>,
    }
    if as_json {
        json(&Out {
            user,
            token,
            admin,
            site,
        })
    } else {
        token.to_string()
    }
}

pub fn room(r: &RoomInfo, as_json: bool) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        name: &'a str,
        description: &'a str,
        shard: u32,
    }
    if as_json {
        json(&Out {
            name: &r.name,
            description: &r.description,
            shard: r.shard,
        })
    } else if r.description.is_empty() {
        clean(&r.name).into_owned()
    } else {
        format!("{}  {}", clean(&r.name), clean(&r.description))
    }
}

pub fn room_created(r: &RoomInfo, as_json: bool) -> String {
    if as_json {
        room(r, true)
    } else {
        format!("created room {} (shard {})", clean(&r.name), r.shard)
    }
}

pub fn whoami(w: &WhoAmI, as_json: bool) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        user: &'a str,
        admin: bool,
        node: u64,
    }
    if as_json {
        json(&Out {
            user: &w.user,
            admin: w.admin,
            node: w.node.0,
        })
    } else {
        let admin = if w.admin { " (administrator)" } else { "" };
        format!("{}{admin} on node {}", clean(&w.user), w.node)
    }
}

/// A room's roster. For people: one name per line, or one line with the count when the room is
/// above the limit. JSON: one object, `participants` null above the limit.
pub fn participants(room: &str, roster: &Roster, as_json: bool) -> Vec<String> {
    #[derive(Serialize)]
    struct Out<'a> {
        room: &'a str,
        count: u32,
        over_limit: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        participants: Option<&'a [String]>,
    }
    let out = match roster {
        Roster::Names(names) => Out {
            room,
            count: names.len() as u32,
            over_limit: false,
            limit: None,
            participants: Some(names),
        },
        Roster::OverLimit { count, limit } => Out {
            room,
            count: *count,
            over_limit: true,
            limit: Some(*limit),
            participants: None,
        },
    };
    if as_json {
        return vec![json(&out)];
    }
    match roster {
        Roster::Names(names) => names.iter().map(|n| clean(n).into_owned()).collect(),
        Roster::OverLimit { count, limit } => vec![format!(
            "{count} participants, more than participant_update_limit ({limit}): names are not shown"
        )],
    }
}

/// A roster event of `stoa tail`. For people: a line starting with `*`. JSON: an object with
/// `room` and `roster` (`all`, `joined`, `left`, `over_limit`), and `participants`, `user` or
/// `count` and `limit`; it has no `seq`, unlike a message.
pub fn roster_event(e: &RosterEvent, as_json: bool) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        room: &'a str,
        roster: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        participants: Option<&'a [String]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    }
    let mut out = Out {
        room: &e.room,
        roster: "",
        participants: None,
        user: None,
        count: None,
        limit: None,
    };
    let human = match &e.change {
        RosterChange::All(names) => {
            out.roster = "all";
            out.participants = Some(names);
            let list: Vec<Cow<'_, str>> = names.iter().map(|n| clean(n)).collect();
            format!("* participants ({}): {}", names.len(), list.join(", "))
        }
        RosterChange::Joined(user) => {
            out.roster = "joined";
            out.user = Some(user);
            format!("* {} joined", clean(user))
        }
        RosterChange::Left(user) => {
            out.roster = "left";
            out.user = Some(user);
            format!("* {} left", clean(user))
        }
        RosterChange::OverLimit { count, limit } => {
            out.roster = "over_limit";
            out.count = Some(*count);
            out.limit = Some(*limit);
            format!(
                "* {count} participants, more than participant_update_limit ({limit}): no more join/leave updates"
            )
        }
    };
    if as_json {
        json(&out)
    } else {
        human
    }
}

pub fn json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs (strings, numbers, bools) into a String cannot fail.
    serde_json::to_string(value).expect("plain struct serializes to JSON")
}

/// Control characters (newlines, escape sequences) shown escaped, e.g. `\n`, `\u{1b}`.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc(ts_ms: u64) -> String {
    let secs = ts_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoa_client::{NodeId, Seq};

    fn sample(alert: bool) -> Message {
        Message {
            room: "dev".into(),
            seq: Seq(42),
            author: "ann".into(),
            text: "hello \"world\"".into(),
            ts_ms: 1_700_000_000_123,
            alert,
            moderated: None,
            file: None,
        }
    }

    #[test]
    fn participants_for_people_and_as_json() {
        let names = Roster::Names(vec!["ann".into(), "b\nob".into()]);
        assert_eq!(participants("dev", &names, false), ["ann", "b\\nob"]);
        assert_eq!(
            participants("dev", &names, true),
            [r#"{"room":"dev","count":2,"over_limit":false,"participants":["ann","b\nob"]}"#]
        );
        let over = Roster::OverLimit {
            count: 80,
            limit: 75,
        };
        assert_eq!(
            participants("dev", &over, false),
            ["80 participants, more than participant_update_limit (75): names are not shown"]
        );
        assert_eq!(
            participants("dev", &over, true),
            [r#"{"room":"dev","count":80,"over_limit":true,"limit":75,"participants":null}"#]
        );
    }

    #[test]
    fn roster_events_for_people_and_as_json() {
        let event = |change| RosterEvent {
            room: "dev".into(),
            change,
        };
        let all = event(RosterChange::All(vec!["ann".into(), "bob".into()]));
        assert_eq!(roster_event(&all, false), "* participants (2): ann, bob");
        assert_eq!(
            roster_event(&all, true),
            r#"{"room":"dev","roster":"all","participants":["ann","bob"]}"#
        );
        let joined = event(RosterChange::Joined("cy".into()));
        assert_eq!(roster_event(&joined, false), "* cy joined");
        assert_eq!(
            roster_event(&joined, true),
            r#"{"room":"dev","roster":"joined","user":"cy"}"#
        );
        let left = event(RosterChange::Left("cy".into()));
        assert_eq!(roster_event(&left, false), "* cy left");
        let over = event(RosterChange::OverLimit {
            count: 76,
            limit: 75,
        });
        assert_eq!(
            roster_event(&over, true),
            r#"{"room":"dev","roster":"over_limit","count":76,"limit":75}"#
        );
        assert!(roster_event(&over, false).starts_with("* 76 participants, more than"));
    }

    #[test]
    fn a_message_for_people() {
        assert_eq!(
            message_human(&sample(false)),
            "#42 [2023-11-14 22:13:20] ann: hello \"world\""
        );
        assert_eq!(
            message_human(&sample(true)),
            "#42 [2023-11-14 22:13:20] ann (alert): hello \"world\""
        );
    }

    #[test]
    fn a_message_as_json() {
        let line = message_json(&sample(true));
        assert_eq!(
            line,
            r#"{"room":"dev","seq":42,"author":"ann","text":"hello \"world\"","ts_ms":1700000000123,"alert":true,"moderated":null,"file":null}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 42);
    }

    #[test]
    fn control_characters_cannot_break_lines_or_drive_the_terminal() {
        let mut m = sample(false);
        m.text = "two\nlines \u{1b}[31mred".into();
        let line = message_human(&m);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(line.ends_with(r"two\nlines \u{1b}[31mred"), "{line}");
        // JSON escapes them itself and keeps the text exact.
        let v: serde_json::Value = serde_json::from_str(&message_json(&m)).unwrap();
        assert_eq!(v["text"], m.text);
    }

    #[test]
    fn other_shapes() {
        let p = Posted {
            seq: Seq(7),
            ts_ms: 5,
        };
        assert_eq!(posted("dev", &p, false), "7");
        assert_eq!(
            posted("dev", &p, true),
            r#"{"room":"dev","seq":7,"ts_ms":5}"#
        );
        assert_eq!(user_created("bob", "tok", false, None, false), "tok");
        assert_eq!(
            user_created("bob", "tok", true, None, true),
            r#"{"user":"bob","token":"tok","admin":true}"#
        );
        assert_eq!(
            user_created("cy", "tok", false, Some("paris"), true),
            r#"{"user":"cy","token":"tok","admin":false,"site":"paris"}"#
        );
        let r = RoomInfo {
            name: "dev".into(),
            description: "devs".into(),
            shard: 3,
        };
        assert_eq!(room(&r, false), "dev  devs");
        assert_eq!(
            room(&r, true),
            r#"{"name":"dev","description":"devs","shard":3}"#
        );
        assert_eq!(room_created(&r, false), "created room dev (shard 3)");
        let w = WhoAmI {
            user: "ann".into(),
            admin: true,
            node: NodeId(2),
        };
        assert_eq!(whoami(&w, false), "ann (administrator) on node 2");
        assert_eq!(whoami(&w, true), r#"{"user":"ann","admin":true,"node":2}"#);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59");
    }
}
