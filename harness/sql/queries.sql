-- Named blocks: each starts with a line "-- name --". Parameters use %(name)s.
-- A block may hold several statements, each ended by ";" at the end of a line.

-- insert_events --
-- The batch arrives de-duplicated and sorted by (topic, event_id), so concurrent
-- batches take their index locks in the same order and cannot deadlock each other.
INSERT INTO processed_events (topic, event_id, ts, source, payload)
SELECT t.topic, t.event_id, t.ts::timestamptz, t.source, t.payload::jsonb
FROM unnest(%(topics)s::text[], %(event_ids)s::text[], %(timestamps)s::text[],
            %(sources)s::text[], %(payloads)s::text[])
     AS t(topic, event_id, ts, source, payload)
ON CONFLICT (topic, event_id) DO NOTHING

-- add_counters --
UPDATE event_stats
SET received = received + %(received)s,
    unique_processed = unique_processed + %(unique)s,
    duplicate_dropped = duplicate_dropped + %(duplicate)s,
    updated_at = now()
WHERE shard = %(shard)s

-- read_counters --
SELECT coalesce(sum(received), 0)::bigint AS received,
       coalesce(sum(unique_processed), 0)::bigint AS unique_processed,
       coalesce(sum(duplicate_dropped), 0)::bigint AS duplicate_dropped
FROM event_stats

-- reset --
TRUNCATE processed_events;
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
