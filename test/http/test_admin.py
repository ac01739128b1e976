#!/usr/bin/env python3
"""The admin REST API of agentidp-httpd (/admin/v1) over real HTTP.

An agent with the scope agentidp:admin gets a token at the token endpoint
and manages its tenant: agents, secrets and keys, roles, the audit log;
every refusal is an RFC 9457 problem.  Another tenant's agents stay out of
reach whatever the request names.

Starts nothing: it expects the daemon that the test setup started
(scripts/cluster.sh httpd-start).  The two tenants and the first admin
agent are made with psql, as a tenant's administrator would make them
(scripts/env.sh exports PGHOST, PGPORT, PGUSER, PGPASSFILE, PGDATABASE);
everything else goes over HTTP.  Standard library only.  Environment:
  AGENTIDP_HTTP_URL        base URL of the daemon (http://127.0.0.1:8498)
  AGENTIDP_HTTPD_LOG       the daemon's log file, checked for secrets
"""

import access_log
import http.client
import json
import os
import secrets
import subprocess
import time
import unittest
import urllib.parse

BASE = os.environ.get("AGENTIDP_HTTP_URL", "http://127.0.0.1:8498")
URL = urllib.parse.urlsplit(BASE)
TIMEOUT = 10
SUFFIX = secrets.token_hex(4)
TENANT = "admin-http-" + SUFFIX
OTHER = "admin-http-other-" + SUFFIX
PROBLEM = "application/problem+json"

# public keys from RFC 7515 appendix A.3 (ES256) and RFC 8037 appendix A (Ed25519)
EC_JWK = {"kty": "EC", "crv": "P-256",
          "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
          "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
OKP_JWK = {"kty": "OKP", "crv": "Ed25519",
           "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


def psql(sql):
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def setup_tenants():
    """Two tenants with keys; an admin agent of the first, an agent of the second."""
    rows = psql("""
        SELECT agentidp.rotate_signing_key(agentidp.create_tenant('%(a)s')) IS NOT NULL,
               agentidp.rotate_signing_key(agentidp.create_tenant('%(b)s')) IS NOT NULL;
        SELECT 'admin', a, s.client_id, s.client_secret
        FROM agentidp.register_agent((SELECT tenant_id FROM agentidp.tenants WHERE name = '%(a)s'),
                                     'admin', '{agentidp:admin,read}') AS a,
             agentidp.create_client_secret(a) AS s;
        SELECT 'other', a, s.client_id, s.client_secret
        FROM agentidp.register_agent((SELECT tenant_id FROM agentidp.tenants WHERE name = '%(b)s'),
                                     'other-admin', '{agentidp:admin}') AS a,
             agentidp.create_client_secret(a) AS s;
    """ % {"a": TENANT, "b": OTHER})
    found = {}
    for line in rows.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            found[parts[0]] = {"id": parts[1], "client_id": parts[2], "secret": parts[3]}
    return found


AGENTS = setup_tenants()


def request(method, path, body=None, headers=None):
    """One request on a fresh connection: (status, headers, body bytes)."""
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def get_token(tenant, client_id, secret, scope=None):
    fields = {"grant_type": "client_credentials", "client_id": client_id,
              "client_secret": secret}
    if scope:
        fields["scope"] = scope
    status, _, body = request("POST", "/t/%s/oauth/token" % tenant,
                              urllib.parse.urlencode(fields),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    return status, json.loads(body)


def admin_token(scope="agentidp:admin"):
    status, doc = get_token(TENANT, AGENTS["admin"]["client_id"], AGENTS["admin"]["secret"], scope)
    assert status == 200, doc
    return doc["access_token"]


TOKEN = admin_token()
OTHER_TOKEN = get_token(OTHER, AGENTS["other"]["client_id"], AGENTS["other"]["secret"])[1]["access_token"]


def api(method, path, doc=None, token=TOKEN, headers=None, raw=None):
    """An admin API call: (status, headers, parsed JSON or None)."""
    h = {"Authorization": "Bearer " + token} if token else {}
    body = raw
    if doc is not None:
        body = json.dumps(doc)
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    status, rh, data = request(method, "/admin/v1" + path, body, h)
    return status, rh, json.loads(data) if data else None


class AdminCase(unittest.TestCase):
    def assert_json(self, headers):
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["Cache-Control"], "no-store")
        self.assertRegex(headers["X-Request-Id"], r"^[0-9a-f]{32}$")

    def assert_problem(self, got, status):
        code, headers, doc = got
        self.assertEqual(code, status, doc)
        self.assertEqual(headers["Content-Type"], PROBLEM)
        self.assertEqual(headers["Cache-Control"], "no-store")
        self.assertEqual(doc["status"], status)
        self.assertEqual(doc["type"], "about:blank")
        self.assertIsInstance(doc["title"], str)
        self.assertIsInstance(doc["detail"], str)
        return headers, doc

    def new_agent(self, name=None, scopes=("read",)):
        status, headers, doc = api("POST", "/agents", {
            "name": name or "agent-" + secrets.token_hex(4), "allowed_scopes": list(scopes)})
        self.assertEqual(status, 201, doc)
        return headers, doc


class Agents(AdminCase):
    def test_create_show_patch_delete(self):
        headers, doc = self.new_agent(scopes=["read", "write"])
        self.assert_json(headers)
        self.assertEqual(headers["Location"], "/admin/v1/agents/" + doc["id"])
        self.assertEqual(doc["status"], "active")
        self.assertEqual(doc["allowed_scopes"], ["read", "write"])

        status, headers, shown = api("GET", "/agents/" + doc["id"])
        self.assertEqual(status, 200)
        self.assert_json(headers)
        self.assertEqual(shown["client_id"], doc["client_id"])

        status, _, patched = api("PATCH", "/agents/" + doc["id"], {
            "status": "suspended", "allowed_scopes": ["read"], "metadata": {"team": "ops"}})
        self.assertEqual(status, 200, patched)
        self.assertEqual((patched["status"], patched["allowed_scopes"], patched["metadata"]),
                         ("suspended", ["read"], {"team": "ops"}))
        self.assertIsNotNone(patched["suspended_at"])

        status, headers, body = api("DELETE", "/agents/" + doc["id"])
        self.assertEqual(status, 204)
        self.assertIsNone(body)
        self.assertEqual(headers["Cache-Control"], "no-store")
        status, _, gone = api("GET", "/agents/" + doc["id"])
        self.assertEqual(gone["status"], "deleted")
        # a deleted agent cannot be changed any more
        self.assert_problem(api("DELETE", "/agents/" + doc["id"]), 404)

    def test_limits_set_here_hold_at_the_token_endpoint(self):
        _, doc = self.new_agent()
        status, _, patched = api("PATCH", "/agents/" + doc["id"], {
            "limits": {"token_rate_limit": "2/min", "daily_action_cap": 5}})
        self.assertEqual(status, 200, patched)
        self.assertEqual(patched["limits"], {"token_rate_limit": "2/min", "daily_action_cap": 5,
                                             "daily_spend_limit": None, "spend_currency": "USD"})
        status, _, secret = api("POST", "/agents/%s/secrets" % doc["id"])
        self.assertEqual(status, 201, secret)
        got = [get_token(TENANT, doc["client_id"], secret["client_secret"])[0] for _ in range(3)]
        self.assertEqual(got, [200, 200, 429])
        self.assert_problem(api("PATCH", "/agents/" + doc["id"],
                                {"limits": {"token_rate_limit": "often"}}), 400)

    def test_paging_and_filter(self):
        for _ in range(3):
            self.new_agent()
        seen = []
        cursor = None
        while True:
            path = "/agents?limit=2" + ("&cursor=" + cursor if cursor else "")
            status, _, page = api("GET", path)
            self.assertEqual(status, 200, page)
            self.assertLessEqual(len(page["items"]), 2)
            seen += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(seen, sorted(seen))
        self.assertIn(AGENTS["admin"]["id"], seen)
        self.assertNotIn(AGENTS["other"]["id"], seen)
        status, _, page = api("GET", "/agents?status=deleted&limit=500")
        self.assertEqual(status, 200)
        self.assertTrue(all(a["status"] == "deleted" for a in page["items"]))

    def test_head(self):
        status, headers, body = api("HEAD", "/agents")
        self.assertEqual(status, 200)
        self.assertIsNone(body)
        self.assertEqual(headers["Content-Type"], "application/json")

    def test_bad_requests(self):
        self.assert_problem(api("POST", "/agents", {"name": "x", "colour": "red"}), 400)
        self.assert_problem(api("POST", "/agents", {"allowed_scopes": []}), 400)
        self.assert_problem(api("POST", "/agents", raw="{not json",
                                headers={"Content-Type": "application/json"}), 400)
        self.assert_problem(api("POST", "/agents", raw='{"name": "a", "name": "b"}',
                                headers={"Content-Type": "application/json"}), 400)
        self.assert_problem(api("POST", "/agents", raw=b'{"name": "\xff"}',
                                headers={"Content-Type": "application/json"}), 400)
        self.assert_problem(api("GET", "/agents?limit=0"), 400)
        self.assert_problem(api("GET", "/agents?limit=1&limit=2"), 400)
        self.assert_problem(api("GET", "/agents?colour=red"), 400)
        self.assert_problem(api("PATCH", "/agents/" + AGENTS["admin"]["id"], {"status": "deleted"}), 400)

    def test_duplicate_name(self):
        name = "dup-" + secrets.token_hex(4)
        self.new_agent(name)
        _, doc = self.assert_problem(api("POST", "/agents", {"name": name}), 409)
        self.assertIn("already exists", doc["detail"])


class Credentials(AdminCase):
    def test_secret_lifecycle(self):
        _, agent = self.new_agent(scopes=["read"])
        status, headers, secret = api("POST", "/agents/%s/secrets" % agent["id"], {"expires_in": 3600})
        self.assertEqual(status, 201, secret)
        self.assert_json(headers)
        self.assertTrue(secret["client_secret"].startswith("aidp_sk_"))
        self.assertEqual(secret["client_id"], agent["client_id"])
        self.assertEqual(headers["Location"],
                         "/admin/v1/agents/%s/credentials/%s" % (agent["id"], secret["id"]))

        # the new secret works at the token endpoint
        status, doc = get_token(TENANT, agent["client_id"], secret["client_secret"])
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["scope"], "read")

        # listed by its hint, never the secret or its hash
        status, _, listing = api("GET", "/agents/%s/credentials" % agent["id"])
        self.assertEqual(status, 200)
        text = json.dumps(listing)
        self.assertNotIn(secret["client_secret"], text)
        self.assertNotIn("hash", text)
        self.assertEqual([c["id"] for c in listing["items"]], [secret["id"]])
        self.assertEqual(listing["items"][0]["hint"], secret["client_secret"][-4:])

        # revoked: the token endpoint refuses it, and it stays listed as revoked
        status, _, body = api("DELETE", "/agents/%s/credentials/%s" % (agent["id"], secret["id"]))
        self.assertEqual(status, 204, body)
        status, doc = get_token(TENANT, agent["client_id"], secret["client_secret"])
        self.assertEqual(status, 401, doc)
        status, _, cred = api("GET", "/agents/%s/credentials/%s" % (agent["id"], secret["id"]))
        self.assertEqual(status, 200)
        self.assertFalse(cred["active"])
        self.assert_problem(api("DELETE", "/agents/%s/credentials/%s" % (agent["id"], secret["id"])), 409)

    def test_keys(self):
        _, agent = self.new_agent()
        status, headers, key = api("POST", "/agents/%s/keys" % agent["id"], EC_JWK)
        self.assertEqual(status, 201, key)
        self.assertEqual(key["kind"], "key")
        self.assertEqual(key["public_jwk"]["kid"], key["kid"])
        self.assertIn("/credentials/" + key["id"], headers["Location"])
        self.assert_problem(api("POST", "/agents/%s/keys" % agent["id"], EC_JWK), 409)
        status, _, key2 = api("POST", "/agents/%s/keys" % agent["id"], OKP_JWK)
        self.assertEqual(status, 201, key2)
        # a private key is refused
        self.assert_problem(api("POST", "/agents/%s/keys" % agent["id"],
                                dict(OKP_JWK, d="nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")), 400)
        status, _, _ = api("DELETE", "/agents/%s/credentials/%s" % (agent["id"], key["id"]))
        self.assertEqual(status, 204)
        status, _, listing = api("GET", "/agents/%s/credentials" % agent["id"])
        self.assertEqual(sorted((c["kid"], c["active"]) for c in listing["items"]),
                         sorted([(key["kid"], False), (key2["kid"], True)]))


class Roles(AdminCase):
    def test_roles(self):
        name = "ops-" + secrets.token_hex(3)
        status, headers, role = api("POST", "/roles", {"name": name, "scopes": ["deploy", "read"],
                                                       "description": "operators"})
        self.assertEqual(status, 201, role)
        self.assertEqual(headers["Location"], "/admin/v1/roles/" + name)
        self.assert_problem(api("POST", "/roles", {"name": name}), 409)
        status, _, listing = api("GET", "/roles")
        self.assertIn(name, [r["name"] for r in listing["items"]])

        _, agent = self.new_agent()
        status, _, _ = api("PUT", "/agents/%s/roles/%s" % (agent["id"], name))
        self.assertEqual(status, 204)
        status, _, shown = api("GET", "/agents/" + agent["id"])
        self.assertEqual(shown["roles"], [name])
        self.assert_problem(api("PUT", "/agents/%s/roles/no-such-role" % agent["id"]), 404)
        status, _, _ = api("DELETE", "/agents/%s/roles/%s" % (agent["id"], name))
        self.assertEqual(status, 204)
        status, _, _ = api("DELETE", "/roles/" + name)
        self.assertEqual(status, 204)
        self.assert_problem(api("GET", "/roles/" + name), 404)


class Audit(AdminCase):
    def test_audit_names_the_agent(self):
        status, headers, agent = api("POST", "/agents", {"name": "audited-" + secrets.token_hex(4)})
        self.assertEqual(status, 201)
        request_id = headers["X-Request-Id"]
        status, headers, page = api("GET", "/audit?limit=50&agent=" + AGENTS["admin"]["id"])
        self.assertEqual(status, 200, page)
        self.assert_json(headers)
        items = page["items"]
        self.assertTrue(items)
        self.assertTrue(all(e["actor"]["agent"] == AGENTS["admin"]["id"] for e in items))
        self.assertEqual([e["seq"] for e in items], sorted((e["seq"] for e in items), reverse=True))
        mine = [e for e in items if e["trace_id"] == request_id]
        self.assertTrue(mine, "no audit row carries the request id")
        self.assertEqual(mine[0]["action"], "insert")
        self.assertEqual(mine[0]["resource"], "agentidp.agents")
        self.assertEqual(mine[0]["client_addr"], "127.0.0.1")
        self.assertEqual(mine[0]["detail"]["new"]["agent_id"], agent["id"])
        self.assertRegex(mine[0]["hash"], r"^[0-9a-f]{64}$")

    def test_filters_and_paging(self):
        status, _, page = api("GET", "/audit?action=token.issue&limit=2")
        self.assertEqual(status, 200, page)
        self.assertTrue(all(e["action"] == "token.issue" for e in page["items"]))
        if page["next_cursor"]:
            status, _, more = api("GET", "/audit?action=token.issue&limit=2&cursor=" + page["next_cursor"])
            self.assertEqual(status, 200)
            self.assertTrue(all(e["seq"] < page["items"][-1]["seq"] for e in more["items"]))
        status, _, page = api("GET", "/audit?since=2999-01-01T00:00:00Z")
        self.assertEqual(page["items"], [])
        status, _, page = api("GET", "/audit?until=" + urllib.parse.quote("2000-01-01T00:00:00+00:00"))
        self.assertEqual(page["items"], [])
        self.assert_problem(api("GET", "/audit?since=yesterday-ish"), 400)
        self.assert_problem(api("GET", "/audit?agent=nobody"), 400)


class Refusals(AdminCase):
    def test_no_token(self):
        headers, _ = self.assert_problem(api("GET", "/agents", token=None), 401)
        self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="agentidp"')

    def test_bad_token(self):
        headers, _ = self.assert_problem(api("GET", "/agents", token="not.a.token"), 401)
        self.assertIn('error="invalid_token"', headers["WWW-Authenticate"])

    def test_revoked_token(self):
        token = admin_token()
        status, _, _ = api("GET", "/agents", token=token)
        self.assertEqual(status, 200)
        status, _, _ = request("POST", "/t/%s/oauth/revoke" % TENANT, urllib.parse.urlencode({
            "token": token, "client_id": AGENTS["admin"]["client_id"],
            "client_secret": AGENTS["admin"]["secret"]}),
            {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 200)
        _, doc = self.assert_problem(api("GET", "/agents", token=token), 401)
        self.assertIn("revoked", doc["detail"])

    def test_missing_scope(self):
        headers, _ = self.assert_problem(api("GET", "/agents", token=admin_token("read")), 403)
        self.assertIn('error="insufficient_scope"', headers["WWW-Authenticate"])
        self.assertIn('scope="agentidp:admin"', headers["WWW-Authenticate"])

    def test_not_found_and_method(self):
        self.assert_problem(api("GET", "/nothing"), 404)
        self.assert_problem(api("GET", "/agents/not-a-uuid"), 404)
        self.assert_problem(api("GET", ""), 404)
        headers, _ = self.assert_problem(api("PUT", "/agents"), 405)
        self.assertEqual(headers["Allow"], "GET, HEAD, POST")
        headers, _ = self.assert_problem(api("POST", "/audit", {}), 405)
        self.assertEqual(headers["Allow"], "GET, HEAD")

    def test_media_type_and_size(self):
        self.assert_problem(api("POST", "/agents", raw="name=x",
                                headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
        self.assert_problem(api("POST", "/agents", raw='{"name": "x"}'), 415)
        self.assert_problem(api("POST", "/agents", {"name": "x", "metadata": {"pad": "a" * 70000}}), 413)

    def test_other_tenant_is_out_of_reach(self):
        other = AGENTS["other"]["id"]
        for method, path, doc in (
                ("GET", "/agents/" + other, None),
                ("PATCH", "/agents/" + other, {"status": "suspended"}),
                ("DELETE", "/agents/" + other, None),
                ("GET", "/agents/%s/credentials" % other, None),
                ("POST", "/agents/%s/secrets" % other, {}),
                ("POST", "/agents/%s/keys" % other, OKP_JWK),
                ("PUT", "/agents/%s/roles/any" % other, None)):
            self.assert_problem(api(method, path, doc), 404)
        # and the other tenant's admin sees its own agent, still active
        status, _, doc = api("GET", "/agents/" + other, token=OTHER_TOKEN)
        self.assertEqual((status, doc["status"]), (200, "active"))
        status, _, page = api("GET", "/agents?limit=500", token=OTHER_TOKEN)
        self.assertEqual([a["id"] for a in page["items"]], [other])
        status, _, page = api("GET", "/audit?limit=500", token=OTHER_TOKEN)
        self.assertFalse(any(e["actor"]["agent"] == AGENTS["admin"]["id"] for e in page["items"]))

    def test_repeated_authorization(self):
        conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=TIMEOUT)
        try:
            conn.putrequest("GET", "/admin/v1/agents")
            conn.putheader("Authorization", "Bearer " + TOKEN)
            conn.putheader("Authorization", "Bearer " + TOKEN)
            conn.endheaders()
            resp = conn.getresponse()
            data = resp.read()
            self.assert_problem((resp.status, resp.headers, json.loads(data)), 400)
        finally:
            conn.close()


class ZMetricsAndLog(AdminCase):
    """Runs last (by name): the log then holds every request above."""

    def test_metrics(self):
        status, _, data = request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn('agentidp_httpd_requests_total{endpoint="admin",status="200"}', data.decode())

    def test_no_secret_in_log(self):
        path = os.environ.get("AGENTIDP_HTTPD_LOG")
        if not path:
            self.skipTest("AGENTIDP_HTTPD_LOG is not set")
        _, agent = self.new_agent()
        status, headers, secret = api("POST", "/agents/%s/secrets" % agent["id"])
        self.assertEqual(status, 201)
        request_id = headers["X-Request-Id"]
        log = access_log.read_until(path, request_id)
        self.assertIn("request_id=" + request_id, log)
        self.assertIn("endpoint=admin", log)
        self.assertNotIn(secret["client_secret"], log)
        self.assertNotIn(TOKEN, log)
        self.assertNotIn("Bearer", log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
