#!/usr/bin/env python3
"""A trusted issuer's key set endpoint, for test/t/009_issuers.pl.

Serves GET /jwks.json from a file the test rewrites (so the issuer can
rotate its keys), with Cache-Control: max-age=600, on 127.0.0.1 and the
port given; GET /count says how many times the key set was fetched.
Prints "listening <port>" once ready.
"""
import http.server
import sys

JWKS_FILE = sys.argv[1]
fetches = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global fetches
        if self.path == "/jwks.json":
            fetches += 1
            with open(JWKS_FILE, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/jwk-set+json")
            self.send_header("Cache-Control", "public, max-age=600")
        elif self.path == "/count":
            body = str(fetches).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
