//! W2, reconnect storm: at the event time every connection is dropped ([`Client::force_reconnect`]),
//! each at a seeded random moment within one second; the SDK reconnects to another node and
//! resumes every room from its last seen seq. A user counts as connected again once its client
//! reports a connection to a different node (or any connection after it was seen down).

use crate::report::{r3, Storm};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Duration;
use stoa_client::{Client, Status};
use tokio::time::{sleep, Instant};

/// Drops are spread over this long.
const JITTER_MAX: Duration = Duration::from_secs(1);
/// Longest wait for users to connect again.
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

fn server_of(c: &Client) -> Option<String> {
    match c.status() {
        Status::Connected { server, .. } => Some(server),
        _ => None,
    }
}

/// Drops every connection and waits (at most 30 s) until every user is connected again.
pub async fn run(clients: &[Client], seed: u64) -> Storm {
    let n = clients.len();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5707_5707);
    let jitter: Vec<Duration> = (0..n)
        .map(|_| JITTER_MAX.mul_f64(rng.gen_range(0.0..=1.0)))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| jitter[i]);
    let before: Vec<Option<String>> = clients.iter().map(server_of).collect();
    let mut forced: Vec<Option<Instant>> = vec![None; n];
    let mut seen_down = vec![false; n];
    let mut back: Vec<Option<Instant>> = vec![None; n];
    let mut next = 0;
    let start = Instant::now();
    loop {
        let now = Instant::now();
        while next < n && start + jitter[order[next]] <= now {
            let i = order[next];
            clients[i].force_reconnect();
            forced[i] = Some(Instant::now());
            next += 1;
        }
        for i in 0..n {
            if forced[i].is_none() || back[i].is_some() {
                continue;
            }
            match server_of(&clients[i]) {
                Some(s) if seen_down[i] || Some(&s) != before[i].as_ref() => back[i] = Some(now),
                Some(_) => {}
                None => seen_down[i] = true,
            }
        }
        let all_back = next == n && back.iter().all(Option::is_some);
        if all_back || now >= start + WAIT_MAX {
            break;
        }
        sleep(POLL).await;
    }
    summarize(start, &forced, &back)
}

fn summarize(start: Instant, forced: &[Option<Instant>], back: &[Option<Instant>]) -> Storm {
    let n = back.len();
    let mut since_start: Vec<f64> = back
        .iter()
        .flatten()
        .map(|b| (*b - start).as_secs_f64())
        .collect();
    since_start.sort_by(f64::total_cmp);
    let mut per_user: Vec<f64> = forced
        .iter()
        .zip(back)
        .filter_map(|(f, b)| {
            Some((b.as_ref()?.saturating_duration_since(*f.as_ref()?)).as_secs_f64())
        })
        .collect();
    per_user.sort_by(f64::total_cmp);
    let need = (n * 99).div_ceil(100);
    let at = |k: usize| (k > 0 && k <= since_start.len()).then(|| since_start[k - 1]);
    Storm {
        reconnect_99pct_s: at(need).map(r3),
        reconnect_all_s: at(n).filter(|_| since_start.len() == n).map(r3),
        reconnect_user_p50_s: r3(per_user.get(per_user.len() / 2).copied().unwrap_or(0.0)),
        reconnect_user_max_s: r3(per_user.last().copied().unwrap_or(0.0)),
        users_reconnected: since_start.len() as u64,
        users_not_reconnected: (n - since_start.len()) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_99th_percent_user_and_the_missing_ones() {
        let start = Instant::now();
        let s = |ms: u64| Some(start + Duration::from_millis(ms));
        let forced: Vec<_> = (0..100).map(|_| s(0)).collect();
        let mut back: Vec<_> = (0..100).map(|i| s(10 * (i + 1))).collect();
        let storm = summarize(start, &forced, &back);
        assert_eq!(storm.reconnect_99pct_s, Some(0.99));
        assert_eq!(storm.reconnect_all_s, Some(1.0));
        assert_eq!(storm.users_not_reconnected, 0);
        back[99] = None;
        back[98] = None;
        let storm = summarize(start, &forced, &back);
        assert_eq!(storm.reconnect_99pct_s, None, "only 98 % came back");
        assert_eq!(storm.reconnect_all_s, None);
        assert_eq!(storm.users_not_reconnected, 2);
    }
}
