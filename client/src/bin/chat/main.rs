//! `chat`: a terminal client for chatd.
//!
//! `chat register|send|history|listen` for scripts (add `--json` for one JSON object per
//! line), or no subcommand for an interactive chat. `send --file` sends images, voice notes
//! and files; `listen`/`history --save-media DIR` download them. See README.md for a tour.

use std::path::PathBuf;
use std::process::ExitCode;

use chat_client::{ClientError, Credentials, Session};
use clap::{Parser, Subcommand};

mod changes;
mod devices;
mod group;
mod history;
mod interactive;
mod listen;
mod lists;
mod media;
mod output;
mod presence;
mod register;
mod send;

#[derive(Debug, Parser)]
#[command(version, about = "Terminal client for chatd")]
struct Cli {
    /// Server address, or the nodes of a cluster separated by commas
    /// (a:7443,b:7443,c:7443): chat starts at a random one and, when one refuses or does
    /// not answer within 5 s, tries the next; after a disconnect it resumes on whichever
    /// answers. Every node presents the same TLS identity, so one --ca serves them all
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:7443",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    server: String,
    /// CA certificate (PEM) the server's certificate must chain to
    #[arg(
        long,
        global = true,
        default_value = "./data/tls/ca.pem",
        value_name = "FILE"
    )]
    ca: PathBuf,
    /// Your username
    #[arg(long, global = true, value_name = "NAME")]
    user: Option<String>,
    /// Your password
    #[arg(long, global = true, env = "CHAT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// How this run is listed among your devices while it is logged in
    #[arg(
        long,
        global = true,
        default_value = "chat (terminal)",
        value_name = "NAME"
    )]
    device: String,
    /// Print one JSON object per line instead of text
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the account --user with --password
    Register,
    /// Send a message
    Send(send::Args),
    /// Show the conversation with someone, oldest first
    History(history::Args),
    /// Print incoming messages as they arrive (everything missed first)
    Listen(listen::Args),
    /// Show who is online and when others were last seen
    Presence(presence::Args),
    /// Create and manage groups
    #[command(subcommand)]
    Group(group::Command),
    /// Delete a message (ID as `history` shows it): for everyone, or only for you
    Delete(changes::DeleteArgs),
    /// Replace the text of a message you sent
    Edit(changes::EditArgs),
    /// React to a message with an emoji (or remove your reaction with --remove)
    React(changes::ReactArgs),
    /// List the devices logged in as you, or log one out (`devices revoke ID`)
    Devices(devices::Args),
    /// Block a user: their messages are refused, and they no longer see your presence
    Block { name: String },
    /// Unblock a user
    Unblock { name: String },
    /// List the users you blocked
    Blocked,
    /// List your contacts, or add and remove them (`contacts add NAME`)
    Contacts(lists::ContactsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = output::Output { json: cli.json };
    match run(cli, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, out: output::Output) -> anyhow::Result<()> {
    // Said before anything else: TLS would only report "No such file or directory".
    if let Err(e) = std::fs::File::open(&cli.ca) {
        anyhow::bail!(
            "cannot read the CA certificate {}: {e}. Pass the CA the server's certificate \
             chains to with --ca FILE (a development chatd writes DATA_DIR/tls/ca.pem and \
             prints its path at start)",
            cli.ca.display()
        );
    }
    let creds = Credentials {
        server: cli.server,
        ca: cli.ca,
        username: cli
            .user
            .ok_or_else(|| anyhow::anyhow!("--user is required"))?,
        password: cli
            .password
            .ok_or_else(|| anyhow::anyhow!("--password or CHAT_PASSWORD is required"))?,
        device_name: cli.device,
    };
    match cli.command {
        Some(Command::Register) => register::run(&creds, out),
        Some(Command::Send(args)) => send::run(creds, args, out),
        Some(Command::History(args)) => history::run(creds, args, out),
        Some(Command::Listen(args)) => listen::run(creds, args, out),
        Some(Command::Group(command)) => group::run(creds, command, out),
        Some(Command::Presence(args)) => presence::run(creds, args, out),
        Some(Command::Devices(args)) => devices::run(creds, args, out),
        Some(Command::Delete(args)) => changes::delete(creds, args, out),
        Some(Command::Edit(args)) => changes::edit(creds, args, out),
        Some(Command::React(args)) => changes::react(creds, args, out),
        Some(Command::Block { name }) => lists::block(creds, &name, true, out),
        Some(Command::Unblock { name }) => lists::block(creds, &name, false, out),
        Some(Command::Blocked) => lists::blocked(creds, out),
        Some(Command::Contacts(args)) => lists::contacts(creds, args, out),
        None => interactive::run(creds, out),
    }
}

/// The logged-in session of one run of `chat`. `chat` keeps no token between runs, so the
/// device it logged in as is logged out again when the run ends: it would otherwise stay
/// among the user's devices (`chat devices`) for good.
#[derive(Debug)]
pub struct Device(Session);

/// Logs in as a new device named `--device`.
pub fn open(creds: Credentials) -> anyhow::Result<Device> {
    Ok(Device(Session::open(creds)?))
}

impl std::ops::Deref for Device {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

impl std::ops::DerefMut for Device {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.0
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Best effort: a server that is gone has nothing to revoke from us anyway.
        let _ = self.0.flush_ack();
        let _ = self.0.conn().logout();
    }
}

/// Display names of user ids and groups, asked of the server once each.
#[derive(Debug, Default)]
struct Names(
    std::collections::HashMap<u64, String>,
    std::collections::HashMap<u64, String>,
);

impl Names {
    /// "#name" of a group, or "#<id>" when the server will not say (no longer a member).
    fn group(&mut self, conn: &chat_client::Connection, id: u64) -> String {
        if let Some(name) = self.1.get(&id) {
            return name.clone();
        }
        let name = match conn.get_group(id) {
            Ok(g) => format!("#{}", g.name),
            Err(_) => format!("#{id}"),
        };
        self.1.insert(id, name.clone());
        name
    }

    /// Who an event is from and to, as display names.
    fn of_message(
        &mut self,
        conn: &chat_client::Connection,
        m: &chat_client::pb::Message,
    ) -> (String, String) {
        let to = if m.group_id != 0 {
            self.group(conn, m.group_id)
        } else {
            self.get(conn, m.to_user_id)
        };
        (self.get(conn, m.from_user_id), to)
    }

    /// Who a receipt is from, and the conversation it is about.
    fn of_receipt(
        &mut self,
        conn: &chat_client::Connection,
        r: &chat_client::pb::Receipt,
    ) -> (String, String) {
        let by = self.get(conn, r.by_user_id);
        let conversation = if r.group_id != 0 {
            self.group(conn, r.group_id)
        } else {
            by.clone()
        };
        (by, conversation)
    }

    /// A group change as a sentence.
    fn describe(
        &mut self,
        conn: &chat_client::Connection,
        c: &chat_client::pb::GroupChange,
    ) -> String {
        use chat_client::pb::GroupChangeKind as K;
        if matches!(c.kind(), K::Renamed | K::Created) {
            self.1.insert(c.group_id, format!("#{}", c.name));
        }
        let group = self.group(conn, c.group_id);
        let actor = self.get(conn, c.actor_user_id);
        let users: Vec<String> = c.user_ids.iter().map(|&u| self.get(conn, u)).collect();
        let users = users.join(", ");
        match c.kind() {
            K::Created => format!("{actor} created {group} with {users}"),
            K::Added => format!("{actor} added {users} to {group}"),
            K::Removed => format!("{actor} removed {users} from {group}"),
            K::Left => format!("{actor} left {group}"),
            K::Renamed => format!("{actor} renamed the group to {group}"),
            K::Unspecified => format!("{group} changed"),
        }
    }

    fn insert(&mut self, id: u64, name: &str) {
        self.0.insert(id, name.to_string());
    }

    fn get(&mut self, conn: &chat_client::Connection, id: u64) -> String {
        if let Some(name) = self.0.get(&id) {
            return name.clone();
        }
        match conn.username(id) {
            Ok(name) => {
                self.0.insert(id, name.clone());
                name
            }
            Err(_) => format!("user {id}"),
        }
    }
}

/// Prints an inbox event; the message, when it was one.
fn show_event<'a>(
    names: &mut Names,
    conn: &chat_client::Connection,
    out: output::Output,
    event: &'a chat_client::pb::Event,
) -> Option<&'a chat_client::pb::Message> {
    use chat_client::pb::event::Kind;
    match &event.kind {
        Some(Kind::Message(m)) => {
            let (from, to) = names.of_message(conn, m);
            out.message(&from, &to, m);
            return Some(m);
        }
        Some(Kind::GroupChange(c)) => {
            let sentence = names.describe(conn, c);
            out.group_change(c, &sentence);
        }
        Some(Kind::Receipt(r)) => {
            let (by, conversation) = names.of_receipt(conn, r);
            out.receipt(r, &by, &conversation);
        }
        Some(Kind::Sent(m)) => {
            let (from, to) = names.of_message(conn, m);
            out.sent_elsewhere(&from, &to, m);
        }
        Some(Kind::Read(r)) => {
            let conversation = if r.group_id != 0 {
                names.group(conn, r.group_id)
            } else {
                names.get(conn, r.with_user_id)
            };
            out.read_marker(r, &conversation);
        }
        Some(Kind::MessageChange(c)) => {
            let actor = names.get(conn, c.actor_user_id);
            let conversation = if c.group_id != 0 {
                names.group(conn, c.group_id)
            } else {
                let from = names.get(conn, c.from_user_id);
                let to = names.get(conn, c.to_user_id);
                format!("{from} -> {to}")
            };
            out.message_change(c, &actor, &conversation);
        }
        None => {}
    }
    None
}

/// Resolves a username to an id, with a clear error for unknown names.
fn lookup(conn: &chat_client::Connection, name: &str) -> anyhow::Result<u64> {
    conn.lookup(name).map_err(|e| match e {
        ClientError::Server { .. }
            if e.code() == Some(chat_client::pb::ErrorCode::UserNotFound) =>
        {
            anyhow::anyhow!("no user named {name}")
        }
        e => e.into(),
    })
}
