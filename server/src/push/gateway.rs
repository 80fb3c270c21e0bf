//! The push gateway's JSON (docs/PROTOCOL.md, "Push notifications"): one notification per
//! user in a request, the rejected tokens in the answer. Modelled on the Matrix push
//! gateway API.

use chat_protocol::pb;
use chat_storage::records::{PushDevice, PushJob};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize)]
struct Request<'a> {
    notification: Notification<'a>,
}

#[derive(Debug, Serialize)]
struct Notification<'a> {
    /// Ids are decimal strings: they often exceed 2^53, where a JSON number read as a
    /// double (JavaScript, many JSON libraries) silently loses digits.
    user_id: String,
    sender_id: String,
    conversation: Conversation,
    seq: u64,
    count: u64,
    timestamp_us: u64,
    /// Absent when the user turned previews off.
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<&'a str>,
    /// Absent for a text message.
    #[serde(skip_serializing_if = "Option::is_none")]
    media_kind: Option<&'static str>,
    devices: Vec<Device<'a>>,
}

#[derive(Debug, Serialize)]
struct Conversation {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
}

#[derive(Debug, Serialize)]
struct Device<'a> {
    platform: &'static str,
    token: &'a str,
}

/// What a gateway may answer; unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    rejected: Vec<String>,
}

/// The request body announcing `latest` (the newest unread job) and `count` unread jobs
/// to `devices`.
pub fn notification(
    latest: &PushJob,
    count: u64,
    devices: &[PushDevice],
) -> serde_json::Result<Vec<u8>> {
    let request = Request {
        notification: Notification {
            user_id: latest.user.to_string(),
            sender_id: latest.sender.to_string(),
            conversation: Conversation {
                kind: if latest.group { "group" } else { "user" },
                id: latest.conversation.to_string(),
            },
            seq: latest.seq,
            count,
            timestamp_us: latest.timestamp_us,
            preview: latest.preview.as_deref(),
            media_kind: media_kind(latest.media_kind),
            devices: devices
                .iter()
                .map(|d| Device {
                    platform: platform(d.platform),
                    token: &d.token,
                })
                .collect(),
        },
    };
    serde_json::to_vec(&request)
}

/// The tokens a 2xx answer rejects; none when the body is empty or not that JSON.
pub fn rejected_tokens(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Answer>(body)
        .map(|a| a.rejected)
        .unwrap_or_default()
}

fn platform(value: i32) -> &'static str {
    match pb::PushPlatform::try_from(value) {
        Ok(pb::PushPlatform::Apns) => "apns",
        Ok(pb::PushPlatform::Fcm) => "fcm",
        Ok(pb::PushPlatform::Web) => "web",
        _ => "unspecified",
    }
}

fn media_kind(value: i32) -> Option<&'static str> {
    match pb::MediaKind::try_from(value) {
        Ok(pb::MediaKind::Image) => Some("image"),
        Ok(pb::MediaKind::Voice) => Some("voice"),
        Ok(pb::MediaKind::File) => Some("file"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code
    use super::*;

    fn job(preview: Option<&str>, media_kind: pb::MediaKind, group: bool) -> PushJob {
        PushJob {
            user: 123,
            sender: 456,
            conversation: if group { 789 } else { 456 },
            group,
            seq: 17,
            timestamp_us: 1_700_000_000_000_000,
            preview: preview.map(str::to_string),
            media_kind: media_kind as i32,
        }
    }

    fn devices() -> Vec<PushDevice> {
        vec![PushDevice {
            platform: pb::PushPlatform::Apns as i32,
            token: "tok\"1".into(),
            created_us: 1,
        }]
    }

    #[test]
    fn a_text_notification_has_the_documented_shape() {
        let body = notification(
            &job(Some("hello"), pb::MediaKind::Unspecified, false),
            10,
            &devices(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"notification": {
                "user_id": "123", "sender_id": "456",
                "conversation": {"type": "user", "id": "456"},
                "seq": 17, "count": 10, "timestamp_us": 1_700_000_000_000_000u64,
                "preview": "hello",
                "devices": [{"platform": "apns", "token": "tok\"1"}]
            }})
        );
    }

    #[test]
    fn media_and_group_are_named_and_a_hidden_preview_is_absent() {
        let body = notification(&job(None, pb::MediaKind::Voice, true), 1, &devices()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let n = &v["notification"];
        assert_eq!(
            n["conversation"],
            serde_json::json!({"type": "group", "id": "789"})
        );
        assert_eq!(n["media_kind"], "voice");
        assert!(n.get("preview").is_none());
        // An empty caption with previews on is an empty preview, not a hidden one.
        let body = notification(&job(Some(""), pb::MediaKind::Image, false), 1, &[]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["notification"]["preview"], "");
        assert_eq!(v["notification"]["media_kind"], "image");
    }

    #[test]
    fn rejected_tokens_are_read_leniently() {
        assert_eq!(
            rejected_tokens(br#"{"rejected":["a","b"],"other":1}"#),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(rejected_tokens(b"").is_empty());
        assert!(rejected_tokens(b"{}").is_empty());
        assert!(rejected_tokens(b"<html>").is_empty());
    }
}
