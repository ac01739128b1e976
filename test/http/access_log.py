"""The daemon's access log, as the HTTP test suites read it."""

import time


def read_until(path, request_id, seconds=5):
    """The log once it has the line of request_id (the daemon writes it
    after the response), or as it is after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        with open(path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        if request_id in log or time.monotonic() > deadline:
            return log
        time.sleep(0.1)
