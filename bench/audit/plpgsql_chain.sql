-- The baseline of bench/audit.sh: the hash chain an application would build
-- by itself with PL/pgSQL and pgcrypto, without agentidp.
--
-- Each tenant's chain has a head row (its last seq and hash).  The AFTER ROW
-- trigger locks the head with SELECT ... FOR UPDATE, hashes the previous
-- hash followed by the new row as text, appends the event and moves the
-- head.  The head's row lock is held until commit, so a writer of a tenant
-- waits for the previous writer's commit, WAL flush included
-- (synchronous_commit is on): one tenant's inserts are serialized end to end.
--
-- Included by setup.sql once bench_audit.plpgsql_chain exists; setup.sql
-- inserts one head per bench tenant.  digest() is called unqualified, as an
-- application with pgcrypto in public would: if pgcrypto was installed
-- earlier in a schema off the default search_path, setup.sql's smoke test
-- fails on it.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE bench_audit.chain_heads (
	tenant_id	uuid PRIMARY KEY,
	seq			bigint NOT NULL,
	hash		bytea NOT NULL
);

CREATE TABLE bench_audit.chain_events (
	tenant_id	uuid NOT NULL,
	seq			bigint NOT NULL,
	prev_hash	bytea NOT NULL,
	hash		bytea NOT NULL,
	data		jsonb NOT NULL,
	PRIMARY KEY (tenant_id, seq)
);

CREATE FUNCTION bench_audit.chain_append() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	head_seq	bigint;
	head_hash	bytea;
	row_data	jsonb := to_jsonb(NEW);
	new_hash	bytea;
BEGIN
	SELECT h.seq, h.hash INTO head_seq, head_hash
	FROM bench_audit.chain_heads h
	WHERE h.tenant_id = NEW.tenant_id
	FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no chain head for tenant %', NEW.tenant_id;
	END IF;

	new_hash := digest(head_hash || convert_to(row_data::text, 'UTF8'), 'sha256');

	INSERT INTO bench_audit.chain_events (tenant_id, seq, prev_hash, hash, data)
	VALUES (NEW.tenant_id, head_seq + 1, head_hash, new_hash, row_data);
	UPDATE bench_audit.chain_heads h SET seq = head_seq + 1, hash = new_hash
	WHERE h.tenant_id = NEW.tenant_id;
	RETURN NULL;
END
$$;

CREATE TRIGGER chain_append AFTER INSERT ON bench_audit.plpgsql_chain
	FOR EACH ROW EXECUTE FUNCTION bench_audit.chain_append();
