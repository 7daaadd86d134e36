"""A real Flask app (Werkzeug's server) for the differential path test.

Prints "PORT <n>" once listening.
"""
import logging
import sys

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

# One line per request on stderr would drown the test output.
logging.getLogger("werkzeug").setLevel(logging.ERROR)

app = Flask(__name__)
app.url_map.strict_slashes = False


def answer(handler):
    response = jsonify(server="flask", handler=handler, url=request.full_path)
    response.headers["X-Upstream-Handler"] = handler
    return response


@app.route("/admin", defaults={"rest": ""})
@app.route("/admin/<path:rest>")
def admin(rest):
    return answer("admin")


@app.route("/public", defaults={"rest": ""})
@app.route("/public/<path:rest>")
def public(rest):
    return answer("public")


@app.route("/", defaults={"rest": ""})
@app.route("/<path:rest>")
def root(rest):
    return answer("root")


if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"PORT {server.port}", flush=True)
    sys.stdout.flush()
    server.serve_forever()
