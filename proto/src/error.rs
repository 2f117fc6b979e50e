//! Typed errors a node returns to a client.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, as a code a client can act on. Grows only at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No valid token was presented, or the hello was missing.
    Unauthenticated,
    /// The user is known but may not do this.
    Forbidden,
    /// The room, user or message does not exist (or is not visible to this user).
    NotFound,
    /// A frame, field or page is over its limit.
    TooLarge,
    /// The request is malformed or breaks a rule (bad name, wrong protocol version...).
    Invalid,
    /// The cluster cannot serve this now (no leader, shutting down); retry, possibly on another node.
    Unavailable,
    /// The thing to create exists already.
    AlreadyExists,
    /// The client sends faster than its rate limit allows.
    RateLimited,
    /// A fault inside the node; the request may or may not have taken effect.
    Internal,
}

impl ErrorCode {
    /// Whether the same request may succeed if sent again (with the same client message id).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Internal
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error answer: a code plus a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
