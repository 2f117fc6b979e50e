//! Command-line flags: one subcommand per workload, the W1 parameters shared by all of them.

use crate::payload;
use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "stoa-loadgen",
    version,
    about = "Runs the Stoa reference workloads (WORKLOADS.md) and audits every delivery",
    after_help = "Exit status: 0 when the audit is clean, 1 when it found lost, duplicated, \
                  reordered or phantom messages, 2 when the run could not be made."
)]
pub struct Cli {
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Debug, Subcommand)]
pub enum Workload {
    /// W1, fan-out: members of rooms receive what publishers post (saturation unless --rate).
    W1(LoadArgs),
    /// W2, reconnect storm: W1 at fixed load; every connection dropped at --at and resumed.
    W2(EventArgs),
    /// W3, failover under load: W1 at fixed load; a node SIGKILLed at --at (--embedded only),
    /// then history checked on the survivors, the node restarted and checked again.
    W3(EventArgs),
    /// W4, big room: one room whose members are all the connections, a few publishers at a
    /// fixed rate; reports node memory per connection.
    W4(BigRoomArgs),
}

impl Workload {
    /// Where the JSON report goes, if anywhere.
    pub fn json(&self) -> Option<PathBuf> {
        match self {
            Workload::W1(a) => a.run.json.clone(),
            Workload::W2(e) | Workload::W3(e) => e.load.run.json.clone(),
            Workload::W4(b) => b.run.json.clone(),
        }
    }
}

/// Where the cluster is and how to sign in.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Start a 3-node cluster (2 shards) of `stoa-node run` processes in a temporary directory,
    /// and stop it at the end. Without it, --servers names a running cluster.
    #[arg(long)]
    pub embedded: bool,
    /// Nodes of a running cluster, `host:port`, comma-separated.
    #[arg(long, env = "STOA_SERVER", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// An administrator token of that cluster.
    #[arg(long, env = "STOA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the administrator token.
    #[arg(long, env = "STOA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    #[arg(long, env = "STOA_CA")]
    pub ca: Option<PathBuf>,
    /// With --embedded: copy the node logs into this directory at the end.
    #[arg(long)]
    pub node_logs: Option<PathBuf>,
}

/// The W1 parameters (WORKLOADS.md) and the run's own settings.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Client connections, one per user.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Distinct rooms each user is a member of (chosen with the seed) and subscribed to.
    #[arg(long, default_value_t = 5)]
    pub rooms_per_user: usize,
    /// Users that post (the first ones), each to a random one of its rooms.
    #[arg(long, default_value_t = 100)]
    pub publishers: usize,
    /// Saturation: posts each publisher keeps in flight. (Fixed load ignores it: a publisher
    /// sends on time with up to 1024 posts in flight, beyond which a send is skipped and counted.)
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Posts per second in total (open loop, paced per publisher); 0 or none: saturation
    /// (closed loop). W2 and W3 default to 1000.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub run: RunArgs,
    /// QUIC endpoints (UDP sockets) the connections share.
    #[arg(long, default_value_t = 4)]
    pub endpoints: usize,
    /// Seconds to wait after the last post for every member to receive every message.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
}

/// Settings every workload shares, with the same defaults.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Bytes of each post.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Seconds of the measured period.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of load before the measured period (not measured).
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Seed of room membership, room choice and jitter.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as one JSON object to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Receive buffer asked for each endpoint's UDP socket, KiB (the kernel caps it at
    /// net.core.rmem_max).
    #[arg(long, default_value_t = 4096)]
    pub socket_buffer_kib: usize,
    /// Connections (and subscriptions) being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
}

/// W2/W3: the load plus when the event happens.
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Seconds into the measured period at which the event happens.
    #[arg(long, default_value_t = 10.0)]
    pub at: f64,
}

/// W4 (WORKLOADS.md): one room, `--members` connections all subscribed to it, `--publishers`
/// of them posting `--rate` posts/s in total. The run's own settings are W1's.
#[derive(Debug, Clone, Args)]
pub struct BigRoomArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Client connections, every one a member of the room (lower it to what the machine holds).
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Members that post (the first ones).
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,
    /// Posts per second in total (open loop).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[command(flatten)]
    pub run: RunArgs,
    /// QUIC endpoints (UDP sockets) the connections share.
    #[arg(long, default_value_t = 16)]
    pub endpoints: usize,
    /// Seconds to wait after the last post for every member to receive every message (a big
    /// room may be far behind when the load stops).
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
}

impl BigRoomArgs {
    /// The run as W1 parameters: one room, every user a member.
    pub fn load(&self) -> LoadArgs {
        LoadArgs {
            target: self.target.clone(),
            users: self.members,
            rooms: 1,
            rooms_per_user: 1,
            publishers: self.publishers,
            in_flight: 1,
            rate: Some(self.rate),
            run: self.run.clone(),
            endpoints: self.endpoints,
            drain_timeout: self.drain_timeout,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.rate <= 0.0 {
            bail!("--rate must be above 0: W4 is a fixed load");
        }
        if self.publishers == 0 {
            bail!("--publishers must be at least 1");
        }
        self.load().validate()
    }
}

/// Fixed load of W2 and W3 when --rate is not given.
pub const EVENT_RATE_DEFAULT: f64 = 1000.0;

impl LoadArgs {
    pub fn validate(&self) -> Result<()> {
        let a = self;
        if a.users == 0 || a.rooms == 0 || a.rooms_per_user == 0 {
            bail!("--users, --rooms and --rooms-per-user must be at least 1");
        }
        if a.rooms_per_user > a.rooms {
            bail!(
                "--rooms-per-user {} is more than --rooms {}",
                a.rooms_per_user,
                a.rooms
            );
        }
        if a.publishers > a.users {
            bail!(
                "--publishers {} is more than --users {}",
                a.publishers,
                a.users
            );
        }
        if a.publishers > payload::PUBLISHERS_MAX as usize {
            bail!("--publishers is at most {}", payload::PUBLISHERS_MAX);
        }
        if a.in_flight == 0 {
            bail!("--in-flight must be at least 1");
        }
        if !(payload::HEADER_BYTES..=payload::SIZE_MAX).contains(&a.run.size) {
            bail!(
                "--size {} is outside {}..={} bytes (the header takes {})",
                a.run.size,
                payload::HEADER_BYTES,
                payload::SIZE_MAX,
                payload::HEADER_BYTES
            );
        }
        for (name, v, max) in [
            ("--duration", a.run.duration, 86_400.0),
            ("--warmup", a.run.warmup, 86_400.0),
            ("--drain-timeout", a.drain_timeout, 3_600.0),
        ] {
            if !(0.0..=max).contains(&v) {
                bail!("{name} {v} is outside 0..={max} seconds");
            }
        }
        if a.run.duration == 0.0 {
            bail!("--duration must be above 0");
        }
        if let Some(r) = a.rate {
            if !(0.0..=10_000_000.0).contains(&r) {
                bail!("--rate {r} is outside 0..=10000000 posts/s");
            }
        }
        if !(1..=1 << 20).contains(&a.run.socket_buffer_kib) {
            bail!("--socket-buffer-kib is outside 1..=1048576");
        }
        if a.endpoints == 0 || a.run.connect_concurrency == 0 {
            bail!("--endpoints and --connect-concurrency must be at least 1");
        }
        if !a.target.embedded && a.target.servers.is_empty() {
            bail!("give --embedded or --servers (or STOA_SERVER)");
        }
        Ok(())
    }

    /// Target posts/s, `None` for saturation.
    pub fn rate_target(&self) -> Option<f64> {
        self.rate.filter(|&r| r > 0.0)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.run.warmup)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.run.duration)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }
}

impl EventArgs {
    pub fn validate(&self) -> Result<()> {
        self.load.validate()?;
        if !(0.0..self.load.run.duration).contains(&self.at) {
            bail!(
                "--at {} must fall inside the measured period (0..{} s)",
                self.at,
                self.load.run.duration
            );
        }
        Ok(())
    }

    /// The load with W2/W3's fixed rate unless --rate was given.
    pub fn fixed_load(&self) -> LoadArgs {
        let mut load = self.load.clone();
        load.rate.get_or_insert(EVENT_RATE_DEFAULT);
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("stoa-loadgen").chain(args.iter().copied())).unwrap()
    }

    fn load(cli: Cli) -> LoadArgs {
        match cli.workload {
            Workload::W1(l) => l,
            Workload::W2(e) | Workload::W3(e) => e.fixed_load(),
            Workload::W4(b) => b.load(),
        }
    }

    #[test]
    fn w4_is_one_room_every_member_in_it_at_a_fixed_rate() {
        let l = load(parse(&["w4", "--embedded"]));
        l.validate().unwrap();
        assert_eq!(
            (l.users, l.rooms, l.rooms_per_user, l.publishers),
            (10_000, 1, 1, 10)
        );
        assert_eq!(l.rate_target(), Some(100.0));
        let l = load(parse(&[
            "w4",
            "--embedded",
            "--members",
            "300",
            "--json",
            "r.json",
        ]));
        assert_eq!((l.users, l.run.json), (300, Some(PathBuf::from("r.json"))));
        let Workload::W4(b) = parse(&["w4", "--embedded", "--rate", "0"]).workload else {
            unreachable!()
        };
        assert!(b.validate().is_err(), "W4 has no saturation mode");
    }

    #[test]
    fn defaults_are_the_reference_w1() {
        let l = load(parse(&["w1", "--embedded"]));
        l.validate().unwrap();
        assert_eq!(
            (
                l.users,
                l.rooms,
                l.rooms_per_user,
                l.publishers,
                l.in_flight,
                l.run.size
            ),
            (1000, 100, 5, 100, 8, 200)
        );
        assert_eq!(
            (l.run.duration, l.run.warmup, l.rate_target()),
            (20.0, 3.0, None)
        );
        let l = load(parse(&["w1", "--embedded", "--rate", "0"]));
        assert_eq!(l.rate_target(), None, "--rate 0 is saturation");
    }

    #[test]
    fn w2_and_w3_default_to_fixed_load() {
        let l = load(parse(&["w2", "--embedded"]));
        assert_eq!(l.rate_target(), Some(EVENT_RATE_DEFAULT));
        let l = load(parse(&["w3", "--embedded", "--rate", "0"]));
        assert_eq!(l.rate_target(), None, "saturation on request");
    }

    #[test]
    fn servers_split_on_commas() {
        let l = load(parse(&["w1", "--servers", "a:1,b:2", "--token", "t"]));
        assert_eq!(l.target.servers, vec!["a:1", "b:2"]);
        l.validate().unwrap();
    }

    #[test]
    fn bad_parameters_are_refused() {
        for args in [
            &["w1", "--embedded", "--rooms", "3", "--rooms-per-user", "4"][..],
            &["w1", "--embedded", "--publishers", "2000"],
            &["w1", "--embedded", "--size", "10"],
            &["w1", "--embedded", "--duration", "0"],
            &["w1", "--embedded", "--in-flight", "0"],
        ] {
            assert!(load(parse(args)).validate().is_err(), "{args:?}");
        }
        let Workload::W3(e) = parse(&["w3", "--embedded", "--duration", "5", "--at", "6"]).workload
        else {
            unreachable!()
        };
        assert!(e.validate().is_err());
    }
}
