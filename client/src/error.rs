//! Client errors.

use chat_protocol::pb;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("tls: {0}")]
    Tls(String),
    /// The server answered with an error frame.
    #[error("{}: {message}", code.as_str_name())]
    Server {
        code: pb::ErrorCode,
        message: String,
    },
    #[error("connection closed")]
    Closed,
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(String),
    /// No server of a list could be reached: each one's address and failure.
    #[error("no server could be reached ({0})")]
    Unreachable(String),
}

impl ClientError {
    /// Whether another try (later, or on another server of a cluster) may succeed: the
    /// connection failed or went unanswered, or the server said `UNAVAILABLE`. A TLS
    /// failure or any other error the server answered is not.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => *code == pb::ErrorCode::Unavailable,
            ClientError::Tls(_) => false,
            _ => true,
        }
    }

    /// The server's error code, for errors the server reported.
    pub fn code(&self) -> Option<pb::ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
