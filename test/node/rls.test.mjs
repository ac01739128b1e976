// Tokens as database identity through a real client, node-postgres: many
// transactions of two tenants' agents, interleaved over a pool of two
// connections, each authenticating with its access token under an
// application role, against a table isolated by agentidp.enable_tenant_isolation.
//
// Run by test/node/run.sh against a running cluster: the connection comes
// from the environment (PGHOST, PGPORT, PGUSER, PGPASSFILE, and PGDATABASE,
// which defaults to "agentidp"); PGUSER must be a superuser.
//
// Every run creates its own tenants, node-rls-a-<random> and node-rls-b-<random>,
// and leaves them behind; the table node_rls_docs_<random> and the role
// node_rls_app_<random> are dropped at the end.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

const RUN = randomBytes(6).toString('hex');
const TABLE = `public.node_rls_docs_${RUN}`;
const APP_ROLE = `node_rls_app_${RUN}`;

// ---------------------------------------------------------------------------
// connection

const HOST = process.env.PGHOST || 'localhost';
const PORT = process.env.PGPORT || '5432';
const DATABASE = process.env.PGDATABASE || 'agentidp';
const USER = process.env.PGUSER || process.env.USER;

// The password of the first matching line of the PGPASSFILE, as libpq reads
// it: host:port:database:user:password, "*" matches anything, "\" escapes
// ":" and "\", "#" starts a comment line. node-postgres 8 still reads the
// file by itself through the pgpass package, but deprecates doing so.
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

function newPool() {
	const params = { host: HOST, port: Number(PORT), database: DATABASE, user: USER };
	const pool = new pg.Pool({
		...params,
		password: pgpassPassword(params),
		max: 2,
		application_name: `agentidp-node-rls-${RUN}`,
	});
	// an idle connection that breaks must not crash the test process
	pool.on('error', (err) => {
		console.error(`idle pool connection failed: ${err.message}`);
	});
	return pool;
}

// The SQLSTATE of the error a promise rejects with; fails when it resolves.
async function sqlstateOf(promise, what) {
	try {
		const result = await promise;
		assert.fail(`${what}: expected an error, got ${JSON.stringify(result?.rows)}`);
	} catch (err) {
		if (err instanceof assert.AssertionError) throw err;
		assert.ok(err.code, `${what}: an error without SQLSTATE: ${err.message}`);
		return err.code;
	}
}

// ---------------------------------------------------------------------------
// the test

describe('tokens as database identity through node-postgres and a pool', () => {
	let pool;
	const tenants = {}; // A and B: { name, tenantId, agentId, clientId, clientSecret, token }
	let setupDone = { tenants: false, table: false, role: false };

	// the rows each tenant holds, as id -> body, seeded then inserted
	const expected = { A: new Map(), B: new Map() };
	// which connections (backend pids) served which tenants
	const served = new Map();

	before(async () => {
		pool = newPool();
		const db = await pool.connect();
		try {
			const su = await db.query(
				'SELECT current_user AS who, rolsuper FROM pg_roles WHERE rolname = current_user');
			assert.equal(su.rows[0].rolsuper, true, `${su.rows[0].who} is not a superuser`);

			for (const tag of ['A', 'B']) {
				const name = `node-rls-${tag.toLowerCase()}-${RUN}`;
				const tenantId = (await db.query('SELECT agentidp.create_tenant($1) AS id', [name]))
					.rows[0].id;
				const kid = (await db.query('SELECT agentidp.rotate_signing_key($1) AS kid', [tenantId]))
					.rows[0].kid;
				const agentId = (await db.query(
					"SELECT agentidp.register_agent($1, $2, '{docs:read,docs:write}') AS id",
					[tenantId, `agent-${tag.toLowerCase()}`])).rows[0].id;
				const secret = (await db.query(
					'SELECT client_id, client_secret FROM agentidp.create_client_secret($1)',
					[agentId])).rows[0];
				const token = (await db.query(
					"SELECT agentidp.issue_token($1, $2) ->> 'access_token' AS token",
					[secret.client_id, secret.client_secret])).rows[0].token;
				assert.match(tenantId, /^[0-9a-f-]{36}$/);
				assert.match(agentId, /^[0-9a-f-]{36}$/);
				assert.ok(kid, 'rotate_signing_key returned no kid');
				assert.equal(typeof token, 'string');
				assert.equal(token.split('.').length, 3, 'the access token is not a compact JWS');
				tenants[tag] = {
					tag, name, tenantId, agentId, token,
					clientId: secret.client_id,
					clientSecret: secret.client_secret,
				};
			}
			setupDone.tenants = true;

			await db.query(`CREATE TABLE ${TABLE} (tenant_id uuid NOT NULL, id int, body text, ` +
				'PRIMARY KEY (tenant_id, id))');
			setupDone.table = true;
			for (const tag of ['A', 'B']) {
				for (const id of [1, 2]) {
					const body = `${tag.toLowerCase()}${id}`;
					await db.query(`INSERT INTO ${TABLE} VALUES ($1, $2, $3)`,
						[tenants[tag].tenantId, id, body]);
					expected[tag].set(id, body);
				}
			}
			await db.query("SELECT agentidp.enable_tenant_isolation($1, 'tenant_id', 'docs:read', 'docs:write')",
				[TABLE]);

			await db.query(`CREATE ROLE ${pg.escapeIdentifier(APP_ROLE)} NOLOGIN IN ROLE agentidp_agent`);
			setupDone.role = true;
			await db.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${TABLE} TO ${pg.escapeIdentifier(APP_ROLE)}`);
		} finally {
			db.release();
		}
	});

	after(async () => {
		if (!pool) return;
		const errors = [];
		const run = async (sql) => {
			try {
				await pool.query(sql);
			} catch (err) {
				errors.push(`${sql}: ${err.message}`);
			}
		};
		if (setupDone.table) await run(`DROP TABLE IF EXISTS ${TABLE}`);
		if (setupDone.role) {
			await run(`DROP OWNED BY ${pg.escapeIdentifier(APP_ROLE)}`);
			await run(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(APP_ROLE)}`);
		}
		await pool.end();
		assert.deepEqual(errors, [], 'cleanup failed');
	});

	// On a client of the pool: what a transaction under the application
	// role sees without authenticating, and the identity functions.
	async function anonymousView(client) {
		await client.query('BEGIN');
		try {
			await client.query(`SET LOCAL ROLE ${pg.escapeIdentifier(APP_ROLE)}`);
			const r = await client.query(
				'SELECT agentidp.current_tenant() AS tenant, agentidp.current_agent() AS agent, ' +
				`agentidp.current_claims() AS claims, (SELECT count(*)::int FROM ${TABLE}) AS rows`);
			await client.query('COMMIT');
			return r.rows[0];
		} catch (err) {
			await client.query('ROLLBACK').catch(() => {});
			throw err;
		}
	}

	// One transaction of a tenant's agent on a pooled client: authenticate,
	// read, insert with the tenant column defaulted, optionally try to insert
	// a row naming the other tenant (refused), commit. Then, on the same
	// connection, a transaction without authenticate must see nothing.
	async function agentTransaction(tag, n, { forge }) {
		const me = tenants[tag];
		const other = tenants[tag === 'A' ? 'B' : 'A'];
		const id = 100 + n;
		const body = `${tag.toLowerCase()}-tx${n}`;
		const client = await pool.connect();
		let broken = null;
		try {
			const pid = client.processID;
			await client.query('BEGIN');
			try {
				await client.query(`SET LOCAL ROLE ${pg.escapeIdentifier(APP_ROLE)}`);
				const claims = (await client.query('SELECT agentidp.authenticate($1) AS claims', [me.token]))
					.rows[0].claims;
				assert.equal(claims.sub, me.agentId, `tx ${n}: authenticate returned claims of another subject`);

				const who = (await client.query(
					'SELECT current_user AS role, agentidp.current_tenant() AS tenant, ' +
					"agentidp.current_agent() AS agent, agentidp.has_scope('docs:write') AS writes")).rows[0];
				assert.deepEqual(who, { role: APP_ROLE, tenant: me.tenantId, agent: me.agentId, writes: true },
					`tx ${n}: identity`);

				const seen = (await client.query(`SELECT tenant_id, id, body FROM ${TABLE} ORDER BY id`)).rows;
				for (const row of seen) {
					assert.equal(row.tenant_id, me.tenantId,
						`tx ${n} (${tag}) sees a row of another tenant: ${JSON.stringify(row)}`);
					// other transactions of the tenant may run at the same time:
					// every row seen must be one the tenant has or is getting
					assert.equal(row.body, expected[tag].get(row.id) ?? planned[tag].get(row.id),
						`tx ${n} (${tag}) sees an unknown row ${JSON.stringify(row)}`);
				}
				for (const seed of [1, 2]) {
					assert.ok(seen.some((r) => r.id === seed), `tx ${n} (${tag}) misses its seed row ${seed}`);
				}

				const inserted = (await client.query(
					`INSERT INTO ${TABLE} (id, body) VALUES ($1, $2) RETURNING tenant_id, id, body`,
					[id, body])).rows;
				assert.deepEqual(inserted, [{ tenant_id: me.tenantId, id, body }],
					`tx ${n}: the tenant column did not default to the identity's tenant`);

				// rows of the other tenant can be neither changed nor removed
				const upd = await client.query(`UPDATE ${TABLE} SET body = 'taken' WHERE tenant_id = $1`,
					[other.tenantId]);
				assert.equal(upd.rowCount, 0, `tx ${n}: updated another tenant's rows`);
				const del = await client.query(`DELETE FROM ${TABLE} WHERE tenant_id = $1`, [other.tenantId]);
				assert.equal(del.rowCount, 0, `tx ${n}: deleted another tenant's rows`);

				if (forge) {
					// savepoints taken after authenticate: their rollback keeps the identity
					await client.query('SAVEPOINT forge');
					const state = await sqlstateOf(client.query(
						`INSERT INTO ${TABLE} (tenant_id, id, body) VALUES ($1, $2, 'forged')`,
						[other.tenantId, 900 + n]), `tx ${n}: insert naming the other tenant`);
					assert.equal(state, '42501', `tx ${n}: insert naming the other tenant`);
					await client.query('ROLLBACK TO SAVEPOINT forge');
					const state2 = await sqlstateOf(client.query(
						`UPDATE ${TABLE} SET tenant_id = $1 WHERE id = $2`, [other.tenantId, id]),
						`tx ${n}: moving a row to the other tenant`);
					assert.equal(state2, '42501', `tx ${n}: moving a row to the other tenant`);
					await client.query('ROLLBACK TO SAVEPOINT forge');
					const still = (await client.query('SELECT agentidp.current_tenant() AS tenant')).rows[0];
					assert.equal(still.tenant, me.tenantId, `tx ${n}: identity lost by ROLLBACK TO SAVEPOINT`);
				}

				const after = (await client.query(`SELECT id FROM ${TABLE} WHERE id = $1`, [id])).rows;
				assert.deepEqual(after, [{ id }], `tx ${n}: its own insert is not visible`);
				await client.query('COMMIT');
			} catch (err) {
				await client.query('ROLLBACK').catch(() => {});
				throw err;
			}
			expected[tag].set(id, body);
			if (!served.has(pid)) served.set(pid, new Set());
			served.get(pid).add(tag);

			// the same connection, right after: neither identity nor role remain
			const bare = (await client.query(
				'SELECT current_user AS role, agentidp.current_tenant() AS tenant')).rows[0];
			assert.deepEqual(bare, { role: USER, tenant: null }, `tx ${n}: state left on the connection`);
			const anon = await anonymousView(client);
			assert.deepEqual(anon, { tenant: null, agent: null, claims: null, rows: 0 },
				`tx ${n}: identity leaked to the connection's next transaction`);
			return { pid, n, tag };
		} catch (err) {
			broken = err;
			throw err;
		} finally {
			// a client whose state is unknown is not given back to the pool
			client.release(broken ? true : undefined);
		}
	}

	// the rows transactions will insert, for checks while they run
	const planned = { A: new Map(), B: new Map() };
	const TRANSACTIONS = 20;
	const plan = [];
	for (let n = 0; n < TRANSACTIONS; n++) {
		const tag = n % 2 === 0 ? 'A' : 'B';
		planned[tag].set(100 + n, `${tag.toLowerCase()}-tx${n}`);
		plan.push({ n, tag, forge: n % 3 === 0 });
	}

	it('without authenticate the application role sees no rows', async () => {
		const client = await pool.connect();
		try {
			assert.deepEqual(await anonymousView(client), { tenant: null, agent: null, claims: null, rows: 0 });
		} finally {
			client.release();
		}
	});

	it(`${TRANSACTIONS} interleaved transactions of two agents over two pooled connections ` +
		'each see and write only their tenant', async () => {
		// first half one after the other, alternating A and B: the pool hands
		// the same connection to both agents in turn
		const sequential = plan.slice(0, TRANSACTIONS / 2);
		for (const step of sequential) {
			await agentTransaction(step.tag, step.n, step);
		}
		// second half in batches of four at once: more than the pool has
		// connections, so transactions queue for a connection
		const concurrent = plan.slice(TRANSACTIONS / 2);
		for (let i = 0; i < concurrent.length; i += 4) {
			const batch = concurrent.slice(i, i + 4);
			await Promise.all(batch.map((step) => agentTransaction(step.tag, step.n, step)));
		}

		assert.equal(pool.totalCount <= 2, true, `the pool opened ${pool.totalCount} connections`);
		assert.ok([...served.values()].some((tags) => tags.size === 2),
			`no connection served both agents: ${JSON.stringify([...served].map(([p, t]) => [p, [...t]]))}`);
		assert.equal(served.size, 2, `transactions ran on ${served.size} connection(s), not 2`);

		// what each tenant holds in the end: its seeds and its transactions' rows
		const client = await pool.connect();
		try {
			const all = (await client.query(`SELECT tenant_id, id, body FROM ${TABLE} ORDER BY tenant_id, id`)).rows;
			for (const tag of ['A', 'B']) {
				const rows = all.filter((r) => r.tenant_id === tenants[tag].tenantId)
					.map((r) => [r.id, r.body]);
				assert.deepEqual(rows, [...expected[tag]].sort((x, y) => x[0] - y[0]), `rows of ${tag}`);
			}
			assert.equal(all.length, expected.A.size + expected.B.size, 'rows of no tenant');
			assert.equal(all.length, 4 + TRANSACTIONS);
		} finally {
			client.release();
		}
	});

	it('a failed authenticate leaves no identity after ROLLBACK', async () => {
		const client = await pool.connect();
		let broken = null;
		try {
			await client.query('BEGIN');
			await client.query(`SET LOCAL ROLE ${pg.escapeIdentifier(APP_ROLE)}`);
			const state = await sqlstateOf(client.query('SELECT agentidp.authenticate($1)', ['garbage']),
				'authenticate(garbage)');
			assert.equal(state, '22023');
			await client.query('ROLLBACK');
			assert.deepEqual(await anonymousView(client), { tenant: null, agent: null, claims: null, rows: 0 });

			// the same after a valid authenticate earlier in the transaction
			await client.query('BEGIN');
			await client.query(`SET LOCAL ROLE ${pg.escapeIdentifier(APP_ROLE)}`);
			await client.query('SELECT agentidp.authenticate($1)', [tenants.A.token]);
			const tampered = tenants.B.token.slice(0, -4) +
				(tenants.B.token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
			const state2 = await sqlstateOf(client.query('SELECT agentidp.authenticate($1)', [tampered]),
				'authenticate(tampered)');
			assert.equal(state2, '28000', 'authenticate(tampered signature)');
			await client.query('ROLLBACK');
			assert.deepEqual(await anonymousView(client), { tenant: null, agent: null, claims: null, rows: 0 });
		} catch (err) {
			broken = err;
			await client.query('ROLLBACK').catch(() => {});
			throw err;
		} finally {
			client.release(broken ? true : undefined);
		}
	});

	it('authenticate outside BEGIN says so in a notice and its identity ends with the statement', async () => {
		const client = await pool.connect();
		const notices = [];
		const onNotice = (msg) => notices.push(msg);
		client.on('notice', onNotice);
		try {
			// pool.query style: each query its own implicit transaction
			const claims = (await client.query('SELECT agentidp.authenticate($1) AS claims', [tenants.A.token]))
				.rows[0].claims;
			assert.equal(claims.sub, tenants.A.agentId);
			assert.equal(notices.length, 1, `notices: ${notices.map((m) => m.message).join('; ')}`);
			assert.match(notices[0].message, /outside a transaction block/);
			assert.match(notices[0].hint ?? '', /after BEGIN/);
			const next = (await client.query('SELECT agentidp.current_tenant() AS tenant')).rows[0];
			assert.deepEqual(next, { tenant: null });
			assert.deepEqual(await anonymousView(client), { tenant: null, agent: null, claims: null, rows: 0 });
			// inside BEGIN: no notice
			await client.query('BEGIN');
			await client.query('SELECT agentidp.authenticate($1)', [tenants.A.token]);
			await client.query('ROLLBACK');
			assert.equal(notices.length, 1, 'a notice inside a transaction block');
		} finally {
			client.off('notice', onNotice);
			client.release();
		}
	});

	it('a failed authenticate after a savepoint rolls back to the identity before it', async () => {
		const client = await pool.connect();
		let broken = null;
		try {
			await client.query('BEGIN');
			await client.query(`SET LOCAL ROLE ${pg.escapeIdentifier(APP_ROLE)}`);
			await client.query('SELECT agentidp.authenticate($1)', [tenants.A.token]);
			await client.query('SAVEPOINT s');
			const state = await sqlstateOf(client.query('SELECT agentidp.authenticate($1)', ['garbage']),
				'authenticate(garbage)');
			assert.equal(state, '22023');
			await client.query('ROLLBACK TO SAVEPOINT s');
			const r = (await client.query(
				`SELECT agentidp.current_tenant() AS tenant, (SELECT count(*)::int FROM ${TABLE}) AS rows`)).rows[0];
			assert.deepEqual(r, { tenant: tenants.A.tenantId, rows: expected.A.size });
			// and a second authenticate in the transaction replaces the identity
			await client.query('SELECT agentidp.authenticate($1)', [tenants.B.token]);
			const r2 = (await client.query(
				`SELECT agentidp.current_tenant() AS tenant, (SELECT count(*)::int FROM ${TABLE}) AS rows`)).rows[0];
			assert.deepEqual(r2, { tenant: tenants.B.tenantId, rows: expected.B.size });
			await client.query('ROLLBACK');
			assert.deepEqual(await anonymousView(client), { tenant: null, agent: null, claims: null, rows: 0 });
		} catch (err) {
			broken = err;
			await client.query('ROLLBACK').catch(() => {});
			throw err;
		} finally {
			client.release(broken ? true : undefined);
		}
	});
});
