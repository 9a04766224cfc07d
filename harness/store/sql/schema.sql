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

-- The identities of the stream entries applied, (producer, seq), as runs: one row per
-- producer's contiguous sequence numbers in a batch (a batch of 100 entries from one
-- publisher is one row, not 100), written in the transaction that applies them, so that
-- a second delivery of an entry (a broker's redelivery, a publisher's retry of a round
-- whose reply it lost) is recognised and changes nothing. No two runs may overlap: the
-- exclusion constraint makes a transaction that would apply an entry already applied
-- (or being applied, concurrently: it waits for the other to end) fail with 23P01, and
-- the store then leaves out what was applied and tries again. span places each
-- producer's numbers on one line (producer × 2⁶³ + seq), which a built-in range type and
-- GiST can index without an extension. Pruned below the oldest entry that can still be
-- delivered, less a window (Store.prune_applied): seen_ms is the latest time in the
-- broker of the run's entries; events, how many events they held.
CREATE TABLE IF NOT EXISTS applied_ranges (
    producer  bigint  NOT NULL,
    first_seq bigint  NOT NULL,
    last_seq  bigint  NOT NULL,
    seen_ms   bigint  NOT NULL,
    events    integer NOT NULL,
    span      numrange GENERATED ALWAYS AS (
        numrange(producer::numeric * 9223372036854775808 + first_seq,
                 producer::numeric * 9223372036854775808 + last_seq, '[]')
    ) STORED,
    CONSTRAINT applied_ranges_ordered CHECK (first_seq <= last_seq),
    CONSTRAINT applied_ranges_disjoint EXCLUDE USING gist (span WITH &&)
);

CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
