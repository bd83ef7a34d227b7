#!/usr/bin/env python3
"""The job `instill import` does, written plainly in Python, for context next to the shared peer.

../shared/bench/bench_sqlite.py times only `executemany` of pre-parsed tuples into a 4-column
table with a rollback journal. This script times what `instill import` does on the same file:
read and parse the JSON, normalise each record (NFKC, lowercase, punctuation removed, whitespace
collapsed), hash it, guess its language, and insert it into instill's own schema
(migrations/sqlite/*.sql) in WAL mode, one transaction. It is a reference point, not a peer:
instill's normalisation and language rules are more detailed than the few lines below.

    python3 scripts/bench_import_python.py --data bench-out/io/synthetic-v2-1000000.json
"""
import argparse
import glob
import hashlib
import json
import os
import re
import resource
import sqlite3
import time
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACES = re.compile(r"\s+")


def normalize(text):
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return SPACES.sub(" ", text).strip()


def lang(text):
    han = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
    latin = sum(1 for c in text if c.isascii() and c.isalpha())
    if han >= latin and han > 0:
        return "zh"
    return "en" if latin > 0 else "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--db", default=os.path.join(ROOT, "bench-out", "io", "python-equivalent.db"))
    args = ap.parse_args()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(args.db + suffix):
            os.remove(args.db + suffix)
    schema = "".join(open(p).read() for p in sorted(glob.glob(os.path.join(ROOT, "migrations", "sqlite", "*.sql"))))
    source = os.path.basename(args.data).split(".")[0]
    t = time.perf_counter()
    con = sqlite3.connect(args.db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(schema)
    with open(args.data, encoding="utf-8") as f:
        records = json.load(f)
    now = int(time.time() * 1000)

    def rows():
        for r in records:
            ins, inp, out = r["instruction"], r.get("input", ""), r["output"]
            key = "\x1f".join(normalize(x) for x in (ins, inp, out, ""))
            digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
            yield (ins, inp, out, lang(ins + inp + out), source, 1, digest, now)

    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO records(instruction, input, output, lang, origin, source, import_id, status, "
        "norm_hash, created_at) VALUES (?, ?, ?, ?, 'imported', ?, ?, 'pending', ?, ?)",
        rows(),
    )
    con.execute("COMMIT")
    con.close()
    wall = time.perf_counter() - t
    print(json.dumps({"records": len(records), "wall_s": round(wall, 3),
                      "records_per_s": round(len(records) / wall, 1),
                      "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
