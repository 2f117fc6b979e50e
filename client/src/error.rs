//! The SDK's error type.

use std::{io, path::PathBuf, sync::Arc, time::Duration};
use stoa_proto::{ApiError, ErrorCode};

/// Everything a [`crate::Client`] call can fail with.
///
/// Cloneable, so one terminal error can be handed to every waiting caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The node answered with a typed error; [`ClientError::code`] gives its code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A [`crate::ClientConfig`] field is unusable.
    #[error("invalid client configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    /// A local file (the cluster CA) could not be read.
    #[error("cannot read {}: {error}", path.display())]
    File {
        path: PathBuf,
        error: Arc<io::Error>,
    },
    /// A socket operation failed (binding the client endpoint).
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: Arc<io::Error>,
    },
    /// No connection to `addr` could be made (resolution, QUIC handshake, certificate check).
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The TLS configuration could not be built (bad CA PEM...).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The node broke the protocol (undecodable frame, unexpected answer).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A request is over the frame limit and was not sent.
    #[error("request of {len} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// No answer came within `request_timeout`; the request may or may not have taken effect.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection died while the request was in flight; it may or may not have taken effect.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The client was closed (or every handle to it dropped).
    #[error("client is closed")]
    Closed,
}

impl ClientError {
    /// The node's error code, for [`ClientError::Api`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            error: Arc::new(source),
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        ClientError::Config {
            field,
            reason: reason.into(),
        }
    }

    /// Errors after which trying another server cannot help (bad token, bad CA, bad config).
    pub(crate) fn is_fatal_for_connect(&self) -> bool {
        match self {
            ClientError::Api(e) => matches!(
                e.code,
                ErrorCode::Unauthenticated | ErrorCode::Forbidden | ErrorCode::Invalid
            ),
            ClientError::Config { .. } | ClientError::Tls(_) | ClientError::Closed => true,
            _ => false,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
