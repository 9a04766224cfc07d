-- Applied by Store.create_schema(); idempotent. %(schema)s is substituted as an identifier.

CREATE TABLE IF NOT EXISTS processed_events (
    topic        varchar(255) NOT NULL,
    event_id     varchar(255) NOT NULL,
    ts           timestamptz  NOT NULL,
    source       varchar(255) NOT NULL,
    payload      jsonb        NOT NULL,
    processed_at timestamptz  NOT NULL DEFAULT now(),
    -- The seed's UNIQUE (topic, event_id), as the primary key: it is the identity of an
    -- event, and a surrogate serial id would cost one more index entry per row.
    CONSTRAINT processed_events_pkey PRIMARY KEY (topic, event_id)
);

CREATE INDEX IF NOT EXISTS processed_events_topic_ts ON processed_events (topic, ts);

-- One row per counter shard. The "atomic" and "rmw" strategies use shard 0 only;
-- "sharded" gives each consumer a row of its own. Readers sum all rows, so strategies
-- that spread the counters over shards need no other reader.
CREATE TABLE IF NOT EXISTS event_stats (
    shard             integer PRIMARY KEY,
    received          bigint NOT NULL DEFAULT 0,
    unique_processed  bigint NOT NULL DEFAULT 0,
    duplicate_dropped bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

INSERT INTO event_stats (shard) VALUES (0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
