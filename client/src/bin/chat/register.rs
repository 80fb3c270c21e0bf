//! `chat register`

use chat_client::{Connection, Credentials};

use crate::output::Output;

pub fn run(creds: &Credentials, out: Output) -> anyhow::Result<()> {
    let conn = Connection::connect_any(&creds.server, &creds.ca)?;
    let user_id = conn.register(&creds.username, &creds.password)?;
    out.registered(&creds.username, user_id);
    Ok(())
}
