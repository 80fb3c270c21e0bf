//! `chat delete`, `chat edit`, `chat react`: change a message after sending. The message
//! is named by its conversation (`--with NAME` or `--group ID`) and its id, the number
//! `history` shows as `id N` (its server timestamp).

use chat_client::{Chat, Connection, Credentials};

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
    /// The other person's username, for a 1:1 conversation.
    pub fn with(&self) -> Option<&str> {
        self.with.as_deref()
    }

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

/// A change to a message after sending, as the subcommands and interactive mode name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// For everyone (its sender, within the server's window) or only for you.
    Delete { for_everyone: bool },
    /// The new text.
    Edit(String),
    /// The emoji; empty removes your reaction.
    React(String),
}

/// Makes `change` to the message `id` of `chat` and says so.
pub fn apply(
    conn: &Connection,
    chat: Chat,
    id: u64,
    change: &Change,
    out: Output,
) -> anyhow::Result<()> {
    match change {
        Change::Delete { for_everyone } => {
            conn.delete_message(chat, id, *for_everyone)?;
            let whom = if *for_everyone {
                "for everyone"
            } else {
                "for you"
            };
            out.info(&format!("deleted message {id} {whom}"));
        }
        Change::Edit(text) => {
            conn.edit_message(chat, id, text)?;
            out.info(&format!("edited message {id}"));
        }
        Change::React(emoji) => {
            conn.react(chat, id, emoji)?;
            if emoji.is_empty() {
                out.info(&format!("removed your reaction to message {id}"));
            } else {
                out.info(&format!("reacted {emoji} to message {id}"));
            }
        }
    }
    Ok(())
}

/// One run of `chat delete`, `chat edit` or `chat react`.
fn run(
    creds: Credentials,
    chat: &Conversation,
    id: u64,
    change: &Change,
    out: Output,
) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    let chat = chat.resolve(conn)?;
    apply(conn, chat, id, change, out)
}

pub fn delete(creds: Credentials, args: DeleteArgs, out: Output) -> anyhow::Result<()> {
    let change = Change::Delete {
        for_everyone: args.for_everyone,
    };
    run(creds, &args.chat, args.id, &change, out)
}

pub fn edit(creds: Credentials, args: EditArgs, out: Output) -> anyhow::Result<()> {
    let change = Change::Edit(args.text.join(" "));
    run(creds, &args.chat, args.id, &change, out)
}

pub fn react(creds: Credentials, args: ReactArgs, out: Output) -> anyhow::Result<()> {
    let change = Change::React(args.emoji.unwrap_or_default());
    run(creds, &args.chat, args.id, &change, out)
}
