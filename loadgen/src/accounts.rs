//! Accounts for the run: reused across runs (login), registered when missing. Account N
//! logs in, makes its group and uploads on the server its connection will use (round robin
//! over --server).

use chat_client::{pb, Connection};

use crate::Args;

/// A ready account: its index in the run, id and session token.
#[derive(Debug, Clone)]
pub struct Account {
    pub index: usize,
    pub user_id: u64,
    pub token: Vec<u8>,
}

const PASSWORD: &str = "loadgen-password";

/// The accounts of the run: from the `--tokens` file when it holds them all, else logged in
/// (or registered) and then saved there.
pub fn prepare(args: &Args) -> anyhow::Result<Vec<Account>> {
    if let Some(path) = &args.tokens {
        if let Some(accounts) = load_tokens(path, args) {
            eprintln!(
                "using {} saved sessions from {}",
                accounts.len(),
                path.display()
            );
            return Ok(accounts);
        }
    }
    let accounts = log_in_all(args)?;
    if let Some(path) = &args.tokens {
        save_tokens(path, args, &accounts)?;
    }
    Ok(accounts)
}

/// A user's group for the run: its id, and how many members other than the sender
/// receive each message sent to it.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub id: u64,
    pub fanout: u64,
}

/// With --group-size, puts consecutive accounts into groups (new ones each run, created by
/// their first member) and returns each account's group, by account index.
pub fn make_groups(args: &Args, accounts: &[Account]) -> anyhow::Result<Vec<Option<Group>>> {
    let mut groups = vec![None; accounts.len()];
    if args.group_size == 0 || args.group_share == 0.0 {
        return Ok(groups);
    }
    for chunk in accounts.chunks(args.group_size) {
        let [creator, others @ ..] = chunk else {
            continue;
        };
        if others.is_empty() {
            continue; // a last group of one would send to nobody
        }
        let conn = Connection::connect(&args.server_for(creator.index), &args.ca)?;
        conn.resume(&creator.token)?;
        let ids: Vec<u64> = others.iter().map(|a| a.user_id).collect();
        let group = conn.create_group("chat-loadgen", &ids)?;
        for a in chunk {
            groups[a.index] = Some(Group {
                id: group.group_id,
                fanout: others.len() as u64,
            });
        }
    }
    eprintln!(
        "{} groups of up to {} members; {:.0}% of sends go to them",
        accounts.len().div_ceil(args.group_size),
        args.group_size,
        args.group_share * 100.0
    );
    Ok(groups)
}

/// With --media-share, every account uploads one image of --media-size random bytes (a
/// new file each run) and gets the asset to attach; prints the upload rate.
pub fn upload_media(args: &Args, accounts: &[Account]) -> anyhow::Result<Vec<Option<pb::Media>>> {
    if args.media_share == 0.0 {
        return Ok(vec![None; accounts.len()]);
    }
    let spec = chat_client::MediaSpec {
        kind: pb::MediaKind::Image,
        mime_type: "image/jpeg".into(),
        width: 1024,
        height: 768,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut media = Vec::with_capacity(accounts.len());
    let mut data = vec![0u8; args.media_size];
    // Different bytes per user and per run, so no upload is deduplicated away.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = (u64::from(std::process::id()) << 32) | u64::from(nanos);
    for account in accounts {
        for chunk in data.chunks_mut(8) {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let bytes = (z ^ (z >> 31)).to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let conn = Connection::connect(&args.server_for(account.index), &args.ca)?;
        conn.resume(&account.token)?;
        media.push(Some(conn.upload(&data, &spec)?));
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "uploaded {} images of {} KiB in {secs:.2} s ({:.1} MB/s, one connection at a time); \
         {:.0}% of sends carry one",
        accounts.len(),
        args.media_size / 1024,
        (accounts.len() * args.media_size) as f64 / secs / 1e6,
        args.media_share * 100.0
    );
    Ok(media)
}

/// One line per account: `server prefix index user_id hex(token)`.
fn save_tokens(path: &std::path::Path, args: &Args, accounts: &[Account]) -> anyhow::Result<()> {
    let lines: String = accounts
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {} {}\n",
                args.server,
                args.prefix,
                a.index,
                a.user_id,
                hex(&a.token)
            )
        })
        .collect();
    std::fs::write(path, lines)?;
    Ok(())
}

/// The saved accounts for this server and prefix, if the file has every one of them.
fn load_tokens(path: &std::path::Path, args: &Args) -> Option<Vec<Account>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut found: Vec<Option<Account>> = vec![None; args.users];
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [server, prefix, index, user_id, token] = f[..] else {
            continue;
        };
        if server != args.server || prefix != args.prefix {
            continue;
        }
        let index: usize = index.parse().ok()?;
        if let Some(slot) = found.get_mut(index) {
            *slot = Some(Account {
                index,
                user_id: user_id.parse().ok()?,
                token: unhex(token)?,
            });
        }
    }
    found.into_iter().collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Logs in (or registers) `--users` accounts, a few in parallel: password hashing makes this
/// the slow part of start-up.
fn log_in_all(args: &Args) -> anyhow::Result<Vec<Account>> {
    let workers = 8.min(args.users);
    let mut accounts: Vec<Account> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || -> anyhow::Result<Vec<Account>> {
                    let mut mine = Vec::new();
                    for index in (w..args.users).step_by(workers) {
                        // One login per connection, so a fresh connection per account.
                        let conn = Connection::connect(&args.server_for(index), &args.ca)?;
                        mine.push(account(&conn, &format!("{}{index}", args.prefix), index)?);
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("account thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<Vec<Account>>>>()
            .map(|v| v.into_iter().flatten().collect())
    })?;
    accounts.sort_by_key(|a| a.index);
    Ok(accounts)
}

fn account(conn: &Connection, name: &str, index: usize) -> anyhow::Result<Account> {
    let login = match conn.login(name, PASSWORD) {
        Ok(login) => login,
        Err(e) if e.code() == Some(pb::ErrorCode::BadCredentials) => {
            conn.register(name, PASSWORD)?;
            conn.login(name, PASSWORD)?
        }
        Err(e) => return Err(anyhow::Error::from(e).context(format!("logging in {name}"))),
    };
    Ok(Account {
        index,
        user_id: login.user_id,
        token: login.token.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: test code

    #[test]
    fn tokens_round_trip_through_hex() {
        let token = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(super::hex(&token), "0001abff");
        assert_eq!(super::unhex("0001abff"), Some(token));
        assert_eq!(super::unhex("0g"), None);
    }
}
