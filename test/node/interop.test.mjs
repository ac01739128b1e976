// Interoperability of agentidp's JWS and RFC 9068 access tokens with an
// independent JOSE implementation, panva/jose.
//
// Run by test/node/run.sh against a running cluster: the connection comes
// from the environment (PGHOST, PGPORT, PGUSER, PGPASSFILE, and PGDATABASE,
// which defaults to "agentidp"). The database is reached through psql, run
// without a shell, so no SQL text is ever seen by a shell.
//
// Every run creates its own tenants, named node-interop-<alg or test>-<random>,
// and leaves them behind.

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as jose from 'jose';

const DATABASE = process.env.PGDATABASE || 'agentidp';
const AUDIENCE = 'https://api.node-interop.test';
const ALGORITHMS = ['ES256', 'EdDSA', 'RS256', 'PS256'];
const RUN = randomBytes(6).toString('hex');

// ---------------------------------------------------------------------------
// psql

// psql decodes and encodes text as UTF-8 whatever the locale
const PSQL_ENV = { ...process.env, PGCLIENTENCODING: 'UTF8' };

function psqlArgs(sql) {
	return ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose',
		'-d', DATABASE, '-c', sql];
}

// Runs one SQL statement and returns its output, without the final newline.
function psql(sql) {
	try {
		return execFileSync('psql', psqlArgs(sql), {
			encoding: 'utf8',
			env: PSQL_ENV,
			stdio: ['ignore', 'pipe', 'pipe'],
		}).replace(/\n$/, '');
	} catch (err) {
		const detail = err.stderr ? String(err.stderr).trim() : err.message;
		throw new Error(`psql failed (exit ${err.status}): ${detail}\nSQL: ${sql}`);
	}
}

// Runs one SQL statement that returns one JSON value, and parses it.
function psqlJson(sql) {
	const out = psql(sql).trim();
	assert.notEqual(out, '', `no row from: ${sql}`);
	return JSON.parse(out);
}

// Runs one SQL statement that must fail; returns psql's exit status and stderr.
function psqlFails(sql) {
	try {
		const out = execFileSync('psql', psqlArgs(sql), {
			encoding: 'utf8',
			env: PSQL_ENV,
			stdio: ['ignore', 'pipe', 'pipe'],
		});
		assert.fail(`expected an error, got: ${out}\nSQL: ${sql}`);
	} catch (err) {
		if (err instanceof assert.AssertionError) throw err;
		assert.ok(typeof err.status === 'number', `psql did not run: ${err.message}`);
		return { status: err.status, stderr: String(err.stderr ?? '') };
	}
}

// A SQL string literal.
function lit(value) {
	return `'${String(value).replace(/'/g, "''")}'`;
}

// A SQL jsonb literal.
function jsonLit(value) {
	return `${lit(JSON.stringify(value))}::jsonb`;
}

// ---------------------------------------------------------------------------
// fixtures

// A fresh tenant with one signing key of the given algorithm, an agent that
// may have the scopes read and write, and a client secret for it.
function setupTenant(alg) {
	const name = `node-interop-${alg.toLowerCase()}-${RUN}`;
	const tenantId = psql(`SELECT agentidp.create_tenant(${lit(name)})`).trim();
	const kid = psql(`SELECT agentidp.rotate_signing_key(${lit(tenantId)}, ${lit(alg)})`).trim();
	const agentId = psql(
		`SELECT agentidp.register_agent(${lit(tenantId)}, ${lit(`agent-${alg}`)}, '{read,write}')`).trim();
	const secret = psqlJson(
		`SELECT json_build_object('client_id', client_id, 'client_secret', client_secret) ` +
		`FROM agentidp.create_client_secret(${lit(agentId)})`);
	const issuer = psql(
		`SELECT issuer FROM agentidp.tenants WHERE tenant_id = ${lit(tenantId)}`).trim();
	const jwks = psqlJson(`SELECT agentidp.jwks(${lit(tenantId)})`);
	assert.match(tenantId, /^[0-9a-f-]{36}$/);
	assert.match(agentId, /^[0-9a-f-]{36}$/);
	assert.ok(kid.length > 0, 'rotate_signing_key returned no kid');
	assert.ok(issuer.length > 0, 'the tenant has no issuer');
	return {
		alg, name, tenantId, kid, agentId, issuer, jwks,
		clientId: secret.client_id,
		clientSecret: secret.client_secret,
	};
}

// Asks the database for an access token.
function issueToken(t, scope = null, audience = AUDIENCE) {
	const arg = (v) => (v === null ? 'NULL' : lit(v));
	return psqlJson(
		`SELECT agentidp.issue_token(${lit(t.clientId)}, ${lit(t.clientSecret)}, ` +
		`${arg(scope)}, ${arg(audience)})`);
}

// Verifies a database token with jose as a resource server would; an
// audience of null skips the audience check.
function joseVerify(t, token, audience = AUDIENCE) {
	return jose.jwtVerify(token, jose.createLocalJWKSet(t.jwks), {
		issuer: t.issuer,
		...(audience === null ? {} : { audience }),
		typ: 'at+jwt',
		algorithms: [t.alg],
		requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti'],
		// the database's clock is this machine's; one second covers rounding
		clockTolerance: 1,
	});
}

// The token with one character of its payload segment changed.
function tamperPayload(token) {
	const [h, p, s] = token.split('.');
	const i = Math.floor(p.length / 2); // every bit of a middle character counts
	const c = p[i] === 'A' ? 'B' : 'A';
	return [h, p.slice(0, i) + c + p.slice(i + 1), s].join('.');
}

// A key pair made by jose, with its public JWK as the database expects it.
async function joseKeyPair(alg) {
	const { publicKey, privateKey } = alg === 'EdDSA'
		? await jose.generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
		: await jose.generateKeyPair(alg, { extractable: true });
	const jwk = await jose.exportJWK(publicKey);
	const kid = await jose.calculateJwkThumbprint(jwk);
	return { privateKey, kid, publicJwk: { ...jwk, kid, alg, use: 'sig' } };
}

// A JWT signed by jose.
function joseSign(alg, kid, privateKey, claims) {
	return new jose.SignJWT(claims)
		.setProtectedHeader({ alg, kid, typ: 'JWT' })
		.setIssuer('https://jose.node-interop.test')
		.setAudience(AUDIENCE)
		.setSubject(randomUUID())
		.setJti(randomUUID())
		.setIssuedAt()
		.setNotBefore('0s')
		.setExpirationTime('5m')
		.sign(privateKey);
}

// ---------------------------------------------------------------------------
// tokens issued by the database, verified by jose

for (const alg of ALGORITHMS) {
	describe(`database tokens signed with the tenant's ${alg} key verify in jose`, () => {
		let t;

		before(() => {
			t = setupTenant(alg);
		});

		it('publishes the key in the JWKS', () => {
			assert.ok(Array.isArray(t.jwks.keys), 'jwks has no keys array');
			const key = t.jwks.keys.find((k) => k.kid === t.kid);
			assert.ok(key, `no key with kid ${t.kid} in ${JSON.stringify(t.jwks)}`);
			assert.equal(key.alg, alg);
			assert.equal(key.use, 'sig');
			for (const k of t.jwks.keys) {
				for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) {
					assert.ok(!(member in k), `the JWKS publishes private member "${member}"`);
				}
			}
		});

		it('the kid is the RFC 7638 thumbprint jose computes', async () => {
			const key = t.jwks.keys.find((k) => k.kid === t.kid);
			assert.equal(await jose.calculateJwkThumbprint(key), t.kid);
		});

		it('several tokens verify, each with its own jti, and carry the claims', async () => {
			const jtis = new Set();
			for (let n = 0; n < 3; n++) {
				const response = issueToken(t, 'read');
				assert.equal(response.token_type, 'Bearer');
				assert.equal(typeof response.access_token, 'string');
				assert.ok(Number.isInteger(response.expires_in) && response.expires_in > 0,
					`expires_in ${response.expires_in}`);
				assert.ok(response.expires_in <= 900, `expires_in ${response.expires_in}`);
				assert.equal(response.scope, 'read');

				const { payload, protectedHeader } = await joseVerify(t, response.access_token);
				assert.equal(protectedHeader.typ, 'at+jwt');
				assert.equal(protectedHeader.alg, alg);
				assert.equal(protectedHeader.kid, t.kid);

				assert.equal(payload.iss, t.issuer);
				assert.equal(payload.sub, t.agentId);
				assert.ok(payload.aud === AUDIENCE ||
					(Array.isArray(payload.aud) && payload.aud.includes(AUDIENCE)),
					`aud ${JSON.stringify(payload.aud)}`);
				assert.equal(payload.client_id, t.clientId);
				assert.equal(payload.scope, 'read');
				assert.equal(payload.tenant_id, t.tenantId);
				assert.ok(Array.isArray(payload.roles), `roles ${JSON.stringify(payload.roles)}`);
				for (const claim of ['exp', 'iat', 'nbf']) {
					assert.ok(Number.isInteger(payload[claim]), `${claim} ${payload[claim]}`);
				}
				assert.ok(payload.exp > payload.iat, `exp ${payload.exp} iat ${payload.iat}`);
				assert.ok(payload.exp - payload.iat <= 900, `exp - iat = ${payload.exp - payload.iat}`);
				assert.ok(payload.nbf <= payload.exp);
				assert.equal(typeof payload.jti, 'string');
				assert.ok(payload.jti.length > 0);
				assert.ok(!jtis.has(payload.jti), `jti ${payload.jti} repeats`);
				jtis.add(payload.jti);
			}
			assert.equal(jtis.size, 3);
		});

		it('a token for both scopes carries both', async () => {
			const response = issueToken(t, 'read write');
			const { payload } = await joseVerify(t, response.access_token);
			assert.deepEqual(payload.scope.split(' ').sort(), ['read', 'write']);
			assert.deepEqual(response.scope.split(' ').sort(), ['read', 'write']);
		});

		it('a token without a requested audience still has an aud', async () => {
			const response = issueToken(t, 'read', null);
			const { payload } = await joseVerify(t, response.access_token, null);
			assert.ok(typeof payload.aud === 'string' ||
				(Array.isArray(payload.aud) && payload.aud.length > 0),
				`aud ${JSON.stringify(payload.aud)}`);
		});

		it('verify_token agrees with jose on the claims', async () => {
			const { access_token: token } = issueToken(t, 'read');
			const { payload } = await joseVerify(t, token);
			const claims = psqlJson(`SELECT agentidp.verify_token(${lit(token)}, ${lit(AUDIENCE)})`);
			assert.equal(claims.jti, payload.jti);
			assert.equal(claims.sub, payload.sub);
			assert.equal(claims.iss, payload.iss);
			assert.equal(claims.exp, payload.exp);
		});

		it('a token with one payload character changed fails in jose and in the database', async () => {
			const { access_token: token } = issueToken(t, 'read');
			const bad = tamperPayload(token);
			assert.notEqual(bad, token);
			await assert.rejects(joseVerify(t, bad), (err) => {
				assert.equal(err.code, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', String(err));
				return true;
			});
			const { status, stderr } = psqlFails(
				`SELECT agentidp.verify_token(${lit(bad)}, ${lit(AUDIENCE)})`);
			assert.notEqual(status, 0);
			assert.match(stderr, /28000|signature/i);
		});
	});
}

// ---------------------------------------------------------------------------
// tokens signed by jose, verified by the database

for (const alg of ALGORITHMS) {
	describe(`jose ${alg} tokens verify in the database`, () => {
		let pair;
		let other;

		before(async () => {
			pair = await joseKeyPair(alg);
			other = await joseKeyPair(alg);
		});

		it('jws_verify returns the payload jose signed', async () => {
			const claims = {
				scope: 'read write',
				client_id: randomBytes(16).toString('hex'),
				roles: ['reader', 'writer'],
				note: 'Zo\u00eb \u2713 "quoted" \'single\' back\\slash',
				nested: { a: [1, 2, 3], b: null, c: true },
			};
			for (let n = 0; n < 2; n++) {
				const token = await joseSign(alg, pair.kid, pair.privateKey, claims);
				const got = psqlJson(
					`SELECT agentidp.jws_verify(${lit(token)}, ` +
					`${jsonLit({ keys: [pair.publicJwk] })}, ${lit(`{${alg}}`)})`);
				assert.deepEqual(got, jose.decodeJwt(token));
				assert.deepEqual(got.nested, claims.nested);
				assert.equal(got.note, claims.note);
			}
		});

		it('a single public JWK verifies too', async () => {
			const token = await joseSign(alg, pair.kid, pair.privateKey, { scope: 'read' });
			const got = psqlJson(
				`SELECT agentidp.jws_verify(${lit(token)}, ${jsonLit(pair.publicJwk)}, ${lit(`{${alg}}`)})`);
			assert.deepEqual(got, jose.decodeJwt(token));
		});

		it('a different key under the same kid fails', async () => {
			const token = await joseSign(alg, pair.kid, pair.privateKey, { scope: 'read' });
			const wrong = { ...other.publicJwk, kid: pair.kid };
			const { status, stderr } = psqlFails(
				`SELECT agentidp.jws_verify(${lit(token)}, ${jsonLit({ keys: [wrong] })}, ${lit(`{${alg}}`)})`);
			assert.notEqual(status, 0);
			assert.match(stderr, /28000|signature/i);
		});

		it('a payload character changed fails', async () => {
			const token = await joseSign(alg, pair.kid, pair.privateKey, { scope: 'read' });
			const { status, stderr } = psqlFails(
				`SELECT agentidp.jws_verify(${lit(tamperPayload(token))}, ` +
				`${jsonLit({ keys: [pair.publicJwk] })}, ${lit(`{${alg}}`)})`);
			assert.notEqual(status, 0);
			assert.match(stderr, /28000|signature/i);
		});
	});
}

// ---------------------------------------------------------------------------
// client authentication and proof of possession with keys made by jose

// A fresh tenant with one ES256 signing key and an agent that may have the
// scope read; with a client secret when withSecret.
function setupClientTenant(label, withSecret) {
	const name = `node-interop-${label}-${RUN}`;
	const tenantId = psql(`SELECT agentidp.create_tenant(${lit(name)})`).trim();
	const kid = psql(`SELECT agentidp.rotate_signing_key(${lit(tenantId)}, 'ES256')`).trim();
	const agentId = psql(
		`SELECT agentidp.register_agent(${lit(tenantId)}, ${lit(`agent-${label}`)}, '{read}')`).trim();
	const clientId = psql(
		`SELECT client_id FROM agentidp.agents WHERE agent_id = ${lit(agentId)}`).trim();
	const issuer = psql(
		`SELECT issuer FROM agentidp.tenants WHERE tenant_id = ${lit(tenantId)}`).trim();
	const jwks = psqlJson(`SELECT agentidp.jwks(${lit(tenantId)})`);
	assert.match(tenantId, /^[0-9a-f-]{36}$/);
	assert.match(agentId, /^[0-9a-f-]{36}$/);
	assert.ok(kid.length > 0, 'rotate_signing_key returned no kid');
	assert.ok(clientId.length > 0, 'the agent has no client_id');
	assert.ok(issuer.length > 0, 'the tenant has no issuer');
	const t = { alg: 'ES256', name, tenantId, kid, agentId, issuer, jwks, clientId, clientSecret: null };
	if (withSecret) {
		const secret = psqlJson(
			`SELECT json_build_object('client_id', client_id, 'client_secret', client_secret) ` +
			`FROM agentidp.create_client_secret(${lit(agentId)})`);
		assert.equal(secret.client_id, clientId);
		t.clientSecret = secret.client_secret;
	}
	return t;
}

// A key pair made by jose and its public JWK exactly as jose exports it
// (no kid, alg or use).
async function joseBareKeyPair(alg) {
	const { publicKey, privateKey } = alg === 'EdDSA'
		? await jose.generateKeyPair('EdDSA', { crv: 'Ed25519' })
		: await jose.generateKeyPair(alg);
	const publicJwk = await jose.exportJWK(publicKey);
	return { privateKey, publicJwk, thumbprint: await jose.calculateJwkThumbprint(publicJwk) };
}

// psqlFails for a refused client authentication or proof: the SQLSTATE
// 28000 (psql prints it with VERBOSITY=verbose) or the given message.
function assertRefused(sql, message) {
	const { status, stderr } = psqlFails(sql);
	assert.notEqual(status, 0);
	assert.match(stderr, /28000/, stderr);
	assert.match(stderr, message, stderr);
	return stderr;
}

for (const alg of ['ES256', 'EdDSA']) {
	describe(`private_key_jwt with a jose-made ${alg} client assertion`, () => {
		let t;
		let pair;
		let clientKid;

		// an RFC 7523 client assertion signed by jose
		function assertion(audience) {
			return new jose.SignJWT({ jti: randomUUID() })
				.setProtectedHeader({ alg, kid: clientKid })
				.setIssuer(t.clientId)
				.setSubject(t.clientId)
				.setAudience(audience ?? `${t.issuer}/oauth/token`)
				.setIssuedAt()
				.setExpirationTime('60s')
				.sign(pair.privateKey);
		}

		before(async () => {
			t = setupClientTenant(`pkjwt-${alg.toLowerCase()}`, false);
			pair = await joseBareKeyPair(alg);
			clientKid = psql(
				`SELECT agentidp.add_client_key(${lit(t.agentId)}, ${jsonLit(pair.publicJwk)})`).trim();
		});

		it('add_client_key returns the RFC 7638 thumbprint jose computes', () => {
			assert.equal(clientKid, pair.thumbprint);
		});

		it('the assertion gets an access token that verifies in jose', async () => {
			const response = psqlJson(
				`SELECT agentidp.issue_token_jwt(${lit(await assertion())}, 'read')`);
			assert.equal(response.token_type, 'Bearer');
			assert.equal(typeof response.access_token, 'string');
			assert.ok(Number.isInteger(response.expires_in) && response.expires_in > 0,
				`expires_in ${response.expires_in}`);
			assert.equal(response.scope, 'read');

			const { payload, protectedHeader } = await joseVerify(t, response.access_token, t.issuer);
			assert.equal(protectedHeader.typ, 'at+jwt');
			assert.equal(protectedHeader.alg, 'ES256');
			assert.equal(protectedHeader.kid, t.kid);
			assert.equal(payload.iss, t.issuer);
			assert.equal(payload.sub, t.agentId);
			assert.equal(payload.client_id, t.clientId);
			assert.equal(payload.scope, 'read');
			assert.equal(payload.tenant_id, t.tenantId);
			assert.ok(!('cnf' in payload), `cnf ${JSON.stringify(payload.cnf)}`);
		});

		it('the same assertion a second time fails', async () => {
			const a = await assertion();
			psqlJson(`SELECT agentidp.issue_token_jwt(${lit(a)}, 'read')`);
			assertRefused(`SELECT agentidp.issue_token_jwt(${lit(a)}, 'read')`,
				/client authentication failed/);
		});

		it('an assertion for another audience fails', async () => {
			assertRefused(
				`SELECT agentidp.issue_token_jwt(${lit(await assertion('https://elsewhere.example'))}, 'read')`,
				/client authentication failed/);
		});
	});
}

describe('DPoP with jose-made proofs', () => {
	const TOKEN_URI = 'https://idp.example/oauth/token';
	const RESOURCE_URI = 'https://api.example/items';
	let t;
	let dpop;
	let other;
	let response;

	// an RFC 9449 proof signed by jose, its public key in the header
	function proof(key, htm, htu, extra = {}) {
		return new jose.SignJWT({ jti: randomUUID(), htm, htu, ...extra })
			.setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk })
			.setIssuedAt()
			.sign(key.privateKey);
	}

	function ath(token) {
		return createHash('sha256').update(token).digest('base64url');
	}

	function verifyDpopSql(token, p) {
		return `SELECT agentidp.verify_dpop(${lit(token)}, ${lit(p)}, 'GET', ${lit(RESOURCE_URI)})`;
	}

	before(async () => {
		t = setupClientTenant('dpop', true);
		dpop = await joseBareKeyPair('ES256');
		other = await joseBareKeyPair('ES256');
		const p = await proof(dpop, 'POST', TOKEN_URI);
		response = psqlJson(
			`SELECT agentidp.issue_token(${lit(t.clientId)}, ${lit(t.clientSecret)}, 'read', NULL, ` +
			`${lit(p)}, 'POST', ${lit(TOKEN_URI)})`);
	});

	it('the token response says DPoP and the token is bound to the jose key', async () => {
		assert.equal(response.token_type, 'DPoP');
		assert.equal(response.scope, 'read');
		const payload = jose.decodeJwt(response.access_token);
		assert.equal(payload.cnf?.jkt, dpop.thumbprint, `cnf ${JSON.stringify(payload.cnf)}`);
		// and it is an ordinary RFC 9068 token to jose
		const verified = await joseVerify(t, response.access_token, t.issuer);
		assert.deepEqual(verified.payload, payload);
	});

	it('the token-request proof cannot be used twice', async () => {
		const p = await proof(dpop, 'POST', TOKEN_URI);
		const sql = `SELECT agentidp.issue_token(${lit(t.clientId)}, ${lit(t.clientSecret)}, 'read', ` +
			`NULL, ${lit(p)}, 'POST', ${lit(TOKEN_URI)})`;
		assert.equal(psqlJson(sql).token_type, 'DPoP');
		assertRefused(sql, /replayed/);
	});

	it('verify_dpop accepts a jose proof with the token\'s hash', async () => {
		const p = await proof(dpop, 'GET', RESOURCE_URI, { ath: ath(response.access_token) });
		const claims = psqlJson(verifyDpopSql(response.access_token, p));
		assert.equal(claims.scope, 'read');
		assert.equal(claims.sub, t.agentId);
		assert.equal(claims.client_id, t.clientId);
		assert.equal(claims.cnf?.jkt, dpop.thumbprint);
	});

	it('the same resource proof again fails', async () => {
		const p = await proof(dpop, 'GET', RESOURCE_URI, { ath: ath(response.access_token) });
		psqlJson(verifyDpopSql(response.access_token, p));
		assertRefused(verifyDpopSql(response.access_token, p), /replayed/);
	});

	it('a proof signed by another jose key fails', async () => {
		const p = await proof(other, 'GET', RESOURCE_URI, { ath: ath(response.access_token) });
		assertRefused(verifyDpopSql(response.access_token, p), /not the one the token is bound to/);
	});

	it('verify_token refuses the bound token without a proof', () => {
		assertRefused(`SELECT agentidp.verify_token(${lit(response.access_token)})`, /DPoP|proof|bound/i);
	});
});
