// pgjdbc batch inserts through pg-router into kv (k int primary key, v text)
// with reWriteBatchedInserts=true (the driver rewrites a batch into
// multi-row INSERTs with parameters, whose rows span the shards).
//
// Usage: java -cp <pgjdbc jar>:<dir> BulkJdbc <jdbc url> <base key>
// Exits non-zero with a message on any difference.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;

public class BulkJdbc {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        int base = Integer.parseInt(args[1]);
        try (Connection c = DriverManager.getConnection(url)) {
            c.setAutoCommit(false);
            long want = 0;
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO kv (k, v) VALUES (?, ?)")) {
                for (int i = 0; i < 500; i++) {
                    ps.setInt(1, base + i);
                    ps.setString(2, "j" + i);
                    ps.addBatch();
                    want += base + i;
                }
                int[] counts = ps.executeBatch();
                int total = 0;
                for (int n : counts) {
                    // The driver reports SUCCESS_NO_INFO (-2) for rewritten rows.
                    total += n == Statement.SUCCESS_NO_INFO ? 1 : n;
                }
                if (total != 500) throw new AssertionError("batch counts " + total);
            }
            c.commit();
            // A failing batch (duplicate key) leaves nothing behind.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO kv (k, v) VALUES (?, ?)")) {
                for (int i = 0; i < 20; i++) {
                    ps.setInt(1, base + 10000 + i);
                    ps.setString(2, "x");
                    ps.addBatch();
                }
                ps.setInt(1, base);
                ps.setString(2, "dup");
                ps.addBatch();
                try {
                    ps.executeBatch();
                    throw new AssertionError("duplicate key accepted");
                } catch (java.sql.BatchUpdateException e) {
                    if (!"23505".equals(e.getNextException() != null ? e.getNextException().getSQLState() : e.getSQLState()))
                        throw new AssertionError("unexpected error " + e);
                }
                c.rollback();
            }
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*), sum(k) FROM kv WHERE k >= " + base + " AND k < " + (base + 100000))) {
                rs.next();
                if (rs.getLong(1) != 500 || rs.getLong(2) != want)
                    throw new AssertionError("rows " + rs.getLong(1) + " sum " + rs.getLong(2) + ", want 500 / " + want);
            }
            c.commit();
            // Generated keys (gk: id bigserial sharded by id): a rewritten
            // batch omitting the key, the router's values returned.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO gk (v) VALUES (?)", Statement.RETURN_GENERATED_KEYS)) {
                for (int i = 0; i < 10; i++) {
                    ps.setString(1, "jg" + i);
                    ps.addBatch();
                }
                ps.executeBatch();
                java.util.Set<Long> ids = new java.util.HashSet<>();
                try (ResultSet rs = ps.getGeneratedKeys()) {
                    while (rs.next()) ids.add(rs.getLong("id"));
                }
                if (ids.size() != 10) throw new AssertionError("generated keys " + ids);
            }
            c.commit();
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(DISTINCT id) FROM gk WHERE v LIKE 'jg%'")) {
                rs.next();
                if (rs.getLong(1) != 10) throw new AssertionError("gk rows " + rs.getLong(1));
            }
            c.commit();
            // A subquery over another sharded table runs first with the
            // parameters written in (extended protocol; pgjdbc switches to
            // a named server statement after five runs).
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT count(*), min(k) FROM kv WHERE k >= ? AND k < ? AND v IN (SELECT 'j' || ? FROM gk WHERE v LIKE ?)")) {
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, base);
                    ps.setInt(2, base + 500);
                    ps.setInt(3, i);
                    ps.setString(4, "jg%");
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (rs.getLong(1) != 1 || rs.getInt(2) != base + i)
                            throw new AssertionError("subquery run " + i + ": " + rs.getLong(1) + " rows, min " + rs.getInt(2));
                    }
                }
            }
            c.commit();
            // INSERT ... SELECT whose new keys the router routes, with
            // parameters, in a transaction rolled back, then committed.
            for (boolean commit : new boolean[] {false, true}) {
                try (PreparedStatement ps = c.prepareStatement(
                        "INSERT INTO kv (k, v) SELECT k + ?, 'copied' FROM kv WHERE k >= ? AND k < ?")) {
                    ps.setInt(1, 50000);
                    ps.setInt(2, base);
                    ps.setInt(3, base + 10);
                    int n = ps.executeUpdate();
                    if (n != 10) throw new AssertionError("INSERT ... SELECT count " + n);
                }
                if (commit) c.commit(); else c.rollback();
                try (Statement st = c.createStatement();
                     ResultSet rs = st.executeQuery("SELECT count(*) FROM kv WHERE v = 'copied' AND k >= " + (base + 50000) + " AND k < " + (base + 50010))) {
                    rs.next();
                    if (rs.getLong(1) != (commit ? 10 : 0))
                        throw new AssertionError("copied rows " + rs.getLong(1) + " after " + (commit ? "commit" : "rollback"));
                }
                c.commit();
            }
        }
        System.out.println("pgjdbc ok");
    }
}
