//! Peak RSS and CPU time of processes, from Linux `/proc`: `VmHWM` of `/proc/PID/status` and
//! `utime + stime` of `/proc/PID/stat`. Elsewhere every figure reads as absent.
//!
//! [`NodeStats`] follows the node processes of an embedded cluster across SIGKILL and restart:
//! sampled every progress tick and just before a kill, it sums the CPU of a node's successive
//! processes and keeps the highest peak.

use std::sync::OnceLock;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kb: u64,
    /// Resident set now (VmRSS), KiB.
    pub rss_kb: u64,
}

pub fn sample(pid: u32) -> Option<Sample> {
    read(&format!("/proc/{pid}"))
}

pub fn sample_self() -> Option<Sample> {
    read("/proc/self")
}

fn read(dir: &str) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    Some(Sample {
        cpu_s: cpu_ticks(&stat)? as f64 / clock_ticks_per_s() as f64,
        peak_rss_kb: status_kb(&status, "VmHWM:")?,
        rss_kb: status_kb(&status, "VmRSS:")?,
    })
}

/// A `field` in KiB (`VmHWM:`, `VmRSS:`) from the text of `/proc/PID/status`.
fn status_kb(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`: utime and stime are
/// fields 14 and 15, the 12th and 13th after it.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)` through `getconf CLK_TCK`; 100 (the Linux value) if that fails.
fn clock_ticks_per_s() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Datagrams the kernel dropped, since each socket was opened, for the UDP sockets bound to
/// `ports` (IPv4 and IPv6 tables of this network namespace); `None` for a port with no socket.
pub fn udp_drops(ports: &[u16]) -> Vec<Option<u64>> {
    let tables: String = ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n");
    udp_drops_in(&tables, ports)
}

/// [`udp_drops`] over the text of `/proc/net/udp{,6}`: columns `sl local_address rem_address st
/// tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref pointer drops`, the local address
/// as `HEXIP:HEXPORT`.
fn udp_drops_in(tables: &str, ports: &[u16]) -> Vec<Option<u64>> {
    let mut out = vec![None; ports.len()];
    for line in tables.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(drops)) = (cols.get(1), cols.get(12)) else {
            continue;
        };
        let Some(port) = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        let Ok(drops) = drops.parse::<u64>() else {
            continue;
        };
        for (slot, _) in out.iter_mut().zip(ports).filter(|(_, &p)| p == port) {
            *slot = Some(slot.unwrap_or(0) + drops);
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
struct Slot {
    pid: Option<u32>,
    last: Option<Sample>,
    /// CPU of this node's earlier processes (killed).
    cpu_ended_s: f64,
    peak_rss_kb: u64,
}

/// CPU and peak RSS per node across the node's processes.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    slots: Vec<Slot>,
}

impl NodeStats {
    /// Reads every running node; `pids[i]` is node `i`'s process (`None`: stopped).
    pub fn observe(&mut self, pids: &[Option<u32>]) {
        self.observe_with(pids, sample);
    }

    fn observe_with(&mut self, pids: &[Option<u32>], read: impl Fn(u32) -> Option<Sample>) {
        if self.slots.len() < pids.len() {
            self.slots.resize_with(pids.len(), Slot::default);
        }
        for (slot, &pid) in self.slots.iter_mut().zip(pids) {
            if slot.pid != pid {
                // The process we knew is gone: keep its last reading.
                slot.cpu_ended_s += slot.last.take().map_or(0.0, |s| s.cpu_s);
                slot.pid = pid;
            }
            if let Some(s) = pid.and_then(&read) {
                slot.peak_rss_kb = slot.peak_rss_kb.max(s.peak_rss_kb);
                slot.last = Some(s);
            }
        }
    }

    /// CPU seconds of each node, over all its processes so far.
    pub fn cpu_s(&self) -> Vec<f64> {
        self.slots
            .iter()
            .map(|s| s.cpu_ended_s + s.last.map_or(0.0, |l| l.cpu_s))
            .collect()
    }

    pub fn peak_rss_kb(&self) -> Vec<u64> {
        self.slots.iter().map(|s| s.peak_rss_kb).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tstoa-node\nVmPeak:\t  99 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(status_kb(status, "VmHWM:"), Some(12345));
        assert_eq!(status_kb(status, "VmRSS:"), Some(100));
        assert_eq!(status_kb("Name: x\n", "VmHWM:"), None);
        let stat = "4242 (stoa node (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn udp_drops_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:B879 00000000:0000 07 00000000:0002F019 00:00000000 00000000     0        0 123 2 0000000000000000 15529
  2: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 124 2 0000000000000000 0";
        assert_eq!(
            udp_drops_in(table, &[0xB879, 8080, 9]),
            vec![Some(15529), Some(0), None]
        );
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let s = sample_self().expect("/proc/self on Linux");
            assert!(s.peak_rss_kb > 0);
        }
    }

    #[test]
    fn cpu_adds_up_across_restarts_and_peak_is_kept() {
        let mut n = NodeStats::default();
        // (pid, cpu_s, peak_rss_kb) of the processes alive at each reading.
        let mut observe = |pids: &[Option<u32>], table: &[(u32, f64, u64)]| {
            n.observe_with(pids, |pid| {
                let &(_, cpu_s, peak_rss_kb) = table.iter().find(|r| r.0 == pid)?;
                Some(Sample {
                    cpu_s,
                    peak_rss_kb,
                    rss_kb: peak_rss_kb,
                })
            })
        };
        observe(&[Some(1), Some(2)], &[(1, 1.0, 500), (2, 1.0, 400)]);
        observe(&[Some(1), Some(2)], &[(1, 2.0, 700), (2, 2.0, 400)]);
        observe(&[None, Some(2)], &[(2, 2.5, 450)]); // node 0 killed
        observe(&[Some(9), Some(2)], &[(9, 0.5, 300), (2, 3.0, 450)]); // and restarted
        assert_eq!(n.cpu_s(), vec![2.5, 3.0]);
        assert_eq!(n.peak_rss_kb(), vec![700, 450]);
    }
}
