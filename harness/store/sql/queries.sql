-- Named blocks: each starts with a line "-- name --". Parameters use %(name)s.
-- {name} stands for the text of block "name" (a fragment shared by several blocks).
-- A block may hold several statements, each ended by ";" at the end of a line.

-- insert_events --
-- The batch arrives de-duplicated and sorted by (topic, event_id), so concurrent
-- batches take their index locks in the same order and cannot deadlock each other.
INSERT INTO processed_events (topic, event_id, ts, source, payload)
SELECT topic, event_id, ts::timestamptz, source, payload::jsonb
FROM {unnest_batch}
ON CONFLICT (topic, event_id) DO NOTHING

-- create_staging --
-- Per connection: the COPY path stages a batch here. ON COMMIT DELETE ROWS empties it by
-- truncation at each commit (and a rollback takes the rows with it): a DELETE would leave
-- dead rows that nothing vacuums in a temporary table, and every batch would scan more.
CREATE TEMPORARY TABLE IF NOT EXISTS staging (
    topic text, event_id text, ts text, source text, payload text
) ON COMMIT DELETE ROWS

-- copy_staging --
COPY staging (topic, event_id, ts, source, payload) FROM STDIN

-- apply_staged --
-- Insert the staged batch (sorted by key in byte order, so concurrent batches lock keys
-- in one order) and count it on one counter row, in ONE statement, in the transaction
-- that staged it. Returns how many events were new. The batch may hold a key more than
-- once: its copies meet in staging order (ctid, the order COPY wrote them into the
-- emptied table), the first is inserted and ON CONFLICT DO NOTHING skips the others.
{apply_from}
    FROM staging
    ORDER BY topic COLLATE "C", event_id COLLATE "C", ctid
{apply_count}

-- apply_unnest --
-- apply_staged for a small batch, passed as arrays (already sorted by key), in
-- autocommit: the statement is its own transaction, one round trip.
{apply_from}
    FROM {unnest_batch}
{apply_count}

-- apply_from --
-- Fragment: the head of the apply statements, up to the rows' source: the batch's entry
-- identities are recorded first (nothing when it has none).
WITH ranges AS (
    {insert_ranges}
), inserted AS (
    INSERT INTO processed_events (topic, event_id, ts, source, payload)
    SELECT topic, event_id, ts::timestamptz, source, payload::jsonb

-- apply_count --
-- Fragment: the tail of the apply statements, which counts what the insert added.
    ON CONFLICT (topic, event_id) DO NOTHING
    RETURNING 1
), new AS (
    SELECT count(*)::bigint AS n FROM inserted
)
INSERT INTO event_stats AS s (shard, received, unique_processed, duplicate_dropped,
                              redelivered)
SELECT %(shard)s, %(received)s, new.n, %(received)s - new.n, %(redelivered)s FROM new
ON CONFLICT (shard) DO UPDATE
SET received = s.received + excluded.received,
    unique_processed = s.unique_processed + excluded.unique_processed,
    duplicate_dropped = s.duplicate_dropped + excluded.duplicate_dropped,
    redelivered = s.redelivered + excluded.redelivered,
    updated_at = now()
RETURNING (SELECT n FROM new)

-- insert_ranges --
-- Fragment: the batch's runs of entry identities (see applied_ranges in schema.sql), as
-- five parallel arrays (empty when the batch has no identities). An entry applied before
-- makes the whole statement fail with 23P01; the store then leaves it out and tries again.
INSERT INTO applied_ranges (producer, first_seq, last_seq, seen_ms, events)
SELECT * FROM unnest(%(run_producers)s::bigint[], %(run_first)s::bigint[],
                     %(run_last)s::bigint[], %(run_seen_ms)s::bigint[],
                     %(run_events)s::integer[])

-- record_ranges --
-- The rmw strategy's first step: record the runs (apply_from does it in its statement).
{insert_ranges}

-- add_redelivered --
UPDATE event_stats SET redelivered = redelivered + %(redelivered)s, updated_at = now()
WHERE shard = %(shard)s

-- overlapping_ranges --
-- The applied runs that overlap these (after a 23P01): what of the batch was applied.
SELECT a.producer, a.first_seq, a.last_seq
FROM applied_ranges a
JOIN unnest(%(run_producers)s::bigint[], %(run_first)s::bigint[], %(run_last)s::bigint[])
    AS r(producer, first_seq, last_seq)
  ON a.span && numrange(r.producer::numeric * 9223372036854775808 + r.first_seq,
                        r.producer::numeric * 9223372036854775808 + r.last_seq, '[]')

-- prune_applied --
-- Forget the runs of entries that can no longer come back; returns how many entries.
-- One consumer at a time (the others skip), at READ COMMITTED whatever the trial's level.
WITH gone AS (
    DELETE FROM applied_ranges
    WHERE seen_ms < %(before_ms)s
      AND (SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.applied_ranges')))
    RETURNING last_seq - first_seq + 1 AS entries
)
SELECT coalesce(sum(entries), 0)::bigint FROM gone

-- applied_entries --
-- What was applied of these producers' entries: entries and their events.
SELECT coalesce(sum(last_seq - first_seq + 1), 0)::bigint AS entries,
       coalesce(sum(events), 0)::bigint AS events
FROM applied_ranges
WHERE producer = ANY(%(producers)s::bigint[])

-- applied_entry_count --
SELECT coalesce(sum(last_seq - first_seq + 1), 0)::bigint FROM applied_ranges

-- unnest_batch --
-- Fragment: a prepared batch passed as five parallel arrays.
unnest(%(topics)s::text[], %(event_ids)s::text[], %(timestamps)s::text[],
       %(sources)s::text[], %(payloads)s::text[])
    AS t(topic, event_id, ts, source, payload)

-- read_counter_row --
-- Counter strategy "rmw", step 1: a plain read, deliberately without FOR UPDATE (the
-- seed report's "WRONG" example). At READ COMMITTED nothing stops another batch from
-- committing between this read and the write below.
SELECT received, unique_processed, duplicate_dropped
FROM event_stats
WHERE shard = %(shard)s

-- write_counter_row --
-- Counter strategy "rmw", step 2: write back sums computed in Python. At READ COMMITTED
-- this overwrites whatever committed since the read (a lost update); at REPEATABLE READ
-- and SERIALIZABLE PostgreSQL refuses it with 40001 and the batch is retried.
UPDATE event_stats
SET received = %(received)s,
    unique_processed = %(unique)s,
    duplicate_dropped = %(duplicate)s,
    updated_at = now()
WHERE shard = %(shard)s

-- seed_add_received --
-- The seed report's design (Store.apply_like_the_seed), kept to be measured.
UPDATE event_stats SET received = received + 1, updated_at = now() WHERE shard = 0

-- seed_insert --
INSERT INTO processed_events (topic, event_id, ts, source, payload)
VALUES (%(topic)s, %(event_id)s, %(ts)s::timestamptz, %(source)s, %(payload)s::jsonb)
ON CONFLICT (topic, event_id) DO NOTHING

-- seed_add_unique --
UPDATE event_stats SET unique_processed = unique_processed + 1 WHERE shard = 0

-- seed_add_duplicate --
UPDATE event_stats SET duplicate_dropped = duplicate_dropped + 1 WHERE shard = 0

-- read_counters --
SELECT coalesce(sum(received), 0)::bigint AS received,
       coalesce(sum(unique_processed), 0)::bigint AS unique_processed,
       coalesce(sum(duplicate_dropped), 0)::bigint AS duplicate_dropped,
       coalesce(sum(redelivered), 0)::bigint AS redelivered
FROM event_stats

-- reset --
-- Deletes the shard rows rather than zeroing them: "sharded" recreates its own on first
-- use, and row 0, which "atomic" and "rmw" count on, is put back.
TRUNCATE processed_events, applied_ranges;
DELETE FROM event_stats;
INSERT INTO event_stats (shard) VALUES (0)

-- count_rows --
SELECT count(*)::bigint AS rows,
       count(DISTINCT (topic, event_id))::bigint AS distinct_keys
FROM processed_events

-- create_expected --
CREATE TEMPORARY TABLE IF NOT EXISTS expected_keys (
    topic text NOT NULL, event_id text NOT NULL
) ON COMMIT PRESERVE ROWS;
TRUNCATE expected_keys

-- copy_expected --
COPY expected_keys (topic, event_id) FROM STDIN

-- analyze_expected --
ANALYZE expected_keys

-- missing_expected --
-- The expected keys the store does not hold (the lost ones themselves).
SELECT e.topic, e.event_id FROM expected_keys e
WHERE NOT EXISTS (SELECT 1 FROM processed_events p
                  WHERE p.topic = e.topic AND p.event_id = e.event_id)

-- compare_expected --
SELECT
  (SELECT count(*) FROM expected_keys e
    WHERE NOT EXISTS (SELECT 1 FROM processed_events p
                      WHERE p.topic = e.topic AND p.event_id = e.event_id))::bigint AS lost,
  (SELECT count(*) FROM processed_events p
    WHERE NOT EXISTS (SELECT 1 FROM expected_keys e
                      WHERE p.topic = e.topic AND p.event_id = e.event_id))::bigint AS unexpected

-- drop_expected --
DROP TABLE IF EXISTS expected_keys

-- server_version --
SELECT current_setting('server_version') AS version

-- schema_version --
SELECT coalesce(max(version), 0) AS version FROM schema_version

-- set_schema_version --
DELETE FROM schema_version;
INSERT INTO schema_version (version) VALUES (%(version)s)

-- ============ read side (the HTTP service) ============

-- list_events --
-- Newest first by the event's own timestamp; the key breaks ties so that the cursor
-- (the last row's ts, topic, event_id) pages without skipping or repeating a row.
SELECT topic, event_id, ts, source, payload, processed_at
FROM processed_events
WHERE (%(topic)s::text IS NULL OR topic = %(topic)s::text)
  AND (%(since)s::timestamptz IS NULL OR ts >= %(since)s::timestamptz)
  AND (%(before_ts)s::timestamptz IS NULL
       OR (ts, topic, event_id) < (%(before_ts)s::timestamptz, %(before_topic)s::text,
                                   %(before_id)s::text))
ORDER BY ts DESC, topic DESC, event_id DESC
LIMIT %(limit)s

-- topic_count --
SELECT count(DISTINCT topic)::bigint FROM processed_events

-- ping --
SELECT 1

-- ============ fault injection ============

-- terminate_backends --
SELECT count(pg_terminate_backend(pid))::bigint
FROM pg_stat_activity
WHERE application_name = %(application_name)s
  AND datname = current_database()
  AND pid <> pg_backend_pid()

-- count_busy_backends --
-- Connections with this application name in a statement or a transaction right now:
-- what a pg_terminate_backend now would cut off mid-work.
SELECT count(*)::bigint
FROM pg_stat_activity
WHERE application_name = %(application_name)s
  AND datname = current_database()
  AND pid <> pg_backend_pid()
  AND state IN ('active', 'idle in transaction')

-- checkpoint --
-- Benchmarks: write out every dirty buffer now, so that a measurement does not pay for
-- the checkpoint the WAL of the one before it would trigger. Needs superuser or the
-- pg_checkpoint role (PostgreSQL 15+).
CHECKPOINT
