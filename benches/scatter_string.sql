\set aid random(1, 100000)
SELECT aid, abalance FROM pgbench_accounts WHERE aid >= :aid AND filler <> 'none' ORDER BY aid LIMIT 10;
