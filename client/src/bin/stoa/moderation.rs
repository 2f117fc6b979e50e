//! `stoa file ...` and `stoa moderate ...`: their flags and their execution.

use crate::output;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use stoa_client::Client;
use stoa_proto::{KeywordMatch, MessageFilter, ModerateOp, ModerationAction};

#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Post a file to a room (its category must allow uploads); prints the seq and file id.
    Upload {
        room: String,
        /// File to send.
        path: PathBuf,
        /// Text posted with the file.
        #[arg(long, default_value = "")]
        text: String,
        /// Name shown to readers [default: the file's name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Download a file posted in a room, checked against its SHA-256.
    Download {
        room: String,
        /// The file id (shown with the message in history and by upload).
        file_id: String,
        /// Where to write it: a path, or `-` for stdout [default: the file's name, in the
        /// current directory; an existing file is not overwritten].
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModerateCommand {
    /// Remove matching messages (administrators): they keep their place, with no content.
    Remove(FilterArgs),
    /// Replace the text of matching messages (administrators).
    Replace {
        #[command(flatten)]
        filter: FilterArgs,
        /// Replacement text [default: "This message was replaced by an administrator."].
        #[arg(long)]
        text: Option<String>,
    },
    /// Remove every message of ROOM posted at or before --through (administrators).
    Clear {
        room: String,
        /// Time: `YYYY-MM-DD` (its first instant, 00:00:00 UTC: the day itself is kept),
        /// `YYYY-MM-DDTHH:MM:SS` (UTC) or ms since the epoch.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        through: u64,
    },
}

/// Which messages: every given criterion must hold; give at least one.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this room [default: every room].
    #[arg(long)]
    pub room: Option<String>,
    #[arg(long, value_name = "USER")]
    pub author: Option<String>,
    /// Posted at or after (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` UTC, or ms since the epoch).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<u64>,
    /// Posted at or before.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<u64>,
    /// A keyword (repeatable); whole words, case-insensitive unless --case-sensitive.
    #[arg(long = "keyword", value_name = "WORD")]
    pub keywords: Vec<String>,
    /// all: every keyword; any: at least one; exact: the keywords as one phrase.
    #[arg(long = "match", value_enum, default_value_t = Matching::All)]
    pub matching: Matching,
    #[arg(long)]
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Matching {
    All,
    Any,
    Exact,
}

impl FilterArgs {
    fn filter(self) -> MessageFilter {
        MessageFilter {
            room: self.room,
            author: self.author,
            from_ms: self.from,
            to_ms: self.to,
            keywords: self.keywords,
            matching: match self.matching {
                Matching::All => KeywordMatch::All,
                Matching::Any => KeywordMatch::Any,
                Matching::Exact => KeywordMatch::Exact,
            },
            case_sensitive: self.case_sensitive,
        }
    }
}

pub async fn file(
    client: &Client,
    command: FileCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        FileCommand::Upload {
            room,
            path,
            text,
            name,
        } => {
            let name = match name {
                Some(n) => n,
                None => path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .context("the path has no file name; pass --name")?,
            };
            let data =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let (posted, file) = client.upload(&room, &name, data.into(), &text).await?;
            writeln!(
                out,
                "{}",
                output::file_posted(&room, &posted, &file, as_json)
            )?;
        }
        FileCommand::Download {
            room,
            file_id,
            output: target,
        } => {
            let (file, data) = client.download(&room, &file_id).await?;
            let to_stdout = target.as_ref().is_some_and(|t| t.as_os_str() == "-");
            // A file's own name is always a file in the current directory (`./-` for a file
            // named "-"), whatever path the name might try to hold.
            let target = target.unwrap_or_else(|| {
                let name = std::path::Path::new(&file.name)
                    .file_name()
                    .map_or_else(|| "download".into(), |n| n.to_os_string());
                PathBuf::from(".").join(name)
            });
            if to_stdout {
                out.write_all(&data)?;
                return Ok(());
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            f.write_all(&data)
                .with_context(|| format!("cannot write {}", target.display()))?;
            writeln!(
                out,
                "{}",
                output::file_saved(&file, &target.display().to_string(), as_json)
            )?;
        }
    }
    Ok(())
}

pub async fn moderate(
    client: &Client,
    command: ModerateCommand,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (what, op) = match command {
        ModerateCommand::Remove(f) => (
            "removed",
            ModerateOp::Messages {
                filter: f.filter(),
                action: ModerationAction::Remove,
            },
        ),
        ModerateCommand::Replace { filter, text } => (
            "replaced",
            ModerateOp::Messages {
                filter: filter.filter(),
                action: ModerationAction::Replace { text },
            },
        ),
        ModerateCommand::Clear { room, through } => (
            "removed",
            ModerateOp::ClearHistory {
                room,
                through_ms: through,
            },
        ),
    };
    let n = client.moderate(op).await?;
    let line = if as_json {
        serde_json::json!({ what: n }).to_string()
    } else {
        format!("{what} {n} message{}", if n == 1 { "" } else { "s" })
    };
    writeln!(out, "{line}")?;
    Ok(())
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS][Z]` (UTC) or ms since the epoch, as ms since the epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let bad =
        || format!("{s:?} is not YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS (UTC) or ms since the epoch");
    let s = s.trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00:00"));
    let d: Vec<u32> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t: Vec<u32> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (&[y, mo, day], [h, mi, rest @ ..]) = (d.as_slice(), t.as_slice()) else {
        return Err(bad());
    };
    let sec = rest.first().copied().unwrap_or(0);
    if rest.len() > 1
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&day)
        || *h > 23
        || *mi > 59
        || sec > 60
    {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(y), mo, day);
    if days < 0 {
        return Err(bad());
    }
    Ok((days as u64 * 86_400 + u64::from(*h) * 3600 + u64::from(*mi) * 60 + u64::from(sec)) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_and_round_trip_with_the_printer() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01").unwrap(), 0);
        assert_eq!(parse_time("2000-03-01T00:00:00Z").unwrap(), 951_868_800_000);
        let t = parse_time("2026-11-24T13:45:07").unwrap();
        assert_eq!(output::utc(t), "2026-11-24 13:45:07");
        assert_eq!(parse_time("2026-11-24 13:45").unwrap(), t - 7000);
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-11-24T25:00",
            "2026-11",
            "1969-12-31",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
