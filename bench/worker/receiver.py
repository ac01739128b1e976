#!/usr/bin/env python3
"""A webhook receiver for bench/worker.sh that answers at once.

    receiver.py PORT_FILE

Listens on 127.0.0.1 (port of the system's choosing, written to
PORT_FILE), keeps connections alive, answers every POST with 204 and
checks nothing: the benchmark measures the sender.
"""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


server = Server(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
