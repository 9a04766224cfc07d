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

-- Deliveries recognised as applied before (a broker's redelivery, a publisher's own
-- retry) and skipped: they are not receipts, so they change no other counter.
ALTER TABLE event_stats ADD COLUMN IF NOT EXISTS redelivered bigint NOT NULL DEFAULT 0;

INSERT INTO event_stats (shard) VALUES (0) ON CONFLICT DO NOTHING;

-- The identities of the stream entries applied: (producer, seq), written in the
-- transaction that applies the entry, so that a second delivery of it (a redelivery by
-- the broker, a publisher's retry of a round whose reply it lost) is recognised and
-- changes nothing. Pruned below the oldest entry that can still be delivered, less a
-- window (Store.prune_applied), so it stays small; seen_ms (the entry's time in the
-- broker) is what pruning goes by, through a BRIN index that costs next to nothing on
-- insert. events: how many events the entry held (what a lost entry would have lost).
CREATE TABLE IF NOT EXISTS applied_entries (
    producer bigint  NOT NULL,
    seq      bigint  NOT NULL,
    seen_ms  bigint  NOT NULL,
    events   integer NOT NULL,
    CONSTRAINT applied_entries_pkey PRIMARY KEY (producer, seq)
);

CREATE INDEX IF NOT EXISTS applied_entries_seen ON applied_entries USING brin (seen_ms);

CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
