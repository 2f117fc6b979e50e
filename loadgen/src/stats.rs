//! Counters and latency histograms, split by phase of the run.
//!
//! A [`Timeline`] cuts wall-clock time (µs since the UNIX epoch, the clock of the payload stamps)
//! into phases: warm-up, the measured period (for W2/W3 in two parts, before and after the event)
//! and after. A latency sample belongs to the phase its post was *sent* in; a delivery or an
//! acknowledgement is counted in the phase it *happened* in.
//!
//! The [`Recorder`] is striped: each task records into the stripe of its index under a short
//! mutex, so the 1000 receiver tasks share a few histograms instead of owning one each. The
//! progress ticker takes the interval figures every 500 ms.

use hdrhistogram::Histogram;
use std::sync::{Mutex, OnceLock};

/// Highest latency recorded exactly, µs (two minutes; above it a sample is clamped).
const LATENCY_MAX_US: u64 = 120_000_000;
const STRIPES: usize = 8;

pub type Hist = Histogram<u64>;

/// An empty latency histogram: 1 µs to two minutes, 3 significant digits.
pub fn new_hist() -> Hist {
    // The bounds are constants that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low).
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Phases of a run, as boundaries in µs since the epoch. Phase `i` is
/// `[bounds[i-1], bounds[i])`; phase 0 is everything before the first boundary.
#[derive(Debug, Clone)]
pub struct Timeline {
    bounds: Vec<u64>,
}

impl Timeline {
    /// `bounds` must be sorted.
    pub fn new(bounds: Vec<u64>) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] <= w[1]));
        Timeline { bounds }
    }

    pub fn phase(&self, t_us: u64) -> usize {
        self.bounds.partition_point(|&b| b <= t_us)
    }

    pub fn phases(&self) -> usize {
        self.bounds.len() + 1
    }

    pub fn bound(&self, i: usize) -> u64 {
        self.bounds[i]
    }
}

/// Figures of one stripe: by phase, and for the current progress interval.
struct Stripe {
    latency: Vec<Hist>,
    ack_latency: Vec<Hist>,
    deliveries: Vec<u64>,
    acks: Vec<u64>,
    interval_latency: Hist,
    interval_deliveries: u64,
    interval_acks: u64,
}

impl Stripe {
    fn new(phases: usize) -> Self {
        Stripe {
            latency: (0..phases).map(|_| new_hist()).collect(),
            ack_latency: (0..phases).map(|_| new_hist()).collect(),
            deliveries: vec![0; phases],
            acks: vec![0; phases],
            interval_latency: new_hist(),
            interval_deliveries: 0,
            interval_acks: 0,
        }
    }
}

pub struct Recorder {
    /// Set once when the load starts; before that everything is phase 0.
    timeline: OnceLock<Timeline>,
    phases: usize,
    stripes: Vec<Mutex<Stripe>>,
}

/// What happened during one progress interval.
pub struct Interval {
    pub deliveries: u64,
    pub acks: u64,
    pub latency: Hist,
}

/// Everything recorded, merged over the stripes, by phase.
pub struct Totals {
    pub latency: Vec<Hist>,
    pub ack_latency: Vec<Hist>,
    pub deliveries: Vec<u64>,
    pub acks: Vec<u64>,
}

impl Totals {
    /// The latency histogram of phases `range`, merged.
    pub fn latency_over(&self, range: std::ops::Range<usize>) -> Hist {
        merge(&self.latency[range])
    }

    pub fn ack_latency_over(&self, range: std::ops::Range<usize>) -> Hist {
        merge(&self.ack_latency[range])
    }
}

fn merge(hists: &[Hist]) -> Hist {
    let mut all = new_hist();
    for h in hists {
        // Same bounds everywhere, so adding cannot fail.
        all.add(h).expect("histograms with the same bounds");
    }
    all
}

/// Locks a stripe; a poisoned one still holds plain counters and is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    /// A recorder for a timeline of `phases` phases, set later by [`Recorder::start`].
    pub fn new(phases: usize) -> Self {
        Recorder {
            timeline: OnceLock::new(),
            phases,
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::new(phases)))
                .collect(),
        }
    }

    /// Fixes the timeline; it must have the number of phases given to [`Recorder::new`].
    /// Later calls change nothing.
    pub fn start(&self, timeline: Timeline) {
        assert_eq!(
            timeline.phases(),
            self.phases,
            "timeline of the recorder's shape"
        );
        let _ = self.timeline.set(timeline);
    }

    pub fn timeline(&self) -> Option<&Timeline> {
        self.timeline.get()
    }

    fn phase(&self, t_us: u64) -> usize {
        self.timeline.get().map_or(0, |t| t.phase(t_us))
    }

    /// One message received at `now_us`; `sent_us` from its payload if it has one.
    pub fn delivery(&self, stripe: usize, now_us: u64, sent_us: Option<u64>) {
        let mut s = lock(&self.stripes[stripe % STRIPES]);
        s.deliveries[self.phase(now_us)] += 1;
        s.interval_deliveries += 1;
        if let Some(sent) = sent_us {
            let lat = now_us.saturating_sub(sent).max(1);
            s.latency[self.phase(sent)].saturating_record(lat);
            s.interval_latency.saturating_record(lat);
        }
    }

    /// One post sent at `sent_us` acknowledged at `now_us`.
    pub fn ack(&self, stripe: usize, sent_us: u64, now_us: u64) {
        let mut s = lock(&self.stripes[stripe % STRIPES]);
        s.acks[self.phase(now_us)] += 1;
        s.interval_acks += 1;
        s.ack_latency[self.phase(sent_us)].saturating_record(now_us.saturating_sub(sent_us).max(1));
    }

    /// The figures since the last call (reset).
    pub fn take_interval(&self) -> Interval {
        let mut out = Interval {
            deliveries: 0,
            acks: 0,
            latency: new_hist(),
        };
        for stripe in &self.stripes {
            let mut s = lock(stripe);
            out.deliveries += std::mem::take(&mut s.interval_deliveries);
            out.acks += std::mem::take(&mut s.interval_acks);
            out.latency
                .add(&s.interval_latency)
                .expect("histograms with the same bounds");
            s.interval_latency.reset();
        }
        out
    }

    pub fn totals(&self) -> Totals {
        let phases = self.phases;
        let mut t = Totals {
            latency: (0..phases).map(|_| new_hist()).collect(),
            ack_latency: (0..phases).map(|_| new_hist()).collect(),
            deliveries: vec![0; phases],
            acks: vec![0; phases],
        };
        for stripe in &self.stripes {
            let s = lock(stripe);
            for p in 0..phases {
                t.latency[p]
                    .add(&s.latency[p])
                    .expect("histograms with the same bounds");
                t.ack_latency[p]
                    .add(&s.ack_latency[p])
                    .expect("histograms with the same bounds");
                t.deliveries[p] += s.deliveries[p];
                t.acks[p] += s.acks[p];
            }
        }
        t
    }
}

/// A quantile of `h` in milliseconds (0 when empty).
pub fn quantile_ms(h: &Hist, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_on_bounds() {
        let t = Timeline::new(vec![100, 200]);
        assert_eq!(t.phases(), 3);
        assert_eq!(
            [0, 99, 100, 199, 200, 5000].map(|x| t.phase(x)),
            [0, 0, 1, 1, 2, 2]
        );
    }

    #[test]
    fn latency_goes_to_the_send_phase_counts_to_the_receive_phase() {
        let r = Recorder::new(3);
        r.delivery(0, 10, Some(5)); // before the start: phase 0
        r.start(Timeline::new(vec![1_000_000, 2_000_000]));
        r.delivery(0, 1_500_000, Some(900_000)); // sent in warm-up, received while measuring
        r.delivery(3, 1_600_000, Some(1_550_000));
        r.delivery(5, 1_700_000, None);
        r.ack(1, 1_100_000, 1_103_000);
        let i = r.take_interval();
        assert_eq!((i.deliveries, i.acks, i.latency.len()), (4, 1, 3));
        assert_eq!(r.take_interval().deliveries, 0, "reset");
        let t = r.totals();
        assert_eq!(t.deliveries, vec![1, 3, 0]);
        assert_eq!(t.latency[0].len(), 2);
        assert_eq!(t.latency[1].len(), 1);
        assert_eq!(t.acks, vec![0, 1, 0]);
        let ms = quantile_ms(&t.ack_latency_over(1..2), 0.5);
        assert!((ms - 3.0).abs() < 0.01, "{ms}");
        assert_eq!(quantile_ms(&new_hist(), 0.99), 0.0);
    }
}
