// node-postgres side of the client matrix (tests/clients).
//
// Reads the plan from stdin ("Q <repeat> <sql>", "E <sql>", "C <sql>" lines:
// see tests/clients/matrix_test.go), connects
// to the admin server with libpq's PG* variables (which pg reads), and prints
// a JSON report of the columns, type OIDs and decoded values it saw, in three
// modes: simple protocol; extended protocol with an unnamed statement; a named
// prepared statement (parsed once, then bound and executed again).
'use strict';

const net = require('net');
const pg = require('pg');

// int8 as BigInt (pg returns a string by default, to keep precision).
const types = {
  getTypeParser(oid, format) {
    const base = pg.types.getTypeParser(oid, format);
    if (oid === 20) {
      return (v) => BigInt(base(v));
    }
    return base;
  },
};

// Integer types pg parses to a JavaScript number: int2, int4, oid.
const intOIDs = new Set([21, 23, 26]);

function canon(v, oid) {
  if (v === null || v === undefined) return { k: 'null', v: '' };
  switch (typeof v) {
    case 'bigint': return { k: 'int', v: v.toString() };
    case 'number': return { k: intOIDs.has(oid) ? 'int' : 'float', v: String(v) };
    case 'boolean': return { k: 'bool', v: String(v) };
    case 'string': return { k: 'text', v };
  }
  if (v instanceof Date) return { k: 'time', v: String(v.getTime()) };
  return { k: 'unexpected ' + Object.prototype.toString.call(v), v: String(v) };
}

const modes = {
  // Rows as arrays: two columns may share a name. Without values pg uses
  // the simple protocol unless queryMode says otherwise.
  simple: (sql) => ({ text: sql, rowMode: 'array' }),
  extended: (sql) => ({ text: sql, rowMode: 'array', queryMode: 'extended' }),
  prepared: (sql, i) => ({ name: 'matrix_' + i, text: sql, rowMode: 'array' }),
  // No binary mode: pg 8 reads every DataRow field as a UTF-8 string, so
  // binary fields with bytes >= 0x80 arrive mangled, from PostgreSQL too.
};

async function query(client, config, sql) {
  const res = await client.query(config);
  const columns = res.fields.map((f) => ({ name: f.name, type: String(f.dataTypeID) }));
  // By position: two columns may share a name.
  const rows = res.rows.map((row) => row.map((v, i) => canon(v, res.fields[i].dataTypeID)));
  return { sql, columns, rows };
}

async function run(mode, queries, errors) {
  // pg reads PGSSLMODE but then verifies the certificate: the test's is
  // self-signed.
  const ssl = process.env.PGSSLMODE === 'require' ? { rejectUnauthorized: false } : false;
  const client = new pg.Client({ types, ssl });
  await client.connect();
  const out = { mode, results: [], errors: [] };
  for (const [i, q] of queries.entries()) {
    for (let run = 0; run < q.repeat; run++) {
      const r = await query(client, modes[mode](q.sql, i), q.sql);
      r.run = run;
      out.results.push(r);
    }
  }
  for (const [i, { sql, cancel }] of errors.entries()) {
    const e = { sql, code: '', message: 'no error', after: '' };
    // pg has no cancel call: send the CancelRequest with the key the server
    // gave (BackendKeyData) on a new connection, as libpq does.
    const sent = [];
    const timer = cancel ? setInterval(() => sent.push(cancelRequest(client)), 100) : null;
    try {
      await client.query(modes[mode](sql, 'error_' + i));
    } catch (err) {
      e.code = err.code || '';
      e.message = err.message;
    } finally {
      if (timer) clearInterval(timer);
      // The server closes a cancel connection once it has acted on it: wait,
      // so that no late request meets the next query.
      await Promise.all(sent);
    }
    const v = await client.query('SHOW VERSION');
    e.after = v.rows[0].version;
    out.errors.push(e);
  }
  await client.end();
  return out;
}

function cancelRequest(client) {
  const msg = Buffer.alloc(16);
  msg.writeInt32BE(16, 0);
  msg.writeInt32BE(80877102, 4);
  msg.writeInt32BE(client.processID, 8);
  msg.writeInt32BE(client.secretKey, 12);
  return new Promise((resolve) => {
    const sock = net.connect(client.port, client.host, () => sock.write(msg));
    sock.on('data', () => {});
    sock.on('error', (err) => console.error('cancel request:', err.message));
    sock.on('close', resolve);
  });
}

async function main() {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  const queries = [];
  const errors = [];
  for (const line of input.split('\n')) {
    if (line.startsWith('Q ')) {
      const m = /^Q (\d+) (.*)$/.exec(line);
      queries.push({ repeat: Number(m[1]), sql: m[2] });
    } else if (line.startsWith('E ') || line.startsWith('C ')) {
      errors.push({ sql: line.slice(2), cancel: line.startsWith('C ') });
    }
  }
  const version = require('pg/package.json').version;
  const report = { driver: 'node-postgres ' + version, modes: [] };
  for (const mode of Object.keys(modes)) {
    report.modes.push(await run(mode, queries, errors));
  }
  process.stdout.write(JSON.stringify(report));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
