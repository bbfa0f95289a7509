"""psycopg 3 bulk inserts through pg-router into kv (k int primary key, v text).

Usage: bulk_psycopg.py "<conninfo>" <base key>
Runs executemany (pipelined single-row INSERTs), executemany with
returning=True, and one multi-row INSERT with server-side parameters
(Parse/Bind/Describe/Execute) whose rows span the shards, RETURNING checked
in VALUES order. Exits non-zero with a message on any difference.
"""
import sys

import psycopg

conninfo, base = sys.argv[1], int(sys.argv[2])
with psycopg.connect(conninfo, autocommit=True) as conn:
    cur = conn.cursor()
    rows = [(base + i, f"p{base + i}") for i in range(200)]
    cur.executemany("INSERT INTO kv (k, v) VALUES (%s, %s)", rows)

    rows = [(base + 1000 + i, f"r{i}") for i in range(50)]
    cur.executemany("INSERT INTO kv (k, v) VALUES (%s, %s) RETURNING k", rows, returning=True)
    got = []
    while True:
        got.extend(r[0] for r in cur.fetchall())
        if not cur.nextset():
            break
    assert got == [r[0] for r in rows], got

    keys = [base + 2000 + i for i in range(40)][::-1]
    values = ", ".join(["(%s, %s)"] * len(keys))
    flat = [x for k in keys for x in (k, f"m{k}")]
    cur.execute(f"INSERT INTO kv (k, v) VALUES {values} RETURNING k, v", flat)
    got = cur.fetchall()
    assert got == [(k, f"m{k}") for k in keys], got
    assert cur.rowcount == len(keys), cur.rowcount

    # The same in a transaction that rolls back: nothing stays.
    with conn.transaction(force_rollback=True):
        cur.execute(f"INSERT INTO kv (k, v) VALUES {values}", [x + 100000 if isinstance(x, int) else x for x in flat])
    cur.execute("SELECT count(*), sum(k) FROM kv WHERE k >= %s AND k < %s", (base, base + 200000))
    n, s = cur.fetchone()
    want = [base + i for i in range(200)] + [base + 1000 + i for i in range(50)] + keys
    assert (n, s) == (len(want), sum(want)), (n, s, len(want), sum(want))

    # Generated keys (gk: id bigserial sharded by id): executemany and a
    # multi-row INSERT that omit the key, RETURNING the router's values.
    cur.executemany("INSERT INTO gk (v) VALUES (%s) RETURNING id", [("ps1",), ("ps2",)], returning=True)
    ids = []
    while True:
        ids.extend(r[0] for r in cur.fetchall())
        if not cur.nextset():
            break
    cur.execute("INSERT INTO gk (v) VALUES (%s), (%s), (%s) RETURNING id, v", ["ps3", "ps4", "ps5"])
    got = cur.fetchall()
    assert [r[1] for r in got] == ["ps3", "ps4", "ps5"], got
    ids.extend(r[0] for r in got)
    assert len(set(ids)) == 5 and ids == sorted(ids), ids
    cur.execute("SELECT currval('gk_id_seq')")
    assert cur.fetchone()[0] == ids[-1]
    cur.execute("SELECT count(*) FROM gk WHERE id = ANY(%s)", (ids,))
    assert cur.fetchone()[0] == 5
print("psycopg ok")
