"""Tests for verify_chain.py, the independent audit chain verifier.

The chains are built here by a second encoder written from the spec
(/tmp/spec/audit-spec.md, "Hash encoding, version 1"), written out in
PostgreSQL COPY text format, and fed to verify_chain.py as a subprocess,
exactly as it is used against a real dump.  Standard library only.

Run from the repository root, either of:
    python3 test/audit/test_verify_chain.py
    python3 -m unittest discover -s test/audit -p 'test_*.py'
("python3 -m unittest test/audit/test_verify_chain.py" does not work while
test/ has no __init__.py: the name "test" resolves to the standard
library's own regression-test package.)
"""
import datetime
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
VERIFIER = os.path.join(HERE, "verify_chain.py")
sys.path.insert(0, HERE)
import verify_chain  # noqa: E402  (only for the parser unit tests)

ZERO = bytes(32)
T1 = "0a1b2c3d-0000-4000-8000-000000000001"
T2 = "ffeeddcc-0000-4000-8000-000000000002"
AGENT = "5f0c2b4e-9a61-4c3d-8e2f-7b1a0c9d8e7f"
COLUMNS = ("tenant_id", "seq", "v", "at", "actor_agent", "actor_role",
           "actor_act", "action", "resource", "resource_key", "result",
           "client_addr", "trace_id", "detail", "prev_hash", "hash")
EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


# --- a second encoder, from the spec ---------------------------------------
def spec_field(value):
    if value is None:
        return b"\x00"
    b = value.encode("utf-8")
    return b"\x01" + struct.pack(">I", len(b)) + b


def spec_hash(row):
    parts = [b"agentidp-audit-v1\n"]
    for col in COLUMNS[:14]:
        if col == "v":                  # v is not hashed; the domain string is
            continue
        value = str(row["at_us"]) if col == "at" else row[col]
        parts.append(spec_field(str(value) if col == "seq" else value))
    parts.append(row["prev_hash"])
    return hashlib.sha256(b"".join(parts)).digest()


def seal(rows, prev=ZERO):
    """Chain the rows in list order: set prev_hash and hash of each."""
    for row in rows:
        row["prev_hash"] = prev
        row["hash"] = prev = spec_hash(row)
    return rows


# --- writing COPY text like the server does --------------------------------
def fmt_at(us, off):
    """timestamptz output, DateStyle ISO, in a zone 'off' seconds east of UTC."""
    days, rem = divmod(us + off * 1_000_000, 86_400_000_000)
    d = datetime.date.fromordinal(days + EPOCH_ORDINAL)
    secs, frac = divmod(rem, 1_000_000)
    text = "%04d-%02d-%02d %02d:%02d:%02d" % (d.year, d.month, d.day, secs // 3600,
                                               secs // 60 % 60, secs % 60)
    if frac:
        text += "." + ("%06d" % frac).rstrip("0")
    h, rest = divmod(abs(off), 3600)
    text += "%s%02d" % ("-" if off < 0 else "+", h)
    if rest:
        text += ":%02d" % (rest // 60)
    if rest % 60:
        text += ":%02d" % (rest % 60)
    return text


ESC = {0x5C: b"\\\\", 8: b"\\b", 12: b"\\f", 10: b"\\n", 13: b"\\r", 9: b"\\t", 11: b"\\v"}


def copy_escape(text, non_ascii="raw"):
    """COPY text escaping; non_ascii 'octal'/'hex' exercises the other escapes."""
    if text is None:
        return b"\\N"
    out = bytearray()
    for byte in text.encode("utf-8"):
        if byte in ESC:
            out += ESC[byte]
        elif byte >= 0x80 and non_ascii == "octal":
            out += b"\\%03o" % byte
        elif byte >= 0x80 and non_ascii == "hex":
            out += b"\\x%02x" % byte
        else:
            out.append(byte)
    return bytes(out)


def copy_line(row):
    fields = []
    for col in COLUMNS:
        if col == "at":
            value = fmt_at(row["at_us"], row["at_off"])
        elif col in ("prev_hash", "hash"):
            value = "\\x" + row[col].hex()
        elif col in ("seq", "v"):
            value = str(row[col])
        else:
            value = row[col]
        fields.append(copy_escape(value, row.get("non_ascii", "raw")))
    return b"\t".join(fields) + b"\n"


# --- chains ------------------------------------------------------------------
BASE_US = 1_795_625_677_123_456           # 2026-11-25 16:54:37.123456 UTC


def make_rows(tenant, first, last):
    """Rows seq first..last with varied content: escapes, NULLs, zones."""
    rows = []
    for seq in range(first, last + 1):
        k = seq % 6
        rows.append({
            "tenant_id": tenant, "seq": seq, "v": 1,
            "at_us": (BASE_US + seq * 1_000_000, BASE_US // 1_000_000 * 1_000_000,
                      BASE_US + 500_000 - 123_456, BASE_US, -62_135_500_000_000_000,
                      253_402_200_000_000_001)[k],
            "at_off": (0, 7200, -19800, 20730, -18000, 3600)[k],   # 20730 = +05:45:30
            "actor_agent": AGENT if k % 2 else None,
            "actor_role": ("app", "odd\trole\\x", "rôle\nzwei", "", "app", "app")[k],
            "actor_act": '{"sub":"%s","act":{"sub":"u"}}' % AGENT if k == 1 else None,
            "action": ("insert", "update", "delete")[k % 3],
            "resource": None if k == 5 else "agentidp.agents",
            "resource_key": (None if k == 5 else
                             '{"tenant_id":"%s","agent_id":"%s"}' % (tenant, AGENT)),
            "result": "success",
            "client_addr": (None, "127.0.0.1", "2001:db8::1", "::1", "10.0.0.0/8",
                            "::ffff:192.0.2.1")[k],
            "trace_id": (None, "", "trace-%d" % seq)[k % 3],
            "detail": ('{"new":{"name":"a\\tb \\\\ c","n":%d}}' % seq if k % 2 else
                       '{"old":\t{"x":1},\n "new":{"x":"\u00e9\\n"}}'),
            "non_ascii": ("raw", "octal", "hex")[seq % 3],
        })
    return rows


def prune(rows, first_kept, deleted, **detail):
    """What agentidp.prune_audit leaves: the kept rows, the anchor, a prune row
    (detail overrides the prune row's detail keys, to forge it)."""
    kept = [r for r in rows if r["seq"] >= first_kept]
    anchor = (kept[0]["tenant_id"], first_kept, kept[0]["prev_hash"])
    row = dict(kept[-1], seq=kept[-1]["seq"] + 1, action="audit.prune",
               resource="agentidp.audit_events", resource_key=None, actor_act=None,
               detail=json.dumps({"before": "2026-11-25 00:00:00+00",
                                  "first_kept_seq": first_kept,
                                  "anchor_hash": anchor[2].hex(),
                                  "rows_deleted": deleted, **detail}))
    seal([row], kept[-1]["hash"])
    return kept + [row], anchor


def anchor_line(anchor):
    tenant, seq, prev = anchor
    return ("%s\t%d\t\\\\x%s\t2026-11-25 10:00:00+00\n" % (tenant, seq, prev.hex())).encode()


class VerifierRun(unittest.TestCase):
    def run_verifier(self, rows, anchors=None, raw=None, shuffle=True):
        """Write rows (in random order, as COPY may) and run verify_chain.py."""
        rows = list(rows)
        if shuffle:
            random.Random(7).shuffle(rows)
        with tempfile.TemporaryDirectory() as d:
            events = os.path.join(d, "events.copy")
            with open(events, "wb") as f:
                f.write(raw if raw is not None else b"".join(copy_line(r) for r in rows))
            args = [sys.executable, VERIFIER, events]
            if anchors is not None:
                args.append(os.path.join(d, "anchors.copy"))
                with open(args[-1], "wb") as f:
                    f.write(b"".join(anchor_line(a) for a in anchors))
            p = subprocess.run(args, capture_output=True, text=True)
        return p.returncode, [line.split("\t") for line in p.stdout.splitlines()], p.stderr

    def assertVerdict(self, rows, expected, anchors=None):
        """expected: list of (tenant, ok, checked, first_bad, reason)."""
        rc, out, err = self.run_verifier(rows, anchors)
        self.assertEqual(out, [[t, ok, str(n), str(bad or ""), reason]
                               for t, ok, n, bad, reason in expected], err)
        self.assertEqual(rc, 0 if all(e[1] == "t" for e in expected) else 1)

    def test_good_chain(self):
        rows = seal(make_rows(T1, 1, 12))
        self.assertVerdict(rows, [(T1, "t", 12, None, "")])

    def test_edited_field(self):
        for col, value in (("detail", '{"new":{}}'), ("actor_role", "app "),
                           ("trace_id", None), ("at_us", BASE_US + 1),
                           ("client_addr", "2001:db8::2")):
            rows = seal(make_rows(T1, 1, 8))
            rows[4][col] = value                         # seq 5
            with self.subTest(col=col):
                self.assertVerdict(rows, [(T1, "f", 5, 5, "hash does not match the row")])

    def test_deleted_middle_row(self):
        rows = seal(make_rows(T1, 1, 8))
        del rows[3]                                      # seq 4
        self.assertVerdict(rows, [(T1, "f", 4, 4, "row 4 is missing")])

    def test_edit_with_recomputed_hash(self):
        rows = seal(make_rows(T1, 1, 8))
        rows[2]["result"] = "denied"                     # seq 3, then re-hash it
        rows[2]["hash"] = spec_hash(rows[2])
        self.assertVerdict(rows, [(T1, "f", 4, 4, "prev_hash does not match the hash of row 3")])

    def test_swapped_seqs(self):
        rows = seal(make_rows(T1, 1, 8))
        rows[3]["seq"], rows[5]["seq"] = 6, 4            # rows 4 and 6 trade places
        self.assertVerdict(rows, [(T1, "f", 4, 4, "prev_hash does not match the hash of row 3")])

    def test_wrong_version(self):
        rows = seal(make_rows(T1, 1, 4))
        rows[1]["v"] = 2
        self.assertVerdict(rows, [(T1, "f", 2, 2, "unknown encoding version")])

    def test_first_row_prev_hash(self):
        # literal spec text for seq 1 without an anchor: "... of row 0"
        rows = seal(make_rows(T1, 1, 3), prev=b"\x01" * 32)
        self.assertVerdict(rows, [(T1, "f", 1, 1, "prev_hash does not match the hash of row 0")])

    def test_pruned_chain(self):
        rows, anchor = prune(seal(make_rows(T1, 1, 10)), 6, 5)
        self.assertVerdict(rows, [(T1, "t", 6, None, "")], [anchor])

    def test_anchor_without_prune_row(self):
        rows = seal(make_rows(T1, 1, 10))[5:]            # seq 6..10, no prune row
        anchor = (T1, 6, rows[0]["prev_hash"])
        reason = "history before row 6 was removed without a recorded prune"
        self.assertVerdict(rows, [(T1, "f", 5, 6, reason)], [anchor])

    def test_prune_row_names_other_anchor(self):
        rows, (t, s, prev) = prune(seal(make_rows(T1, 1, 10)), 6, 5)
        # rows 6.. removed as well, behind the log's back, with a forged anchor
        rows = rows[1:]
        anchor = (t, 7, rows[0]["prev_hash"])
        reason = "history before row 7 was removed without a recorded prune"
        self.assertVerdict(rows, [(T1, "f", 5, 7, reason)], [anchor])

    def test_prune_row_detail_mismatch(self):
        reason = "history before row 6 was removed without a recorded prune"
        for forged in ({"first_kept_seq": 5}, {"first_kept_seq": "6"},
                       {"first_kept_seq": 6.0}, {"anchor_hash": "00" * 32}):
            rows, anchor = prune(seal(make_rows(T1, 1, 10)), 6, 5, **forged)
            with self.subTest(forged=forged):
                self.assertVerdict(rows, [(T1, "f", 6, 6, reason)], [anchor])
        # only the last prune row counts: an older, matching one does not help
        rows, anchor = prune(seal(make_rows(T1, 1, 10)), 6, 5)
        later, _ = prune(rows, 6, 0, first_kept_seq=11)
        self.assertVerdict(later, [(T1, "f", 7, 6, reason)], [anchor])

    def test_rows_around_anchor(self):
        rows, anchor = prune(seal(make_rows(T1, 1, 10)), 6, 5)
        self.assertVerdict([rows[0]], [(T1, "f", 1, 6, "prev_hash does not match the anchor")],
                           [(T1, 6, b"\x02" * 32)])
        older = seal(make_rows(T1, 1, 10))[4]            # seq 5, still present
        self.assertVerdict([older] + rows,
                           [(T1, "f", 1, 5, "row lies before the retained history")], [anchor])

    def test_two_tenants(self):
        good = seal(make_rows(T2, 1, 5))
        bad = seal(make_rows(T1, 1, 5))
        bad[1]["detail"] = "{}"
        # sorted by tenant_id whatever the input order
        self.assertVerdict(good + bad, [(T1, "f", 2, 2, "hash does not match the row"),
                                        (T2, "t", 5, None, "")])

    def test_duplicate_row(self):
        rows = seal(make_rows(T1, 1, 4))
        rows.insert(2, dict(rows[1]))
        rc, out, _ = self.run_verifier(rows, shuffle=False)
        self.assertEqual((rc, out), (1, [[T1, "f", "3", "2", "row 2 appears more than once"]]))

    def test_bad_input(self):
        fields = copy_line(seal(make_rows(T1, 1, 1))[0])[:-1].split(b"\t")

        def edited(i, value):
            return b"\t".join(fields[:i] + [value] + fields[i + 1:]) + b"\n"
        for raw in (b"\t".join(fields[1:]) + b"\n",       # a column short
                    edited(2, b"\\N"),                      # v NULL
                    edited(3, fields[3] + b" BC"),
                    edited(3, b"infinity"),
                    edited(14, b"\\\\000"),                 # bytea escape format
                    edited(0, T1.upper().encode()),         # not uuid output
                    edited(1, b"+1"),
                    edited(13, b"caf\\303"),                 # not UTF-8
                    b"\t".join(fields) + b"\\\n"):          # trailing backslash
            with self.subTest(raw=raw):
                rc, out, err = self.run_verifier([], raw=raw)
                self.assertEqual((rc, out), (2, []))
                self.assertIn("events.copy:1:", err)
        p = subprocess.run([sys.executable, VERIFIER], capture_output=True)
        self.assertEqual(p.returncode, 2)

    def test_end_marker_and_empty(self):
        rows = seal(make_rows(T1, 1, 3))
        raw = b"".join(copy_line(r) for r in rows) + b"\\.\n"
        self.assertEqual(self.run_verifier([], raw=raw)[:2], (0, [[T1, "t", "3", "", ""]]))
        self.assertEqual(self.run_verifier([], raw=b"")[:2], (0, []))


class Parsers(unittest.TestCase):
    def test_copy_escapes(self):
        split = verify_chain.split_copy_line
        self.assertEqual(split(b"a\\tb\tc"), [b"a\tb", b"c"])
        self.assertEqual(split(b"N\t\\N\t"), [b"N", None, b""])   # NULL only as raw \N
        self.assertEqual(split(b"\\N\t\\\\N\tx\\Ny\t"), [None, b"\\N", b"xNy", b""])
        self.assertEqual(split(b"\\303\\251|\\1|\\0123|\\777"), [b"\xc3\xa9|\x01|\n3|\xff"])
        self.assertEqual(split(b"\\xc3\\xA9|\\x4142|\\xg|\\x"), [b"\xc3\xa9|A42|xg|x"])
        self.assertEqual(split(b"\\b\\f\\n\\r\\v\\\\\\q"), [b"\b\f\n\r\v\\q"])
        self.assertEqual(split(b"a\\\tb"), [b"a\tb"])   # escaped delimiter
        with self.assertRaises(verify_chain.BadInput):
            split(b"abc\\")

    def test_timestamps(self):
        parse = verify_chain.parse_at
        for text, us in (("1970-01-01 00:00:00+00", 0),
                         ("1969-12-31 23:59:59.999999+00", -1),
                         ("2000-01-01 00:00:00+00", 946_684_800_000_000),
                         ("2026-11-25 16:54:37.123456+00", 1_795_625_677_123_456),
                         ("2026-11-25 18:54:37+02", 1_795_625_677_000_000),
                         ("2026-11-25 11:24:37.5-05:30", 1_795_625_677_500_000),
                         ("1970-01-01 05:45:30+05:45:30", 0),
                         ("0001-01-01 00:00:00+00", -62_135_596_800_000_000),
                         ("9999-12-31 23:59:59.999999+00", 253_402_300_799_999_999),
                         ("2024-02-29 12:00:00.05+14", 1_709_157_600_050_000)):
            self.assertEqual(parse(text), us, text)
        rnd = random.Random(1)
        for _ in range(2000):
            us = rnd.randrange(-62_135_000_000_000_000, 253_402_000_000_000_000)
            off = rnd.choice((0, 3600, -12600, 20700, 20730, -17762, 50400))
            self.assertEqual(parse(fmt_at(us, off)), us)
        for bad in ("infinity", "-infinity", "0044-03-15 12:00:00+00 BC",
                    "2023-02-29 00:00:00+00", "2026-11-25T16:54:37+00",
                    "2026-11-25 16:54:37.1234567+00", "2026-11-25 24:00:00+00",
                    "2026-11-25 16:54:37"):
            with self.assertRaises(verify_chain.BadInput, msg=bad):
                parse(bad)


if __name__ == "__main__":
    unittest.main()
