"""A real Flask app behind Werkzeug's ProxyFix, trusting one proxy for every
X-Forwarded-* header it knows (For, Proto, Host, Port, Prefix), as the
Werkzeug docs set it up behind one reverse proxy. It answers with what it
built from them (its URL, host, script root, client address) and the cookies
Werkzeug parsed. Serves on the port given as the first argument.
"""
import logging
import sys

from flask import Flask, jsonify, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import make_server

logging.getLogger("werkzeug").setLevel(logging.ERROR)

app = Flask(__name__)
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)


@app.route("/", defaults={"rest": ""})
@app.route("/<path:rest>")
def seen(rest):
    return jsonify(
        url=request.url,
        host=request.host,
        script_root=request.script_root,
        remote_addr=request.remote_addr,
        link=url_for("seen", rest="next", _external=True),
        cookies=dict(request.cookies),
        user=request.headers.get("X-Auth-User"),
    )


if __name__ == "__main__":
    server = make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True)
    server.serve_forever()
