"""Autocommit single-row inserts into a numrange GiST exclusion table (applied_ranges'
shape), adjacent spans of one producer as batch-1 consumers write them, from 1 and from 4
concurrent connections; and into a btree table for contrast. Schema gc in database
"test", dropped after. Run: python docs/measurements/identity_insert_contention.py"""

import threading
import time

import psycopg

DSN = "host=127.0.0.1 dbname=test user=postgres"
c = psycopg.connect(DSN, autocommit=True)
c.execute("DROP SCHEMA IF EXISTS gc CASCADE; CREATE SCHEMA gc")
c.execute("""
CREATE TABLE gc.num (
    producer bigint, first_seq bigint, last_seq bigint,
    span numrange GENERATED ALWAYS AS (
        numrange(producer::numeric * 9223372036854775808 + first_seq,
                 producer::numeric * 9223372036854775808 + last_seq, '[]')
    ) STORED,
    EXCLUDE USING gist (span WITH &&)
);
CREATE TABLE gc.bt (producer bigint, seq bigint, PRIMARY KEY (producer, seq));
""")
P = 7400000000000000000
N = 3000


def run(table: str, threads: int) -> float:
    """Inserts per second of N rows, from ``threads`` connections."""
    counter = iter(range(10**9))
    lock = threading.Lock()

    def work() -> None:
        conn = psycopg.connect(DSN, autocommit=True)
        for _ in range(N // threads):
            with lock:
                i = next(counter)
            if table == "num":
                conn.execute("INSERT INTO gc.num VALUES (%s,%s,%s)", (P, base + i, base + i))
            else:
                conn.execute("INSERT INTO gc.bt VALUES (%s,%s)", (P, base + i))
        conn.close()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t = time.perf_counter()
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    return N / (time.perf_counter() - t)


base = 0
for rep in range(2):
    for table in ("num", "bt"):
        for threads in (1, 4):
            base += 10**6
            print(rep, table, threads, f"{run(table, threads):,.0f} inserts/s")
c.execute("DROP SCHEMA gc CASCADE")
