#!/usr/bin/env python3
"""Insert N access keys for one user straight into authgate's SQLite store.

Creating a million keys through `authgate key create` (one process each) is far
too slow, so the rows are written the way the gateway writes them: the key is
`ag_` + 43 base64url characters, the store keeps the lower-case hex SHA-256 of
the key and its first 11 characters. The keys themselves go to KEYS_OUT, one a
line, for the load generator.

usage: seed_keys.py DB USERNAME COUNT KEYS_OUT
"""
import base64
import hashlib
import os
import sqlite3
import sys
import time
import uuid


def main() -> None:
    db, username, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    con = sqlite3.connect(db)
    if con.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone() is None:
        sys.exit(f"seed_keys: user {username!r} not in {db}")
    now = int(time.time())
    expire = now + 365 * 86400
    started = time.monotonic()
    with open(out, "w") as keys_file:

        def rows():
            for i in range(count):
                key = "ag_" + base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
                keys_file.write(key + "\n")
                yield (
                    str(uuid.uuid4()),
                    username,
                    f"bench-{i}",
                    "",
                    hashlib.sha256(key.encode()).hexdigest(),
                    key[:11],
                    expire,
                    now,
                    now,
                )

        con.execute("PRAGMA synchronous = OFF")
        with con:
            con.executemany(
                "INSERT INTO accesskeys (id, username, name, detail, token_hash, token_prefix,"
                " tm_expire, tm_create, tm_update, tm_delete)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                rows(),
            )
    con.close()
    print(f"inserted {count} keys in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
