//! `rally admin`: operator commands on the lobby's database. Roles are granted
//! here and nowhere else: no flag, username or token claim makes a moderator.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use rally_lobby::db::{Db, redacted_url};
use rally_lobby::roles::{self, Role};

/// `rally admin` flags.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// One operator action.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Grant a role (`moderator`: may Mute and Unmute in chat) to a registered account.
    Grant(RoleArgs),
    /// Take a role from an account.
    Revoke(RoleArgs),
}

/// The role, the account and the database.
#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    /// The role: `moderator`.
    pub role: Role,
    /// The account's username (case-insensitive).
    pub username: String,
    /// Directory of the default SQLite database.
    #[arg(long, default_value = "data", env = "RALLY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The lobby's database, `sqlite://<file>` or `postgres://…` [default: sqlite://<data-dir>/lobby.db].
    #[arg(long, env = "RALLY_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Runs one admin command and prints what it did.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let (grant, role_args) = match args.command {
        AdminCommand::Grant(role_args) => (true, role_args),
        AdminCommand::Revoke(role_args) => (false, role_args),
    };
    let url = match &role_args.database_url {
        Some(url) => url.clone(),
        None => {
            let path = role_args.data_dir.join("lobby.db");
            anyhow::ensure!(path.exists(), "there is no lobby database at {}: start the lobby first", path.display());
            format!("sqlite://{}", path.display())
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let db =
            Db::connect(&url).await.with_context(|| format!("opening the lobby database {}", redacted_url(&url)))?;
        let role = role_args.role;
        let changed = if grant {
            roles::grant(&db, role, &role_args.username).await
        } else {
            roles::revoke(&db, role, &role_args.username).await
        };
        db.close().await;
        let change = changed?;
        let who = format!("{} (player {})", change.username, change.player_id);
        let role = role.name();
        match (grant, change.changed) {
            (true, true) => println!("granted {role} to {who}"),
            (true, false) => println!("{who} already is a {role}"),
            (false, true) => println!("revoked {role} from {who}"),
            (false, false) => println!("{who} was not a {role}"),
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn admin(argv: &[&str]) -> anyhow::Result<AdminArgs> {
        match Cli::try_parse_from([&["rally", "admin"][..], argv].concat())?.command {
            Command::Admin(args) => Ok(args),
            other => anyhow::bail!("parsed as {other:?}"),
        }
    }

    #[test]
    fn roles_are_granted_by_name_and_unknown_roles_or_accounts_are_errors() {
        let args = admin(&["grant", "moderator", "Alice", "--database-url", "sqlite:///x.db"]).expect("parses");
        assert!(matches!(&args.command, AdminCommand::Grant(role) if role.role == Role::Moderator));
        assert!(admin(&["grant", "admin", "alice"]).is_err(), "no such role");
        assert!(admin(&["promote", "moderator", "alice"]).is_err());

        let dir = tempfile::tempdir().expect("temp dir");
        let missing = admin(&["revoke", "moderator", "alice", "--data-dir", &dir.path().display().to_string()]);
        let err = run(missing.expect("parses")).expect_err("no database");
        assert!(format!("{err:#}").contains("start the lobby first"), "{err:#}");
        let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
        let err = run(admin(&["grant", "moderator", "alice", "--database-url", &url]).expect("parses"))
            .expect_err("nobody registered");
        assert!(format!("{err:#}").contains("register first"), "{err:#}");
    }
}
