"""Verifying authgate's X-Auth-Assertion in a Python upstream (PyJWT).

A runnable WSGI app: `python verify_assertion.py PORT`. It answers 200 with
the verified claims, or 401 when the assertion is missing or does not
verify. Settings from the environment:
  AUTHGATE_JWKS_URL   the gateway's /.well-known/jwks.json
  AUTHGATE_AUDIENCE   the `aud` this upstream expects
  AUTHGATE_ISSUER     the gateway's jwt.issuer (default "authgate")
Needs `pip install "pyjwt[crypto]"`.
"""

import json
import os
import sys
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, make_server

import jwt

JWKS = jwt.PyJWKClient(os.environ["AUTHGATE_JWKS_URL"])
AUDIENCE = os.environ["AUTHGATE_AUDIENCE"]
ISSUER = os.environ.get("AUTHGATE_ISSUER", "authgate")
ASSERTION_TYPE = "authgate-assertion+jwt"


def verify(environ):
    token = environ.get("HTTP_X_AUTH_ASSERTION")
    if not token:
        raise jwt.InvalidTokenError("no X-Auth-Assertion")
    # The type tells an assertion from a login token signed by the same key.
    if jwt.get_unverified_header(token).get("typ") != ASSERTION_TYPE:
        raise jwt.InvalidTokenError("not an authgate assertion")
    key = JWKS.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256", "EdDSA", "RS256"],  # never HS256
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "iat", "exp"]},
    )
    # With bind = "request" the assertion names this request only.
    if "htm" in claims:
        if claims["htm"] != environ["REQUEST_METHOD"]:
            raise jwt.InvalidTokenError("assertion for another method")
        if unquote(claims["htu"]) != environ["PATH_INFO"]:
            raise jwt.InvalidTokenError("assertion for another path")
        if claims.get("jti") != environ.get("HTTP_X_REQUEST_ID"):
            raise jwt.InvalidTokenError("assertion for another request")
    return claims


def app(environ, start_response):
    try:
        status, body = "200 OK", {"verified": True, "claims": verify(environ)}
    except jwt.PyJWTError as err:
        status, body = "401 Unauthorized", {"verified": False, "error": str(err)}
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=QuietHandler).serve_forever()
