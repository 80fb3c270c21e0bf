//! `chat delete`, `chat edit`, `chat react`: change a message after sending. The message
//! is named by its conversation (`--with NAME` or `--group ID`) and its id, the number
//! `history` shows as `id N` (its server timestamp).

use chat_client::{Chat, Credentials};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Conversation {
    /// The other person of the conversation
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "group",
        conflicts_with = "group"
    )]
    with: Option<String>,
    /// The group of the conversation
    #[arg(long, value_name = "ID")]
    group: Option<u64>,
}

impl Conversation {
    pub fn resolve(&self, conn: &chat_client::Connection) -> anyhow::Result<Chat> {
        match (&self.with, self.group) {
            (Some(name), _) => Ok(Chat::User(crate::lookup(conn, name)?)),
            (None, Some(group)) => Ok(Chat::Group(group)),
            (None, None) => anyhow::bail!("--with or --group is required"),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    chat: Conversation,
    /// The message's id
    id: u64,
    /// Delete it for everyone (only its sender, within the server's window; 48 h by
    /// default) instead of only from your own history
    #[arg(long)]
    for_everyone: bool,
}

#[derive(Debug, clap::Args)]
pub struct EditArgs {
    #[command(flatten)]
    chat: Conversation,
    /// The message's id
    id: u64,
    /// The new text (words are joined with spaces)
    #[arg(required = true, num_args = 1..)]
    text: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReactArgs {
    #[command(flatten)]
    chat: Conversation,
    /// The message's id
    id: u64,
    /// The emoji; replaces your earlier reaction to the message
    #[arg(required_unless_present = "remove", conflicts_with = "remove")]
    emoji: Option<String>,
    /// Remove your reaction instead
    #[arg(long)]
    remove: bool,
}

pub fn delete(creds: Credentials, args: DeleteArgs, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    let chat = args.chat.resolve(conn)?;
    conn.delete_message(chat, args.id, args.for_everyone)?;
    let whom = if args.for_everyone {
        "for everyone"
    } else {
        "for you"
    };
    out.info(&format!("deleted message {} {whom}", args.id));
    Ok(())
}

pub fn edit(creds: Credentials, args: EditArgs, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    let chat = args.chat.resolve(conn)?;
    conn.edit_message(chat, args.id, &args.text.join(" "))?;
    out.info(&format!("edited message {}", args.id));
    Ok(())
}

pub fn react(creds: Credentials, args: ReactArgs, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    let chat = args.chat.resolve(conn)?;
    let emoji = args.emoji.unwrap_or_default();
    conn.react(chat, args.id, &emoji)?;
    if emoji.is_empty() {
        out.info(&format!("removed your reaction to message {}", args.id));
    } else {
        out.info(&format!("reacted {emoji} to message {}", args.id));
    }
    Ok(())
}
