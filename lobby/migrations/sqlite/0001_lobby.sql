-- Auth owns accounts, refresh_families and refresh_tokens.
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    username_lower TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE refresh_families (
    family_id TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    rotated BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Profiles own profiles, match_history and processed_results.
CREATE TABLE profiles (
    account_id BIGINT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    rating DOUBLE PRECISION NOT NULL,
    deviation DOUBLE PRECISION NOT NULL,
    volatility DOUBLE PRECISION NOT NULL,
    wins BIGINT NOT NULL DEFAULT 0,
    losses BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX profiles_rating ON profiles (rating DESC, account_id);

CREATE TABLE match_history (
    account_id BIGINT NOT NULL,
    match_id BIGINT NOT NULL,
    game TEXT NOT NULL,
    outcome TEXT NOT NULL,
    rating_before DOUBLE PRECISION NOT NULL,
    rating_after DOUBLE PRECISION NOT NULL,
    ended_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, match_id)
);
CREATE INDEX match_history_newest ON match_history (account_id, ended_at_ms DESC, match_id DESC);

CREATE TABLE processed_results (
    match_id BIGINT PRIMARY KEY,
    processed_at_ms BIGINT NOT NULL
);
