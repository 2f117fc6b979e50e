//! Moderation rules: which stored messages a filter selects, and what removing or replacing them
//! leaves in their place. Pure functions, applied by every replica of a shard at the same log index,
//! so every replica moderates the same messages.
//!
//! A moderated message keeps its seq (a removal leaves a tombstone, never a hole), because readers
//! resume by seq and the sequence of a room is gap-free.

use crate::domain::shard::StoredMessage;
use stoa_proto::limits::{KEYWORDS_MAX, KEYWORD_CHARS_MAX, REPLACEMENT_CHARS_MAX};
use stoa_proto::{
    ApiError, ErrorCode, KeywordMatch, MessageFilter, Moderation, ModerationAction,
    DEFAULT_REPLACEMENT,
};

/// Refuse filters that are malformed or would select every message of the cluster by accident.
pub fn validate(filter: &MessageFilter, action: &ModerationAction) -> Result<(), ApiError> {
    let invalid = |m: String| Err(ApiError::new(ErrorCode::Invalid, m));
    if filter.room.is_none()
        && filter.author.is_none()
        && filter.from_ms.is_none()
        && filter.to_ms.is_none()
        && filter.keywords.is_empty()
    {
        return invalid(
            "a moderation filter needs a room, an author, a time range or keywords".into(),
        );
    }
    if let (Some(from), Some(to)) = (filter.from_ms, filter.to_ms) {
        if from > to {
            return invalid(format!("time range starts ({from}) after it ends ({to})"));
        }
    }
    if filter.keywords.len() > KEYWORDS_MAX {
        return invalid(format!(
            "{} keywords, at most {KEYWORDS_MAX}",
            filter.keywords.len()
        ));
    }
    for k in &filter.keywords {
        if words(k, true).next().is_none() {
            return invalid(format!("keyword {k:?} has no word in it"));
        }
        if k.chars().count() > KEYWORD_CHARS_MAX {
            return invalid(format!(
                "a keyword is longer than {KEYWORD_CHARS_MAX} characters"
            ));
        }
    }
    if let ModerationAction::Replace { text: Some(t) } = action {
        if t.chars().count() > REPLACEMENT_CHARS_MAX {
            return invalid(format!(
                "replacement text is longer than {REPLACEMENT_CHARS_MAX} characters"
            ));
        }
    }
    Ok(())
}

/// Whether `filter` selects `m` (its room is chosen by the caller). A removed message is never
/// selected again; a replaced one is matched on its replacement text.
pub fn selects(filter: &MessageFilter, m: &StoredMessage) -> bool {
    if m.moderated == Some(Moderation::Removed) {
        return false;
    }
    if filter.author.as_ref().is_some_and(|a| *a != m.author) {
        return false;
    }
    if filter.from_ms.is_some_and(|t| m.ts_ms < t) || filter.to_ms.is_some_and(|t| m.ts_ms > t) {
        return false;
    }
    keywords_match(
        &m.text,
        &filter.keywords,
        filter.matching,
        filter.case_sensitive,
    )
}

/// Whether `text` holds the keywords. Words are runs of letters and digits, compared whole; no
/// keywords match everything.
pub fn keywords_match(
    text: &str,
    keywords: &[String],
    matching: KeywordMatch,
    case_sensitive: bool,
) -> bool {
    if keywords.is_empty() {
        return true;
    }
    let text: Vec<String> = words(text, case_sensitive).collect();
    let has = |k: &str| {
        let k: Vec<String> = words(k, case_sensitive).collect();
        contains_phrase(&text, &k)
    };
    match matching {
        KeywordMatch::All => keywords.iter().all(|k| has(k)),
        KeywordMatch::Any => keywords.iter().any(|k| has(k)),
        KeywordMatch::Exact => has(&keywords.join(" ")),
    }
}

fn words(s: &str, case_sensitive: bool) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| {
            if case_sensitive {
                w.to_string()
            } else {
                w.to_lowercase()
            }
        })
}

fn contains_phrase(text: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && text.windows(phrase.len()).any(|w| w == phrase)
}

/// The message that takes the place of `m`.
pub fn moderate(m: &StoredMessage, action: &ModerationAction) -> StoredMessage {
    match action {
        ModerationAction::Remove => StoredMessage {
            text: String::new(),
            file: None,
            moderated: Some(Moderation::Removed),
            ..m.clone()
        },
        ModerationAction::Replace { text } => StoredMessage {
            text: text.as_deref().unwrap_or(DEFAULT_REPLACEMENT).to_string(),
            file: None,
            moderated: Some(Moderation::Replaced),
            ..m.clone()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(author: &str, text: &str, ts_ms: u64) -> StoredMessage {
        StoredMessage {
            author: author.into(),
            text: text.into(),
            ts_ms,
            alert: false,
            moderated: None,
            file: None,
        }
    }

    fn kw(words: &[&str], matching: KeywordMatch) -> MessageFilter {
        MessageFilter {
            room: Some("r".into()),
            keywords: words.iter().map(|w| w.to_string()).collect(),
            matching,
            ..Default::default()
        }
    }

    #[test]
    fn all_any_and_exact_keywords_ignore_case_by_default() {
        let m = msg("ann", "The Quarterly numbers are, frankly, BAD.", 1);
        assert!(selects(&kw(&["bad", "quarterly"], KeywordMatch::All), &m));
        assert!(!selects(&kw(&["bad", "good"], KeywordMatch::All), &m));
        assert!(selects(&kw(&["bad", "good"], KeywordMatch::Any), &m));
        assert!(!selects(&kw(&["good", "fine"], KeywordMatch::Any), &m));
        assert!(selects(
            &kw(&["quarterly numbers"], KeywordMatch::Exact),
            &m
        ));
        assert!(selects(
            &kw(&["quarterly", "numbers"], KeywordMatch::Exact),
            &m
        ));
        assert!(!selects(
            &kw(&["numbers quarterly"], KeywordMatch::Exact),
            &m
        ));
    }

    #[test]
    fn words_match_whole_and_case_sensitivity_is_optional() {
        let m = msg("ann", "badge of Honour", 1);
        assert!(!selects(&kw(&["bad"], KeywordMatch::Any), &m));
        let mut f = kw(&["honour"], KeywordMatch::All);
        assert!(selects(&f, &m));
        f.case_sensitive = true;
        assert!(!selects(&f, &m));
        f.keywords = vec!["Honour".into()];
        assert!(selects(&f, &m));
    }

    #[test]
    fn author_and_time_range_narrow_the_selection() {
        let f = MessageFilter {
            room: Some("r".into()),
            author: Some("bob".into()),
            from_ms: Some(10),
            to_ms: Some(20),
            ..Default::default()
        };
        assert!(selects(&f, &msg("bob", "x", 10)));
        assert!(selects(&f, &msg("bob", "x", 20)));
        assert!(!selects(&f, &msg("bob", "x", 9)));
        assert!(!selects(&f, &msg("bob", "x", 21)));
        assert!(!selects(&f, &msg("ann", "x", 15)));
    }

    #[test]
    fn removal_leaves_a_tombstone_and_replacement_the_default_text() {
        let mut m = msg("ann", "secret plans", 5);
        m.file = Some(stoa_proto::FileRef {
            id: "f".into(),
            name: "plans.pdf".into(),
            size: 1,
            sha256: "00".into(),
        });
        let removed = moderate(&m, &ModerationAction::Remove);
        assert_eq!(removed.text, "");
        assert_eq!(removed.file, None);
        assert_eq!(removed.moderated, Some(Moderation::Removed));
        assert_eq!((removed.author.as_str(), removed.ts_ms), ("ann", 5));
        let replaced = moderate(&m, &ModerationAction::Replace { text: None });
        assert_eq!(replaced.text, DEFAULT_REPLACEMENT);
        assert_eq!(replaced.moderated, Some(Moderation::Replaced));
        let custom = moderate(
            &m,
            &ModerationAction::Replace {
                text: Some("[redacted]".into()),
            },
        );
        assert_eq!(custom.text, "[redacted]");
    }

    #[test]
    fn removed_messages_are_not_selected_again_replaced_ones_are() {
        let f = MessageFilter {
            room: Some("r".into()),
            ..Default::default()
        };
        let m = msg("ann", "x", 1);
        assert!(!selects(&f, &moderate(&m, &ModerationAction::Remove)));
        let replaced = moderate(&m, &ModerationAction::Replace { text: None });
        assert!(selects(&f, &replaced));
        assert!(selects(
            &kw(&["administrator"], KeywordMatch::All),
            &replaced
        ));
    }

    #[test]
    fn filters_that_select_everything_or_nothing_sensible_are_refused() {
        let remove = ModerationAction::Remove;
        let refused = |f: &MessageFilter, a: &ModerationAction| matches!(validate(f, a), Err(e) if e.code == ErrorCode::Invalid);
        assert!(refused(&MessageFilter::default(), &remove));
        let mut f = MessageFilter {
            author: Some("ann".into()),
            ..Default::default()
        };
        assert!(validate(&f, &remove).is_ok());
        f.from_ms = Some(5);
        f.to_ms = Some(4);
        assert!(refused(&f, &remove));
        f.to_ms = None;
        f.keywords = vec!["  ,".into()];
        assert!(refused(&f, &remove));
        f.keywords = vec!["x".into(); KEYWORDS_MAX + 1];
        assert!(refused(&f, &remove));
        f.keywords = vec!["x".repeat(KEYWORD_CHARS_MAX + 1)];
        assert!(refused(&f, &remove));
        f.keywords.clear();
        let long = ModerationAction::Replace {
            text: Some("x".repeat(REPLACEMENT_CHARS_MAX + 1)),
        };
        assert!(refused(&f, &long));
    }
}
