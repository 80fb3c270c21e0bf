//! Length-prefixed framing: a 4-byte big-endian length, then one encoded `Envelope`.
//!
//! The decoder checks the length prefix against the maximum frame size *before* it buffers
//! the body, so a peer cannot make us allocate more than `max_frame_bytes` per connection.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;

use crate::pb::Envelope;

/// Size of the length prefix in bytes.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Default largest accepted frame body (the length prefix excluded): 1 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announced more than the configured maximum. The stream cannot be
    /// resynchronised; the connection should be closed after reporting it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The frame body is not a valid `Envelope`. `request_id` is what could be salvaged
    /// from the body (0 when none). The framing itself is intact.
    #[error("frame body is not a valid envelope: {reason}")]
    Malformed { request_id: u64, reason: String },
    /// A string field held bytes that are not UTF-8. The framing is intact and the rest of
    /// the envelope is well formed, so the connection may continue.
    #[error("a string field is not valid UTF-8")]
    InvalidUtf8 { request_id: u64 },
}

/// Incremental frame decoder. Feed it bytes (append to the buffer you pass in) and call
/// [`FrameDecoder::decode`] until it returns `Ok(None)`.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// How many bytes the next frame needs in total (prefix included), if the prefix is
    /// already buffered and acceptable. Lets a reader reserve exactly once.
    pub fn needed(&self, buf: &[u8]) -> Option<usize> {
        let len = read_len(buf)?;
        (len <= self.max_frame_bytes).then_some(LENGTH_PREFIX_BYTES + len)
    }

    /// Removes and decodes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame (nothing is consumed).
    /// On `Malformed`/`InvalidUtf8` the bad frame has been consumed and decoding may go on;
    /// on `TooLarge` nothing is consumed and the stream must be abandoned.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Envelope>, FrameError> {
        let Some(len) = read_len(buf) else {
            return Ok(None);
        };
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if buf.len() < LENGTH_PREFIX_BYTES + len {
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX_BYTES);
        let body = buf.split_to(len).freeze();
        match Envelope::decode(body.clone()) {
            Ok(env) if env.body.is_some() => Ok(Some(env)),
            Ok(env) => Err(FrameError::Malformed {
                request_id: env.request_id,
                reason: "envelope has no body".into(),
            }),
            Err(e) => {
                let request_id = peek_request_id(&body).unwrap_or(0);
                let reason = e.to_string();
                if reason.contains("UTF-8") {
                    Err(FrameError::InvalidUtf8 { request_id })
                } else {
                    Err(FrameError::Malformed { request_id, reason })
                }
            }
        }
    }
}

fn read_len(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; LENGTH_PREFIX_BYTES] = buf.get(..LENGTH_PREFIX_BYTES)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix) as usize)
}

/// Appends one frame holding `env` to `out`.
pub fn encode_frame(env: &Envelope, out: &mut BytesMut) {
    let len = env.encoded_len();
    out.reserve(LENGTH_PREFIX_BYTES + len);
    out.put_u32(len as u32);
    // Cannot fail: capacity was reserved above.
    let _ = env.encode(out);
}

/// Finds the top-level `request_id` (field 1, varint) in an envelope body that may not decode
/// as a whole, so an error about it can still be correlated by the client.
///
/// Like protobuf decoding, the last occurrence of the field wins; fields after the first
/// unparsable byte are not seen. So for a body that decodes, this is its `request_id`, and a
/// body that decodes but lacks a body member is reported with the same id as one that does
/// not decode (the fuzz tests found the two disagreeing when field 1 occurred twice).
pub fn peek_request_id(mut body: &[u8]) -> Option<u64> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    let mut found = None;
    while !body.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut body) else {
            break;
        };
        let parsed = if tag == 1 && wire_type == WireType::Varint {
            decode_varint(&mut body).map(|id| found = Some(id))
        } else {
            skip_field(wire_type, tag, &mut body, DecodeContext::default())
        };
        if parsed.is_err() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests;
