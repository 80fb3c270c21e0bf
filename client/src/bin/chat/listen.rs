//! `chat listen`: print incoming messages, everything missed first. Survives server restarts
//! and network drops (the session reconnects and resumes after the last printed message).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat_client::{pb, Credentials};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start after this inbox seq instead of the server's acknowledged cursor
    #[arg(long, value_name = "SEQ")]
    from_seq: Option<u64>,
    /// Exit after printing this many messages
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Exit after this many seconds without a message
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Also print when these users (comma-separated names) go online or offline
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    watch: Vec<String>,
    /// Download the images, voice notes and files of received messages into this directory
    /// (created if missing), as <seq>-<file name>
    #[arg(long, value_name = "DIR")]
    save_media: Option<PathBuf>,
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    if let Some(dir) = &args.save_media {
        crate::media::prepare_dir(dir)?;
    }
    let mut session = crate::open(creds)?;
    session.start_stream(args.from_seq)?;
    let mut printed = 0;
    let mut last_message = Instant::now();
    let mut names = crate::Names::default();
    names.insert(session.user_id(), session.username());
    if !args.watch.is_empty() {
        let mut ids = Vec::new();
        for name in &args.watch {
            let id = crate::lookup(session.conn(), name)?;
            names.insert(id, name);
            ids.push(id);
        }
        for (name, p) in args
            .watch
            .iter()
            .zip(session.conn().subscribe_presence(&ids)?)
        {
            out.presence(name, &p);
        }
    }
    loop {
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
        if args
            .timeout
            .is_some_and(|t| last_message.elapsed() >= Duration::from_secs(t))
        {
            break;
        }
        // Ephemeral pushes: presence of watched users, typing.
        while let Ok(env) = session.conn().unsolicited().try_recv() {
            match env.body {
                Some(pb::envelope::Body::PresenceUpdate(u)) => {
                    if let Some(p) = u.presence {
                        out.presence(&names.get(session.conn(), p.user_id), &p);
                    }
                }
                Some(pb::envelope::Body::TypingUpdate(t)) => {
                    let where_ = if t.group_id != 0 {
                        format!(" in {}", names.group(session.conn(), t.group_id))
                    } else {
                        String::new()
                    };
                    out.typing(&names.get(session.conn(), t.from_user_id), &where_, &t);
                }
                _ => {}
            }
        }
        let Some(event) = session.next_event(Duration::from_millis(200))? else {
            continue;
        };
        if let Some(m) = crate::show_event(&mut names, session.conn(), out, &event) {
            // A failed download is reported and listening goes on.
            crate::media::save_and_report(session.conn(), m, args.save_media.as_deref(), out);
            printed += 1;
            last_message = Instant::now();
        }
    }
    session.flush_ack()?;
    Ok(())
}
