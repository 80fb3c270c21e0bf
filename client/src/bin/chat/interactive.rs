//! `chat` with no subcommand: an interactive chat in the terminal.
//!
//! One thread owns the session (so reconnects and acks have a single owner) and prints
//! incoming messages; the main thread reads lines from stdin and hands them over.

use std::io::BufRead;
use std::time::Duration;

use chat_client::{Chat, Credentials};
use crossbeam_channel::{unbounded, Receiver, TryRecvError};

use crate::changes::Change;
use crate::output::Output;

/// What the session thread is asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    To(String),
    /// A message; `reply_to` is the id of the message it answers, 0 for none.
    Say {
        text: String,
        reply_to: u64,
    },
    History(u32),
    /// A change to the message with this id of the current conversation.
    Change(u64, Change),
}

/// A line read from the terminal.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Quit,
    /// Nothing to do (an empty line).
    Nothing,
    /// Not a command we know, or one with wrong arguments: say how it goes.
    Usage(&'static str),
    Input(Input),
}

const HELP: &str = "commands: /to NAME (pick who you talk to), /history [N], \
    /reply ID TEXT, /edit ID TEXT, /react ID [EMOJI] (none: remove yours), \
    /delete ID (for everyone), /delete-for-me ID, /quit; other lines are sent. \
    ID is a message's id, as /history shows it (id N)";

/// Reads one line typed in interactive mode.
fn parse(line: &str) -> Line {
    let line = line.trim();
    if line.is_empty() {
        return Line::Nothing;
    }
    let Some(command) = line.strip_prefix('/') else {
        return Line::Input(Input::Say {
            text: line.to_string(),
            reply_to: 0,
        });
    };
    let (word, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    let rest = rest.trim();
    // The message id, then the rest of the line.
    let id_and = |usage: &'static str| -> Result<(u64, &str), Line> {
        let (id, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        id.parse()
            .map(|id| (id, tail.trim()))
            .map_err(|_| Line::Usage(usage))
    };
    let input = match word {
        "quit" => return Line::Quit,
        "to" if !rest.is_empty() => Input::To(rest.to_string()),
        "history" => Input::History(rest.parse().unwrap_or(20)),
        "reply" => match id_and("usage: /reply ID TEXT") {
            Ok((id, text)) if !text.is_empty() => Input::Say {
                text: text.to_string(),
                reply_to: id,
            },
            Ok(_) => return Line::Usage("usage: /reply ID TEXT"),
            Err(usage) => return usage,
        },
        "edit" => match id_and("usage: /edit ID TEXT") {
            Ok((id, text)) if !text.is_empty() => Input::Change(id, Change::Edit(text.into())),
            Ok(_) => return Line::Usage("usage: /edit ID TEXT"),
            Err(usage) => return usage,
        },
        "react" => match id_and("usage: /react ID [EMOJI]") {
            Ok((id, emoji)) => Input::Change(id, Change::React(emoji.into())),
            Err(usage) => return usage,
        },
        "delete" | "delete-for-me" => {
            let usage = if word == "delete" {
                "usage: /delete ID"
            } else {
                "usage: /delete-for-me ID"
            };
            match id_and(usage) {
                Ok((id, "")) => Input::Change(
                    id,
                    Change::Delete {
                        for_everyone: word == "delete",
                    },
                ),
                Ok(_) => return Line::Usage(usage),
                Err(usage) => return usage,
            }
        }
        _ => return Line::Usage(HELP),
    };
    Line::Input(input)
}

pub fn run(creds: Credentials, out: Output) -> anyhow::Result<()> {
    let mut session = crate::open(creds)?;
    session.start_stream(None)?;
    out.info(&format!("logged in as {}. {HELP}", session.username()));
    let (tx, rx) = unbounded();
    let worker = std::thread::spawn(move || serve(session, rx, out));
    for line in std::io::stdin().lock().lines() {
        let input = match parse(&line?) {
            Line::Quit => break,
            Line::Nothing => continue,
            Line::Usage(usage) => {
                out.info(usage);
                continue;
            }
            Line::Input(input) => input,
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
            Input::Say { text, reply_to } => match &peer {
                None => no_peer(),
                // Our own line comes back as a `sent` event (on every device of ours), with
                // the server's timestamp, once it is durable.
                Some((id, _)) => session
                    .conn()
                    .send_reply(*id, reply_to, &text)
                    .map(drop)
                    .map_err(Into::into),
            },
            // The change comes back as a `message_change` event, shown like any other.
            Input::Change(message, change) => match &peer {
                None => no_peer(),
                Some((id, _)) => {
                    crate::changes::apply(session.conn(), Chat::User(*id), message, &change, out)
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn say(text: &str, reply_to: u64) -> Line {
        Line::Input(Input::Say {
            text: text.into(),
            reply_to,
        })
    }

    fn change(id: u64, change: Change) -> Line {
        Line::Input(Input::Change(id, change))
    }

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(parse("  hello there "), say("hello there", 0));
        assert_eq!(parse(""), Line::Nothing);
        assert_eq!(parse("/quit"), Line::Quit);
        assert_eq!(parse("/to bob"), Line::Input(Input::To("bob".into())));
        assert_eq!(parse("/history"), Line::Input(Input::History(20)));
        assert_eq!(parse("/history 5"), Line::Input(Input::History(5)));
        assert_eq!(parse("/nope"), Line::Usage(HELP));
        assert_eq!(parse("/to"), Line::Usage(HELP));
    }

    #[test]
    fn message_commands_name_a_message_by_its_id() {
        let id = 1_767_225_600_000_000;
        assert_eq!(
            parse(&format!("/reply {id} see you there")),
            say("see you there", id)
        );
        assert_eq!(
            parse(&format!("/edit {id}  lunch at 12:30?")),
            change(id, Change::Edit("lunch at 12:30?".into()))
        );
        assert_eq!(
            parse(&format!("/react {id} 👍")),
            change(id, Change::React("👍".into()))
        );
        assert_eq!(
            parse(&format!("/react {id}")),
            change(id, Change::React(String::new()))
        );
        assert_eq!(
            parse(&format!("/delete {id}")),
            change(id, Change::Delete { for_everyone: true })
        );
        assert_eq!(
            parse(&format!("/delete-for-me {id}")),
            change(
                id,
                Change::Delete {
                    for_everyone: false
                }
            )
        );
    }

    #[test]
    fn message_commands_without_an_id_or_text_say_how_they_go() {
        assert_eq!(parse("/reply"), Line::Usage("usage: /reply ID TEXT"));
        assert_eq!(parse("/reply 12"), Line::Usage("usage: /reply ID TEXT"));
        assert_eq!(parse("/edit abc new"), Line::Usage("usage: /edit ID TEXT"));
        assert_eq!(parse("/edit 12"), Line::Usage("usage: /edit ID TEXT"));
        assert_eq!(
            parse("/react -1 x"),
            Line::Usage("usage: /react ID [EMOJI]")
        );
        assert_eq!(parse("/delete"), Line::Usage("usage: /delete ID"));
        assert_eq!(parse("/delete 12 now"), Line::Usage("usage: /delete ID"));
        assert_eq!(
            parse("/delete-for-me x"),
            Line::Usage("usage: /delete-for-me ID")
        );
    }
}
