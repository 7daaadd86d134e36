"""A WSGI app that answers with the request's CGI-style environ as JSON.

Only the `HTTP_*` keys and REMOTE_ADDR are returned: what an application
reads as headers once the server has folded names (`-` and `_` both become
`_`, upper-cased). Served by gunicorn (`--header-map dangerous`) and by the
standard library's wsgiref in tests/upgrades_and_aliases.rs.
"""

import json
import sys


def app(environ, start_response):
    seen = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_") or key == "REMOTE_ADDR"
    }
    seen["PATH_INFO"] = environ.get("PATH_INFO", "")
    body = json.dumps(seen, sort_keys=True).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


if __name__ == "__main__":
    # `python wsgi_environ.py PORT`: the standard library's server, which
    # folds underscores by default.
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=QuietHandler)
    print("listening", flush=True)
    server.serve_forever()
