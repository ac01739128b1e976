'use strict';
// A client-credentials token endpoint as seed systems build it, the slow
// baseline of bench/http.sh: Express, the client's secret checked with
// bcrypt (cost 10, the hash in the database), the access token signed RS256
// with jsonwebtoken and a PEM key string, one audit INSERT per token with
// pg, synchronous_commit on.  Nothing here is tuned.
//
//   PORT=8497 node server.js
//
// Listens on 127.0.0.1, port $PORT (0: the system picks one); prints
// "listening on http://127.0.0.1:<port>" once it accepts connections.
// Connects to PostgreSQL through the libpq environment (PGHOST, PGPORT,
// PGUSER, PGDATABASE, PGPASSFILE) and reads the tables of schema
// bench_baselines that bench/http/setup.sql makes: clients (app 'naive')
// and audit_events.  One process, no cluster module.
//
// POST /oauth/token, application/x-www-form-urlencoded,
// grant_type=client_credentials [scope=...], the client authenticated by
// HTTP Basic (client_secret_basic, RFC 6749 section 2.3.1).

const crypto = require('node:crypto');
const bcrypt = require('bcrypt');
const express = require('express');
const jwt = require('jsonwebtoken');
const { Pool } = require('pg');

const port = Number(process.env.PORT ?? NaN);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('set PORT to the port to listen on (0: any)');
  process.exit(2);
}
const lifetime = 600;
let issuer; // http://127.0.0.1:<port>, once listening

// the key as a PEM string, as most tutorials keep it: jsonwebtoken parses
// it again for every token
const { privateKey } = crypto.generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  publicKeyEncoding: { type: 'spki', format: 'pem' },
});
const kid = crypto.randomUUID();

const pool = new Pool({ options: '-c synchronous_commit=on' });

const app = express();

function credentials(header) {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header || '');
  if (!m) return null;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
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

async function audit(clientId, action, jti, addr) {
  await pool.query(
    'INSERT INTO bench_baselines.audit_events (app, client_id, action, jti, client_addr) VALUES ($1, $2, $3, $4, $5)',
    ['naive', clientId, action, jti, addr]);
}

app.post('/oauth/token', express.urlencoded({ extended: false }), async (req, res) => {
  res.set('Cache-Control', 'no-store');
  res.set('Pragma', 'no-cache');
  const body = req.body || {};
  if (body.grant_type !== 'client_credentials') {
    return fail(res, 400, 'unsupported_grant_type', 'only client_credentials is supported');
  }
  const client = credentials(req.get('Authorization'));
  if (!client) return fail(res, 401, 'invalid_client', 'client authentication failed');

  const { rows } = await pool.query(
    'SELECT secret_hash, scope FROM bench_baselines.clients WHERE app = $1 AND client_id = $2',
    ['naive', client.id]);
  if (rows.length === 0 || !(await bcrypt.compare(client.secret, rows[0].secret_hash))) {
    await audit(client.id, 'token.refused', null, req.socket.remoteAddress);
    return fail(res, 401, 'invalid_client', 'client authentication failed');
  }

  const allowed = rows[0].scope.split(' ').filter(Boolean);
  const scope = body.scope === undefined ? allowed : String(body.scope).split(' ');
  if (!scope.every((s) => allowed.includes(s))) {
    return fail(res, 400, 'invalid_scope', 'a requested scope is not allowed');
  }

  const jti = crypto.randomUUID();
  const token = jwt.sign({ client_id: client.id, scope: scope.join(' ') }, privateKey, {
    algorithm: 'RS256',
    keyid: kid,
    header: { typ: 'at+jwt' },
    expiresIn: lifetime,
    issuer,
    audience: 'bench',
    subject: client.id,
    jwtid: jti,
  });
  await audit(client.id, 'token.issued', jti, req.socket.remoteAddress);
  res.json({ access_token: token, token_type: 'Bearer', expires_in: lifetime, scope: scope.join(' ') });
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
