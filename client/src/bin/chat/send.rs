//! `chat send --to NAME TEXT...` or `chat send --group ID TEXT...`

use chat_client::{Credentials, Session};

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
    /// The message (words are joined with spaces)
    #[arg(required = true, num_args = 1..)]
    text: Vec<String>,
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    let session = Session::open(creds)?;
    let text = args.text.join(" ");
    match (args.to, args.group) {
        (Some(name), _) => {
            let to = crate::lookup(session.conn(), &name)?;
            let ack = session.conn().send_message(to, &text)?;
            out.sent(&name, &ack);
        }
        (None, Some(group)) => {
            let id = rand::random::<u64>().max(1);
            let ack = session.conn().send_group_message(group, id, &text)?;
            let mut names = crate::Names::default();
            out.sent(&names.group(session.conn(), group), &ack);
        }
        (None, None) => anyhow::bail!("--to or --group is required"),
    }
    Ok(())
}
