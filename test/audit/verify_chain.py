#!/usr/bin/env python3
# verify_chain.py - independent verifier of agentidp's audit hash chain.
#
# Written from the design spec only (audit-spec.md), never from the C code,
# so that a mistake in the extension's encoder cannot hide by being copied.
# Standard library only (Python 3.11+).
#
# Usage (bytea_output = hex and DateStyle = ISO, both PostgreSQL defaults):
#   psql -XAtc 'COPY agentidp.audit_events TO STDOUT'  > events.copy
#   psql -XAtc 'COPY agentidp.audit_anchors TO STDOUT' > anchors.copy
#   test/audit/verify_chain.py events.copy [anchors.copy]
# Prints one tab-separated line per tenant, sorted by tenant_id:
#   tenant_id  ok(t/f)  rows_checked  first_bad_seq  reason
# Exit status: 0 every chain ok, 1 some chain broken, 2 bad input or usage.
import hashlib
import json
import re
import sys

DOMAIN = b"agentidp-audit-v1\n"
ZERO_HASH = bytes(32)
EVENT_COLUMNS = ("tenant_id", "seq", "v", "at", "actor_agent", "actor_role",
                 "actor_act", "action", "resource", "resource_key", "result",
                 "client_addr", "trace_id", "detail", "prev_hash", "hash")
NULLABLE = {"actor_agent", "actor_act", "resource", "resource_key",
            "client_addr", "trace_id"}
ANCHOR_COLUMNS = ("tenant_id", "seq", "prev_hash", "pruned_at")


class BadInput(Exception):
    """Input that is not a COPY dump of the tables: exit status 2."""


# --- COPY text format -------------------------------------------------------
_SIMPLE = {ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13,
           ord("t"): 9, ord("v"): 11}
_OCT = b"01234567"
_HEX = b"0123456789abcdefABCDEF"


def split_copy_line(line):
    """Split one raw line (bytes, no newline) into de-escaped fields.

    Works byte by byte in one pass, like the server's reader: a backslash
    escapes even a tab, so splitting on tabs first would be wrong.  A field
    is NULL when its raw text is exactly \\N (checked before de-escaping).
    """
    fields, out, start, i, n = [], bytearray(), 0, 0, len(line)
    while True:
        if i == n or line[i] == 9:
            fields.append(None if line[start:i] == b"\\N" else bytes(out))
            if i == n:
                return fields
            out, i = bytearray(), i + 1
            start = i
            continue
        c, i = line[i], i + 1
        if c != 0x5C:
            out.append(c)
            continue
        if i == n:
            raise BadInput("backslash at end of line")
        c, i = line[i], i + 1
        if c in _SIMPLE:
            out.append(_SIMPLE[c])
        elif c in _OCT:                 # \N, \NN or \NNN, octal
            val, k = c - 48, 1
            while k < 3 and i < n and line[i] in _OCT:
                val, i, k = val * 8 + line[i] - 48, i + 1, k + 1
            out.append(val & 0xFF)
        elif c == ord("x") and i < n and line[i] in _HEX:   # \xH or \xHH
            j = i + 2 if i + 1 < n and line[i + 1] in _HEX else i + 1
            out.append(int(line[i:j], 16))
            i = j
        else:                           # \\, \x without digits, any other: literal
            out.append(c)


def read_copy(path, columns, convert):
    """Rows of a COPY text file as dicts of str or None, each passed through
    convert(row); errors are reported with the file and line."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines[-1] == b"":                # the newline ending the last row
        lines.pop()
    rows = []
    for lineno, line in enumerate(lines, 1):
        if line.endswith(b"\r"):        # CRLF line ends; a data CR is escaped
            line = line[:-1]
        if line == b"\\.":              # end-of-data marker
            break
        try:
            fields = split_copy_line(line)
            if len(fields) != len(columns):
                raise BadInput(f"{len(fields)} columns, expected {len(columns)}")
            row = dict(zip(columns, (None if x is None else x.decode("utf-8")
                                     for x in fields)))
            rows.append(convert(row))
        except (BadInput, UnicodeDecodeError) as e:
            raise BadInput(f"{path}:{lineno}: {e}") from None
    return rows


# --- column values ----------------------------------------------------------
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TS = re.compile(r"([0-9]{4,})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
                 r"(?:\.([0-9]{1,6}))?([+-])([0-9]{2})(?::([0-9]{2})(?::([0-9]{2}))?)?")


def check(pattern, text, col, what):
    if not re.fullmatch(pattern, text):
        raise BadInput(f"{col} {text!r} is not {what}")
    return text


def parse_uuid(text, col):
    # The hash covers PostgreSQL's own output form, so accept only that form.
    return check(_UUID, text, col, "a lowercase uuid")


def parse_int(text, col):
    # a regex first: int() alone would also take "+1", " 1" and "1_0"
    return int(check(r"-?[0-9]+", text, col, "an integer"))


def parse_bytea(text, col):
    return bytes.fromhex(check(r"\\x(?:[0-9a-fA-F]{2})*", text, col,
                               "bytea hex output (set bytea_output = hex)")[2:])


def days_from_civil(y, m, d):
    """Days from 1970-01-01 to a proleptic Gregorian date, integers only
    (H. Hinnant's algorithm; works for any year, unlike datetime)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def parse_at(text):
    """ISO DateStyle timestamptz text -> exact microseconds since the epoch."""
    if text.endswith(" BC") or text in ("infinity", "-infinity"):
        raise BadInput(f"timestamp {text!r} (BC or infinite) is not supported")
    m = _TS.fullmatch(text)
    if not m:
        raise BadInput(f"timestamp {text!r} is not ISO DateStyle output")
    y, mo, d, h, mi, s = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    mdays = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if not (y >= 1 and 1 <= mo <= 12 and 1 <= d <= mdays[mo - 1]
            and h < 24 and mi < 60 and s < 60):
        raise BadInput(f"timestamp {text!r} is out of range")
    frac = int((m.group(7) or "").ljust(6, "0"))   # ".5" is 500000 us
    off = int(m.group(9)) * 3600 + int(m.group(10) or 0) * 60 + int(m.group(11) or 0)
    if m.group(8) == "-":
        off = -off
    local = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + s
    return (local - off) * 1_000_000 + frac       # local time = UTC + offset


# --- loading ----------------------------------------------------------------
def event_row(r):
    for col in EVENT_COLUMNS:
        if r[col] is None and col not in NULLABLE:
            raise BadInput(f"{col} is NULL")
    parse_uuid(r["tenant_id"], "tenant_id")
    if r["actor_agent"] is not None:
        parse_uuid(r["actor_agent"], "actor_agent")
    r["seq"], r["v"] = parse_int(r["seq"], "seq"), parse_int(r["v"], "v")
    r["at_us"] = parse_at(r["at"])
    r["prev_hash"] = parse_bytea(r["prev_hash"], "prev_hash")
    r["hash"] = parse_bytea(r["hash"], "hash")
    return r


def anchor_row(r):
    # pruned_at takes no part in verification, so it is not parsed.
    for col in ("tenant_id", "seq", "prev_hash"):
        if r[col] is None:
            raise BadInput(f"{col} is NULL")
    return (parse_uuid(r["tenant_id"], "tenant_id"), parse_int(r["seq"], "seq"),
            parse_bytea(r["prev_hash"], "prev_hash"))


def load(events_path, anchors_path):
    """Event rows grouped by tenant (file order), anchors by tenant."""
    tenants, anchors = {}, {}
    for r in read_copy(events_path, EVENT_COLUMNS, event_row):
        tenants.setdefault(r["tenant_id"], []).append(r)
    if anchors_path is not None:
        for t, seq, prev in read_copy(anchors_path, ANCHOR_COLUMNS, anchor_row):
            if t in anchors:            # primary key: impossible in a real dump
                raise BadInput(f"{anchors_path}: second anchor for tenant {t}")
            anchors[t] = (seq, prev)
    return tenants, anchors


# --- the chain --------------------------------------------------------------
def F(text):
    """One field: 0x00 for NULL, else 0x01, 4-byte big-endian length, UTF-8."""
    if text is None:
        return b"\x00"
    b = text.encode("utf-8")
    return b"\x01" + len(b).to_bytes(4, "big") + b


def row_hash(r):
    texts = (r["tenant_id"], str(r["seq"]), str(r["at_us"]), r["actor_agent"],
             r["actor_role"], r["actor_act"], r["action"], r["resource"],
             r["resource_key"], r["result"], r["client_addr"], r["trace_id"],
             r["detail"])
    return hashlib.sha256(DOMAIN + b"".join(F(t) for t in texts)
                          + r["prev_hash"]).digest()


def prune_records(row, anchor):
    """Does this 'audit.prune' row's detail name exactly this anchor?"""
    if row is None:
        return False
    try:
        d = json.loads(row["detail"])
    except ValueError:
        return False
    seq, prev = anchor
    # type() rather than isinstance(): true and 6.0 must not pass as 1 or 6.
    return (isinstance(d, dict) and type(d.get("first_kept_seq")) is int
            and d["first_kept_seq"] == seq and d.get("anchor_hash") == prev.hex())


def verify_tenant(rows, anchor):
    """Apply the spec's rules; returns (rows_checked, first_bad_seq, reason)."""
    rows = sorted(rows, key=lambda r: r["seq"])
    exp_seq, exp_prev = anchor if anchor else (1, ZERO_HASH)
    last_seq, last_prune = None, None
    for n, r in enumerate(rows, 1):
        seq = r["seq"]
        if seq == last_seq:             # not in the spec's rules: see the brief
            return n, seq, f"row {seq} appears more than once"
        if seq < exp_seq:
            return n, seq, "row lies before the retained history"
        if seq > exp_seq:
            return n, exp_seq, f"row {exp_seq} is missing"
        if r["v"] != 1:
            return n, seq, "unknown encoding version"
        if r["prev_hash"] != exp_prev:
            if anchor and seq == anchor[0]:
                return n, seq, "prev_hash does not match the anchor"
            return n, seq, f"prev_hash does not match the hash of row {seq - 1}"
        if row_hash(r) != r["hash"]:
            return n, seq, "hash does not match the row"
        exp_seq, exp_prev, last_seq = seq + 1, r["hash"], seq
        if r["action"] == "audit.prune":
            last_prune = r
    if anchor and not prune_records(last_prune, anchor):
        return (len(rows), anchor[0],
                f"history before row {anchor[0]} was removed without a recorded prune")
    return len(rows), None, None


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: verify_chain.py EVENTS_FILE [ANCHORS_FILE]", file=sys.stderr)
        return 2
    try:
        events, anchors = load(argv[1], argv[2] if len(argv) == 3 else None)
    except (BadInput, OSError) as e:
        print(f"verify_chain: {e}", file=sys.stderr)
        return 2
    status = 0
    # A tenant with an anchor but no rows left is reported too (it fails).
    for tenant in sorted(events.keys() | anchors.keys()):
        checked, bad, reason = verify_tenant(events.get(tenant, []), anchors.get(tenant))
        if bad is not None:
            status = 1
        print("\t".join((tenant, "t" if bad is None else "f", str(checked),
                         "" if bad is None else str(bad), reason or "")))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
