//! Roles: what an account may do beyond playing, stored in the database and
//! changed only by an operator (`rally admin grant|revoke`), never inferred
//! from a username or a token claim. Today the one role is
//! [`Role::Moderator`] (chat Mute and Unmute), kept in `chat_moderators`.

use sqlx::Row as _;

use crate::db::{Db, now_ms, with_pool};
use crate::error::LobbyError;

/// A role an operator can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// May Mute and Unmute players in chat.
    Moderator,
}

impl Role {
    /// The role's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Moderator => "moderator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "moderator" => Ok(Self::Moderator),
            other => Err(format!("no role {other:?}; the roles are: moderator")),
        }
    }
}

/// What a grant or revoke did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    /// The account's player id.
    pub player_id: u64,
    /// The username as registered.
    pub username: String,
    /// False when the account already had (or already lacked) the role.
    pub changed: bool,
}

/// The account whose username is `username` (case-insensitive).
async fn find_account(db: &Db, username: &str) -> Result<(i64, String), LobbyError> {
    let lower = username.trim().to_ascii_lowercase();
    let row: Option<(i64, String)> = with_pool!(db, |pool| {
        let row = sqlx::query("SELECT id, username FROM accounts WHERE username_lower = $1")
            .bind(&lower)
            .fetch_optional(pool)
            .await?;
        Ok(match row {
            Some(row) => Some((row.try_get("id")?, row.try_get("username")?)),
            None => None,
        })
    })?;
    row.ok_or_else(|| LobbyError::NotFound(format!("no account is named {username:?}: the player must register first")))
}

/// Grants `role` to the account named `username`.
pub async fn grant(db: &Db, role: Role, username: &str) -> Result<RoleChange, LobbyError> {
    let (id, username) = find_account(db, username).await?;
    let changed = match role {
        Role::Moderator => with_pool!(db, |pool| {
            Ok(sqlx::query(
                "INSERT INTO chat_moderators (player_id, granted_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected())
        })?,
    };
    tracing::info!(player = id, role = role.name(), changed = changed == 1, "role granted");
    Ok(RoleChange { player_id: id as u64, username, changed: changed == 1 })
}

/// Takes `role` from the account named `username`.
pub async fn revoke(db: &Db, role: Role, username: &str) -> Result<RoleChange, LobbyError> {
    let (id, username) = find_account(db, username).await?;
    let changed = match role {
        Role::Moderator => with_pool!(db, |pool| {
            Ok(sqlx::query("DELETE FROM chat_moderators WHERE player_id = $1")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected())
        })?,
    };
    tracing::info!(player = id, role = role.name(), changed = changed == 1, "role revoked");
    Ok(RoleChange { player_id: id as u64, username, changed: changed == 1 })
}
