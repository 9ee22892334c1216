// A real OpenID Provider for Blocks' SSO tests: panva's oidc-provider (OpenID-certified), set up
// from a JSON file named on the command line (`node op.js config.json`):
//
//   {
//     "port": 18601,                          // issuer http://127.0.0.1:<port>
//     "clients": [{"client_id": "blocks", "client_secret": "...",      // none: a public client
//                  "redirect_uris": ["https://blocks.test/v1/sso/.../oidc/callback"],
//                  "token_endpoint_auth_method": "client_secret_basic",
//                  "id_token_patch": {"aud": "someone-else"}}],   // test knob, see below
//     "users": {"alice": {"email": "...", "email_verified": true, "name": "Alice",
//                         "groups": ["eng"], "amr": ["pwd", "mfa"], "acr": "..."}},
//     "ttl": {"IdToken": 3600, "AccessToken": 3600}
//   }
//
// PKCE is required of every client. There are no login pages: /interaction/:uid signs in the
// user named by the authorization request's `login_hint` (the first user without one) with
// that user's `amr`/`acr`, and grants what was asked, so an HTTP client following redirects
// goes from the authorization endpoint to the client's redirect_uri with a code.
//
// `id_token_patch` (a client's test knob) re-signs that client's id_tokens, with the OP's own
// key, after changing the claims it names: a token that is genuine but for another audience,
// or expired (`"exp": {"from_now": -3600}`). `"sign_with": "stranger"` signs with a key the JWKS
// does not hold instead. Prints one JSON line {"ready": true, "issuer": ...} once listening.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const users = config.users ?? {};
const LOGIN_CLAIMS = new Set(['amr', 'acr']);

async function signingKey() {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { key: privateKey, jwk: { ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' } };
}

const own = await signingKey();
const stranger = await signingKey();

const patches = new Map();
const clients = (config.clients ?? []).map(({ id_token_patch: patch, ...client }) => {
  if (patch) patches.set(client.client_id, patch);
  return {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: client.client_secret ? 'client_secret_basic' : 'none',
    ...client,
  };
});

const acrValues = [...new Set(Object.values(users).map((user) => user.acr).filter(Boolean))];

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [own.jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  acrValues,
  claims: {
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups', 'realm_access'],
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { IdToken: 3600, AccessToken: 3600, ...(config.ttl ?? {}) },
  async findAccount(_ctx, accountId) {
    const user = users[accountId];
    if (!user) return undefined;
    const claims = Object.fromEntries(
      Object.entries(user).filter(([name]) => !LOGIN_CLAIMS.has(name)),
    );
    return { accountId, claims: async () => ({ sub: accountId, ...claims }) };
  },
});

function resolve(value) {
  if (value && typeof value === 'object' && 'from_now' in value) {
    return Math.floor(Date.now() / 1000) + value.from_now;
  }
  return value;
}

// The test knob: a client's id_token re-signed with some claims changed.
provider.use(async (ctx, next) => {
  await next();
  const clientId = ctx.oidc?.client?.clientId;
  if (ctx.path !== '/token' || ctx.status !== 200 || !patches.has(clientId)) return;
  const { sign_with: signWith, ...changes } = patches.get(clientId);
  const claims = decodeJwt(ctx.body.id_token);
  for (const [name, value] of Object.entries(changes)) claims[name] = resolve(value);
  const signer = signWith === 'stranger' ? stranger : own;
  ctx.body = {
    ...ctx.body,
    id_token: await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: signer.jwk.kid })
      .sign(signer.key),
  };
});

async function interact(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const accountId = params.login_hint ?? Object.keys(users)[0];
    const user = users[accountId];
    const result = user
      ? { login: { accountId, amr: user.amr, acr: user.acr } }
      : { error: 'access_denied', error_description: `no user ${accountId}` };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const { missingOIDCScope, missingOIDCClaims } = prompt.details;
  if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
  if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, {
    mergeWithLastSubmission: true,
  });
}

const handle = provider.callback();
const server = createServer((req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    handle(req, res);
    return;
  }
  interact(req, res).catch((error) => {
    res.statusCode = 400;
    res.end(`interaction failed: ${error.message}`);
  });
});
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, issuer })}\n`);
});
