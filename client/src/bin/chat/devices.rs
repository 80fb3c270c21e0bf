//! `chat devices`: the devices logged in as you; `chat devices revoke ID` logs one out.

use chat_client::Credentials;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Log a device out: its token stops working and its connections are closed
    Revoke {
        /// The device's id, as `chat devices` lists it
        id: u64,
    },
}

pub fn run(creds: Credentials, args: Args, out: Output) -> anyhow::Result<()> {
    let session = crate::open(creds)?;
    let conn = session.conn();
    match args.command {
        None => {
            // This run is a device too; it is left out (it logs out when it ends).
            let devices: Vec<_> = conn
                .list_devices()?
                .into_iter()
                .filter(|d| !d.current)
                .collect();
            out.devices(&devices);
        }
        Some(Command::Revoke { id }) => {
            conn.revoke_device(id)?;
            out.info(&format!("device {id} is logged out"));
        }
    }
    Ok(())
}
