//! Accounts for the run: reused across runs (login), registered when missing.

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

/// Logs in (or registers) `--users` accounts, a few in parallel: password hashing makes this
/// the slow part of start-up.
pub fn prepare(args: &Args) -> anyhow::Result<Vec<Account>> {
    let workers = 8.min(args.users);
    let mut accounts: Vec<Account> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || -> anyhow::Result<Vec<Account>> {
                    let mut mine = Vec::new();
                    for index in (w..args.users).step_by(workers) {
                        // One login per connection, so a fresh connection per account.
                        let conn = Connection::connect(&args.server, &args.ca)?;
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
