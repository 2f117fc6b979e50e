//! The auditor: what every member connection received, against what was acknowledged. Pure: no
//! I/O, no clock, no locks; the workload feeds it and the tests below drive it directly.
//!
//! - [`Subscription`]: the seqs one member connection received in one room, kept as ranges, so a
//!   duplicate, a reordering or a gap is seen at once and memory grows with gaps, not messages.
//! - [`RoomLedger`]: per room, the post acknowledged at each seq and what members received there.
//! - [`finish`]: after the drain, counts `lost`, `duplicates`, `reordered` and `phantom`.
//! - [`check_history`]: a room's stored history against its ledger (W3).
//!
//! Definitions. A room's *last* seq is the highest seq acknowledged or received in it. Every member
//! subscribed with start seq `s` must receive each seq of `(s, last]` once, in increasing order:
//! - *lost*: a seq of `(s, last]` the member never received (acknowledged or not: a received seq
//!   above it proves it was committed);
//! - *duplicate*: a seq received again, or a seq at or below `s`;
//! - *reordered*: a seq received after a higher one;
//! - *phantom*: a message whose content is not the post acknowledged at its seq; at a seq with no
//!   acknowledgement, one that is not a post sent by the load generator and left unacknowledged
//!   (in flight or failed at stop: such a post may be committed); or a seq beyond any post sent.

use crate::payload::Stamp;
use std::collections::{HashMap, HashSet};

/// How one received message relates to what the member had received before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// New and above everything received so far.
    InOrder,
    /// New but below a seq received before.
    Reordered,
    /// Received before, or at or below the subscription's start.
    Duplicate,
}

/// The seqs one member connection received in one room.
#[derive(Debug, Clone)]
pub struct Subscription {
    start: u64,
    /// Received seqs above `start`: sorted, disjoint, non-adjacent inclusive ranges.
    ranges: Vec<(u64, u64)>,
    duplicates: u64,
    reordered: u64,
}

impl Subscription {
    /// A subscription whose live delivery starts after `start` (the room's seq at subscription).
    pub fn new(start: u64) -> Self {
        Subscription {
            start,
            ranges: Vec::new(),
            duplicates: 0,
            reordered: 0,
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn deliver(&mut self, seq: u64) -> Delivery {
        if seq <= self.start || self.contains(seq) {
            self.duplicates += 1;
            return Delivery::Duplicate;
        }
        let highest = self.ranges.last().map_or(self.start, |r| r.1);
        self.insert(seq);
        if seq < highest {
            self.reordered += 1;
            Delivery::Reordered
        } else {
            Delivery::InOrder
        }
    }

    /// The highest seq up to which every seq after the start has been received.
    pub fn contiguous(&self) -> u64 {
        match self.ranges.first() {
            Some(&(lo, hi)) if lo == self.start + 1 => hi,
            _ => self.start,
        }
    }

    /// Distinct seqs received in `(start, last]`.
    pub fn received_up_to(&self, last: u64) -> u64 {
        self.ranges
            .iter()
            .take_while(|r| r.0 <= last)
            .map(|&(lo, hi)| hi.min(last) - lo + 1)
            .sum()
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    fn contains(&self, seq: u64) -> bool {
        if self.ranges.last().is_none_or(|r| seq > r.1) {
            return false;
        }
        let i = self.ranges.partition_point(|r| r.0 <= seq);
        i > 0 && self.ranges[i - 1].1 >= seq
    }

    /// Adds a seq not yet received.
    fn insert(&mut self, seq: u64) {
        match self.ranges.last_mut() {
            Some(last) if last.1 + 1 == seq => {
                last.1 = seq;
                return;
            }
            Some(last) if last.1 < seq => {
                self.ranges.push((seq, seq));
                return;
            }
            None => {
                self.ranges.push((seq, seq));
                return;
            }
            Some(_) => {}
        }
        // Below the last range: find the first range above `seq` (none contains it).
        let i = self.ranges.partition_point(|r| r.0 < seq);
        let joins_prev = i > 0 && self.ranges[i - 1].1 + 1 == seq;
        let joins_next = i < self.ranges.len() && self.ranges[i].0 == seq + 1;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = seq,
            (false, true) => self.ranges[i].0 = seq,
            (false, false) => self.ranges.insert(i, (seq, seq)),
        }
    }
}

/// Why an acknowledgement could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// Another post was acknowledged at the same seq.
    Conflict { previous: Stamp },
    /// The seq is at or below the room's seq before the load, or beyond any post sent.
    OutOfRange,
}

#[derive(Debug, Default, Clone)]
struct Slot {
    acked: Option<Stamp>,
    /// Contents received at this seq (`None`: not a load-generator post), with how many members
    /// received each. Almost always one entry.
    seen: Vec<(Option<Stamp>, u32)>,
}

/// One room: the post acknowledged at each seq after `base` and the contents received there.
#[derive(Debug, Clone)]
pub struct RoomLedger {
    base: u64,
    slots: Vec<Slot>,
    out_of_range: u64,
}

impl RoomLedger {
    /// A room whose last seq before the load was `base`.
    pub fn new(base: u64) -> Self {
        RoomLedger {
            base,
            slots: Vec::new(),
            out_of_range: 0,
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// The highest seq acknowledged or received, or `base`.
    pub fn last(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// The post acknowledged at `seq`, if any.
    pub fn acked(&self, seq: u64) -> Option<Stamp> {
        self.slot_index(seq)
            .and_then(|i| self.slots.get(i))
            .and_then(|s| s.acked)
    }

    /// Records that `stamp` was acknowledged at `seq`. `seq_max`: the highest seq the posts sent
    /// so far can have (base + posts sent to the room).
    pub fn ack(&mut self, seq: u64, stamp: Stamp, seq_max: u64) -> Result<(), AckError> {
        let slot = self.slot_mut(seq, seq_max).ok_or(AckError::OutOfRange)?;
        match slot.acked {
            Some(previous) if previous != stamp => Err(AckError::Conflict { previous }),
            _ => {
                slot.acked = Some(stamp);
                Ok(())
            }
        }
    }

    /// Records what one member received at `seq` (once per member: duplicates are the
    /// subscription's business). `None`: not a load-generator post. Answers false, and counts a
    /// phantom, if `seq` is beyond `seq_max` (or at or below the base).
    pub fn deliver(&mut self, seq: u64, content: Option<Stamp>, seq_max: u64) -> bool {
        let Some(slot) = self.slot_mut(seq, seq_max) else {
            self.out_of_range += 1;
            return false;
        };
        match slot.seen.iter_mut().find(|(c, _)| *c == content) {
            Some((_, n)) => *n += 1,
            None => slot.seen.push((content, 1)),
        }
        true
    }

    fn slot_index(&self, seq: u64) -> Option<usize> {
        (seq > self.base).then(|| (seq - self.base - 1) as usize)
    }

    fn slot_mut(&mut self, seq: u64, seq_max: u64) -> Option<&mut Slot> {
        if seq > seq_max {
            return None;
        }
        let i = self.slot_index(seq)?;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, Slot::default);
        }
        Some(&mut self.slots[i])
    }
}

/// What the audit found after the drain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Seqs with an acknowledged post, over all rooms.
    pub posts_acked: u64,
    /// Posts not acknowledged (in flight or failed at stop) that members received: committed.
    pub committed_unacked: u64,
    /// Sum over subscriptions of the seqs it had to receive.
    pub expected_deliveries: u64,
    /// Of those, the ones it received (each once).
    pub received_deliveries: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub phantom: u64,
}

impl Findings {
    /// Whether the run kept every guarantee the audit checks.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.reordered == 0 && self.phantom == 0
    }
}

/// Counts, after the drain, against the ledgers of all rooms. `unacked`: (room, post) for every
/// post sent but not acknowledged; `subs`: (room, subscription) for every member subscription.
pub fn finish<'a>(
    rooms: &[RoomLedger],
    unacked: &[(usize, Stamp)],
    subs: impl IntoIterator<Item = (usize, &'a Subscription)>,
) -> Findings {
    let mut f = Findings::default();
    let mut unacked_by_room: Vec<HashSet<Stamp>> = vec![HashSet::new(); rooms.len()];
    for &(room, stamp) in unacked {
        if let Some(set) = unacked_by_room.get_mut(room) {
            set.insert(stamp);
        }
    }
    for (room, ledger) in rooms.iter().enumerate() {
        f.phantom += ledger.out_of_range;
        let mut claimed = HashSet::new();
        for slot in &ledger.slots {
            let received: u64 = slot.seen.iter().map(|&(_, n)| u64::from(n)).sum();
            if let Some(acked) = slot.acked {
                f.posts_acked += 1;
                let matching = slot
                    .seen
                    .iter()
                    .find(|(c, _)| *c == Some(acked))
                    .map_or(0, |&(_, n)| u64::from(n));
                f.phantom += received - matching;
                continue;
            }
            // No acknowledgement: the content most members received, if it is a post sent to
            // this room, left unacknowledged and not already found at another seq.
            let best = slot
                .seen
                .iter()
                .filter_map(|&(c, n)| Some((c?, n)))
                .filter(|(c, _)| unacked_by_room[room].contains(c) && !claimed.contains(c))
                .max_by_key(|&(c, n)| (n, std::cmp::Reverse(c)));
            match best {
                Some((c, n)) => {
                    claimed.insert(c);
                    f.committed_unacked += 1;
                    f.phantom += received - u64::from(n);
                }
                None => f.phantom += received,
            }
        }
    }
    for (room, sub) in subs {
        let last = rooms.get(room).map_or(0, RoomLedger::last);
        f.duplicates += sub.duplicates();
        f.reordered += sub.reordered();
        if last > sub.start() {
            let expected = last - sub.start();
            let received = sub.received_up_to(last);
            f.expected_deliveries += expected;
            f.received_deliveries += received;
            f.lost += expected - received;
        }
    }
    f
}

/// A room's stored history checked against its ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFindings {
    pub messages: u64,
    /// Acknowledged posts not stored at their seq.
    pub lost: u64,
    /// Seqs listed twice (or out of order), and posts stored at more than one seq.
    pub duplicates: u64,
    /// Seqs missing between 1 and the last one listed.
    pub gaps: u64,
}

impl HistoryFindings {
    pub fn add(&mut self, o: &HistoryFindings) {
        self.messages += o.messages;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.gaps += o.gaps;
    }

    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.gaps == 0
    }
}

/// Checks a room's whole history, `(seq, content)` oldest first from seq 1, against its ledger:
/// gap-free seqs, every acknowledged post at its seq, no post at two seqs.
pub fn check_history(ledger: &RoomLedger, history: &[(u64, Option<Stamp>)]) -> HistoryFindings {
    let mut f = HistoryFindings {
        messages: history.len() as u64,
        ..HistoryFindings::default()
    };
    let mut prev = 0;
    let mut by_seq = HashMap::with_capacity(history.len());
    let mut stamps: HashMap<Stamp, u64> = HashMap::new();
    for &(seq, content) in history {
        if seq <= prev {
            f.duplicates += 1;
            continue;
        }
        f.gaps += seq - prev - 1;
        prev = seq;
        by_seq.insert(seq, content);
        if let Some(c) = content {
            *stamps.entry(c).or_default() += 1;
        }
    }
    f.duplicates += stamps.values().map(|n| n - 1).sum::<u64>();
    for (i, slot) in ledger.slots.iter().enumerate() {
        let seq = ledger.base + i as u64 + 1;
        if let Some(acked) = slot.acked {
            if by_seq.get(&seq) != Some(&Some(acked)) {
                f.lost += 1;
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(publisher: u32, counter: u64) -> Stamp {
        Stamp {
            publisher,
            counter,
            sent_us: 1000 + counter,
        }
    }

    /// A room with base `base` where seqs base+1.. were acked with st(0, i).
    fn acked_room(base: u64, n: u64) -> RoomLedger {
        let mut l = RoomLedger::new(base);
        for i in 1..=n {
            l.ack(base + i, st(0, i), u64::MAX).unwrap();
        }
        l
    }

    fn deliver_all(
        l: &mut RoomLedger,
        sub: &mut Subscription,
        seqs: impl IntoIterator<Item = u64>,
    ) {
        for s in seqs {
            if sub.deliver(s) != Delivery::Duplicate {
                let c = l.acked(s);
                l.deliver(s, c, u64::MAX);
            }
        }
    }

    #[test]
    fn in_order_delivery_is_clean() {
        let mut l = acked_room(5, 10);
        let mut a = Subscription::new(5);
        let mut b = Subscription::new(5);
        deliver_all(&mut l, &mut a, 6..=15);
        deliver_all(&mut l, &mut b, 6..=15);
        assert_eq!(a.contiguous(), 15);
        let f = finish(&[l], &[], [(0, &a), (0, &b)]);
        assert!(f.clean(), "{f:?}");
        assert_eq!(f.posts_acked, 10);
        assert_eq!(f.expected_deliveries, 20);
        assert_eq!(f.received_deliveries, 20);
    }

    #[test]
    fn missing_seqs_are_lost() {
        let mut l = acked_room(0, 10);
        let mut a = Subscription::new(0);
        deliver_all(&mut l, &mut a, [1, 2, 3, 5, 6, 7, 8]);
        assert_eq!(a.contiguous(), 3);
        let f = finish(&[l], &[], [(0, &a)]);
        assert_eq!(
            (f.lost, f.reordered, f.duplicates),
            (3, 0, 0),
            "4, 9 and 10"
        );
        assert_eq!(f.received_deliveries, 7);
    }

    #[test]
    fn a_member_that_received_nothing_lost_everything() {
        let l = acked_room(0, 4);
        let a = Subscription::new(0);
        let f = finish(&[l], &[], [(0, &a)]);
        assert_eq!(f.lost, 4);
    }

    #[test]
    fn duplicates_and_seqs_before_the_start() {
        let mut l = acked_room(3, 3);
        let mut a = Subscription::new(3);
        assert_eq!(a.deliver(3), Delivery::Duplicate, "at the start seq");
        deliver_all(&mut l, &mut a, [4, 5, 5, 6, 4]);
        let f = finish(&[l], &[], [(0, &a)]);
        assert_eq!((f.duplicates, f.lost, f.phantom), (3, 0, 0));
    }

    #[test]
    fn late_seqs_are_reordered_not_lost() {
        let mut l = acked_room(0, 6);
        let mut a = Subscription::new(0);
        deliver_all(&mut l, &mut a, [1, 3, 5, 6]);
        assert_eq!(a.contiguous(), 1);
        assert_eq!(a.deliver(4), Delivery::Reordered);
        assert_eq!(a.deliver(2), Delivery::Reordered);
        assert_eq!(a.contiguous(), 6);
        assert_eq!(a.ranges, vec![(1, 6)], "ranges merge");
        let f = finish(&[l], &[], [(0, &a)]);
        assert_eq!((f.reordered, f.lost, f.duplicates), (2, 0, 0));
    }

    #[test]
    fn ranges_merge_in_every_order() {
        let seqs = [7u64, 3, 5, 1, 2, 6, 4, 9, 8, 10];
        let mut a = Subscription::new(0);
        for (i, &s) in seqs.iter().enumerate() {
            assert_ne!(a.deliver(s), Delivery::Duplicate);
            let got: Vec<u64> = a.ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect();
            let mut want: Vec<u64> = seqs[..=i].to_vec();
            want.sort();
            assert_eq!(got, want);
            assert!(
                a.ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                "{:?}",
                a.ranges
            );
        }
        assert_eq!(a.contiguous(), 10);
        assert_eq!(a.received_up_to(8), 8);
    }

    #[test]
    fn other_content_at_an_acked_seq_is_phantom() {
        let mut l = acked_room(0, 3);
        let mut a = Subscription::new(0);
        let mut b = Subscription::new(0);
        deliver_all(&mut l, &mut a, 1..=3);
        for s in 1..=3 {
            b.deliver(s);
            l.deliver(s, if s == 2 { Some(st(9, 9)) } else { l.acked(s) }, 10);
        }
        let f = finish(&[l], &[], [(0, &a), (0, &b)]);
        assert_eq!((f.phantom, f.lost), (1, 0));
    }

    #[test]
    fn content_received_before_its_ack_is_checked_at_the_end() {
        let mut l = RoomLedger::new(0);
        let mut a = Subscription::new(0);
        a.deliver(1);
        l.deliver(1, Some(st(1, 1)), 1);
        l.ack(1, st(1, 1), 1).unwrap();
        let f = finish(&[l], &[], [(0, &a)]);
        assert!(f.clean(), "{f:?}");
        assert_eq!(f.posts_acked, 1);
    }

    #[test]
    fn a_foreign_message_is_phantom() {
        let mut l = acked_room(0, 1);
        let mut a = Subscription::new(0);
        deliver_all(&mut l, &mut a, [1]);
        a.deliver(2);
        l.deliver(2, None, 2);
        let f = finish(&[l], &[], [(0, &a)]);
        assert_eq!((f.phantom, f.lost), (1, 0));
    }

    #[test]
    fn a_seq_beyond_any_post_sent_is_phantom_and_not_kept() {
        let mut l = acked_room(0, 2);
        assert!(!l.deliver(1_000_000, Some(st(0, 1)), 2));
        assert_eq!(l.last(), 2, "nothing allocated for it");
        let f = finish(&[l], &[], []);
        assert_eq!(f.phantom, 1);
        assert_eq!(
            RoomLedger::new(0).ack(7, st(0, 1), 2),
            Err(AckError::OutOfRange)
        );
    }

    #[test]
    fn committed_but_unacknowledged_posts_are_fine_once() {
        let mut l = acked_room(0, 1);
        let mut a = Subscription::new(0);
        deliver_all(&mut l, &mut a, [1]);
        // Post (3, 7) failed (or was in flight) yet was committed at seq 2...
        a.deliver(2);
        l.deliver(2, Some(st(3, 7)), 10);
        let unacked = [(0, st(3, 7)), (0, st(3, 8))];
        let f = finish(&[l.clone()], &unacked, [(0, &a)]);
        assert!(f.clean(), "{f:?}");
        assert_eq!(f.committed_unacked, 1);
        // ...but the same post again at seq 3 is a post applied twice.
        a.deliver(3);
        l.deliver(3, Some(st(3, 7)), 10);
        let f = finish(&[l.clone()], &unacked, [(0, &a)]);
        assert_eq!(f.phantom, 1);
        // An unknown post at an unacknowledged seq is phantom too.
        let f = finish(&[l], &[], [(0, &a)]);
        assert_eq!(f.phantom, 2);
    }

    #[test]
    fn an_unacked_post_sent_to_another_room_is_phantom() {
        let mut rooms = vec![RoomLedger::new(0), RoomLedger::new(0)];
        rooms[1].deliver(1, Some(st(3, 7)), 5);
        let f = finish(&rooms, &[(0, st(3, 7))], []);
        assert_eq!(f.phantom, 1);
    }

    #[test]
    fn conflicting_acks_are_refused() {
        let mut l = RoomLedger::new(0);
        l.ack(1, st(0, 1), 5).unwrap();
        l.ack(1, st(0, 1), 5).unwrap();
        assert_eq!(
            l.ack(1, st(0, 2), 5),
            Err(AckError::Conflict { previous: st(0, 1) })
        );
        assert_eq!(l.ack(0, st(0, 3), 5), Err(AckError::OutOfRange));
    }

    #[test]
    fn the_last_seq_covers_received_but_unacked_seqs() {
        let mut l = acked_room(0, 2);
        let mut a = Subscription::new(0);
        let b = Subscription::new(0);
        deliver_all(&mut l, &mut a, [1, 2]);
        a.deliver(3);
        l.deliver(3, Some(st(0, 3)), 10);
        let f = finish(&[l], &[(0, st(0, 3))], [(0, &a), (0, &b)]);
        assert_eq!(f.lost, 3, "b missed 1..=3");
        assert_eq!(f.expected_deliveries, 6);
    }

    #[test]
    fn history_is_checked_against_the_ledger() {
        let l = acked_room(2, 3); // seqs 3, 4, 5 acked
        let good: Vec<(u64, Option<Stamp>)> = vec![
            (1, None),
            (2, None),
            (3, l.acked(3)),
            (4, l.acked(4)),
            (5, l.acked(5)),
        ];
        let f = check_history(&l, &good);
        assert!(f.clean(), "{f:?}");
        assert_eq!(f.messages, 5);

        let missing = [good[0], good[1], good[2], good[4]];
        let f = check_history(&l, &missing);
        assert_eq!((f.lost, f.gaps, f.duplicates), (1, 1, 0));

        let repeated = [good[0], good[1], good[2], good[3], good[3], good[4]];
        let f = check_history(&l, &repeated);
        assert_eq!((f.lost, f.gaps, f.duplicates), (0, 0, 1));

        let twice = [good[0], good[1], good[2], good[3], good[4], (6, l.acked(4))];
        let f = check_history(&l, &twice);
        assert_eq!((f.lost, f.gaps, f.duplicates), (0, 0, 1));

        let wrong = [good[0], good[1], good[2], (4, Some(st(8, 8))), good[4]];
        let f = check_history(&l, &wrong);
        assert_eq!(f.lost, 1);
    }
}
