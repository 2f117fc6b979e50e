//! Client settings: one struct, one defaults table, one `validate()`.

use crate::{ClientError, Result};
use std::{path::Path, sync::Arc, time::Duration};
use stoa_proto::limits;

/// How a [`crate::Client`] finds and talks to the cluster.
#[derive(Clone)]
pub struct ClientConfig {
    /// Nodes as `host:port`. The first connection tries them in list order; a reconnect starts
    /// from a random one other than the node just lost and goes on in list order.
    pub servers: Vec<String>,
    /// The user's token, sent in the hello.
    pub token: String,
    /// The cluster CA certificate(s), PEM. Node certificates are verified against it with the TLS
    /// server name [`stoa_proto::CLUSTER_SERVER_NAME`].
    pub ca_pem: Vec<u8>,
    /// Longest wait for the answer to one request once it is queued [10 s].
    pub request_timeout: Duration,
    /// Longest wait for one connection attempt: QUIC handshake, hello and welcome [5 s].
    pub connect_timeout: Duration,
    /// Largest frame sent or accepted, in bytes [1 MiB]; at most
    /// [`stoa_proto::limits::FRAME_BYTES_MAX`].
    pub frame_bytes_max: usize,
    /// Messages buffered for the [`crate::EventStream`] [4096]. When it is full the connection's
    /// reader waits for the application (see [`crate::Client::events`]).
    pub events_buffer: usize,
    /// How long a lost connection is retried, and how long a `post` is retried, before the
    /// error is returned [15 s].
    pub retry_deadline: Duration,
    /// A connection that hears nothing from its node for this long is dead [5 s]. Keep-alives
    /// are sent every third of it, so a killed node is noticed within this time.
    pub idle_timeout: Duration,
    /// Requests in flight at once on one client; further calls wait for a slot [1024].
    pub requests_in_flight_max: usize,
}

/// Defaults of every [`ClientConfig`] field that has one.
pub mod defaults {
    use std::time::Duration;

    pub const SERVER: &str = "127.0.0.1:7400";
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const FRAME_BYTES_MAX: usize = 1 << 20;
    pub const EVENTS_BUFFER: usize = 4096;
    pub const RETRY_DEADLINE: Duration = Duration::from_secs(15);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            servers: vec![defaults::SERVER.to_string()],
            token: String::new(),
            ca_pem: Vec::new(),
            request_timeout: defaults::REQUEST_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            frame_bytes_max: defaults::FRAME_BYTES_MAX,
            events_buffer: defaults::EVENTS_BUFFER,
            retry_deadline: defaults::RETRY_DEADLINE,
            idle_timeout: defaults::IDLE_TIMEOUT,
            requests_in_flight_max: defaults::REQUESTS_IN_FLIGHT_MAX,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("ClientConfig")
            .field("servers", &self.servers)
            .field("token", &"<redacted>")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("frame_bytes_max", &self.frame_bytes_max)
            .field("events_buffer", &self.events_buffer)
            .field("retry_deadline", &self.retry_deadline)
            .field("idle_timeout", &self.idle_timeout)
            .field("requests_in_flight_max", &self.requests_in_flight_max)
            .finish()
    }
}

impl ClientConfig {
    /// Defaults plus the three fields without one.
    pub fn new(servers: Vec<String>, token: impl Into<String>, ca_pem: Vec<u8>) -> Self {
        ClientConfig {
            servers,
            token: token.into(),
            ca_pem,
            ..ClientConfig::default()
        }
    }

    /// Like [`ClientConfig::new`], reading the CA PEM from `ca_path`.
    pub fn from_files(
        servers: Vec<String>,
        token: impl Into<String>,
        ca_path: impl AsRef<Path>,
    ) -> Result<Self> {
        let path = ca_path.as_ref();
        let ca_pem = std::fs::read(path).map_err(|e| ClientError::File {
            path: path.to_path_buf(),
            error: Arc::new(e),
        })?;
        Ok(ClientConfig::new(servers, token, ca_pem))
    }

    /// Checks every field and the relations between them; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(ClientError::config("servers", "no server given"));
        }
        if let Some(s) = self.servers.iter().find(|s| s.trim().is_empty()) {
            return Err(ClientError::config(
                "servers",
                format!("empty server address {s:?}"),
            ));
        }
        if self.token.is_empty() {
            return Err(ClientError::config("token", "empty"));
        }
        if self.token.len() > limits::TOKEN_BYTES_MAX {
            return Err(ClientError::config(
                "token",
                format!(
                    "{} bytes, over the limit of {}",
                    self.token.len(),
                    limits::TOKEN_BYTES_MAX
                ),
            ));
        }
        if self.ca_pem.is_empty() {
            return Err(ClientError::config("ca_pem", "empty"));
        }
        for (field, d) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("retry_deadline", self.retry_deadline),
        ] {
            if d.is_zero() {
                return Err(ClientError::config(field, "must be above zero"));
            }
        }
        if self.idle_timeout < Duration::from_millis(300) {
            return Err(ClientError::config(
                "idle_timeout",
                format!(
                    "{:?} is below 300 ms (keep-alives go every third of it)",
                    self.idle_timeout
                ),
            ));
        }
        if !(1024..=limits::FRAME_BYTES_MAX).contains(&self.frame_bytes_max) {
            return Err(ClientError::config(
                "frame_bytes_max",
                format!(
                    "{} is outside 1024..={}",
                    self.frame_bytes_max,
                    limits::FRAME_BYTES_MAX
                ),
            ));
        }
        if self.events_buffer == 0 {
            return Err(ClientError::config("events_buffer", "must be at least 1"));
        }
        let in_flight_top = tokio::sync::Semaphore::MAX_PERMITS.min(1 << 20);
        if !(1..=in_flight_top).contains(&self.requests_in_flight_max) {
            return Err(ClientError::config(
                "requests_in_flight_max",
                format!(
                    "{} is outside 1..={in_flight_top}",
                    self.requests_in_flight_max
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ClientConfig {
        ClientConfig::new(vec!["127.0.0.1:7400".into()], "t", b"pem".to_vec())
    }

    #[test]
    fn defaults_validate() {
        good().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        type Mutate = Box<dyn Fn(&mut ClientConfig)>;
        let cases: Vec<(&str, Mutate)> = vec![
            ("servers", Box::new(|c| c.servers.clear())),
            ("token", Box::new(|c| c.token.clear())),
            (
                "token",
                Box::new(|c| c.token = "x".repeat(limits::TOKEN_BYTES_MAX + 1)),
            ),
            ("ca_pem", Box::new(|c| c.ca_pem.clear())),
            (
                "request_timeout",
                Box::new(|c| c.request_timeout = Duration::ZERO),
            ),
            (
                "frame_bytes_max",
                Box::new(|c| c.frame_bytes_max = limits::FRAME_BYTES_MAX + 1),
            ),
            ("events_buffer", Box::new(|c| c.events_buffer = 0)),
            (
                "requests_in_flight_max",
                Box::new(|c| c.requests_in_flight_max = 0),
            ),
            (
                "idle_timeout",
                Box::new(|c| c.idle_timeout = Duration::from_millis(10)),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = good();
            mutate(&mut c);
            match c.validate() {
                Err(ClientError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let mut c = good();
        c.token = "secret-token".into();
        assert!(!format!("{c:?}").contains("secret-token"));
    }

    #[test]
    fn from_files_names_a_missing_file() {
        let err = ClientConfig::from_files(vec![], "t", "/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
