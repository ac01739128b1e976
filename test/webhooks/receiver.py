#!/usr/bin/env python3
"""A webhook receiver for test/t/007_webhooks.pl.

Verifies the Standard Webhooks signature of every delivery, as
docs/webhooks.md tells receivers to, and records each request, so that the
test can count what arrived.

    receiver.py PORT_FILE LOG_FILE CONTROL_FILE

It listens on 127.0.0.1, on a port of the system's choosing, written to
PORT_FILE.  CONTROL_FILE is JSON, read at every request so that the test
can change it while the receiver runs:

    {"secrets": {"/ok": ["whsec_..."]},   secrets per path, any may sign
     "status": {"/fail": 500},            the answer per path (200 otherwise)
     "fail_first": 2,                     answer 500 to the first 2 attempts of each id
     "delay": 4}                          seconds to wait before answering

LOG_FILE gets one JSON object per line: when a request arrives ("phase":
"received") and when it has been answered ("answered"), with the path,
webhook-id, event type, whether the signature and the timestamp are
valid, and the status answered.
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time

TOLERANCE = 300  # seconds a timestamp may be off, as Standard Webhooks suggests

port_file, log_file, control_file = sys.argv[1:4]
lock = threading.Lock()
attempts = {}


def control():
    try:
        with open(control_file) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def log(entry):
    with lock, open(log_file, "a") as f:
        f.write(json.dumps(entry) + "\n")


def signature_valid(secrets, msg_id, timestamp, body, header):
    """True when one of the v1 signatures is HMAC-SHA256 of id.timestamp.body."""
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for sig in header.split(" "):
            version, _, value = sig.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return True
    return False


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the sender reuses its connections
    disable_nagle_algorithm = True  # the answer is two writes: no wait for an ACK between them

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        c = control()
        msg_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        entry = {
            "path": self.path,
            "id": msg_id,
            "type": payload.get("type"),
            "body_id": payload.get("id"),
            "sig_ok": signature_valid(c.get("secrets", {}).get(self.path, []), msg_id, timestamp,
                                      body, self.headers.get("webhook-signature", "")),
            "ts_ok": timestamp.isdigit() and abs(time.time() - int(timestamp)) <= TOLERANCE,
            "content_type": self.headers.get("Content-Type"),
        }
        with lock:
            attempts[(self.path, msg_id)] = attempts.get((self.path, msg_id), 0) + 1
            n = attempts[(self.path, msg_id)]
        status = c.get("status", {}).get(self.path, 200)
        if n <= c.get("fail_first", 0):
            status = 500
        log(dict(entry, phase="received", attempt=n))
        time.sleep(c.get("delay", 0))
        answer = json.dumps({"ok": status < 300}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            pass  # the sender is gone (the server restarted): it will retry
        log(dict(entry, phase="answered", attempt=n, status=status))

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
# renamed into place, so that the test never reads half a port
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
