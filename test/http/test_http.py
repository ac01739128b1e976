#!/usr/bin/env python3
"""agentidp-httpd over real HTTP: the OAuth endpoints, their errors, the
documents, health, metrics, limits, and the access log.

Starts nothing: it expects the daemon that the test setup started
(scripts/cluster.sh httpd-start) and the demo tenant of scripts/setup-db.sh.
Standard library only.  Environment:
  AGENTIDP_HTTP_URL        base URL of the daemon (http://127.0.0.1:8498)
  AGENTIDP_CREDENTIALS     the demo credentials file ("name value" lines)
  AGENTIDP_HTTPD_LOG       the daemon's log file, checked for secrets
"""

import access_log
import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.parse

BASE = os.environ.get("AGENTIDP_HTTP_URL", "http://127.0.0.1:8498")
URL = urllib.parse.urlsplit(BASE)
TIMEOUT = 10
TENANT = "demo"


def read_credentials():
    creds = {}
    with open(os.environ["AGENTIDP_CREDENTIALS"]) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                creds[parts[0]] = parts[1]
    return creds


CREDS = read_credentials()
CLIENT_ID = CREDS["client_id"]
CLIENT_SECRET = CREDS["client_secret"]


def request(method, path, body=None, headers=None):
    """One request on a fresh connection: (status, headers, body bytes)."""
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        conn.close()


def form_post(path, fields, headers=None, raw=None):
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    h.update(headers or {})
    body = raw if raw is not None else urllib.parse.urlencode(fields)
    return request("POST", path, body=body, headers=h)


def basic(client_id, secret):
    # RFC 6749 section 2.3.1: each part form-urlencoded, then Base64
    pair = urllib.parse.quote_plus(client_id) + ":" + urllib.parse.quote_plus(secret)
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


TOKEN_PATH = "/t/%s/oauth/token" % TENANT


class TokenEndpoint(unittest.TestCase):
    def assert_no_store(self, headers):
        self.assertEqual(headers["Cache-Control"], "no-store")
        self.assertEqual(headers["Pragma"], "no-cache")
        self.assertTrue(headers["Content-Type"].startswith("application/json"))
        self.assertRegex(headers["X-Request-Id"], r"^[0-9a-f]{32}$")

    def assert_error(self, status, headers, body, want_status, want_error):
        self.assertEqual(status, want_status, body)
        self.assert_no_store(headers)
        self.assertEqual(json.loads(body)["error"], want_error)

    def test_client_secret_basic(self):
        status, headers, body = form_post(
            TOKEN_PATH, {"grant_type": "client_credentials", "scope": "read"},
            basic(CLIENT_ID, CLIENT_SECRET))
        self.assertEqual(status, 200, body)
        self.assert_no_store(headers)
        doc = json.loads(body)
        self.assertIn("access_token", doc)
        self.assertEqual(doc["token_type"].lower(), "bearer")

    def test_client_secret_post_unscoped(self):
        status, headers, body = form_post("/oauth/token", {
            "grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET})
        self.assertEqual(status, 200, body)
        self.assert_no_store(headers)
        self.assertIn("access_token", json.loads(body))

    def test_content_type_with_charset(self):
        status, _, body = form_post(
            TOKEN_PATH, {"grant_type": "client_credentials"},
            dict(basic(CLIENT_ID, CLIENT_SECRET),
                 **{"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}))
        self.assertEqual(status, 200, body)

    def test_wrong_secret(self):
        for headers, fields in (
                (basic(CLIENT_ID, "wrong"), {"grant_type": "client_credentials"}),
                ({}, {"grant_type": "client_credentials", "client_id": CLIENT_ID,
                      "client_secret": "wrong"})):
            status, h, body = form_post(TOKEN_PATH, fields, headers)
            self.assert_error(status, h, body, 401, "invalid_client")
            self.assertEqual(h["WWW-Authenticate"], 'Basic realm="agentidp"')

    def test_malformed_basic(self):
        status, h, body = form_post(TOKEN_PATH, {"grant_type": "client_credentials"},
                                    {"Authorization": "Basic !!!notbase64"})
        self.assert_error(status, h, body, 401, "invalid_client")
        self.assertIn("WWW-Authenticate", h)

    def test_two_auth_methods(self):
        status, h, body = form_post(
            TOKEN_PATH, {"grant_type": "client_credentials", "client_secret": CLIENT_SECRET},
            basic(CLIENT_ID, CLIENT_SECRET))
        self.assert_error(status, h, body, 400, "invalid_request")

    def test_unsupported_grant(self):
        status, h, body = form_post(TOKEN_PATH, {"grant_type": "password"},
                                    basic(CLIENT_ID, CLIENT_SECRET))
        self.assert_error(status, h, body, 400, "unsupported_grant_type")

    def test_missing_grant_type(self):
        status, h, body = form_post(TOKEN_PATH, {"scope": "read"},
                                    basic(CLIENT_ID, CLIENT_SECRET))
        self.assert_error(status, h, body, 400, "invalid_request")

    def test_repeated_parameter(self):
        status, h, body = form_post(
            TOKEN_PATH, None, basic(CLIENT_ID, CLIENT_SECRET),
            raw="grant_type=client_credentials&scope=read&scope=write")
        self.assert_error(status, h, body, 400, "invalid_request")

    def test_bad_percent_encoding(self):
        for raw in ("grant_type=client%zzcredentials", "grant_type=%",
                    "grant_type=client_credentials&scope=%00", "scope=%ff%fe"):
            status, h, body = form_post(TOKEN_PATH, None, basic(CLIENT_ID, CLIENT_SECRET),
                                        raw=raw)
            self.assert_error(status, h, body, 400, "invalid_request")

    def test_wrong_content_type(self):
        status, h, body = request(
            "POST", TOKEN_PATH, body=json.dumps({"grant_type": "client_credentials"}),
            headers=dict(basic(CLIENT_ID, CLIENT_SECRET), **{"Content-Type": "application/json"}))
        self.assert_error(status, h, body, 400, "invalid_request")
        status, h, body = request("POST", TOKEN_PATH, body="grant_type=client_credentials")
        self.assertEqual(status, 400, body)

    def test_body_too_large(self):
        raw = "grant_type=client_credentials&pad=" + "a" * (70 * 1024)
        status, _, body = form_post(TOKEN_PATH, None, basic(CLIENT_ID, CLIENT_SECRET), raw=raw)
        self.assertEqual(status, 413, body)

    def test_chunked_body_too_large(self):
        """Without a Content-Length, the limit holds while reading."""
        conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=TIMEOUT)
        chunks = (b"a" * 8192 for _ in range(10))
        try:
            conn.request("POST", TOKEN_PATH, body=chunks, encode_chunked=True,
                         headers={"Content-Type": "application/x-www-form-urlencoded",
                                  "Transfer-Encoding": "chunked"})
            resp = conn.getresponse()
            resp.read()
            self.assertEqual(resp.status, 413)
        except (ConnectionError, http.client.HTTPException):
            pass                # closing the connection is an answer too
        finally:
            conn.close()

    def test_revoke_and_introspect(self):
        auth = basic(CLIENT_ID, CLIENT_SECRET)
        _, _, body = form_post(TOKEN_PATH, {"grant_type": "client_credentials"}, auth)
        token = json.loads(body)["access_token"]
        status, h, body = form_post("/t/%s/oauth/introspect" % TENANT, {"token": token}, auth)
        self.assertEqual(status, 200, body)
        self.assertEqual(h["Cache-Control"], "no-store")
        self.assertTrue(json.loads(body)["active"])
        status, _, body = form_post("/t/%s/oauth/revoke" % TENANT, {"token": token}, auth)
        self.assertEqual(status, 200, body)
        status, _, body = form_post("/oauth/introspect", {"token": token}, auth)
        self.assertEqual(status, 200, body)
        self.assertFalse(json.loads(body)["active"])
        # introspection needs client authentication
        status, h, body = form_post("/oauth/introspect", {"token": token},
                                    basic(CLIENT_ID, "wrong"))
        self.assertEqual(status, 401, body)
        self.assertIn("WWW-Authenticate", h)


class Documents(unittest.TestCase):
    def test_metadata(self):
        for path in ("/.well-known/oauth-authorization-server/t/%s" % TENANT,
                     "/t/%s/.well-known/oauth-authorization-server" % TENANT):
            status, h, body = request("GET", path)
            self.assertEqual(status, 200, body)
            self.assertIn("max-age", h["Cache-Control"])
            doc = json.loads(body)
            self.assertEqual(doc["issuer"], BASE + "/t/" + TENANT)
            self.assertEqual(doc["token_endpoint"], BASE + TOKEN_PATH)

    def test_jwks(self):
        status, h, body = request("GET", "/t/%s/.well-known/jwks.json" % TENANT)
        self.assertEqual(status, 200, body)
        self.assertEqual(h["Content-Type"], "application/jwk-set+json")
        self.assertEqual(h["Cache-Control"], "public, max-age=300")
        keys = json.loads(body)["keys"]
        self.assertTrue(keys)
        for k in keys:
            self.assertNotIn("d", k)    # public keys only

    def test_unknown_tenant(self):
        for path in ("/t/no-such-tenant/.well-known/jwks.json",
                     "/.well-known/oauth-authorization-server/t/no-such-tenant",
                     "/t/Not_A_Slug/.well-known/jwks.json"):
            status, h, body = request("GET", path)
            self.assertEqual(status, 404, path)
            self.assertIn("error", json.loads(body))


def metric(name):
    _, _, body = request("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError("no metric " + name)


class GroupCommit(unittest.TestCase):
    """Token requests that arrive together are issued in one transaction
    (src/httpd/batch.c), each answered as it would be alone."""

    def test_concurrent_requests_each_get_their_own_answer(self):
        import concurrent.futures
        good = basic(CLIENT_ID, CLIENT_SECRET)
        bad = basic(CLIENT_ID, CLIENT_SECRET[:-2] + ("AA" if not CLIENT_SECRET.endswith("AA") else "BB"))
        before = metric("agentidp_httpd_token_batched_requests_total")
        deadline = time.monotonic() + 20
        jtis = set()
        rounds = 0
        # rounds of 24 at once, until some went in a batch (bounded in time)
        while True:
            rounds += 1
            with concurrent.futures.ThreadPoolExecutor(24) as pool:
                results = list(pool.map(
                    lambda i: (i, form_post(TOKEN_PATH, {"grant_type": "client_credentials",
                                                         "scope": "read" if i % 3 else "write"},
                                            bad if i % 4 == 0 else good)),
                    range(24)))
            for i, (status, headers, body) in results:
                doc = json.loads(body)
                if i % 4 == 0:
                    self.assertEqual(status, 401, body)
                    self.assertEqual(doc["error"], "invalid_client")
                    self.assertIn("WWW-Authenticate", headers)
                else:
                    self.assertEqual(status, 200, body)
                    payload = doc["access_token"].split(".")[1]
                    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                    self.assertEqual(claims["scope"], "read" if i % 3 else "write")
                    self.assertEqual(doc["scope"], claims["scope"])
                    self.assertNotIn(claims["jti"], jtis)
                    jtis.add(claims["jti"])
            if metric("agentidp_httpd_token_batched_requests_total") > before:
                break
            self.assertLess(time.monotonic(), deadline, "no request was batched in %d rounds" % rounds)


def psql(sql):
    """SQL as the test cluster's superuser (scripts/env.sh exports PG*)."""
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


class RateLimits(unittest.TestCase):
    """A client over its token rate limit gets 429 temporarily_unavailable
    with Retry-After; every answer under a limit has the RateLimit headers.
    The database decides and writes them, in batches too (docs/limits.md)."""

    def limited_client(self, limit):
        """A new agent of the demo tenant with its own limit: (client_id, secret)."""
        name = "limited-%d" % time.monotonic_ns()
        row = psql("""
            SELECT c.client_id || ' ' || c.client_secret
            FROM agentidp.register_agent((SELECT tenant_id FROM agentidp.tenants WHERE name = '%s'),
                                         '%s', '{read}') AS a,
                 LATERAL agentidp.set_token_rate_limit(a, '%s') AS l,
                 LATERAL agentidp.create_client_secret(a) AS c""" % (TENANT, name, limit))
        self.addCleanup(psql, "SELECT agentidp.delete_agent(agent_id) FROM agentidp.agents "
                              "WHERE name = '%s'" % name)
        return row.split()

    def test_headers_and_429(self):
        cid, secret = self.limited_client("3/h")
        auth = basic(cid, secret)
        for remaining in ("2", "1", "0"):
            status, h, body = form_post(TOKEN_PATH, {"grant_type": "client_credentials"}, auth)
            self.assertEqual(status, 200, body)
            self.assertEqual(h["RateLimit-Limit"], "3")
            self.assertEqual(h["RateLimit-Remaining"], remaining)
            self.assertEqual(h["RateLimit-Policy"], "3;w=3600")
            self.assertTrue(1 <= int(h["RateLimit-Reset"]) <= 3600)
            self.assertIsNone(h["Retry-After"])
        status, h, body = form_post(TOKEN_PATH, {"grant_type": "client_credentials"}, auth)
        self.assertEqual(status, 429, body)
        doc = json.loads(body)
        self.assertEqual(doc["error"], "temporarily_unavailable")
        self.assertIn("token rate limit", doc["error_description"])
        # the next of the 3 an hour frees up 1200 s after the first
        self.assertTrue(1100 <= int(h["Retry-After"]) <= 1200, h["Retry-After"])
        self.assertEqual(h["RateLimit-Remaining"], "0")
        self.assert_no_store(h)

    def assert_no_store(self, headers):
        self.assertEqual(headers["Cache-Control"], "no-store")

    def test_concurrent_requests_share_the_limit(self):
        cid, secret = self.limited_client("5/h")
        auth = basic(cid, secret)
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(
                lambda i: form_post(TOKEN_PATH, {"grant_type": "client_credentials"}, auth),
                range(12)))
        statuses = sorted(status for status, _, _ in results)
        self.assertEqual(statuses, [200] * 5 + [429] * 7)
        for status, h, _ in results:
            self.assertEqual(h["RateLimit-Limit"], "5")
            if status == 429:
                self.assertGreaterEqual(int(h["Retry-After"]), 1)


class Operations(unittest.TestCase):
    def test_healthz_readyz(self):
        for path in ("/healthz", "/readyz"):
            status, _, body = request("GET", path)
            self.assertEqual(status, 200, body)

    def test_metrics(self):
        request("GET", "/healthz")
        status, h, body = request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(h["Content-Type"].startswith("text/plain"))
        text = body.decode()
        for name in ("agentidp_httpd_requests_total{endpoint=\"healthz\",status=\"200\"}",
                     "agentidp_httpd_request_duration_seconds_bucket",
                     "agentidp_httpd_pool_connections_in_use",
                     "agentidp_httpd_pool_waiting",
                     "agentidp_httpd_database_errors_total"):
            self.assertIn(name, text)

    def test_not_found(self):
        status, h, body = request("GET", "/nope")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"], "not_found")
        self.assertRegex(h["X-Request-Id"], r"^[0-9a-f]{32}$")

    def test_wrong_method(self):
        status, h, _ = request("GET", TOKEN_PATH)
        self.assertEqual(status, 405)
        self.assertEqual(h["Allow"], "POST")
        status, h, _ = request("POST", "/healthz", body="")
        self.assertEqual(status, 405)
        self.assertEqual(h["Allow"], "GET, HEAD")

    def test_garbage_request(self):
        """A malformed request line gets an error or a closed connection, and
        the daemon goes on serving."""
        with socket.create_connection((URL.hostname, URL.port), timeout=2) as s:
            s.sendall(b"\x00\xff GARBAGE \r\n\r\n")
            try:
                s.recv(4096)
            except OSError:
                pass
        status, _, _ = request("GET", "/healthz")
        self.assertEqual(status, 200)

    def test_keep_alive(self):
        conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=TIMEOUT)
        try:
            for _ in range(3):
                conn.request("GET", "/t/%s/.well-known/jwks.json" % TENANT)
                resp = conn.getresponse()
                resp.read()
                self.assertEqual(resp.status, 200)
                self.assertNotEqual((resp.headers["Connection"] or "").lower(), "close")
        finally:
            conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SecondDaemon(unittest.TestCase):
    """Starts a daemon of its own on a free port, on the same database, with
    the settings of the subclass (extra_settings) and, for TLS, a
    certificate made here."""

    tls = False

    @classmethod
    def extra_settings(cls):
        return {}

    @classmethod
    def setUpClass(cls):
        log = os.environ.get("AGENTIDP_HTTPD_LOG")
        conf = os.environ.get("AGENTIDP_HTTPD_CONF") or (
            log and os.path.join(os.path.dirname(log), "httpd.conf"))
        if not conf or not os.path.exists(conf):
            raise unittest.SkipTest("no httpd.conf to take the connection string from")
        binary = os.environ.get("AGENTIDP_HTTPD_BIN") or os.path.join(
            subprocess.check_output(["pg_config", "--bindir"], text=True).strip(),
            "agentidp-httpd")
        cls.dir = tempfile.mkdtemp(prefix="agentidp-httpd-")
        cls.port = free_port()
        settings = {"listen": "127.0.0.1", "port": str(cls.port), "pool_size": "2"}
        with open(conf) as f:
            for line in f:
                name, _, value = line.partition("=")
                if name.strip() in ("conninfo", "public_url"):
                    settings[name.strip()] = value.strip()
        cls.ctx = None
        if cls.tls:
            cls.cert = os.path.join(cls.dir, "cert.pem")
            key = os.path.join(cls.dir, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", key, "-out", cls.cert],
                           check=True, capture_output=True)
            settings.update(tls_cert=cls.cert, tls_key=key)
            cls.ctx = ssl.create_default_context(cafile=cls.cert)
        settings.update(cls.extra_settings())
        own_conf = os.path.join(cls.dir, "httpd.conf")
        with open(own_conf, "w") as f:
            for name, value in settings.items():
                f.write("%s = %s\n" % (name, value))
        cls.log = open(os.path.join(cls.dir, "httpd.log"), "w+")
        cls.proc = subprocess.Popen([binary, "--config", own_conf],
                                    stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                if cls.get("/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if cls.proc.poll() is not None or time.monotonic() > deadline:
                cls.tearDownClass()
                raise RuntimeError("the second daemon did not start")
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        try:
            cls.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            cls.proc.wait()
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def get(cls, path, method="GET", body=None, headers=None):
        if cls.tls:
            conn = http.client.HTTPSConnection("127.0.0.1", cls.port, timeout=TIMEOUT,
                                               context=cls.ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", cls.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()


class Tls(SecondDaemon):
    """HTTPS with libmicrohttpd's TLS, as tls_cert and tls_key set it up."""

    tls = True

    def test_token_over_https(self):
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(basic(CLIENT_ID, CLIENT_SECRET))
        status, headers, body = self.get(TOKEN_PATH, "POST", "grant_type=client_credentials", h)
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["Cache-Control"], "no-store")
        self.assertEqual(json.loads(body)["token_type"], "Bearer")

    def test_certificate_is_checked_by_the_client(self):
        # a client that does not trust the certificate refuses it
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=TIMEOUT,
                                           context=ssl.create_default_context())
        with self.assertRaises(ssl.SSLError):
            conn.request("GET", "/healthz")
        conn.close()

    def test_plain_http_gets_no_answer(self):
        # plain HTTP on the TLS port: no HTTP response, the daemon stays up
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                data = s.recv(100)
            except (ConnectionResetError, socket.timeout):
                data = b""
        self.assertFalse(data.startswith(b"HTTP/"))
        self.assertEqual(self.get("/healthz")[0], 200)


class HostRouting(SecondDaemon):
    """tenant_host_suffix: the Host <tenant><suffix> names the tenant of
    the unscoped routes."""

    @classmethod
    def extra_settings(cls):
        return {"tenant_host_suffix": ".idp.test"}

    def host(self, name):
        return {"Host": "%s.idp.test:%d" % (name, self.port)}

    def test_documents_by_host(self):
        status, headers, body = self.get("/.well-known/jwks.json", headers=self.host(TENANT))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), json.loads(request(
            "GET", "/t/%s/.well-known/jwks.json" % TENANT)[2]))
        status, _, body = self.get("/.well-known/oauth-authorization-server",
                                   headers=self.host(TENANT))
        self.assertEqual(status, 200, body)
        self.assertTrue(json.loads(body)["issuer"].endswith("/t/" + TENANT))

    def test_token_by_host(self):
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(basic(CLIENT_ID, CLIENT_SECRET))
        h.update(self.host(TENANT))
        status, _, body = self.get("/oauth/token", "POST", "grant_type=client_credentials", h)
        self.assertEqual(status, 200, body)
        # a tenant that does not exist (a client of another, existing
        # tenant gets invalid_client: sql/http.sql)
        h.update(self.host("no-such-tenant"))
        status, headers, body = self.get("/oauth/token", "POST", "grant_type=client_credentials", h)
        self.assertEqual(status, 404, body)
        self.assertEqual(json.loads(body)["error"], "not_found")

    def test_hosts_that_name_no_tenant(self):
        for host in ("no-such-tenant.idp.test", "idp.test", "a.b.idp.test", "Demo.idp.test",
                     "demo.idp.test.evil", "demo.idp.test:x", "127.0.0.1:%d" % self.port):
            status, _, body = self.get("/.well-known/jwks.json", headers={"Host": host})
            self.assertEqual(status, 404, host)
            self.assertEqual(json.loads(body)["error"], "not_found")
        # routing by path still works, whatever the host
        status, _, _ = self.get("/t/%s/.well-known/jwks.json" % TENANT,
                                headers=self.host("no-such-tenant"))
        self.assertEqual(status, 200)


class ZAccessLog(unittest.TestCase):
    """Runs last (by name): the log then holds every request above."""

    def test_no_secret_in_log(self):
        path = os.environ.get("AGENTIDP_HTTPD_LOG")
        if not path:
            self.skipTest("AGENTIDP_HTTPD_LOG is not set")
        # a token obtained now must not show either
        _, h, body = form_post(TOKEN_PATH, {"grant_type": "client_credentials"},
                               basic(CLIENT_ID, CLIENT_SECRET))
        token = json.loads(body)["access_token"]
        request("GET", "/healthz?client_secret=query-secret-value")
        request_id = h["X-Request-Id"]
        log = access_log.read_until(path, request_id)
        self.assertIn("request_id=" + request_id, log)
        self.assertNotIn(CLIENT_SECRET, log)
        self.assertNotIn(urllib.parse.quote_plus(CLIENT_SECRET), log)
        self.assertNotIn(token, log)
        self.assertNotIn("Basic ", log)
        self.assertNotIn("query-secret-value", log)     # no query strings


if __name__ == "__main__":
    unittest.main(verbosity=2)
