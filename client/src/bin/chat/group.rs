//! `chat group create|add|remove|leave|rename|show`: manage groups.

use chat_client::{pb, Credentials};

use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a group with you as its creator
    Create {
        /// The group's name
        name: String,
        /// Usernames of the first members, comma-separated
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        members: Vec<String>,
    },
    /// Add members (admins)
    Add {
        #[arg(long, value_name = "ID")]
        group: u64,
        /// Usernames to add
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove a member (admins)
    Remove {
        #[arg(long, value_name = "ID")]
        group: u64,
        name: String,
    },
    /// Leave a group
    Leave {
        #[arg(long, value_name = "ID")]
        group: u64,
    },
    /// Rename a group (admins)
    Rename {
        #[arg(long, value_name = "ID")]
        group: u64,
        name: String,
    },
    /// Show a group's name and members
    Show {
        #[arg(long, value_name = "ID")]
        group: u64,
    },
}

pub fn run(creds: Credentials, command: Command, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    let ids = |names: &[String]| -> anyhow::Result<Vec<u64>> {
        names.iter().map(|n| crate::lookup(conn, n)).collect()
    };
    let group = match command {
        Command::Create { name, members } => conn.create_group(&name, &ids(&members)?)?,
        Command::Add { group, names } => conn.add_members(group, &ids(&names)?)?,
        Command::Remove { group, name } => {
            conn.remove_member(group, crate::lookup(conn, &name)?)?
        }
        Command::Leave { group } => conn.leave_group(group)?,
        Command::Rename { group, name } => conn.rename_group(group, &name)?,
        Command::Show { group } => conn.get_group(group)?,
    };
    let mut names = crate::Names::default();
    let members: Vec<(String, pb::GroupRole)> = group
        .members
        .iter()
        .map(|m| (names.get(conn, m.user_id), m.role()))
        .collect();
    out.group(&group, &members);
    Ok(())
}
