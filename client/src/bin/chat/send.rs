//! `chat send --to NAME TEXT...` or `chat send --group ID TEXT...`; with `--file PATH` the
//! file is uploaded and sent, and TEXT (optional) is its caption.

use std::path::PathBuf;

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
    match target {
        Target::User(to, name) => {
            let ack = match &media {
                Some(m) => conn.send_media(to, m, &text)?,
                None => conn.send_message(to, &text)?,
            };
            out.sent(&name, &ack, media.as_ref());
        }
        Target::Group(group) => {
            let ack = match &media {
                Some(m) => conn.send_group_media(group, m, &text)?,
                None => {
                    let id = rand::random::<u64>().max(1);
                    conn.send_group_message(group, id, &text)?
                }
            };
            let mut names = crate::Names::default();
            out.sent(&names.group(conn, group), &ack, media.as_ref());
        }
    }
    Ok(())
}

enum Target {
    /// A user's id and name.
    User(u64, String),
    Group(u64),
}
