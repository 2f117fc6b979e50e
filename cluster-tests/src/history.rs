//! A history checker: tests record what clients did and saw, and [`History::check`] verifies
//! Stoa's guarantees (DESIGN §2) over the whole record.
//!
//! What is recorded:
//! - every post sent (client, room, author, client message id, text) and its outcome: acknowledged
//!   with a seq, failed for sure (the node refused it before it could take effect), or unknown
//!   (timeout, lost connection, unavailable: it may or may not have been committed);
//! - every message a client's event stream delivered, per client and room, and where that client
//!   asked the stream to start;
//! - every read of a room's stored history from a node; *final* reads are taken once the test has
//!   stopped its workload and the nodes have converged.
//!
//! What is checked, per room (the *reference* sequence is the longest read):
//! 1. every read is gap-free (1, 2, 3, …) and a prefix of the reference: one order everywhere;
//!    final reads are all equal to the reference: every node holds the same history;
//! 2. every client's deliveries are consecutive seqs, starting where it asked, each identical to
//!    the reference's message at that seq (a client sees a prefix of the one sequence);
//! 3. every acknowledged post is in the reference exactly once, at the acknowledged seq;
//! 4. no stored or delivered message that was never posted; no post stored twice;
//! 5. a post whose outcome is unknown appears at most once; a post that failed for sure, never.
//!
//! Posts are matched to stored messages by (room, author, text), so each logical post — one
//! client message id, possibly sent several times — needs a text of its own; the recorder panics
//! when a test reuses a text for another client message id.
//!
//! The checker is plain data and functions: `history/tests.rs` feeds it hand-made histories that
//! break each rule and checks that it says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use stoa_client::{ClientError, Posted};
use stoa_proto::{Message, Seq};

/// Index of one recorded post attempt.
pub type OpId = usize;

/// What became of one post attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, no answer recorded yet (counts as unknown at check time).
    Pending,
    /// Acknowledged with this seq: committed, must be stored at that seq.
    Acked(Seq),
    /// Refused for sure before it could take effect (a non-retryable API error).
    Failed(String),
    /// May or may not have taken effect (timeout, lost connection, unavailable, internal).
    Unknown(String),
}

impl Outcome {
    /// Classifies an SDK answer. Only a non-retryable API error is a sure failure: the SDK
    /// retries the retryable codes with the same client message id, and an earlier attempt may
    /// have been committed even when the last one answered `unavailable`.
    pub fn of(result: &Result<Posted, ClientError>) -> Outcome {
        match result {
            Ok(p) => Outcome::Acked(p.seq),
            Err(ClientError::Api(e)) if !e.code.is_retryable() => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Unknown(e.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
struct PostRecord {
    client: String,
    room: String,
    author: String,
    client_msg_id: String,
    text: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, Default)]
struct Deliveries {
    /// Where the client asked the stream to start (`Subscribe { after }`), if recorded.
    after: Option<Seq>,
    messages: Vec<Message>,
}

#[derive(Debug, Clone)]
struct Read {
    node: usize,
    room: String,
    messages: Vec<Message>,
    is_final: bool,
}

#[derive(Debug, Default)]
struct Inner {
    posts: Vec<PostRecord>,
    /// (room, author, text) → client message id, to keep texts unique per logical post.
    texts: HashMap<(String, String, String), String>,
    /// (client, room) → what its event stream delivered.
    deliveries: BTreeMap<(String, String), Deliveries>,
    reads: Vec<Read>,
}

/// A shared, append-only record of a test's client operations. Cheap to clone.
#[derive(Clone, Default)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
}

/// A broken guarantee, with the values that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A read's or delivery run's `index`-th message (0-based) has seq `seq`, not `expected`.
    Gap {
        room: String,
        source: String,
        index: usize,
        expected: Seq,
        seq: Seq,
    },
    /// The message at `seq` differs from the reference's message at that seq.
    Diverged {
        room: String,
        source: String,
        seq: Seq,
        reference: Box<Message>,
        got: Box<Message>,
    },
    /// A final read is shorter than the reference (a node did not converge).
    FinalReadShort {
        room: String,
        node: usize,
        len: usize,
        reference_len: usize,
    },
    /// An acknowledged post is not stored.
    AckedMissing {
        room: String,
        text: String,
        seq: Seq,
    },
    /// An acknowledged post is stored at another seq than the one acknowledged.
    AckedMoved {
        room: String,
        text: String,
        acked: Seq,
        stored: Seq,
    },
    /// Attempts of one logical post were acknowledged with different seqs.
    AckedDifferently {
        room: String,
        client_msg_id: String,
        seqs: Vec<Seq>,
    },
    /// One post stored more than once.
    Duplicate {
        room: String,
        text: String,
        seqs: Vec<Seq>,
    },
    /// A stored or delivered message that no client posted.
    NeverPosted {
        room: String,
        source: String,
        seq: Seq,
        author: String,
        text: String,
    },
    /// A post refused for sure is stored anyway.
    FailedButStored {
        room: String,
        text: String,
        seq: Seq,
        reason: String,
    },
    /// A client's first delivered message is not the one after where it asked to start.
    DeliveryStart {
        client: String,
        room: String,
        after: Seq,
        first: Seq,
    },
    /// A client got a message that no read of the room holds (delivered, but not stored).
    DeliveredNotStored {
        client: String,
        room: String,
        seq: Seq,
        reference_len: usize,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Gap {
                room,
                source,
                index,
                expected,
                seq,
            } => write!(
                f,
                "{room}: {source}: message {index} has seq {seq}, expected {expected}"
            ),
            Violation::Diverged {
                room,
                source,
                seq,
                reference,
                got,
            } => write!(
                f,
                "{room}: {source}: seq {seq} is {:?} by {}, the reference has {:?} by {}",
                got.text, got.author, reference.text, reference.author
            ),
            Violation::FinalReadShort {
                room,
                node,
                len,
                reference_len,
            } => write!(
                f,
                "{room}: node {} holds {len} messages in its final read, the reference {reference_len}",
                node + 1
            ),
            Violation::AckedMissing { room, text, seq } => {
                write!(f, "{room}: acknowledged post {text:?} (seq {seq}) is not stored")
            }
            Violation::AckedMoved {
                room,
                text,
                acked,
                stored,
            } => write!(
                f,
                "{room}: post {text:?} was acknowledged with seq {acked} but is stored at {stored}"
            ),
            Violation::AckedDifferently {
                room,
                client_msg_id,
                seqs,
            } => write!(
                f,
                "{room}: client message id {client_msg_id:?} was acknowledged with seqs {seqs:?}"
            ),
            Violation::Duplicate { room, text, seqs } => {
                write!(f, "{room}: post {text:?} is stored at seqs {seqs:?}")
            }
            Violation::NeverPosted {
                room,
                source,
                seq,
                author,
                text,
            } => write!(
                f,
                "{room}: {source}: seq {seq} ({text:?} by {author}) was never posted"
            ),
            Violation::FailedButStored {
                room,
                text,
                seq,
                reason,
            } => write!(
                f,
                "{room}: post {text:?} failed ({reason}) but is stored at seq {seq}"
            ),
            Violation::DeliveryStart {
                client,
                room,
                after,
                first,
            } => write!(
                f,
                "{room}: client {client} asked for messages after {after} and first got {first}"
            ),
            Violation::DeliveredNotStored {
                client,
                room,
                seq,
                reference_len,
            } => write!(
                f,
                "{room}: client {client} got seq {seq}, but no read holds more than {reference_len}"
            ),
        }
    }
}

/// What a passing history held, for the test log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rooms: usize,
    pub stored: usize,
    pub acked: usize,
    pub unknown: usize,
    pub failed: usize,
    pub unknown_stored: usize,
    pub delivered: usize,
    pub reads: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rooms, {} messages stored; posts: {} acknowledged, {} unknown ({} of them stored), \
             {} failed; {} deliveries; {} reads",
            self.rooms,
            self.stored,
            self.acked,
            self.unknown,
            self.unknown_stored,
            self.failed,
            self.delivered,
            self.reads
        )
    }
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panics while recording fails anyway; the record stays usable for its report.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A post attempt is about to be sent. Panics if `text` was used for another client message
    /// id in the same room by the same author (the checker could not tell the posts apart).
    pub fn post_sent(
        &self,
        client: &str,
        room: &str,
        author: &str,
        client_msg_id: &str,
        text: &str,
    ) -> OpId {
        let mut h = self.lock();
        let key = (room.to_string(), author.to_string(), text.to_string());
        match h.texts.get(&key) {
            Some(cid) => assert_eq!(
                cid, client_msg_id,
                "test bug: text {text:?} reused for a second client message id in {room}"
            ),
            None => {
                h.texts.insert(key, client_msg_id.to_string());
            }
        }
        h.posts.push(PostRecord {
            client: client.to_string(),
            room: room.to_string(),
            author: author.to_string(),
            client_msg_id: client_msg_id.to_string(),
            text: text.to_string(),
            outcome: Outcome::Pending,
        });
        h.posts.len() - 1
    }

    pub fn post_outcome(&self, op: OpId, outcome: Outcome) {
        self.lock().posts[op].outcome = outcome;
    }

    /// Records the SDK's answer (see [`Outcome::of`]) and returns the outcome.
    pub fn post_result(&self, op: OpId, result: &Result<Posted, ClientError>) -> Outcome {
        let outcome = Outcome::of(result);
        self.post_outcome(op, outcome.clone());
        outcome
    }

    /// `client` subscribed `room` asking for the messages after `after`.
    pub fn subscribed(&self, client: &str, room: &str, after: Seq) {
        self.lock()
            .deliveries
            .entry((client.to_string(), room.to_string()))
            .or_default()
            .after = Some(after);
    }

    /// `client`'s event stream handed over `message`.
    pub fn delivered(&self, client: &str, message: &Message) {
        self.lock()
            .deliveries
            .entry((client.to_string(), message.room.clone()))
            .or_default()
            .messages
            .push(message.clone());
    }

    /// A read of `room`'s stored history from node `node` (0-based), oldest first, from seq 1.
    pub fn node_read(&self, node: usize, room: &str, messages: Vec<Message>) {
        self.push_read(node, room, messages, false);
    }

    /// Like [`History::node_read`], taken once the workload stopped and the nodes converged:
    /// every final read of a room must hold the whole reference sequence.
    pub fn final_read(&self, node: usize, room: &str, messages: Vec<Message>) {
        self.push_read(node, room, messages, true);
    }

    fn push_read(&self, node: usize, room: &str, messages: Vec<Message>, is_final: bool) {
        self.lock().reads.push(Read {
            node,
            room: room.to_string(),
            messages,
            is_final,
        });
    }

    /// Rooms some post went to.
    pub fn rooms(&self) -> BTreeSet<String> {
        self.lock().posts.iter().map(|p| p.room.clone()).collect()
    }

    /// Posts acknowledged so far, by every client (`None`) or by one.
    pub fn acked(&self, client: Option<&str>) -> usize {
        self.lock()
            .posts
            .iter()
            .filter(|p| client.is_none_or(|c| p.client == c))
            .filter(|p| matches!(p.outcome, Outcome::Acked(_)))
            .count()
    }

    /// Outcomes recorded so far, for a test's own assertions.
    pub fn outcomes(&self) -> Vec<(String, String, Outcome)> {
        self.lock()
            .posts
            .iter()
            .map(|p| (p.client.clone(), p.text.clone(), p.outcome.clone()))
            .collect()
    }

    /// Panics with every violation, one per line, unless the history is correct.
    pub fn assert_ok(&self) -> Summary {
        match self.check() {
            Ok(summary) => {
                tracing::info!(%summary, "history checked");
                summary
            }
            Err(violations) => {
                let lines: Vec<String> = violations.iter().map(|v| format!("  {v}")).collect();
                panic!(
                    "the history breaks {} guarantee(s):\n{}",
                    violations.len(),
                    lines.join("\n")
                );
            }
        }
    }

    /// Checks every rule of the module docs; returns every violation found.
    pub fn check(&self) -> Result<Summary, Vec<Violation>> {
        let h = self.lock();
        let mut v = Vec::new();
        let mut summary = Summary {
            reads: h.reads.len(),
            ..Summary::default()
        };

        let mut rooms: BTreeSet<&str> = h.posts.iter().map(|p| p.room.as_str()).collect();
        rooms.extend(h.reads.iter().map(|r| r.room.as_str()));
        rooms.extend(h.deliveries.keys().map(|(_, room)| room.as_str()));
        summary.rooms = rooms.len();

        // Logical posts: (room, author, client message id) → attempts.
        let mut logical: BTreeMap<(&str, &str, &str), Vec<&PostRecord>> = BTreeMap::new();
        for p in &h.posts {
            logical
                .entry((&p.room, &p.author, &p.client_msg_id))
                .or_default()
                .push(p);
        }

        for room in rooms {
            let reads: Vec<&Read> = h.reads.iter().filter(|r| r.room == room).collect();
            let reference: &[Message] = reads
                .iter()
                .map(|r| r.messages.as_slice())
                .max_by_key(|m| m.len())
                .unwrap_or(&[]);
            summary.stored += reference.len();

            // 1. one gap-free order on every node
            for r in &reads {
                let source = format!("node {} read", r.node + 1);
                check_run(room, &source, &r.messages, Seq::ZERO, reference, &mut v);
                if r.is_final && r.messages.len() < reference.len() {
                    v.push(Violation::FinalReadShort {
                        room: room.to_string(),
                        node: r.node,
                        len: r.messages.len(),
                        reference_len: reference.len(),
                    });
                }
            }

            // 2. each client sees a prefix (from where it started) of the same sequence
            for ((client, r), d) in &h.deliveries {
                if r != room {
                    continue;
                }
                summary.delivered += d.messages.len();
                let Some(first) = d.messages.first() else {
                    continue;
                };
                let start = match d.after {
                    Some(after) if first.seq != after.next() => {
                        v.push(Violation::DeliveryStart {
                            client: client.clone(),
                            room: room.to_string(),
                            after,
                            first: first.seq,
                        });
                        first.seq.0 - 1
                    }
                    Some(after) => after.0,
                    None => first.seq.0.saturating_sub(1),
                };
                let source = format!("client {client} deliveries");
                check_run(room, &source, &d.messages, Seq(start), reference, &mut v);
                if let Some(beyond) = d.messages.iter().find(|m| m.seq.0 > reference.len() as u64) {
                    v.push(Violation::DeliveredNotStored {
                        client: client.clone(),
                        room: room.to_string(),
                        seq: beyond.seq,
                        reference_len: reference.len(),
                    });
                }
            }

            // 4. every stored or delivered message was posted, and no post is stored twice
            let mut stored_at: HashMap<(&str, &str), Vec<Seq>> = HashMap::new();
            for m in reference {
                stored_at
                    .entry((m.author.as_str(), m.text.as_str()))
                    .or_default()
                    .push(m.seq);
            }
            let posted = |author: &str, text: &str| {
                h.texts
                    .contains_key(&(room.to_string(), author.to_string(), text.to_string()))
            };
            let mut unposted: BTreeSet<Seq> = BTreeSet::new();
            for m in reference {
                if !posted(&m.author, &m.text) && unposted.insert(m.seq) {
                    v.push(Violation::NeverPosted {
                        room: room.to_string(),
                        source: "stored".into(),
                        seq: m.seq,
                        author: m.author.clone(),
                        text: m.text.clone(),
                    });
                }
            }
            for ((client, r), d) in &h.deliveries {
                if r != room {
                    continue;
                }
                for m in &d.messages {
                    if !posted(&m.author, &m.text) && unposted.insert(m.seq) {
                        v.push(Violation::NeverPosted {
                            room: room.to_string(),
                            source: format!("client {client} deliveries"),
                            seq: m.seq,
                            author: m.author.clone(),
                            text: m.text.clone(),
                        });
                    }
                }
            }
            let mut duplicates: Vec<(&(&str, &str), &Vec<Seq>)> =
                stored_at.iter().filter(|(_, s)| s.len() > 1).collect();
            duplicates.sort();
            for ((_, text), seqs) in duplicates {
                v.push(Violation::Duplicate {
                    room: room.to_string(),
                    text: text.to_string(),
                    seqs: seqs.clone(),
                });
            }

            // 3. and 5. acknowledged posts exactly once at their seq; unknown at most once
            // (checked above, as every post); failed never
            for ((r, author, cid), attempts) in &logical {
                if *r != room {
                    continue;
                }
                let text = attempts[0].text.as_str();
                let found = stored_at.get(&(*author, text)).map_or(&[][..], |s| s);
                let acked: BTreeSet<Seq> = attempts
                    .iter()
                    .filter_map(|p| match p.outcome {
                        Outcome::Acked(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                if acked.len() > 1 {
                    v.push(Violation::AckedDifferently {
                        room: room.to_string(),
                        client_msg_id: cid.to_string(),
                        seqs: acked.iter().copied().collect(),
                    });
                }
                if let Some(&seq) = acked.iter().next() {
                    summary.acked += 1;
                    match found.first() {
                        None => v.push(Violation::AckedMissing {
                            room: room.to_string(),
                            text: text.to_string(),
                            seq,
                        }),
                        Some(&stored) if found.len() == 1 && stored != seq => {
                            v.push(Violation::AckedMoved {
                                room: room.to_string(),
                                text: text.to_string(),
                                acked: seq,
                                stored,
                            })
                        }
                        Some(_) => {}
                    }
                    continue;
                }
                let unknown = attempts
                    .iter()
                    .any(|p| matches!(p.outcome, Outcome::Unknown(_) | Outcome::Pending));
                if unknown {
                    summary.unknown += 1;
                    summary.unknown_stored += usize::from(!found.is_empty());
                    continue;
                }
                summary.failed += 1;
                if let Some(&seq) = found.first() {
                    let reason = attempts
                        .iter()
                        .find_map(|p| match &p.outcome {
                            Outcome::Failed(r) => Some(r.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    v.push(Violation::FailedButStored {
                        room: room.to_string(),
                        text: text.to_string(),
                        seq,
                        reason,
                    });
                }
            }
        }
        if v.is_empty() {
            Ok(summary)
        } else {
            Err(v)
        }
    }
}

/// A run of messages that should be seqs `after + 1, after + 2, …`, each equal to the
/// reference's message at that seq.
fn check_run(
    room: &str,
    source: &str,
    run: &[Message],
    after: Seq,
    reference: &[Message],
    v: &mut Vec<Violation>,
) {
    for (i, m) in run.iter().enumerate() {
        let want = Seq(after.0 + i as u64 + 1);
        if m.seq != want {
            v.push(Violation::Gap {
                room: room.to_string(),
                source: source.to_string(),
                index: i,
                expected: want,
                seq: m.seq,
            });
            // Everything after a gap is off by the same shift; one report is enough.
            return;
        }
        if let Some(r) = reference.get(m.seq.0 as usize - 1) {
            if r != m {
                v.push(Violation::Diverged {
                    room: room.to_string(),
                    source: source.to_string(),
                    seq: m.seq,
                    reference: Box::new(r.clone()),
                    got: Box::new(m.clone()),
                });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
