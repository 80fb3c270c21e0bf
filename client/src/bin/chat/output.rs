//! Human or JSON output, in one place.

use chat_client::pb;
use serde_json::json;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn registered(&self, user: &str, user_id: u64) {
        if self.json {
            println!(
                "{}",
                json!({"event": "registered", "user": user, "user_id": user_id})
            );
        } else {
            println!("registered {user} (user id {user_id})");
        }
    }

    /// A sent message; `media` is its attachment, if any.
    pub fn sent(&self, to: &str, ack: &pb::SendAck, media: Option<&pb::Media>) {
        if self.json {
            let v = json!({
                "event": "sent", "to": to, "to_user_id": ack.to_user_id,
                "group_id": ack.group_id, "seq": ack.seq,
                "timestamp_us": ack.timestamp_us, "client_msg_id": ack.client_msg_id,
                "duplicate": ack.duplicate, "media": media.map(crate::media::to_json),
            });
            println!("{v}");
        } else {
            let attachment = media
                .map(|m| format!(" ({})", crate::media::describe(m)))
                .unwrap_or_default();
            println!(
                "sent to {to} [{}] (seq {}){attachment}",
                clock(ack.timestamp_us),
                ack.seq
            );
        }
    }

    /// One message; `from`/`to` are display names.
    pub fn message(&self, from: &str, to: &str, m: &pb::Message) {
        if self.json {
            let v = json!({
                "event": "message", "from": from, "to": to, "from_user_id": m.from_user_id,
                "to_user_id": m.to_user_id, "seq": m.seq, "timestamp_us": m.timestamp_us,
                "text": m.text, "group_id": m.group_id,
                "media": m.media.as_deref().map(crate::media::to_json),
            });
            println!("{v}");
        } else {
            let body = match m.media.as_deref() {
                Some(media) if m.text.is_empty() => format!("[{}]", crate::media::describe(media)),
                Some(media) => format!("[{}] {}", crate::media::describe(media), m.text),
                None => m.text.clone(),
            };
            println!("[{}] {from} -> {to}: {body}", clock(m.timestamp_us));
        }
    }

    /// Where the attachment of message `m` was saved.
    pub fn saved(&self, m: &pb::Message, media: &pb::Media, path: &std::path::Path) {
        if self.json {
            let v = json!({
                "event": "saved", "seq": m.seq, "group_id": m.group_id,
                "from_user_id": m.from_user_id, "asset_id": crate::media::hex(&media.asset_id),
                "size": media.size, "path": path.display().to_string(),
            });
            println!("{v}");
        } else {
            println!(
                "saved {} (seq {}) to {}",
                crate::media::describe(media),
                m.seq,
                path.display()
            );
        }
    }

    /// A group's state: name, id, members with roles (display names).
    pub fn group(&self, g: &pb::Group, members: &[(String, pb::GroupRole)]) {
        let role = |r: &pb::GroupRole| match r {
            pb::GroupRole::Creator => "creator",
            pb::GroupRole::Admin => "admin",
            _ => "member",
        };
        if self.json {
            let members: Vec<_> = g
                .members
                .iter()
                .zip(members)
                .map(|(m, (name, r))| json!({"user_id": m.user_id, "name": name, "role": role(r)}))
                .collect();
            let v = json!({
                "event": "group", "group_id": g.group_id, "name": g.name,
                "head_seq": g.head_seq, "members": members,
            });
            println!("{v}");
        } else {
            let list: Vec<String> = members
                .iter()
                .map(|(name, r)| match r {
                    pb::GroupRole::Member => name.clone(),
                    r => format!("{name} ({})", role(r)),
                })
                .collect();
            println!(
                "#{} (group {}): {} members: {}",
                g.name,
                g.group_id,
                members.len(),
                list.join(", ")
            );
        }
    }

    /// A membership or name change, already put into words.
    pub fn group_change(&self, c: &pb::GroupChange, sentence: &str) {
        if self.json {
            let v = json!({
                "event": "group_change", "group_id": c.group_id, "seq": c.seq,
                "kind": c.kind().as_str_name(), "actor_user_id": c.actor_user_id,
                "user_ids": c.user_ids, "name": c.name, "timestamp_us": c.timestamp_us,
            });
            println!("{v}");
        } else {
            println!("[{}] * {sentence}", clock(c.timestamp_us));
        }
    }

    /// A delivered/read receipt for messages the user sent: two ticks, as messengers show
    /// them ("vv" delivered, "VV" read).
    pub fn receipt(&self, r: &pb::Receipt, by: &str, conversation: &str) {
        let read = r.kind() == pb::ReceiptKind::Read;
        if self.json {
            let v = json!({
                "event": "receipt", "kind": if read { "read" } else { "delivered" },
                "by": by, "by_user_id": r.by_user_id, "group_id": r.group_id,
                "up_to_seq": r.up_to_seq, "timestamp_us": r.timestamp_us,
            });
            println!("{v}");
        } else {
            let (ticks, what) = if read {
                ("VV", "read")
            } else {
                ("vv", "delivered to")
            };
            let whom = if r.group_id != 0 {
                format!("{by} in {conversation}")
            } else {
                by.to_string()
            };
            println!(
                "[{}] {ticks} {what} {whom}: your messages up to seq {}",
                clock(r.timestamp_us),
                r.up_to_seq
            );
        }
    }

    /// One user's presence (`name` is their display name).
    pub fn presence(&self, name: &str, p: &pb::Presence) {
        if self.json {
            let v = json!({
                "event": "presence", "user": name, "user_id": p.user_id, "online": p.online,
                "last_seen_us": p.last_seen_us, "hidden": p.hidden,
            });
            println!("{v}");
        } else if p.hidden {
            println!("{name}: (not shared with you)");
        } else if p.online {
            println!("{name}: online");
        } else if p.last_seen_us > 0 {
            println!("{name}: last seen {} UTC", clock(p.last_seen_us));
        } else {
            println!("{name}: offline");
        }
    }

    /// Someone started or stopped typing (`where_` is "" for 1:1 or " in #group").
    pub fn typing(&self, name: &str, where_: &str, t: &pb::TypingUpdate) {
        if self.json {
            let v = json!({
                "event": "typing", "from": name, "from_user_id": t.from_user_id,
                "group_id": t.group_id, "typing": t.typing,
            });
            println!("{v}");
        } else if t.typing {
            println!("{name} is typing{where_}...");
        } else {
            println!("{name} stopped typing{where_}");
        }
    }

    pub fn info(&self, text: &str) {
        if self.json {
            println!("{}", json!({"event": "info", "text": text}));
        } else {
            println!("{text}");
        }
    }

    pub fn error(&self, e: &anyhow::Error) {
        let code = e
            .downcast_ref::<chat_client::ClientError>()
            .and_then(|c| c.code())
            .map(|c| c.as_str_name());
        if self.json {
            println!(
                "{}",
                json!({"event": "error", "code": code, "message": e.to_string()})
            );
        } else {
            eprintln!("error: {e}");
        }
    }
}

/// UTC wall-clock time of a server timestamp, HH:MM:SS.
pub fn clock(timestamp_us: u64) -> String {
    let secs = timestamp_us / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_formats_utc_time_of_day() {
        assert_eq!(super::clock(0), "00:00:00");
        assert_eq!(
            super::clock(((13 * 3600 + 5 * 60 + 9) * 1_000_000) + 999),
            "13:05:09"
        );
    }
}
