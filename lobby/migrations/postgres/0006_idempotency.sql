-- Idempotency keys (issue #17): a client retrying a Send or a Register with
-- the key it chose gets the first result back, on any replica and after
-- restarts, because the key is claimed in the same transaction that stores
-- the message or the account.

-- Chat owns this table: the key is the sender's, so two players may pick the same one.
CREATE TABLE chat_send_keys (
    sender_id BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (sender_id, idempotency_key)
);

-- Auth owns this table: a registration has no caller yet, so keys are global.
CREATE TABLE register_keys (
    idempotency_key TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL
);
