//! `chat history --with NAME`

use chat_client::{Credentials, Session};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The other person's username
    #[arg(long, value_name = "NAME")]
    with: String,
    /// Only messages older than this server timestamp (microseconds; 0 = newest)
    #[arg(long, default_value_t = 0, value_name = "US")]
    before: u64,
    /// How many messages (at most 200)
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    let session = Session::open(creds)?;
    let peer = crate::lookup(session.conn(), &args.with)?;
    let page = session.conn().history(peer, args.before, args.limit)?;
    let me = session.user_id();
    for m in &page.messages {
        let (from, to) = if m.from_user_id == me {
            (session.username(), args.with.as_str())
        } else {
            (args.with.as_str(), session.username())
        };
        out.message(from, to, m);
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
