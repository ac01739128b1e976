#!/usr/bin/env bash
# jws_sign and jws_verify throughput in one backend, for ES256, RS256
# (2048) and EdDSA, beside `openssl speed` for the same algorithms in the
# same run, with the ratio.  Targets: verify >= 80% and sign >= 70% of
# OpenSSL's single-core figure.
#
#   bench/jose.sh [tokens per algorithm, default 20000] [openssl seconds, default 3]
#
# Runs against make run's cluster (started if needed); bounded by the
# token count.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"

n=${1:-20000}
secs=${2:-3}
scripts/run.sh >/dev/null

# OpenSSL's own figures: sign/s and verify/s on one core
speed=$(openssl speed -seconds "$secs" ecdsap256 rsa2048 ed25519 2>/dev/null)
ossl() {	# name column: sign/s is the next-to-last field, verify/s the last
	echo "$speed" | awk -v pat="$1" '$0 ~ pat { print $(NF - 1), $NF; exit }'
}
read -r es_sign es_verify < <(ossl 'ecdsa .nistp256')
read -r rs_sign rs_verify < <(ossl '^rsa 2048')
read -r ed_sign ed_verify < <(ossl 'EdDSA .Ed25519')

# one backend: sign n tokens into a table, then verify them all
measure() {
	local alg=$1
	psql -X -q -tA -v ON_ERROR_STOP=1 -v alg="$alg" -v n="$n" <<'SQL'
SELECT agentidp.generate_jwk(:'alg') AS k \gset
CREATE TEMP TABLE claims AS
SELECT jsonb_build_object('iss', 'https://idp.example.com/t/bench', 'sub', gen_random_uuid(),
						  'aud', 'https://api.example.com', 'exp', 2000000000, 'iat', 1700000000,
						  'jti', gen_random_uuid(), 'client_id', 'bench', 'scope', 'read write') AS c
FROM generate_series(1, :n);
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE tokens AS SELECT agentidp.jws_sign(c, :'k') AS tok FROM claims;
SELECT clock_timestamp() AS t1 \gset
SELECT count(agentidp.jws_verify(tok, :'k', ARRAY[:'alg'])) FROM tokens \g /dev/null
SELECT clock_timestamp() AS t2 \gset
SELECT round(:n / extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz)) || ' ' ||
	   round(:n / extract(epoch FROM :'t2'::timestamptz - :'t1'::timestamptz));
SQL
}

# signing with a tenant's stored key: decrypted once, then cached
tenant_sign() {
	psql -X -q -tA -v ON_ERROR_STOP=1 -v n="$n" <<'SQL'
SET client_min_messages = warning;
SELECT COALESCE((SELECT tenant_id FROM agentidp.tenants WHERE name = 'bench-keys'),
				agentidp.create_tenant('bench-keys')) AS t \gset
SELECT CASE WHEN NOT EXISTS (SELECT FROM agentidp.signing_keys WHERE tenant_id = :'t')
			THEN agentidp.rotate_signing_key(:'t') END \g /dev/null
SELECT agentidp._sign_with_tenant_key(:'t', '{}') \g /dev/null
SELECT clock_timestamp() AS t0 \gset
SELECT count(agentidp._sign_with_tenant_key(:'t', jsonb_build_object('i', i))) FROM generate_series(1, :n) i \g /dev/null
SELECT round(:n / extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));
SQL
}

printf '%-6s %10s %10s %6s   %10s %10s %6s\n' alg sign/s openssl ratio verify/s openssl ratio
for row in "ES256 $es_sign $es_verify" "RS256 $rs_sign $rs_verify" "EdDSA $ed_sign $ed_verify"; do
	read -r alg os ov <<<"$row"
	read -r s v < <(measure "$alg")
	awk -v a="$alg" -v s="$s" -v os="$os" -v v="$v" -v ov="$ov" 'BEGIN {
		printf "%-6s %10d %10d %6.2f   %10d %10d %6.2f\n", a, s, os, s / os, v, ov, v / ov }'
done
ts=$(tenant_sign)
awk -v s="$ts" -v os="$es_sign" 'BEGIN {
	printf "ES256 with a tenant key (_sign_with_tenant_key): %d sign/s, %.2f of openssl\n", s, s / os }'
