// agentidp-httpd through off-the-shelf OAuth 2.0 clients: panva/oauth4webapi
// speaks to the daemon (discovery, the client-credentials grant with each
// client authentication method, refresh rotation, token exchange,
// revocation, introspection, DPoP), and panva/jose checks every access
// token it issues against the JWKS the daemon serves, as a resource server
// would.
//
// Run by test/node/run.sh against a running cluster and a running daemon:
// the connection comes from the environment (PGHOST, PGPORT, PGUSER,
// PGPASSFILE, and PGDATABASE, which defaults to "agentidp"); PGUSER must be
// a superuser. The daemon's public base URL is the database's
// agentidp.issuer_base, the base of every new tenant's issuer; a daemon
// that does not answer there fails the run.
//
// Every run creates its own tenant, node-oauth-<random>, with four agents,
// and leaves it behind.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes, webcrypto } from 'node:crypto';
import * as oauth from 'oauth4webapi';
import * as jose from 'jose';
import pg from 'pg';

const RUN = randomBytes(6).toString('hex');
const TENANT = `node-oauth-${RUN}`;
const AUDIENCE = 'https://api.node-oauth.test';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

// the daemon serves plain http on the loopback interface
const INSECURE = { [oauth.allowInsecureRequests]: true };

// ---------------------------------------------------------------------------
// connection

const HOST = process.env.PGHOST || 'localhost';
const PORT = process.env.PGPORT || '5432';
const DATABASE = process.env.PGDATABASE || 'agentidp';
const USER = process.env.PGUSER || process.env.USER;

// The password of the first matching line of the PGPASSFILE, as libpq reads
// it: host:port:database:user:password, "*" matches anything, "\" escapes
// ":" and "\", "#" starts a comment line.
function pgpassPassword({ host, port, database, user }) {
	const file = process.env.PGPASSFILE;
	if (!file) return undefined;
	// libpq matches a socket directory (or no host) against "localhost"
	const hostKey = !host || host.startsWith('/') ? 'localhost' : host;
	for (const line of readFileSync(file, 'utf8').split(/\r?\n/)) {
		if (line === '' || line.startsWith('#')) continue;
		const fields = [];
		let field = '';
		for (let i = 0; i < line.length; i++) {
			const c = line[i];
			if (c === '\\' && i + 1 < line.length) {
				field += line[++i];
			} else if (c === ':' && fields.length < 4) {
				fields.push(field);
				field = '';
			} else {
				field += c;
			}
		}
		fields.push(field);
		if (fields.length !== 5) continue;
		const wanted = [hostKey, String(port), database, user];
		if (wanted.every((v, i) => fields[i] === '*' || fields[i] === v)) return fields[4];
	}
	return undefined;
}

async function connect() {
	const params = { host: HOST, port: Number(PORT), database: DATABASE, user: USER };
	const db = new pg.Client({
		...params,
		password: pgpassPassword(params),
		application_name: `agentidp-node-oauth-${RUN}`,
	});
	await db.connect();
	return db;
}

// ---------------------------------------------------------------------------
// helpers

// Asks the daemon for its health; throws a clear error when nothing answers.
async function requireDaemon(base) {
	let response;
	try {
		response = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(5000) });
	} catch (err) {
		throw new Error(
			`agentidp-httpd does not answer at ${base} (the database's agentidp.issuer_base): ` +
			`GET ${base}/healthz failed: ${err.cause?.message ?? err.message}. ` +
			'Start the daemon with its public URL set to agentidp.issuer_base.');
	}
	await response.body?.cancel();
	assert.equal(response.status, 200, `GET ${base}/healthz answered ${response.status}`);
}

// The OAuth error a token, revocation or introspection request was refused
// with, read from the error oauth4webapi throws: { status, body,
// challenges }. oauth4webapi reports a response with a WWW-Authenticate
// header as a challenge, whatever its body, and an error body otherwise.
async function oauthError(promise, what) {
	try {
		const result = await promise;
		assert.fail(`${what}: expected an OAuth error, got ${JSON.stringify(result)}`);
	} catch (err) {
		if (err instanceof assert.AssertionError) throw err;
		if (err instanceof oauth.WWWAuthenticateChallengeError) {
			return {
				status: err.status,
				body: await err.response.json(),
				challenges: err.cause,
				response: err.response,
			};
		}
		if (err instanceof oauth.ResponseBodyError) {
			return { status: err.status, body: err.cause, challenges: null, response: err.response };
		}
		throw err;
	}
}

// A form POST to the daemon, without oauth4webapi: for the raw status,
// headers and body.
async function postForm(url, form, headers = {}) {
	const response = await fetch(url, {
		method: 'POST',
		headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
		body: new URLSearchParams(form).toString(),
	});
	const text = await response.text();
	let body;
	try {
		body = JSON.parse(text);
	} catch {
		assert.fail(`POST ${url} answered ${response.status} with a body that is not JSON: ${text}`);
	}
	return { status: response.status, headers: response.headers, body };
}

// An RFC 6749 section 5.2 error response, checked in full; those of the
// token endpoint are not to be cached (section 5.1).
function assertOAuthErrorResponse(r, status, error, { noStore = true } = {}) {
	assert.equal(r.status, status, JSON.stringify(r.body));
	assert.equal(r.body.error, error, JSON.stringify(r.body));
	assert.equal(typeof r.body.error_description, 'string', JSON.stringify(r.body));
	assert.match(r.headers.get('content-type') ?? '', /^application\/json\b/i);
	if (noStore) assert.match(r.headers.get('cache-control') ?? '', /\bno-store\b/i);
}

// The secret with its last character changed.
function wrong(secret) {
	return `${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`;
}

function basicAuth(clientId, secret) {
	// RFC 6749 section 2.3.1: each part form-urlencoded, then base64
	const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
	return `Basic ${Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64')}`;
}

// ---------------------------------------------------------------------------
// the test

describe('agentidp-httpd through oauth4webapi, tokens checked by jose', () => {
	let db;
	let base; // agentidp.issuer_base
	let issuer; // <base>/t/<tenant>
	let tenantId;
	let as; // the discovered authorization server metadata
	let jwks; // jose's remote JWK Set of the served jwks_uri
	// agents: { agentId, clientId, secret (or null), client (oauth4webapi) }
	const agents = {};
	let clientKey; // the private_key_jwt key of agents.jwt: { key, kid }

	before(async () => {
		db = await connect();
		const su = await db.query(
			'SELECT current_user AS who, rolsuper FROM pg_roles WHERE rolname = current_user');
		assert.equal(su.rows[0].rolsuper, true, `${su.rows[0].who} is not a superuser`);

		base = Object.values((await db.query('SHOW agentidp.issuer_base')).rows[0])[0];
		assert.match(base, /^https?:\/\/[^/]+/, `agentidp.issuer_base is ${base}`);
		await requireDaemon(base);

		tenantId = (await db.query('SELECT agentidp.create_tenant($1) AS id', [TENANT])).rows[0].id;
		await db.query('SELECT agentidp.rotate_signing_key($1)', [tenantId]);
		await db.query(
			`UPDATE agentidp.tenants SET settings = settings || '{"refresh_tokens": true}'
			 WHERE tenant_id = $1`, [tenantId]);
		issuer = (await db.query('SELECT issuer FROM agentidp.tenants WHERE tenant_id = $1',
			[tenantId])).rows[0].issuer;
		assert.equal(issuer, `${base}/t/${TENANT}`);

		// main: secrets, refresh, DPoP, the subject of an exchange;
		// actor: acts for main; jwt: private_key_jwt; other: may not act
		for (const [tag, scopes] of [['main', '{read,write}'], ['actor', '{read}'],
			['jwt', '{read}'], ['other', '{read}']]) {
			const agentId = (await db.query(
				'SELECT agentidp.register_agent($1, $2, $3::text[]) AS id',
				[tenantId, `agent-${tag}`, scopes])).rows[0].id;
			let clientId;
			let secret = null;
			if (tag === 'jwt') {
				clientId = (await db.query('SELECT client_id FROM agentidp.agents WHERE agent_id = $1',
					[agentId])).rows[0].client_id;
			} else {
				const row = (await db.query(
					'SELECT client_id, client_secret FROM agentidp.create_client_secret($1)',
					[agentId])).rows[0];
				clientId = row.client_id;
				secret = row.client_secret;
			}
			agents[tag] = { agentId, clientId, secret, client: { client_id: clientId } };
		}
		await db.query('SELECT agentidp.allow_delegation($1, $2)',
			[agents.main.agentId, agents.actor.agentId]);

		// a key pair made by jose; oauth4webapi signs with Web Crypto keys,
		// so the private key goes over as a JWK
		const pair = await jose.generateKeyPair('ES256', { extractable: true });
		const publicJwk = await jose.exportJWK(pair.publicKey);
		const kid = (await db.query('SELECT agentidp.add_client_key($1, $2::jsonb) AS kid',
			[agents.jwt.agentId, JSON.stringify(publicJwk)])).rows[0].kid;
		assert.equal(kid, await jose.calculateJwkThumbprint(publicJwk));
		const key = await webcrypto.subtle.importKey('jwk', await jose.exportJWK(pair.privateKey),
			{ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
		clientKey = { key, kid };

		const response = await oauth.discoveryRequest(new URL(issuer),
			{ algorithm: 'oauth2', ...INSECURE });
		as = await oauth.processDiscoveryResponse(new URL(issuer), response);
		jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri));
	});

	after(async () => {
		await db?.end();
	});

	// Verifies an access token with jose against the served JWKS, as a
	// resource server does; returns its payload.
	async function verifyAccessToken(token, audience = issuer) {
		const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
			issuer,
			audience,
			typ: 'at+jwt',
			algorithms: ['ES256'],
			requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
			// the database's clock is this machine's; one second covers rounding
			clockTolerance: 1,
		});
		assert.equal(protectedHeader.typ, 'at+jwt');
		assert.equal(payload.iss, issuer);
		assert.equal(payload.aud, audience);
		assert.equal(payload.tenant_id, tenantId);
		return payload;
	}

	// The client-credentials grant through oauth4webapi; returns the
	// processed response and the raw body.
	async function clientCredentials(tag, auth, parameters = {}, options = {}) {
		const response = await oauth.clientCredentialsGrantRequest(as, agents[tag].client, auth,
			parameters, { ...INSECURE, ...options });
		const raw = response.status === 200 ? await response.clone().json() : null;
		const result = await oauth.processClientCredentialsResponse(as, agents[tag].client, response);
		return { result, raw, response };
	}

	function secretBasic(tag) {
		return oauth.ClientSecretBasic(agents[tag].secret);
	}

	async function introspect(token, tag = 'main', auth = secretBasic(tag)) {
		const response = await oauth.introspectionRequest(as, agents[tag].client, auth, token, INSECURE);
		return oauth.processIntrospectionResponse(as, agents[tag].client, response);
	}

	async function refresh(refreshToken, options = {}) {
		const response = await oauth.refreshTokenGrantRequest(as, agents.main.client,
			secretBasic('main'), refreshToken, { ...INSECURE, ...options });
		const raw = response.status === 200 ? await response.clone().json() : null;
		const result = await oauth.processRefreshTokenResponse(as, agents.main.client, response);
		return { result, raw };
	}

	// -----------------------------------------------------------------------
	// discovery and the JWKS

	describe('discovery', () => {
		it('oauth4webapi finds the metadata by RFC 8414 path insertion, for this issuer', async () => {
			assert.equal(as.issuer, issuer);
			const url = `${base}/.well-known/oauth-authorization-server/t/${TENANT}`;
			const response = await fetch(url);
			assert.equal(response.status, 200);
			assert.match(response.headers.get('content-type') ?? '', /^application\/json\b/i);
			assert.deepEqual(await response.json(), as);
		});

		it('names the endpoints under the issuer', () => {
			assert.equal(as.token_endpoint, `${issuer}/oauth/token`);
			assert.equal(as.revocation_endpoint, `${issuer}/oauth/revoke`);
			assert.equal(as.introspection_endpoint, `${issuer}/oauth/introspect`);
			assert.equal(as.jwks_uri, `${issuer}/.well-known/jwks.json`);
		});

		it('lists the grants and the client authentication methods', () => {
			for (const grant of ['client_credentials', 'refresh_token', TOKEN_EXCHANGE]) {
				assert.ok(as.grant_types_supported.includes(grant), `grant ${grant}`);
			}
			for (const list of ['token_endpoint_auth_methods_supported',
				'revocation_endpoint_auth_methods_supported',
				'introspection_endpoint_auth_methods_supported']) {
				for (const method of ['client_secret_basic', 'client_secret_post', 'private_key_jwt']) {
					assert.ok(as[list].includes(method), `${list}: ${method}`);
				}
			}
			assert.ok(as.token_endpoint_auth_signing_alg_values_supported.includes('ES256'));
			assert.ok(as.dpop_signing_alg_values_supported.includes('ES256'));
		});

		it('an unknown tenant has no metadata', async () => {
			const response = await fetch(
				`${base}/.well-known/oauth-authorization-server/t/node-oauth-none-${RUN}`);
			await response.body?.cancel();
			assert.equal(response.status, 404);
		});

		it('serves the tenant\'s JWK Set, public keys only, as the database has it', async () => {
			const response = await fetch(as.jwks_uri);
			assert.equal(response.status, 200);
			assert.match(response.headers.get('content-type') ?? '',
				/^application\/(jwk-set\+)?json\b/i);
			const served = await response.json();
			const expected = (await db.query('SELECT agentidp.jwks($1) AS j', [tenantId])).rows[0].j;
			assert.deepEqual(served, expected);
			assert.ok(served.keys.length >= 1);
			for (const k of served.keys) {
				for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) {
					assert.ok(!(member in k), `the JWKS publishes private member "${member}"`);
				}
			}
		});
	});

	// -----------------------------------------------------------------------
	// the client-credentials grant

	describe('client_credentials', () => {
		it('client_secret_basic', async () => {
			const { result, raw } = await clientCredentials('main', secretBasic('main'));
			assert.equal(raw.token_type, 'Bearer');
			assert.ok(Number.isInteger(result.expires_in) && result.expires_in > 0);
			assert.deepEqual(result.scope.split(' ').sort(), ['read', 'write']);
			assert.match(result.refresh_token, /^aidp_rt_[A-Za-z0-9_-]{43}$/);
			const claims = await verifyAccessToken(result.access_token);
			assert.equal(claims.sub, agents.main.agentId);
			assert.equal(claims.client_id, agents.main.clientId);
			assert.match(claims.cred, /^s:/);
			assert.equal(claims.cnf, undefined);
		});

		it('client_secret_post, with a scope and an audience', async () => {
			const { result, raw } = await clientCredentials('main',
				oauth.ClientSecretPost(agents.main.secret), { scope: 'read', audience: AUDIENCE });
			assert.equal(raw.token_type, 'Bearer');
			assert.equal(result.scope, 'read');
			const claims = await verifyAccessToken(result.access_token, AUDIENCE);
			assert.equal(claims.sub, agents.main.agentId);
			assert.equal(claims.client_id, agents.main.clientId);
			assert.equal(claims.scope, 'read');
		});

		it('the response is not cached', async () => {
			const { response } = await clientCredentials('main', secretBasic('main'));
			assert.match(response.headers.get('cache-control') ?? '', /\bno-store\b/i);
		});

		it('private_key_jwt with a jose-made ES256 key', async () => {
			const { result, raw } = await clientCredentials('jwt', oauth.PrivateKeyJwt(clientKey));
			assert.equal(raw.token_type, 'Bearer');
			assert.equal(result.scope, 'read');
			assert.equal(result.refresh_token, undefined);
			const claims = await verifyAccessToken(result.access_token);
			assert.equal(claims.sub, agents.jwt.agentId);
			assert.equal(claims.client_id, agents.jwt.clientId);
			assert.match(claims.cred, /^k:/);
		});

		it('private_key_jwt with the token endpoint as the assertion\'s audience', async () => {
			const auth = oauth.PrivateKeyJwt(clientKey, {
				[oauth.modifyAssertion]: (header, payload) => {
					payload.aud = as.token_endpoint;
				},
			});
			const { result } = await clientCredentials('jwt', auth);
			const claims = await verifyAccessToken(result.access_token);
			assert.equal(claims.sub, agents.jwt.agentId);
		});

		it('an assertion signed by another key is refused with invalid_client', async () => {
			const other = await webcrypto.subtle.generateKey(
				{ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
			const { status, body } = await oauthError(
				clientCredentials('jwt', oauth.PrivateKeyJwt({ key: other.privateKey, kid: clientKey.kid })),
				'a wrong key');
			assert.equal(status, 401);
			assert.equal(body.error, 'invalid_client');
		});
	});

	// -----------------------------------------------------------------------
	// refresh tokens

	describe('refresh_token', () => {
		it('rotates; the used token is refused and its reuse revokes the family', async () => {
			const first = (await clientCredentials('main', secretBasic('main'), { scope: 'read' })).result;
			const rt1 = first.refresh_token;
			assert.ok(rt1);

			const { result: second, raw } = await refresh(rt1);
			assert.equal(raw.token_type, 'Bearer');
			assert.equal(second.scope, 'read');
			const rt2 = second.refresh_token;
			assert.match(rt2, /^aidp_rt_[A-Za-z0-9_-]{43}$/);
			assert.notEqual(rt2, rt1);
			const claims = await verifyAccessToken(second.access_token);
			assert.equal(claims.sub, agents.main.agentId);
			assert.equal(claims.scope, 'read');

			// the live token of the family is active before the reuse
			const live = await introspect(rt2);
			assert.equal(live.active, true);
			assert.equal(live.token_type, 'refresh_token');

			const reuse = await oauthError(refresh(rt1), 'a used refresh token');
			assert.equal(reuse.status, 400);
			assert.equal(reuse.body.error, 'invalid_grant');
			assert.match(reuse.body.error_description, /already used/);

			// the reuse revoked rt2 too
			assert.deepEqual(await introspect(rt2), { active: false });
			const revoked = await oauthError(refresh(rt2), 'a refresh token of a revoked family');
			assert.equal(revoked.status, 400);
			assert.equal(revoked.body.error, 'invalid_grant');
			assert.match(revoked.body.error_description, /revoked/);
		});

		it('an unknown refresh token is invalid_grant', async () => {
			const { status, body } = await oauthError(
				refresh(`aidp_rt_${randomBytes(32).toString('base64url')}`), 'an unknown refresh token');
			assert.equal(status, 400);
			assert.equal(body.error, 'invalid_grant');
		});
	});

	// -----------------------------------------------------------------------
	// token exchange

	describe('token exchange (RFC 8693)', () => {
		async function exchange(subjectToken, actorToken, tag = 'actor') {
			const response = await oauth.genericTokenEndpointRequest(as, agents[tag].client,
				oauth.None(), TOKEN_EXCHANGE, {
					subject_token: subjectToken,
					subject_token_type: ACCESS_TOKEN_TYPE,
					actor_token: actorToken,
					actor_token_type: ACCESS_TOKEN_TYPE,
				}, INSECURE);
			return oauth.processGenericTokenEndpointResponse(as, agents[tag].client, response);
		}

		it('the actor gets a token for the subject, with an act claim naming it', async () => {
			const subject = (await clientCredentials('main', secretBasic('main'))).result.access_token;
			const actor = (await clientCredentials('actor', secretBasic('actor'))).result.access_token;
			const result = await exchange(subject, actor);
			assert.equal(result.issued_token_type, ACCESS_TOKEN_TYPE);
			assert.equal(result.token_type, 'bearer');
			assert.equal(result.refresh_token, undefined);
			// scopes only narrow: read is all that both the subject and the actor have
			assert.equal(result.scope, 'read');
			const claims = await verifyAccessToken(result.access_token);
			assert.equal(claims.sub, agents.main.agentId);
			assert.equal(claims.client_id, agents.actor.clientId);
			assert.deepEqual(claims.act, { sub: agents.actor.agentId, client_id: agents.actor.clientId });
			assert.equal(claims.scope, 'read');

			const info = await introspect(result.access_token, 'actor');
			assert.equal(info.active, true);
			assert.equal(info.sub, agents.main.agentId);
			assert.deepEqual(info.act, claims.act);
		});

		it('an actor without a delegation is refused with invalid_request', async () => {
			const subject = (await clientCredentials('main', secretBasic('main'))).result.access_token;
			const actor = (await clientCredentials('other', secretBasic('other'))).result.access_token;
			const { status, body } = await oauthError(exchange(subject, actor, 'other'),
				'an exchange without a delegation');
			assert.equal(status, 400);
			assert.equal(body.error, 'invalid_request');
		});
	});

	// -----------------------------------------------------------------------
	// introspection and revocation

	describe('introspection (RFC 7662) and revocation (RFC 7009)', () => {
		it('introspection of a valid token: active, with sub and client_id', async () => {
			const { result } = await clientCredentials('main', secretBasic('main'), { scope: 'write' });
			const claims = await verifyAccessToken(result.access_token);
			const info = await introspect(result.access_token);
			assert.equal(info.active, true);
			assert.equal(info.token_type, 'Bearer');
			assert.equal(info.sub, agents.main.agentId);
			assert.equal(info.client_id, agents.main.clientId);
			assert.equal(info.iss, issuer);
			assert.equal(info.scope, 'write');
			assert.equal(info.jti, claims.jti);
			assert.equal(info.exp, claims.exp);
		});

		it('introspection with client_secret_post and with private_key_jwt', async () => {
			const { result } = await clientCredentials('main', secretBasic('main'));
			await verifyAccessToken(result.access_token);
			const byPost = await introspect(result.access_token, 'other',
				oauth.ClientSecretPost(agents.other.secret));
			assert.equal(byPost.active, true);
			assert.equal(byPost.sub, agents.main.agentId);
			const byJwt = await introspect(result.access_token, 'jwt', oauth.PrivateKeyJwt(clientKey));
			assert.equal(byJwt.active, true);
			assert.equal(byJwt.client_id, agents.main.clientId);
		});

		it('introspection of garbage is active false', async () => {
			assert.deepEqual(await introspect('garbage'), { active: false });
		});

		it('introspection needs client authentication', async () => {
			const { result } = await clientCredentials('main', secretBasic('main'));
			await verifyAccessToken(result.access_token);
			const r = await postForm(as.introspection_endpoint, { token: result.access_token });
			assertOAuthErrorResponse(r, 401, 'invalid_client', { noStore: false });
			const refused = await oauthError(introspect(result.access_token, 'main',
				oauth.ClientSecretBasic(wrong(agents.main.secret))), 'a wrong secret');
			assert.equal(refused.status, 401);
			assert.equal(refused.body.error, 'invalid_client');
		});

		it('a revoked access token introspects as active false', async () => {
			const { result } = await clientCredentials('main', secretBasic('main'));
			await verifyAccessToken(result.access_token);
			assert.equal((await introspect(result.access_token)).active, true);
			const response = await oauth.revocationRequest(as, agents.main.client, secretBasic('main'),
				result.access_token, INSECURE);
			assert.equal(await oauth.processRevocationResponse(response), undefined);
			assert.deepEqual(await introspect(result.access_token), { active: false });
			// a resource server that only has the JWKS still accepts it until exp
			await verifyAccessToken(result.access_token);
		});

		it('a revoked refresh token can no longer be used', async () => {
			const { result } = await clientCredentials('main', secretBasic('main'));
			await verifyAccessToken(result.access_token);
			const response = await oauth.revocationRequest(as, agents.main.client,
				oauth.ClientSecretPost(agents.main.secret), result.refresh_token,
				{ ...INSECURE, additionalParameters: { token_type_hint: 'refresh_token' } });
			await oauth.processRevocationResponse(response);
			assert.deepEqual(await introspect(result.refresh_token), { active: false });
			const { status, body } = await oauthError(refresh(result.refresh_token),
				'a revoked refresh token');
			assert.equal(status, 400);
			assert.equal(body.error, 'invalid_grant');
		});

		it('revoking an invalid token succeeds (RFC 7009 section 2.2)', async () => {
			const response = await oauth.revocationRequest(as, agents.main.client, secretBasic('main'),
				'garbage', INSECURE);
			await oauth.processRevocationResponse(response);
		});

		it('a client cannot revoke another client\'s token', async () => {
			const { result } = await clientCredentials('main', secretBasic('main'));
			await verifyAccessToken(result.access_token);
			const response = await oauth.revocationRequest(as, agents.other.client, secretBasic('other'),
				result.access_token, INSECURE);
			const { status, body } = await oauthError(oauth.processRevocationResponse(response),
				'a revocation by another client');
			assert.equal(status, 400);
			assert.equal(body.error, 'unauthorized_client');
			assert.equal((await introspect(result.access_token)).active, true);
		});
	});

	// -----------------------------------------------------------------------
	// DPoP

	describe('DPoP (RFC 9449)', () => {
		let keyPair;
		let dpop;
		let jkt;

		before(async () => {
			keyPair = await oauth.generateKeyPair('ES256');
			dpop = oauth.DPoP(agents.main.client, keyPair);
			jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey));
		});

		it('a proof binds the access token and the refresh token to the key', async () => {
			const { result, raw } = await clientCredentials('main', secretBasic('main'),
				{ scope: 'read' }, { DPoP: dpop });
			assert.equal(raw.token_type, 'DPoP');
			const claims = await verifyAccessToken(result.access_token);
			assert.deepEqual(claims.cnf, { jkt });
			assert.equal(claims.sub, agents.main.agentId);

			const info = await introspect(result.access_token);
			assert.equal(info.active, true);
			assert.equal(info.token_type, 'DPoP');
			assert.deepEqual(info.cnf, { jkt });

			// the refresh token is bound too: refused without a proof, and
			// not used up by the refusal
			const unproven = await oauthError(refresh(result.refresh_token), 'a refresh without a proof');
			assert.equal(unproven.status, 400);
			assert.equal(unproven.body.error, 'invalid_dpop_proof');

			const { result: next, raw: nextRaw } = await refresh(result.refresh_token, { DPoP: dpop });
			assert.equal(nextRaw.token_type, 'DPoP');
			const nextClaims = await verifyAccessToken(next.access_token);
			assert.deepEqual(nextClaims.cnf, { jkt });
		});

		it('a proof of another key does not refresh a bound token', async () => {
			const { result } = await clientCredentials('main', secretBasic('main'), {}, { DPoP: dpop });
			await verifyAccessToken(result.access_token);
			const otherDpop = oauth.DPoP(agents.main.client, await oauth.generateKeyPair('ES256'));
			const { status, body } = await oauthError(
				refresh(result.refresh_token, { DPoP: otherDpop }), 'a proof of another key');
			assert.equal(status, 400);
			assert.equal(body.error, 'invalid_dpop_proof');
		});

		it('a proof for another URI is refused', async () => {
			const wrongHtu = oauth.DPoP(agents.main.client, keyPair, {
				[oauth.modifyAssertion]: (header, payload) => {
					payload.htu = `${issuer}/oauth/elsewhere`;
				},
			});
			const { status, body } = await oauthError(
				clientCredentials('main', secretBasic('main'), {}, { DPoP: wrongHtu }), 'a wrong htu');
			assert.equal(status, 400);
			assert.equal(body.error, 'invalid_dpop_proof');
		});
	});

	// -----------------------------------------------------------------------
	// errors of the token endpoint

	describe('token endpoint errors', () => {
		it('a wrong secret with client_secret_basic: 401 invalid_client with a Basic challenge', async () => {
			const wrongSecret = wrong(agents.main.secret);
			const viaLibrary = await oauthError(
				clientCredentials('main', oauth.ClientSecretBasic(wrongSecret)), 'a wrong secret');
			assert.equal(viaLibrary.status, 401);
			assert.equal(viaLibrary.body.error, 'invalid_client');
			assert.ok(viaLibrary.challenges, 'no WWW-Authenticate challenge');
			assert.ok(viaLibrary.challenges.some((c) => c.scheme === 'basic'),
				`challenges ${JSON.stringify(viaLibrary.challenges)}`);

			const r = await postForm(as.token_endpoint, { grant_type: 'client_credentials' },
				{ authorization: basicAuth(agents.main.clientId, wrongSecret) });
			assertOAuthErrorResponse(r, 401, 'invalid_client');
			assert.match(r.headers.get('www-authenticate') ?? '', /^Basic\b/i);
		});

		it('a wrong secret with client_secret_post: 401 invalid_client with a challenge', async () => {
			const r = await postForm(as.token_endpoint, {
				grant_type: 'client_credentials',
				client_id: agents.main.clientId,
				client_secret: wrong(agents.main.secret),
			});
			assertOAuthErrorResponse(r, 401, 'invalid_client');
			assert.ok(r.headers.get('www-authenticate'), 'no WWW-Authenticate header');
		});

		it('an unknown client: 401 invalid_client', async () => {
			const r = await postForm(as.token_endpoint, { grant_type: 'client_credentials' },
				{ authorization: basicAuth(`node-oauth-nobody-${RUN}`, agents.main.secret) });
			assertOAuthErrorResponse(r, 401, 'invalid_client');
			assert.match(r.headers.get('www-authenticate') ?? '', /^Basic\b/i);
		});

		it('an unsupported grant: 400 unsupported_grant_type', async () => {
			const { status, body } = await oauthError(
				oauth.genericTokenEndpointRequest(as, agents.main.client, secretBasic('main'),
					'password', { username: 'u', password: 'p' }, INSECURE)
					.then((response) => oauth.processGenericTokenEndpointResponse(
						as, agents.main.client, response)),
				'the password grant');
			assert.equal(status, 400);
			assert.equal(body.error, 'unsupported_grant_type');

			const r = await postForm(as.token_endpoint, { grant_type: 'urn:example:no-such-grant' },
				{ authorization: basicAuth(agents.main.clientId, agents.main.secret) });
			assertOAuthErrorResponse(r, 400, 'unsupported_grant_type');
		});

		it('no grant_type: 400 invalid_request', async () => {
			const r = await postForm(as.token_endpoint, {},
				{ authorization: basicAuth(agents.main.clientId, agents.main.secret) });
			assertOAuthErrorResponse(r, 400, 'invalid_request');
		});

		it('a scope the client may not have: 400 invalid_scope', async () => {
			const { status, body } = await oauthError(
				clientCredentials('actor', secretBasic('actor'), { scope: 'write' }), 'scope write');
			assert.equal(status, 400);
			assert.equal(body.error, 'invalid_scope');
		});
	});
});
