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
            println!("{}", message_json("message", from, to, m));
        } else {
            println!(
                "[{}] {from} -> {to}: {}",
                clock(m.timestamp_us),
                message_text(m)
            );
        }
    }

    /// A change to an earlier message (`actor` made it; `conversation` in words).
    pub fn message_change(&self, c: &pb::MessageChange, actor: &str, conversation: &str) {
        use pb::MessageChangeKind as K;
        if self.json {
            let v = json!({
                "event": "message_change", "kind": c.kind().as_str_name(),
                "actor": actor, "actor_user_id": c.actor_user_id,
                "from_user_id": c.from_user_id, "to_user_id": c.to_user_id,
                "group_id": c.group_id, "message_id": c.message_us,
                "message_seq": c.message_seq, "text": c.text, "emoji": c.emoji,
                "timestamp_us": c.timestamp_us,
            });
            println!("{v}");
            return;
        }
        let what = match c.kind() {
            K::Deleted => format!("{actor} deleted message {}", c.message_us),
            K::Edited => format!("{actor} edited message {}: {}", c.message_us, c.text),
            K::Reaction if c.emoji.is_empty() => {
                format!("{actor} removed their reaction to message {}", c.message_us)
            }
            K::Reaction => format!("{actor} reacted {} to message {}", c.emoji, c.message_us),
            K::Hidden => format!("you deleted message {} for yourself", c.message_us),
            K::Unspecified => format!("message {} changed", c.message_us),
        };
        println!("[{}] * {what} ({conversation})", clock(c.timestamp_us));
    }

    /// A 1:1 message the user sent (from this or another of their devices).
    pub fn sent_elsewhere(&self, from: &str, to: &str, m: &pb::Message) {
        if self.json {
            println!("{}", message_json("sent_message", from, to, m));
        } else {
            println!(
                "[{}] {from} -> {to}: {} (sent)",
                clock(m.timestamp_us),
                message_text(m)
            );
        }
    }

    /// The user read a conversation on one of their devices.
    pub fn read_marker(&self, r: &pb::ReadMarker, conversation: &str) {
        if self.json {
            let v = json!({
                "event": "read_marker", "with_user_id": r.with_user_id, "group_id": r.group_id,
                "conversation": conversation, "up_to_seq": r.up_to_seq,
                "timestamp_us": r.timestamp_us,
            });
            println!("{v}");
        } else {
            println!(
                "[{}] * you read {conversation} up to seq {}",
                clock(r.timestamp_us),
                r.up_to_seq
            );
        }
    }

    /// The user's devices.
    pub fn devices(&self, devices: &[pb::Device]) {
        for d in devices {
            let name = if d.name.is_empty() {
                "(unnamed)"
            } else {
                &d.name
            };
            if self.json {
                let v = json!({
                    "event": "device", "device_id": d.device_id, "name": d.name,
                    "created_us": d.created_us, "last_active_us": d.last_active_us,
                    "online": d.online, "current": d.current,
                });
                println!("{v}");
            } else {
                let state = if d.online {
                    "online now".to_string()
                } else {
                    format!("last active {} UTC", date_time(d.last_active_us))
                };
                let this = if d.current { " (this one)" } else { "" };
                println!("{:>20}  {name}{this}: {state}", d.device_id);
            }
        }
        if devices.is_empty() && !self.json {
            println!("no devices");
        }
    }

    /// A list of users (blocked users, contacts) with display names.
    pub fn users(&self, list: &str, users: &[(String, pb::ListedUser)]) {
        for (name, u) in users {
            if self.json {
                let v = json!({
                    "event": list, "user": name, "user_id": u.user_id, "added_us": u.added_us,
                });
                println!("{v}");
            } else {
                println!("{name} (since {} UTC)", date_time(u.added_us));
            }
        }
        if users.is_empty() && !self.json {
            println!("nobody");
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

/// A message as JSON, with what happened to it since it was sent.
fn message_json(event: &str, from: &str, to: &str, m: &pb::Message) -> serde_json::Value {
    let reactions: Vec<_> = m
        .reactions
        .iter()
        .map(|r| json!({"user_id": r.user_id, "emoji": r.emoji}))
        .collect();
    json!({
        "event": event, "from": from, "to": to, "from_user_id": m.from_user_id,
        "to_user_id": m.to_user_id, "seq": m.seq, "timestamp_us": m.timestamp_us,
        "id": m.timestamp_us, "client_msg_id": m.client_msg_id,
        "text": m.text, "group_id": m.group_id,
        "media": m.media.as_deref().map(crate::media::to_json),
        "reply_to": m.reply_to_us, "edited_us": m.edited_us, "deleted": m.deleted,
        "reactions": reactions,
    })
}

/// A message's text as shown: media, reply, edits, deletion, reactions, and its id (which
/// `chat delete`, `edit`, `react` and `send --reply-to` take).
fn message_text(m: &pb::Message) -> String {
    let mut text = if m.deleted {
        "(deleted)".to_string()
    } else {
        match m.media.as_deref() {
            Some(media) if m.text.is_empty() => format!("[{}]", crate::media::describe(media)),
            Some(media) => format!("[{}] {}", crate::media::describe(media), m.text),
            None => m.text.clone(),
        }
    };
    if m.reply_to_us != 0 {
        text = format!("(reply to {}) {text}", m.reply_to_us);
    }
    if m.edited_us != 0 && !m.deleted {
        text.push_str(" (edited)");
    }
    if !m.reactions.is_empty() {
        let reactions: Vec<&str> = m.reactions.iter().map(|r| r.emoji.as_str()).collect();
        text.push_str(&format!(" [{}]", reactions.join(" ")));
    }
    format!("{text}  (id {})", m.timestamp_us)
}

/// UTC wall-clock time of a server timestamp, HH:MM:SS.
pub fn clock(timestamp_us: u64) -> String {
    let secs = timestamp_us / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

/// UTC date and time of a server timestamp, YYYY-MM-DD HH:MM:SS.
pub fn date_time(timestamp_us: u64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let days = (timestamp_us / 1_000_000 / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {}", clock(timestamp_us))
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_time_formats_utc_calendar_dates() {
        assert_eq!(super::date_time(0), "1970-01-01 00:00:00");
        // 2026-12-02 14:41:24 UTC
        assert_eq!(
            super::date_time(1_796_222_484_000_000),
            "2026-12-02 14:41:24"
        );
        assert_eq!(super::date_time(951_782_400_000_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn clock_formats_utc_time_of_day() {
        assert_eq!(super::clock(0), "00:00:00");
        assert_eq!(
            super::clock(((13 * 3600 + 5 * 60 + 9) * 1_000_000) + 999),
            "13:05:09"
        );
    }
}
