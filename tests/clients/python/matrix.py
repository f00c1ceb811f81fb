"""psycopg2 side of the client matrix (tests/clients).

Reads the plan from stdin ("Q <repeat> <sql>", "E <sql>", "C <sql>" lines: see
tests/clients/matrix_test.go), connects
to the admin server with libpq's PG* variables, and prints a JSON report of
the columns, type OIDs and decoded values psycopg2 saw. psycopg2 speaks the
simple protocol only; the default mode opens a transaction (BEGIN) before the
first query, as applications do, and autocommit mode does not.
"""
import datetime
import json
import sys
import threading

import psycopg2

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def canon(v):
    if v is None:
        return {"k": "null", "v": ""}
    if isinstance(v, bool):
        return {"k": "bool", "v": "true" if v else "false"}
    if isinstance(v, int):
        return {"k": "int", "v": str(v)}
    if isinstance(v, float):
        return {"k": "float", "v": repr(v)}
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            return {"k": "naive_time", "v": v.isoformat()}
        return {"k": "time", "v": str((v - EPOCH) // datetime.timedelta(milliseconds=1))}
    if isinstance(v, str):
        return {"k": "text", "v": v}
    return {"k": "unexpected " + type(v).__name__, "v": str(v)}


def query(cur, sql):
    cur.execute(sql)
    cols = [{"name": d.name, "type": str(d.type_code)} for d in cur.description or []]
    rows = [[canon(v) for v in row] for row in cur.fetchall()] if cur.description else []
    return {"sql": sql, "columns": cols, "rows": rows}


def run(mode, autocommit, queries, errors):
    conn = psycopg2.connect("")  # PG* variables
    conn.autocommit = autocommit
    # libpq's reading of the server_version ParameterStatus.
    if conn.server_version // 10000 != 15:
        raise RuntimeError("server_version %d is not PostgreSQL 15's" % conn.server_version)
    out = {"mode": mode, "results": [], "errors": []}
    cur = conn.cursor()
    for repeat, sql in queries:
        for i in range(repeat):
            r = query(cur, sql)
            r["run"] = i
            out["results"].append(r)
    for sql, cancel in errors:
        e = {"sql": sql, "code": "", "message": "", "after": ""}
        done = threading.Event()
        if cancel:
            # connection.cancel sends a cancel request (libpq's PQcancel).
            def canceller():
                while not done.wait(0.1):
                    conn.cancel()
            t = threading.Thread(target=canceller)
            t.start()
        try:
            cur.execute(sql)
            e["message"] = "no error"
        except psycopg2.Error as err:
            e["code"] = err.pgcode or ""
            e["message"] = err.diag.message_primary or str(err)
            if not autocommit:
                conn.rollback()
        finally:
            done.set()
            if cancel:
                t.join()
        cur.execute("SHOW VERSION")
        e["after"] = cur.fetchone()[0]
        out["errors"].append(e)
    conn.close()
    return out


def main():
    queries, errors = [], []
    for line in sys.stdin.read().splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "Q":
            n, sql = rest.split(" ", 1)
            queries.append((int(n), sql))
        elif kind in ("E", "C"):
            errors.append((rest, kind == "C"))
    report = {
        "driver": "psycopg2 " + psycopg2.__version__.split()[0],
        "modes": [run("transaction", False, queries, errors), run("autocommit", True, queries, errors)],
    }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
