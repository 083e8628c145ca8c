-- Tournaments, their entrants, their event log and their matches on shards.
-- The event log is the source of truth: a tournament's bracket is
-- rally_tournament::replay(rules, seeds, the inputs of its events).

CREATE TABLE tournaments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    -- rally_tournament::Rules as JSON
    rules TEXT NOT NULL,
    mode TEXT NOT NULL,
    max_entrants BIGINT NOT NULL,
    min_rating BIGINT,
    max_rating BIGINT,
    registration_opens_at_ms BIGINT NOT NULL,
    registration_closes_at_ms BIGINT NOT NULL,
    check_in_opens_at_ms BIGINT NOT NULL,
    check_in_closes_at_ms BIGINT NOT NULL,
    -- created | registration | check_in | running | finished | cancelled
    status TEXT NOT NULL,
    organiser_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- Vec<rally_tournament::Entrant> in seed order, once locked
    seeds TEXT
);

CREATE INDEX tournaments_status ON tournaments (status, id);

CREATE TABLE entrants (
    tournament_id BIGINT NOT NULL REFERENCES tournaments (id),
    player_id BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    rating BIGINT NOT NULL,
    -- registered | checked_in | withdrawn | disqualified | not_checked_in
    state TEXT NOT NULL,
    registered_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tournament_id, player_id)
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    tournament_id BIGINT NOT NULL REFERENCES tournaments (id),
    seq BIGINT NOT NULL,
    -- rally_tournament::Input as JSON, NULL for events that change no bracket
    input TEXT,
    -- rally_ledger::entry::Entry as JSON: what the ledger gets
    entry TEXT NOT NULL,
    -- the counted match of a result: at most one event per match
    match_id BIGINT UNIQUE,
    -- where the entry is in the ledger, once appended
    ledger_index BIGINT UNIQUE,
    at_ms BIGINT NOT NULL,
    UNIQUE (tournament_id, seq)
);

CREATE INDEX events_unlogged ON events (id) WHERE ledger_index IS NULL;

CREATE TABLE matches (
    match_id BIGINT PRIMARY KEY,
    tournament_id BIGINT NOT NULL REFERENCES tournaments (id),
    -- rally_tournament::GameKey as JSON
    game_key TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    shard TEXT NOT NULL,
    shard_address TEXT NOT NULL,
    certificate_sha256 TEXT NOT NULL,
    home_id BIGINT NOT NULL,
    away_id BIGINT NOT NULL,
    -- the connect tokens, hex
    home_token TEXT NOT NULL,
    away_token TEXT NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    token_expires_at_ms BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    -- scheduled | counted | lost | expired | void
    status TEXT NOT NULL
);

CREATE INDEX matches_scheduled ON matches (tournament_id, status);
