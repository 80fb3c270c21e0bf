//! `chat presence NAME...`: who is online, and when the others were last seen.

use chat_client::Credentials;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Usernames to look at
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let ids = args
        .names
        .iter()
        .map(|n| crate::lookup(session.conn(), n))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let users = session.conn().get_presence(&ids)?;
    for (name, p) in args.names.iter().zip(&users) {
        out.presence(name, p);
    }
    Ok(())
}
