"""asyncpg bulk inserts through pg-router into kv (k int primary key, v text).

Usage: bulk_asyncpg.py <host> <port> <user> <database> <base key>
Runs executemany (one prepared INSERT, many Binds) and
copy_records_to_table (binary COPY FROM STDIN split by shard), then checks
the rows through the router. Exits non-zero on any difference.
"""
import asyncio
import sys


async def main():
    import asyncpg

    host, port, user, db, base = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    conn = await asyncpg.connect(host=host, port=port, user=user, database=db, statement_cache_size=0)
    rows = [(base + i, f"a{base + i}") for i in range(300)]
    await conn.executemany("INSERT INTO kv (k, v) VALUES ($1, $2)", rows)
    recs = [(base + 1000 + i, f"c{i}") for i in range(300)]
    res = await conn.copy_records_to_table("kv", records=recs, columns=["k", "v"])
    assert res == "COPY 300", res
    keys = [base + 2000 + i for i in range(30)][::-1]
    values = ", ".join(f"(${2 * i + 1}, ${2 * i + 2})" for i in range(len(keys)))
    flat = [x for k in keys for x in (k, f"m{k}")]
    got = await conn.fetch(f"INSERT INTO kv (k, v) VALUES {values} RETURNING k", *flat)
    assert [r[0] for r in got] == keys, got
    n, s = await conn.fetchrow(
        "SELECT count(*), sum(k) FROM kv WHERE k >= $1 AND k < $2", base, base + 100000
    )
    want = [r[0] for r in rows] + [r[0] for r in recs] + keys
    assert (n, s) == (len(want), sum(want)), (n, s, len(want), sum(want))
    # Generated keys (gk: id bigserial sharded by id): fetchval (Execute
    # with a row limit of 1) and executemany omitting the key.
    first = await conn.fetchval("INSERT INTO gk (v) VALUES ($1) RETURNING id", "a1")
    await conn.executemany("INSERT INTO gk (v) VALUES ($1)", [("a2",), ("a3",), ("a4",)])
    last = await conn.fetchval("SELECT lastval()")
    assert last > first, (first, last)
    n = await conn.fetchval("SELECT count(*) FROM gk WHERE v LIKE 'a%' AND id BETWEEN $1 AND $2", first, last)
    assert n == 4, n
    await conn.close()
    print("asyncpg ok")


asyncio.run(main())
