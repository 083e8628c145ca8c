-- Chat owns chat_channels, chat_members, chat_messages, chat_blocks,
-- chat_mutes, chat_moderators and chat_reports. Players are identified by the
-- id in their access token; chat reads no other service's tables.
CREATE TABLE chat_channels (
    channel_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    -- The newest message's id; Send increments it in the message's transaction.
    last_message_id BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE chat_members (
    channel_id TEXT NOT NULL,
    player_id BIGINT NOT NULL,
    joined_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel_id, player_id)
);

CREATE TABLE chat_messages (
    channel_id TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    sender_id BIGINT NOT NULL,
    sender_name TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel_id, message_id)
);

CREATE TABLE chat_blocks (
    blocker_id BIGINT NOT NULL,
    blocked_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

CREATE TABLE chat_mutes (
    player_id BIGINT PRIMARY KEY,
    until_ms BIGINT NOT NULL,
    muted_by BIGINT NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE chat_moderators (
    player_id BIGINT PRIMARY KEY,
    granted_at_ms BIGINT NOT NULL
);

CREATE TABLE chat_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter_id BIGINT NOT NULL,
    channel_id TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (reporter_id, channel_id, message_id)
);
