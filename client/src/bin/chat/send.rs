//! `chat send --to NAME TEXT...` or `chat send --group ID TEXT...`; with `--file PATH` the
//! file is uploaded and sent, and TEXT (optional) is its caption.

use std::path::PathBuf;

use chat_client::pb::{self, envelope::Body};
use chat_client::Credentials;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipient's username
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "group",
        conflicts_with = "group"
    )]
    to: Option<String>,
    /// A group you are a member of (its id, as `chat group` prints it)
    #[arg(long, value_name = "ID")]
    group: Option<u64>,
    /// Send this file (an image, voice note or any file; 16 MiB at most on a default
    /// server); TEXT is then an optional caption
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// The file's mime type, instead of guessing it from the extension
    #[arg(long, value_name = "TYPE", requires = "file")]
    mime: Option<String>,
    /// Length of a voice note sent with --file, in milliseconds
    #[arg(long, value_name = "N", requires = "file")]
    voice_ms: Option<u32>,
    /// Reply to this message of the conversation (its id, as `history` shows it)
    #[arg(long, value_name = "ID")]
    reply_to: Option<u64>,
    /// The message, or the file's caption (words are joined with spaces)
    #[arg(required_unless_present = "file", num_args = 1..)]
    text: Vec<String>,
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    let text = args.text.join(" ");
    // Read the file before connecting, so a wrong path fails fast.
    let file = match &args.file {
        Some(path) => Some((
            path,
            crate::media::read_file(path, args.mime.as_deref(), args.voice_ms)?,
        )),
        None => None,
    };
    let session = crate::open(creds)?;
    let conn = session.conn();
    // Who it goes to first, so an unknown name fails before an upload.
    let target = match (args.to, args.group) {
        (Some(name), _) => Target::User(crate::lookup(conn, &name)?, name),
        (None, Some(group)) => Target::Group(group),
        (None, None) => anyhow::bail!("--to or --group is required"),
    };
    let media = match file {
        Some((path, (data, spec))) => Some(
            conn.upload(&data, &spec)
                .map_err(|e| crate::media::explain_upload_error(e, path, &spec, data.len()))?,
        ),
        None => None,
    };
    let attachment = media.as_ref().map(|m| {
        Box::new(pb::Media {
            asset_id: m.asset_id.clone(),
            thumbnail: m.thumbnail.clone(),
            ..Default::default()
        })
    });
    let client_msg_id = rand::random::<u64>().max(1);
    let reply_to_us = args.reply_to.unwrap_or(0);
    let (body, name) = match target {
        Target::User(to_user_id, name) => (
            Body::SendMessage(pb::SendMessage {
                to_user_id,
                client_msg_id,
                text,
                media: attachment,
                reply_to_us,
            }),
            name,
        ),
        Target::Group(group_id) => {
            let mut names = crate::Names::default();
            let name = names.group(conn, group_id);
            let body = Body::SendGroupMessage(pb::SendGroupMessage {
                group_id,
                client_msg_id,
                text,
                media: attachment,
                reply_to_us,
            });
            (body, name)
        }
    };
    match conn.request(body)? {
        Body::SendAck(ack) => out.sent(&name, &ack, media.as_ref()),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
    Ok(())
}

enum Target {
    /// A user's id and name.
    User(u64, String),
    Group(u64),
}
