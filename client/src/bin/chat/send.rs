//! `chat send --to NAME TEXT...`

use chat_client::{Credentials, Session};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipient's username
    #[arg(long, value_name = "NAME")]
    to: String,
    /// The message (words are joined with spaces)
    #[arg(required = true, num_args = 1..)]
    text: Vec<String>,
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    let session = Session::open(creds)?;
    let to = crate::lookup(session.conn(), &args.to)?;
    let ack = session.conn().send_message(to, &args.text.join(" "))?;
    out.sent(&args.to, &ack);
    Ok(())
}
