// Verifying authgate's X-Auth-Assertion in a Node.js upstream (jose).
//
// A runnable server: `node verify-assertion.mjs PORT`. It answers 200 with
// the verified claims, or 401 when the assertion is missing or does not
// verify. Settings from the environment:
//   AUTHGATE_JWKS_URL   the gateway's /.well-known/jwks.json
//   AUTHGATE_AUDIENCE   the `aud` this upstream expects
//   AUTHGATE_ISSUER     the gateway's jwt.issuer (default "authgate")
// Needs `npm install jose`.
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const jwks = createRemoteJWKSet(new URL(process.env.AUTHGATE_JWKS_URL));
const audience = process.env.AUTHGATE_AUDIENCE;
const issuer = process.env.AUTHGATE_ISSUER ?? 'authgate';

async function verify(req) {
  const token = req.headers['x-auth-assertion'];
  if (!token) throw new Error('no X-Auth-Assertion');
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    typ: 'authgate-assertion+jwt', // never a login token signed by the same key
    algorithms: ['ES256', 'EdDSA', 'RS256'], // never HS256
    requiredClaims: ['iss', 'sub', 'aud', 'iat', 'exp'],
  });
  // With bind = "request" the assertion names this request only.
  if (payload.htm !== undefined) {
    const path = req.url.split('?')[0];
    if (payload.htm !== req.method) throw new Error('assertion for another method');
    if (payload.htu !== path) throw new Error('assertion for another path');
    if (payload.jti !== req.headers['x-request-id']) throw new Error('assertion for another request');
  }
  return payload;
}

http
  .createServer(async (req, res) => {
    let status = 200;
    let body;
    try {
      body = { verified: true, claims: await verify(req) };
    } catch (err) {
      status = 401;
      body = { verified: false, error: String(err.message ?? err) };
    }
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body));
  })
  .listen(Number(process.argv[2]), '127.0.0.1');
