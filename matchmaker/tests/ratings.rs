//! `LobbyDbRatings` reads the lobby's database and never creates or migrates
//! it: an absent database or schema is refused with a message saying what to
//! do, on SQLite (a temp dir) and PostgreSQL (a fresh schema).

#![expect(clippy::unwrap_used, reason = "scenarios run outside #[test] functions")]

use rally_lobby::db::Db;
use rally_matchmaker::{LobbyDbRatings, MatchmakerError, RatingSource};
use rally_protocol::PlayerId;

/// The refusal's message; fails the test if `connect` succeeded.
async fn refusal(url: &str) -> String {
    match LobbyDbRatings::connect(url).await {
        Ok(ratings) => panic!("{url} was accepted: {ratings:?}"),
        Err(err @ MatchmakerError::LobbyDatabase(_)) => err.to_string(),
        Err(other) => panic!("refused for another reason: {other}"),
    }
}

/// Gives player 42 a rating of 1720 in a database the lobby made, and
/// player 44 an account without a profile; there is no player 43.
async fn rate_player_42(lobby: &Db) {
    const INSERTS: [&str; 2] = [
        "INSERT INTO accounts (id, username, username_lower, password_hash, created_at_ms) \
         VALUES (42, 'p42', 'p42', 'x', 0), (44, 'p44', 'p44', 'x', 0)",
        "INSERT INTO profiles (account_id, display_name, created_at_ms, rating, deviation, volatility) \
         VALUES (42, 'p42', 0, 1720.0, 80.0, 0.06)",
    ];
    for insert in INSERTS {
        match lobby {
            Db::Sqlite(pool) => drop(sqlx::query(insert).execute(pool).await.unwrap()),
            Db::Postgres(pool) => drop(sqlx::query(insert).execute(pool).await.unwrap()),
        }
    }
}

async fn assert_reads_ratings(url: &str) {
    let ratings = LobbyDbRatings::connect(url).await.unwrap();
    assert_eq!(ratings.rating(PlayerId(42)).await.unwrap(), Some(1720.0));
    assert_eq!(ratings.rating(PlayerId(44)).await.unwrap(), None, "an account without a profile has no rating");
    // A token can outlive its account: Enqueue is refused, saying what to do.
    match ratings.rating(PlayerId(43)).await {
        Err(err @ MatchmakerError::Unauthenticated(_)) => {
            assert_eq!(err.to_string(), "account 43 no longer exists; log in again");
        }
        other => panic!("a missing account was rated: {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_a_missing_file_is_refused_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lobby.db");
    let message = refusal(&format!("sqlite://{}", path.display())).await;
    assert!(message.contains("does not exist") && message.contains("start the lobby first"), "{message}");
    assert!(!path.exists(), "the matchmaker created the lobby's database");
}

#[tokio::test]
async fn sqlite_a_database_without_the_lobby_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lobby.db");
    // An empty file is an empty SQLite database.
    std::fs::write(&path, b"").unwrap();
    let url = format!("sqlite://{}", path.display());
    let message = refusal(&url).await;
    assert!(message.contains("has no profiles table: start the lobby first"), "{message}");
    assert!(message.contains(&path.display().to_string()), "names the database: {message}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the matchmaker wrote to the lobby's database");
}

#[tokio::test]
async fn sqlite_ratings_are_read_while_the_lobby_runs_and_after_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let lobby = Db::connect(&url).await.unwrap();
    rate_player_42(&lobby).await;
    assert_reads_ratings(&url).await;
    // Closing the lobby's last connection checkpoints and removes the WAL files.
    lobby.close().await;
    assert_reads_ratings(&url).await;
}

/// A fresh, uniquely named schema on the server at `RALLY_TEST_DATABASE_URL`,
/// and a URL whose search path is that schema alone.
struct PgSchema {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl PgSchema {
    async fn fresh() -> Self {
        let base = std::env::var("RALLY_TEST_DATABASE_URL").expect(
            "RALLY_TEST_DATABASE_URL is not set: the PostgreSQL half of the ratings tests needs a server, e.g. \
             export RALLY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test",
        );
        let admin = sqlx::PgPool::connect(&base).await.expect("connect to RALLY_TEST_DATABASE_URL");
        let name = format!("mm_ratings_test_{:016x}", rand::random::<u64>());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&admin).await.unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options[search_path]={name}");
        Self { admin, name, url }
    }

    async fn n_tables(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1")
            .bind(&self.name)
            .fetch_one(&self.admin)
            .await
            .unwrap()
    }

    async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
            .execute(&self.admin)
            .await
            .unwrap();
        self.admin.close().await;
    }
}

#[tokio::test]
async fn postgres_a_schema_without_the_lobby_tables_is_refused_and_left_empty() {
    let schema = PgSchema::fresh().await;
    let message = refusal(&schema.url).await;
    assert!(message.contains("has no profiles table: start the lobby first"), "{message}");
    assert_eq!(schema.n_tables().await, 0, "the matchmaker created tables in the lobby's schema");
    schema.drop().await;
}

#[tokio::test]
async fn postgres_ratings_are_read_from_the_schema_the_lobby_made() {
    let schema = PgSchema::fresh().await;
    let lobby = Db::connect(&schema.url).await.unwrap();
    rate_player_42(&lobby).await;
    let n_tables = schema.n_tables().await;
    assert_reads_ratings(&schema.url).await;
    assert_eq!(schema.n_tables().await, n_tables);
    lobby.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn the_in_process_profile_store_refuses_a_player_without_an_account() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lobby.db").display());
    let config =
        rally_lobby::LobbyConfig::new(([127, 0, 0, 1], 0).into(), url, rally_lobby::AccessSigningKeys::generate());
    let lobby = rally_lobby::serve(config).await.unwrap();
    match lobby.profiles().rating(PlayerId(999)).await {
        Err(err @ MatchmakerError::Unauthenticated(_)) => {
            assert_eq!(err.to_string(), "account 999 no longer exists; log in again");
        }
        other => panic!("a player without an account was rated: {other:?}"),
    }
    lobby.shutdown().await.unwrap();
}
