//! Media: chunked, resumable uploads and pipelined downloads of assets, and sending them.

use bytes::Bytes;
use chat_protocol::pb::{self, envelope::Body};
use crossbeam_channel::Receiver;
use sha2::{Digest, Sha256};

use crate::connection::{new_client_msg_id, unexpected, Connection};
use crate::error::{ClientError, Result};

/// Chunks in flight at once during an upload or a download.
const WINDOW: usize = 4;

/// What an upload declares besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct MediaSpec {
    pub kind: pb::MediaKind,
    pub mime_type: String,
    pub duration_ms: u32,
    pub width: u32,
    pub height: u32,
    pub file_name: String,
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl Connection {
    /// Starts an upload of `size` bytes with this SHA-256, or finds the unfinished one of
    /// the same file; the status says from which offset to send.
    pub fn upload_start(
        &self,
        size: u64,
        sha256: &[u8; 32],
        spec: &MediaSpec,
    ) -> Result<pb::UploadStatus> {
        let req = Body::UploadStart(pb::UploadStart {
            size,
            mime_type: spec.mime_type.clone(),
            sha256: Bytes::copy_from_slice(sha256),
            kind: spec.kind as i32,
            duration_ms: spec.duration_ms,
            width: spec.width,
            height: spec.height,
            file_name: spec.file_name.clone(),
        });
        match self.request(req)? {
            Body::UploadStatus(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one chunk and waits for the new status.
    pub fn upload_chunk(
        &self,
        upload_id: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<pb::UploadStatus> {
        let rx = self.start_chunk(upload_id, offset, data)?;
        finish_status(self, rx)
    }

    fn start_chunk(
        &self,
        upload_id: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<Receiver<pb::Envelope>> {
        self.start(Body::UploadChunk(pb::UploadChunk {
            upload_id: Bytes::copy_from_slice(upload_id),
            offset,
            data: Bytes::copy_from_slice(data),
        }))
    }

    pub fn upload_finish(&self, upload_id: &[u8]) -> Result<pb::Media> {
        let req = Body::UploadFinish(pb::UploadFinish {
            upload_id: Bytes::copy_from_slice(upload_id),
        });
        match self.request(req)? {
            Body::AssetReady(pb::AssetReady { media: Some(m) }) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// Uploads `data` in chunks, several in flight, continuing an earlier interrupted upload
    /// of the same bytes from where the server stands. Returns the asset.
    pub fn upload(&self, data: &[u8], spec: &MediaSpec) -> Result<pb::Media> {
        let status = self.upload_start(data.len() as u64, &sha256(data), spec)?;
        self.upload_from(data, &status, u64::MAX)?;
        self.upload_finish(&status.upload_id)
    }

    /// Sends the chunks of `data` from `status.offset` up to `stop_at` (for tests that
    /// interrupt an upload); returns the offset reached.
    pub fn upload_from(&self, data: &[u8], status: &pb::UploadStatus, stop_at: u64) -> Result<u64> {
        let chunk = (status.max_chunk_bytes as usize).max(1);
        let end = data
            .len()
            .min(usize::try_from(stop_at).unwrap_or(usize::MAX));
        let mut offset = usize::try_from(status.offset)
            .unwrap_or(usize::MAX)
            .min(end);
        let mut in_flight = std::collections::VecDeque::new();
        let mut reached = status.offset;
        while offset < end || !in_flight.is_empty() {
            while offset < end && in_flight.len() < WINDOW {
                let next = (offset + chunk).min(end);
                in_flight.push_back(self.start_chunk(
                    &status.upload_id,
                    offset as u64,
                    &data[offset..next],
                )?);
                offset = next;
            }
            if let Some(rx) = in_flight.pop_front() {
                reached = finish_status(self, rx)?.offset;
            }
        }
        Ok(reached)
    }

    /// Up to `length` bytes of an asset from `offset` (0: as many as the server sends at
    /// once). `group_id`: the group the asset was seen in, if it came in a group message.
    pub fn fetch_asset_range(
        &self,
        asset_id: &[u8],
        offset: u64,
        length: u32,
        group_id: u64,
    ) -> Result<pb::AssetData> {
        let rx = self.start_fetch(asset_id, offset, length, group_id)?;
        finish_data(self, rx)
    }

    fn start_fetch(
        &self,
        asset_id: &[u8],
        offset: u64,
        length: u32,
        group_id: u64,
    ) -> Result<Receiver<pb::Envelope>> {
        self.start(Body::FetchAsset(pb::FetchAsset {
            asset_id: Bytes::copy_from_slice(asset_id),
            offset,
            length,
            group_id,
        }))
    }

    /// Downloads a whole asset, several ranges in flight, and checks it against `media`'s
    /// size and SHA-256.
    pub fn fetch_asset(&self, media: &pb::Media, group_id: u64) -> Result<Vec<u8>> {
        let first = self.fetch_asset_range(&media.asset_id, 0, 0, group_id)?;
        let step = first.data.len().max(1) as u64;
        let mut out = first.data.to_vec();
        let mut next = out.len() as u64;
        let mut in_flight = std::collections::VecDeque::new();
        while (out.len() as u64) < first.size {
            while next < first.size && in_flight.len() < WINDOW {
                in_flight.push_back(self.start_fetch(&media.asset_id, next, 0, group_id)?);
                next += step;
            }
            let Some(rx) = in_flight.pop_front() else {
                break;
            };
            let data = finish_data(self, rx)?;
            if data.offset != out.len() as u64 || data.data.is_empty() {
                return Err(ClientError::Protocol("asset data out of order".into()));
            }
            out.extend_from_slice(&data.data);
        }
        if out.len() as u64 != media.size || sha256(&out)[..] != media.sha256[..] {
            return Err(ClientError::Protocol(
                "downloaded asset does not match its size and SHA-256".into(),
            ));
        }
        Ok(out)
    }

    /// Sends an uploaded asset (with an optional caption and thumbnail) to a user.
    pub fn send_media(
        &self,
        to_user_id: u64,
        media: &pb::Media,
        caption: &str,
    ) -> Result<pb::SendAck> {
        let req = Body::SendMessage(pb::SendMessage {
            to_user_id,
            client_msg_id: new_client_msg_id(),
            text: caption.into(),
            media: Some(Box::new(attachment(media))),
            ..Default::default()
        });
        send_ack(self, req)
    }

    /// Sends an uploaded asset (with an optional caption and thumbnail) to a group.
    pub fn send_group_media(
        &self,
        group_id: u64,
        media: &pb::Media,
        caption: &str,
    ) -> Result<pb::SendAck> {
        let req = Body::SendGroupMessage(pb::SendGroupMessage {
            group_id,
            client_msg_id: new_client_msg_id(),
            text: caption.into(),
            media: Some(Box::new(attachment(media))),
            ..Default::default()
        });
        send_ack(self, req)
    }
}

/// What a send carries of the media: the server fills in the rest.
fn attachment(media: &pb::Media) -> pb::Media {
    pb::Media {
        asset_id: media.asset_id.clone(),
        thumbnail: media.thumbnail.clone(),
        ..Default::default()
    }
}

fn send_ack(conn: &Connection, req: Body) -> Result<pb::SendAck> {
    match conn.request(req)? {
        Body::SendAck(a) => Ok(a),
        other => Err(unexpected(&other)),
    }
}

fn finish_status(conn: &Connection, rx: Receiver<pb::Envelope>) -> Result<pb::UploadStatus> {
    match conn.finish(rx)? {
        Body::UploadStatus(s) => Ok(s),
        other => Err(unexpected(&other)),
    }
}

fn finish_data(conn: &Connection, rx: Receiver<pb::Envelope>) -> Result<pb::AssetData> {
    match conn.finish(rx)? {
        Body::AssetData(d) => Ok(d),
        other => Err(unexpected(&other)),
    }
}
