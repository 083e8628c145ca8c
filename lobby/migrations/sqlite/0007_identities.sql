-- External identities (issue #18). Auth owns both tables. An account's login
-- methods are its password (accounts.password_hash, '' when it has none) and
-- the identities linked to it: one per provider, each (provider, subject)
-- belonging to at most one account. The guest method is the provider 'guest'
-- with the SHA-256 of the device secret as its subject.
CREATE TABLE account_identities (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    linked_at_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE UNIQUE INDEX account_identities_account ON account_identities (account_id, provider);

-- Logins started at a provider and not yet finished, so that any lobby
-- replica can finish one: the authorization-code flow's state, PKCE verifier
-- and nonce, or the device flow's device code. Keys are SHA-256 hashes of the
-- handles the client holds; a row is claimed once (consumed = 1).
CREATE TABLE login_attempts (
    handle_hash TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    flow TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    nonce TEXT NOT NULL,
    device_json TEXT NOT NULL,
    link_account_id BIGINT,
    expires_at_ms BIGINT NOT NULL,
    next_poll_at_ms BIGINT NOT NULL,
    consumed BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX login_attempts_expiry ON login_attempts (expires_at_ms);
