//! `chat history --with NAME` or `--group ID`, optionally saving media (`--save-media DIR`)

use std::path::PathBuf;

use chat_client::{Chat, Credentials};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    chat: crate::changes::Conversation,
    /// Only messages older than this server timestamp (microseconds; 0 = newest)
    #[arg(long, default_value_t = 0, value_name = "US")]
    before: u64,
    /// How many messages (at most 200)
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Download the images, voice notes and files of these messages into this directory
    /// (created if missing), as <seq>-<file name>
    #[arg(long, value_name = "DIR")]
    save_media: Option<PathBuf>,
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    if let Some(dir) = &args.save_media {
        crate::media::prepare_dir(dir)?;
    }
    let session = crate::open(creds)?;
    let mut names = crate::Names::default();
    let page = match args.chat.resolve(session.conn())? {
        Chat::User(peer) => {
            if let Some(with) = args.chat.with() {
                names.insert(peer, with);
            }
            session.conn().history(peer, args.before, args.limit)?
        }
        Chat::Group(group) => session
            .conn()
            .group_history(group, args.before, args.limit)?,
    };
    names.insert(session.user_id(), session.username());
    for m in &page.messages {
        let (from, to) = names.of_message(session.conn(), m);
        out.message(&from, &to, m);
        crate::media::save_and_report(session.conn(), m, args.save_media.as_deref(), out);
    }
    if page.more && !out.json {
        if let Some(first) = page.messages.first() {
            out.info(&format!(
                "(older messages: --before {})",
                first.timestamp_us
            ));
        }
    }
    Ok(())
}
