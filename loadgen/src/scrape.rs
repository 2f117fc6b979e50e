//! Figures only the nodes know, read from their Prometheus endpoints (`GET /metrics`) at the
//! bounds of the measured period: what the cluster sent to clients, and how it batched posts.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// A node's metrics are a few kilobytes; anything much larger is not what we asked for.
const BODY_BYTES_MAX: u64 = 1 << 20;

/// Counters of one node at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeCounters {
    pub datagrams_sent: f64,
    pub send_calls: f64,
    pub proposal_batches: f64,
    pub proposal_posts: f64,
}

impl NodeCounters {
    /// `self - earlier`, or `None` if a counter went back (the node restarted in between).
    pub fn since(&self, earlier: &NodeCounters) -> Option<NodeCounters> {
        let d = NodeCounters {
            datagrams_sent: self.datagrams_sent - earlier.datagrams_sent,
            send_calls: self.send_calls - earlier.send_calls,
            proposal_batches: self.proposal_batches - earlier.proposal_batches,
            proposal_posts: self.proposal_posts - earlier.proposal_posts,
        };
        let all = [
            d.datagrams_sent,
            d.send_calls,
            d.proposal_batches,
            d.proposal_posts,
        ];
        all.iter().all(|v| *v >= 0.0).then_some(d)
    }

    pub fn add(&self, o: &NodeCounters) -> NodeCounters {
        NodeCounters {
            datagrams_sent: self.datagrams_sent + o.datagrams_sent,
            send_calls: self.send_calls + o.send_calls,
            proposal_batches: self.proposal_batches + o.proposal_batches,
            proposal_posts: self.proposal_posts + o.proposal_posts,
        }
    }
}

/// The node's counters, `None` if it does not answer (stopped, killed) within 2 s.
pub async fn scrape(addr: SocketAddr) -> Option<NodeCounters> {
    get(addr).await.map(|text| parse(&text))
}

/// Client connections the node has open, `None` if it does not answer.
pub async fn client_connections(addr: SocketAddr) -> Option<u64> {
    let text = get(addr).await?;
    value(&text, "stoa_client_connections").map(|v| v as u64)
}

/// The body of `GET /metrics`.
async fn get(addr: SocketAddr) -> Option<String> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: stoa\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.take(BODY_BYTES_MAX)
            .read_to_string(&mut text)
            .await
            .ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.lines().next()?;
        (status.starts_with("HTTP/1.") && status.contains(" 200 ")).then(|| body.to_string())
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, get).await.ok()?
}

/// The sample `name` (without labels) in Prometheus text.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The counters in Prometheus text; a missing one reads 0.
fn parse(text: &str) -> NodeCounters {
    let value = |name: &str| value(text, name).unwrap_or(0.0);
    NodeCounters {
        datagrams_sent: value("stoa_client_quic_datagrams_sent_total"),
        send_calls: value("stoa_client_quic_send_calls_total"),
        proposal_batches: value("stoa_proposal_batches_total"),
        proposal_posts: value("stoa_proposal_posts_total"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_and_spots_restarts() {
        let text = "# HELP stoa_proposal_posts Posts\n# TYPE stoa_proposal_posts counter\n\
                    stoa_proposal_posts_total 120\nstoa_proposal_batches_total 4\n\
                    stoa_client_quic_datagrams_sent_total 1000\n\
                    stoa_client_quic_datagrams_sent_total_extra 5\n# EOF\n";
        let c = parse(text);
        assert_eq!(
            c,
            NodeCounters {
                datagrams_sent: 1000.0,
                send_calls: 0.0,
                proposal_batches: 4.0,
                proposal_posts: 120.0,
            }
        );
        let later = NodeCounters {
            proposal_posts: 150.0,
            ..c
        };
        assert_eq!(later.since(&c).unwrap().proposal_posts, 30.0);
        assert!(
            c.since(&later).is_none(),
            "a counter that went back is a restart"
        );
    }
}
