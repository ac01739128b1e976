'use strict';
// The token endpoint of express-naive done well, the fast baseline of
// bench/http.sh: Express, the client's secret (random, 256 bits) stored as
// its SHA-256 and compared in constant time (crypto.timingSafeEqual), the
// access token signed ES256 with a node:crypto KeyObject (the JWS built
// here: base64url header and payload, the signature in IEEE P1363 form,
// r || s), one audit INSERT per token through a pg pool with prepared
// statements, synchronous_commit on.
//
//   PORT=8496 node server.js
//
// Listens on 127.0.0.1, port $PORT (0: the system picks one); prints
// "listening on http://127.0.0.1:<port>" once it accepts connections.
// Connects to PostgreSQL through the libpq environment (PGHOST, PGPORT,
// PGUSER, PGDATABASE, PGPASSFILE) and reads the tables of schema
// bench_baselines that bench/http/setup.sql makes: clients (app 'good')
// and audit_events.  The client is read from the database on every
// request, as agentidp does, so a revoked secret fails at once.  One
// process, no cluster module: the database shares the machine.
//
// POST /oauth/token, application/x-www-form-urlencoded,
// grant_type=client_credentials [scope=...], the client authenticated by
// HTTP Basic (client_secret_basic, RFC 6749 section 2.3.1).

const crypto = require('node:crypto');
const express = require('express');
const { Pool } = require('pg');

const port = Number(process.env.PORT ?? NaN);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('set PORT to the port to listen on (0: any)');
  process.exit(2);
}
const lifetime = 600;
let issuer; // http://127.0.0.1:<port>, once listening

// the key parsed once; kid is its RFC 7638 thumbprint
const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = publicKey.export({ format: 'jwk' });
const kid = crypto.createHash('sha256')
  .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))
  .digest('base64url');
const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'at+jwt', kid })).toString('base64url');

function sign(claims) {
  const input = header + '.' + Buffer.from(JSON.stringify(claims)).toString('base64url');
  const signature = crypto.sign('sha256', Buffer.from(input),
    { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return input + '.' + signature.toString('base64url');
}

const pool = new Pool({ options: '-c synchronous_commit=on' });
const selectClient = {
  name: 'select_client',
  text: 'SELECT secret_hash, scope FROM bench_baselines.clients WHERE app = \'good\' AND client_id = $1',
};
const insertAudit = {
  name: 'insert_audit',
  text: 'INSERT INTO bench_baselines.audit_events (app, client_id, action, jti, client_addr) VALUES (\'good\', $1, $2, $3, $4)',
};

// compared against when the client is unknown, so that an unknown client
// costs what a wrong secret does
const noHash = Buffer.alloc(32);

const app = express();
app.disable('x-powered-by');
app.set('etag', false);

function credentials(header) {
  if (typeof header !== 'string' || header.length < 7 ||
      header.slice(0, 6).toLowerCase() !== 'basic ') return null;
  const text = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return null;
  try {
    return {
      id: decodeURIComponent(text.slice(0, colon).replace(/\+/g, ' ')),
      secret: decodeURIComponent(text.slice(colon + 1).replace(/\+/g, ' ')),
    };
  } catch {
    return null;
  }
}

function fail(res, status, error, description) {
  if (status === 401) res.set('WWW-Authenticate', 'Basic realm="bench"');
  res.status(status).json({ error, error_description: description });
}

function audit(clientId, action, jti, addr) {
  return pool.query({ ...insertAudit, values: [clientId, action, jti, addr] });
}

app.post('/oauth/token', express.urlencoded({ extended: false, limit: '8kb' }), async (req, res) => {
  res.set('Cache-Control', 'no-store');
  res.set('Pragma', 'no-cache');
  const body = req.body || {};
  if (body.grant_type !== 'client_credentials') {
    return fail(res, 400, 'unsupported_grant_type', 'only client_credentials is supported');
  }
  const client = credentials(req.get('Authorization'));
  if (!client) return fail(res, 401, 'invalid_client', 'client authentication failed');

  const { rows } = await pool.query({ ...selectClient, values: [client.id] });
  const given = crypto.createHash('sha256').update(client.secret).digest();
  const stored = rows.length === 1 ? Buffer.from(rows[0].secret_hash, 'hex') : noHash;
  const match = stored.length === given.length && crypto.timingSafeEqual(stored, given);
  if (!match || rows.length !== 1) {
    await audit(client.id, 'token.refused', null, req.socket.remoteAddress);
    return fail(res, 401, 'invalid_client', 'client authentication failed');
  }

  const allowed = rows[0].scope.split(' ').filter(Boolean);
  const scope = body.scope === undefined ? allowed : String(body.scope).split(' ');
  if (!scope.every((s) => allowed.includes(s))) {
    return fail(res, 400, 'invalid_scope', 'a requested scope is not allowed');
  }

  const now = Math.floor(Date.now() / 1000);
  const jti = crypto.randomUUID();
  const token = sign({
    iss: issuer,
    sub: client.id,
    aud: 'bench',
    exp: now + lifetime,
    iat: now,
    jti,
    client_id: client.id,
    scope: scope.join(' '),
  });
  await audit(client.id, 'token.issued', jti, req.socket.remoteAddress);
  res.json({ access_token: token, token_type: 'Bearer', expires_in: lifetime, scope: scope.join(' ') });
});

app.use((err, req, res, next) => {
  console.error(err);
  if (res.headersSent) return next(err);
  res.status(err.status && err.status < 500 ? err.status : 500)
    .json({ error: err.status && err.status < 500 ? 'invalid_request' : 'server_error' });
});

const server = app.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  console.log(`listening on ${issuer}`);
});

function stop() {
  server.close();
  pool.end();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
