"""An ASGI app for hypercorn that records every request it serves.

Each request is appended to the file named by RECORD_FILE as one JSON line:
method, path, HTTP version and headers (names lowercased). It answers 200
with a short text body. Used by tests/upgrades_and_aliases.rs to see what an
h2c-capable upstream received through the gateway.
"""

import json
import os

RECORD_FILE = os.environ["RECORD_FILE"]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    record = {
        "method": scope["method"],
        "path": scope["path"],
        "http_version": scope["http_version"],
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in scope["headers"]
        ],
    }
    with open(RECORD_FILE, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    body = ("served " + scope["path"] + " over HTTP/" + scope["http_version"]).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
