//! `chat block NAME`, `chat unblock NAME`, `chat blocked`, and `chat contacts [add|remove
//! NAME]`.

use chat_client::{pb, Credentials};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct ContactsArgs {
    #[command(subcommand)]
    command: Option<ContactsCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum ContactsCommand {
    /// Add a user to your contacts (who may see your presence, see `SetSettings`)
    Add { name: String },
    /// Remove a user from your contacts
    Remove { name: String },
}

/// Blocks (`block` true) or unblocks a user.
pub fn block(creds: Credentials, name: &str, block: bool, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    let id = crate::lookup(conn, name)?;
    if block {
        conn.block(id)?;
        out.info(&format!("blocked {name}"));
    } else {
        conn.unblock(id)?;
        out.info(&format!("unblocked {name}"));
    }
    Ok(())
}

pub fn blocked(creds: Credentials, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let list = session.conn().list_blocked()?;
    show(&session, "blocked", list, out);
    Ok(())
}

pub fn contacts(creds: Credentials, args: ContactsArgs, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    match args.command {
        None => show(&session, "contact", conn.list_contacts()?, out),
        Some(ContactsCommand::Add { name }) => {
            conn.add_contact(crate::lookup(conn, &name)?)?;
            out.info(&format!("added {name} to your contacts"));
        }
        Some(ContactsCommand::Remove { name }) => {
            conn.remove_contact(crate::lookup(conn, &name)?)?;
            out.info(&format!("removed {name} from your contacts"));
        }
    }
    Ok(())
}

fn show(session: &crate::Device, what: &str, list: Vec<pb::ListedUser>, out: Output) {
    let mut names = crate::Names::default();
    let users: Vec<_> = list
        .into_iter()
        .map(|u| (names.get(session.conn(), u.user_id), u))
        .collect();
    out.users(what, &users);
}
