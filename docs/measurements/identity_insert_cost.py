"""Single-row autocommit inserts: numrange GiST exclusion, int8range GiST exclusion, btree
primary key, and SELECT 1, in a schema of its own (dropped after), database "test".
Run: python docs/measurements/identity_insert_cost.py"""

import time

import psycopg

c = psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True)
c.execute("DROP SCHEMA IF EXISTS gt CASCADE; CREATE SCHEMA gt; SET search_path=gt")
c.execute("""CREATE TABLE num (producer bigint, first_seq bigint, last_seq bigint, span numrange GENERATED ALWAYS AS (numrange(producer::numeric * 9223372036854775808 + first_seq, producer::numeric * 9223372036854775808 + last_seq, '[]')) STORED, EXCLUDE USING gist (span WITH &&));
CREATE TABLE i8 (slot bigint, first_seq bigint, last_seq bigint, span int8range GENERATED ALWAYS AS (int8range((slot << 40) + first_seq, (slot << 40) + last_seq, '[]')) STORED, EXCLUDE USING gist (span WITH &&));
CREATE TABLE bt (producer bigint, seq bigint, PRIMARY KEY (producer, seq));
CREATE TABLE nothing (x int);""")
N = 5000
P = 7400000000000000000
for name, sql, args in [
    ("numrange", "INSERT INTO num VALUES (%s, %s, %s)", lambda i: (P, i, i)),
    ("int8range", "INSERT INTO i8 VALUES (%s, %s, %s)", lambda i: (3, i, i)),
    ("btree", "INSERT INTO bt VALUES (%s, %s)", lambda i: (P, i)),
    ("select1", "SELECT 1", lambda i: None),
]:
    for rep in range(2):
        t = time.perf_counter()
        for i in range(rep * N, (rep + 1) * N):
            c.execute(sql, args(i))
        dt = (time.perf_counter() - t) / N * 1e6
    print(f"{name}: {dt:.0f} µs per autocommit insert")
c.execute("DROP SCHEMA gt CASCADE")
