// A real OpenID Provider for the OIDC sign-in tests: panva's certified
// oidc-provider, configured by a JSON file (argv[2]):
//   { "port": 0, "kid": "key-1", "accounts_file": "...", "clients": [...] }
// Prints `PORT <n>` once it listens.
//
// Sign-in at the provider is a plain HTML form (no password): POST
// /interaction/<uid>/login with `login=<account>`; consent is granted at
// once (loadExistingGrant), as for a first-party client.
//
// Accounts come from `accounts_file`, read at every sign-in:
//   { "alice": { "groups": ["admin"] }, ... }
// The login name is the account's `sub` unless it sets "sub"; "email"
// (default <login>@example.test) and "email_verified" (default true; null
// leaves it out) set those claims, so two accounts can claim one address.
// An account may ask the provider to misbehave on its token response, so
// the gateway's checks meet real, validly signed tokens that are wrong:
//   "misbehave": "aud"     -> ID token for another audience
//                "azp"     -> aud [client, "other"] with azp "other"
//                "expired" -> ID token expired an hour ago
//                "iss"     -> ID token from another issuer
// Those tokens are signed with the provider's own key (served in its JWKS).
import fs from 'node:fs';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const settings = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const port = settings.port || 0;

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: settings.kid, alg: 'RS256', use: 'sig' };

function accounts() {
  try {
    return JSON.parse(fs.readFileSync(settings.accounts_file, 'utf8'));
  } catch {
    return {};
  }
}

const server = (await import('node:http')).createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

const provider = new Provider(issuer, {
  clients: settings.clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: ['authgate-test-cookie-key'] },
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups', 'preferred_username'],
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const account = accounts()[id] || {};
        const claims = {
          sub: account.sub || id,
          email: account.email || `${id}@example.test`,
          email_verified: 'email_verified' in account ? account.email_verified : true,
          name: id,
          preferred_username: id,
          groups: account.groups || [],
        };
        // "email_verified": null leaves the claim out altogether.
        if (claims.email_verified === null) delete claims.email_verified;
        return claims;
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId =
      ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (grant) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
});

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

// The sign-in form and its submission.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/);
  if (!match) return next();
  if (ctx.method === 'GET' && !match[2]) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    ctx.type = 'html';
    ctx.body = `<!doctype html><html><head><title>Test provider sign-in</title></head><body>
<h1>Sign in to the test provider</h1>
<form method="post" action="/interaction/${details.uid}/login">
<label>User <input id="login" name="login" autocomplete="off"></label>
<button id="sign-in" type="submit">Sign in</button>
</form></body></html>`;
    return undefined;
  }
  if (ctx.method === 'POST' && match[2]) {
    const form = await readForm(ctx.req);
    const login = form.get('login') || '';
    const to = await provider.interactionResult(
      ctx.req,
      ctx.res,
      { login: { accountId: login } },
      { mergeWithLastSubmission: false },
    );
    ctx.status = 303;
    ctx.redirect(to);
    return undefined;
  }
  return next();
});

// Misbehaviour on the token response, per account.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path !== '/token' || ctx.status !== 200 || !ctx.body || !ctx.body.id_token) return;
  const claims = jose.decodeJwt(ctx.body.id_token);
  const mode = (Object.entries(accounts()).find(
    ([id, account]) => (account.sub || id) === claims.sub,
  ) || [null, {}])[1].misbehave;
  if (!mode) return;
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'aud') claims.aud = 'someone-else';
  if (mode === 'azp') {
    claims.aud = [claims.aud, 'other'].flat();
    claims.azp = 'other';
  }
  if (mode === 'expired') {
    claims.iat = now - 7200;
    claims.exp = now - 3600;
  }
  if (mode === 'iss') claims.iss = 'http://127.0.0.1:1';
  const key = await jose.importJWK(signingJwk, 'RS256');
  ctx.body = {
    ...ctx.body,
    id_token: await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid, typ: 'JWT' })
      .sign(key),
  };
});

server.on('request', provider.callback());
console.log(`PORT ${actualPort}`);
