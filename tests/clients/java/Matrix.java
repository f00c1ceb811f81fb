// pgjdbc side of the client matrix (tests/clients), run with Java's
// single-file source launcher: java -cp postgresql.jar Matrix.java
//
// Reads the plan from stdin ("Q <repeat> <sql>", "E <sql>", "C <sql>" lines:
// see tests/clients/matrix_test.go), connects
// to the admin server given by libpq's PG* variables, and prints a JSON report
// of the column names, type names and decoded values pgjdbc saw, and the
// errors it got (a "C" line's query is cancelled with Statement.cancel), in three
// modes: "prepared" (one PreparedStatement per query, executed more often than
// prepareThreshold so that pgjdbc switches to a named server-side statement
// and binary results, autocommit off as in most applications), "statement"
// (extended protocol, unnamed), "simple" (preferQueryMode=simple) and
// "metabase" (what Metabase's PostgreSQL driver does: a read-only connection
// without autocommit, DatabaseMetaData's schema and table listings, every
// query prefixed with Metabase's comment, forward-only, setMaxRows and a
// small fetch size, so that pgjdbc reads results in portal batches).
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.postgresql.PGConnection;
import org.postgresql.PGResultSetMetaData;
import org.postgresql.PGStatement;

public class Matrix {
    record Query(int repeat, String sql) {}

    // Failure is a query that must fail; cancel: it waits until cancelled.
    record Failure(String sql, boolean cancel) {}

    public static void main(String[] args) throws Exception {
        List<Query> queries = new ArrayList<>();
        List<Failure> errors = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            if (line.startsWith("Q ")) {
                String[] parts = line.split(" ", 3);
                queries.add(new Query(Integer.parseInt(parts[1]), parts[2]));
            } else if (line.startsWith("E ") || line.startsWith("C ")) {
                errors.add(new Failure(line.substring(2), line.startsWith("C ")));
            }
        }
        StringBuilder out = new StringBuilder("{\"modes\":[");
        String driver = "";
        String[] modes = {"prepared", "statement", "simple", "metabase"};
        for (int m = 0; m < modes.length; m++) {
            try (Connection conn = connect(modes[m])) {
                driver = conn.getMetaData().getDriverName() + " " + conn.getMetaData().getDriverVersion();
                // What applications and tools ask on connect.
                if (conn.getMetaData().getDatabaseMajorVersion() != 15) {
                    throw new IllegalStateException("server version " + conn.getMetaData().getDatabaseProductVersion());
                }
                if (conn.getTransactionIsolation() != Connection.TRANSACTION_READ_COMMITTED) {
                    throw new IllegalStateException("transaction isolation is not read committed");
                }
                if (m > 0) out.append(',');
                runMode(conn, modes[m], queries, errors, out);
            }
        }
        out.append("],\"driver\":").append(str(driver)).append('}');
        System.out.print(out);
    }

    static Connection connect(String mode) throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
                + System.getenv("PGDATABASE");
        Properties p = new Properties();
        p.setProperty("user", System.getenv("PGUSER"));
        p.setProperty("password", System.getenv("PGPASSWORD"));
        // PGSSLMODE=require: TLS without verifying the test's self-signed
        // certificate (pgjdbc's require does not verify it).
        p.setProperty("sslmode", System.getenv().getOrDefault("PGSSLMODE", "disable"));
        p.setProperty("ApplicationName", "reshard-matrix");
        if (mode.equals("simple")) {
            p.setProperty("preferQueryMode", "simple");
        }
        if (mode.equals("metabase")) {
            p.setProperty("ApplicationName", "Metabase");
        }
        Connection conn = DriverManager.getConnection(url, p);
        conn.setAutoCommit(!mode.equals("prepared") && !mode.equals("metabase"));
        if (mode.equals("metabase")) {
            conn.setReadOnly(true);
            conn.setTransactionIsolation(Connection.TRANSACTION_READ_UNCOMMITTED);
            // The sync's listings: the admin database has no schemas or tables.
            DatabaseMetaData md = conn.getMetaData();
            requireEmpty("getSchemas", md.getSchemas());
            requireEmpty("getTables", md.getTables(null, null, "%", new String[] {"TABLE", "VIEW"}));
            conn.commit();
        }
        return conn;
    }

    static void runMode(Connection conn, String mode, List<Query> queries, List<Failure> errors, StringBuilder out)
            throws Exception {
        out.append("{\"mode\":").append(str(mode)).append(",\"results\":[");
        boolean first = true;
        for (Query q : queries) {
            PreparedStatement ps = mode.equals("prepared") ? conn.prepareStatement(q.sql()) : null;
            for (int run = 0; run < q.repeat(); run++) {
                if (!first) out.append(',');
                first = false;
                if (mode.equals("metabase")) {
                    try (PreparedStatement st = conn.prepareStatement(
                            "-- Metabase:: userID: 1 queryType: native queryHash: 5f3b\n" + q.sql(),
                            ResultSet.TYPE_FORWARD_ONLY, ResultSet.CONCUR_READ_ONLY, ResultSet.CLOSE_CURSORS_AT_COMMIT)) {
                        st.setFetchDirection(ResultSet.FETCH_FORWARD);
                        st.setMaxRows(2000);
                        st.setFetchSize(3);
                        try (ResultSet rs = st.executeQuery()) {
                            result(q.sql(), run, rs, out);
                        }
                    }
                    conn.commit();
                } else if (ps != null) {
                    try (ResultSet rs = ps.executeQuery()) {
                        result(q.sql(), run, rs, out);
                        // pgjdbc asks for binary once the named statement is
                        // described: by the last run.
                        if (run == q.repeat() - 1 && q.repeat() > conn.unwrap(PGConnection.class).getPrepareThreshold()) {
                            requireBinary(q.sql(), rs.getMetaData());
                        }
                    }
                    conn.commit();
                } else {
                    try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(q.sql())) {
                        result(q.sql(), run, rs, out);
                    }
                }
            }
            if (ps != null) {
                // Past prepareThreshold pgjdbc runs a named server-side statement.
                if (q.repeat() > conn.unwrap(PGConnection.class).getPrepareThreshold()
                        && !ps.unwrap(PGStatement.class).isUseServerPrepare()) {
                    throw new IllegalStateException(q.sql() + ": not server-prepared after " + q.repeat() + " runs");
                }
                ps.close();
            }
        }
        out.append("],\"errors\":[");
        for (int i = 0; i < errors.size(); i++) {
            String sql = errors.get(i).sql();
            String code = "", message = "no error";
            Thread canceller = null;
            try (PreparedStatement ps = conn.prepareStatement(sql)) {
                if (errors.get(i).cancel()) {
                    // Statement.cancel sends a cancel request while the statement runs.
                    canceller = new Thread(() -> {
                        try {
                            while (true) {
                                Thread.sleep(100);
                                ps.cancel();
                            }
                        } catch (InterruptedException | SQLException e) {
                            // the statement returned
                        }
                    });
                    canceller.start();
                }
                ps.executeQuery().close();
            } catch (SQLException e) {
                code = e.getSQLState() == null ? "" : e.getSQLState();
                message = e.getMessage();
                if (!conn.getAutoCommit()) conn.rollback();
            } finally {
                if (canceller != null) {
                    canceller.interrupt();
                    canceller.join();
                }
            }
            String after = "";
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SHOW VERSION")) {
                if (rs.next()) after = rs.getString(1);
            }
            if (i > 0) out.append(',');
            out.append("{\"sql\":").append(str(sql)).append(",\"code\":").append(str(code))
                    .append(",\"message\":").append(str(message)).append(",\"after\":").append(str(after)).append('}');
        }
        out.append("]}");
    }

    // requireEmpty reads a DatabaseMetaData listing, which must work and
    // list nothing.
    static void requireEmpty(String call, ResultSet rs) throws SQLException {
        try (rs) {
            if (rs.getMetaData().getColumnCount() == 0) {
                throw new IllegalStateException(call + ": no columns");
            }
            if (rs.next()) {
                throw new IllegalStateException(call + " listed " + rs.getString(1));
            }
        }
    }

    // requireBinary checks that a server-prepared statement got its numbers
    // and times in binary, as pgjdbc asks for them.
    static void requireBinary(String sql, ResultSetMetaData md) throws SQLException {
        PGResultSetMetaData pg = md.unwrap(PGResultSetMetaData.class);
        for (int i = 1; i <= md.getColumnCount(); i++) {
            String type = md.getColumnTypeName(i);
            if ((type.equals("int8") || type.equals("float8") || type.equals("timestamptz")) && pg.getFormat(i) != 1) {
                throw new IllegalStateException(sql + ": column " + md.getColumnLabel(i) + " (" + type + ") not in binary");
            }
        }
    }

    static void result(String sql, int run, ResultSet rs, StringBuilder out) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        int n = md.getColumnCount();
        out.append("{\"sql\":").append(str(sql)).append(",\"run\":").append(run).append(",\"columns\":[");
        for (int i = 1; i <= n; i++) {
            if (i > 1) out.append(',');
            out.append("{\"name\":").append(str(md.getColumnLabel(i))).append(",\"type\":")
                    .append(str(md.getColumnTypeName(i))).append('}');
        }
        out.append("],\"rows\":[");
        boolean firstRow = true;
        while (rs.next()) {
            if (!firstRow) out.append(',');
            firstRow = false;
            out.append('[');
            for (int i = 1; i <= n; i++) {
                if (i > 1) out.append(',');
                value(rs, i, out);
            }
            out.append(']');
        }
        out.append("]}");
    }

    // value writes one field as {"k": kind, "v": canonical text}.
    static void value(ResultSet rs, int i, StringBuilder out) throws SQLException {
        Object v = rs.getObject(i);
        String kind, text;
        if (v == null) {
            kind = "null";
            text = "";
        } else if (v instanceof Long || v instanceof Integer) {
            kind = "int";
            text = v.toString();
        } else if (v instanceof Double) {
            kind = "float";
            text = v.toString();
        } else if (v instanceof Boolean) {
            kind = "bool";
            text = v.toString();
        } else if (v instanceof Timestamp ts) {
            // timestamptz: the instant must agree with the java.time view.
            OffsetDateTime odt = rs.getObject(i, OffsetDateTime.class);
            kind = odt.toInstant().toEpochMilli() == ts.getTime() ? "time" : "time_mismatch";
            text = Long.toString(ts.getTime());
        } else if (v instanceof String s) {
            kind = "text";
            text = s;
        } else {
            kind = "unexpected " + v.getClass().getName();
            text = v.toString();
        }
        out.append("{\"k\":").append(str(kind)).append(",\"v\":").append(str(text)).append('}');
    }

    static String str(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
                }
            }
        }
        return b.append('"').toString();
    }
}
