//! `chat` with no subcommand: an interactive chat in the terminal.
//!
//! One thread owns the session (so reconnects and acks have a single owner) and prints
//! incoming messages; the main thread reads lines from stdin and hands them over.

use std::io::BufRead;
use std::time::Duration;

use chat_client::Credentials;
use crossbeam_channel::{unbounded, Receiver, TryRecvError};

use crate::output::Output;

enum Input {
    To(String),
    Say(String),
    History(u32),
}

const HELP: &str =
    "commands: /to NAME (pick who you talk to), /history [N], /quit; other lines are sent";

pub fn run(creds: Credentials, out: Output) -> anyhow::Result<()> {
    let mut session = crate::open(creds)?;
    session.start_stream(None)?;
    out.info(&format!("logged in as {}. {HELP}", session.username()));
    let (tx, rx) = unbounded();
    let worker = std::thread::spawn(move || serve(session, rx, out));
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let line = line.trim();
        let input = if line == "/quit" {
            break;
        } else if let Some(name) = line.strip_prefix("/to ") {
            Input::To(name.trim().to_string())
        } else if let Some(n) = line.strip_prefix("/history") {
            Input::History(n.trim().parse().unwrap_or(20))
        } else if line.starts_with('/') {
            out.info(HELP);
            continue;
        } else if line.is_empty() {
            continue;
        } else {
            Input::Say(line.to_string())
        };
        if tx.send(input).is_err() {
            break;
        }
    }
    drop(tx);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("session thread panicked"))?
}

fn serve(mut session: crate::Device, rx: Receiver<Input>, out: Output) -> anyhow::Result<()> {
    let mut names = crate::Names::default();
    names.insert(session.user_id(), session.username());
    let mut peer: Option<(u64, String)> = None;
    loop {
        if let Some(event) = session.next_event(Duration::from_millis(100))? {
            crate::show_event(&mut names, session.conn(), out, &event);
        }
        let input = match rx.try_recv() {
            Ok(input) => input,
            Err(TryRecvError::Empty) => continue,
            Err(TryRecvError::Disconnected) => break,
        };
        let no_peer = || {
            out.info("pick someone first: /to NAME");
            Ok(())
        };
        let result = match input {
            Input::To(who) => crate::lookup(session.conn(), &who).map(|id| {
                names.insert(id, &who);
                out.info(&format!("talking to {who}"));
                peer = Some((id, who));
            }),
            Input::Say(text) => match &peer {
                None => no_peer(),
                // Our own line comes back as a `sent` event (on every device of ours), with
                // the server's timestamp, once it is durable.
                Some((id, _)) => session
                    .conn()
                    .send_message(*id, &text)
                    .map(drop)
                    .map_err(Into::into),
            },
            Input::History(n) => match &peer {
                None => no_peer(),
                Some((id, _)) => {
                    session
                        .conn()
                        .history(*id, 0, n)
                        .map_err(Into::into)
                        .map(|page| {
                            for m in &page.messages {
                                let from = names.get(session.conn(), m.from_user_id);
                                let to = names.get(session.conn(), m.to_user_id);
                                out.message(&from, &to, m);
                            }
                        })
                }
            },
        };
        if let Err(e) = result {
            out.error(&e);
        }
    }
    session.flush_ack()?;
    Ok(())
}
