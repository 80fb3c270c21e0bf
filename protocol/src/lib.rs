//! Wire format of the chat protocol.
//!
//! This crate holds the protobuf messages (`pb`, generated from `proto/chat.proto`), the
//! length-prefixed framing codec (`frame`) and nothing else: no sockets, no runtime. Decoding
//! either yields a whole frame or says "need more bytes", the way a parser for a network
//! protocol should, so it can be driven by any I/O loop and fuzzed on its own.
//! docs/PROTOCOL.md is the normative specification.

pub mod frame;

/// Generated protobuf types of package `chat.v1`.
#[allow(clippy::all, missing_docs)] // reason: generated code
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/chat.v1.rs"));
}

/// Generated protobuf types of package `chat.mesh.v1`: messages between the shards of
/// different nodes of a cluster (internal; clients never see them).
#[allow(clippy::all, missing_docs)] // reason: generated code
pub mod mesh {
    // prost names chat.v1 types relative to this package, as `super::super::v1::…`.
    mod chat {
        pub use crate::pb as v1;
        pub mod mesh {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/chat.mesh.v1.rs"));
            }
        }
    }
    pub use chat::mesh::v1::*;
}

/// Generated protobuf types of package `chat.replica.v1`: the replication log of a
/// cluster (internal; clients never see it).
#[allow(clippy::all, missing_docs)] // reason: generated code
pub mod replica {
    include!(concat!(env!("OUT_DIR"), "/chat.replica.v1.rs"));
}

pub use frame::{
    encode_frame, peek_request_id, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES,
    LENGTH_PREFIX_BYTES,
};
pub use pb::envelope::Body;
pub use pb::{Envelope, ErrorCode};

/// Builds an envelope; a shorthand used by servers and clients alike.
pub fn envelope(request_id: u64, body: Body) -> Envelope {
    Envelope {
        request_id,
        body: Some(body),
    }
}

/// Builds an error response envelope.
pub fn error_envelope(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Envelope {
    envelope(
        request_id,
        Body::Error(pb::Error {
            retry_after_ms: 0,
            code: code as i32,
            message: message.into(),
        }),
    )
}
