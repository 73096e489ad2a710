// The identity provider the OIDC tests sign in through: oidc-provider (an OpenID Certified implementation) on a
// loopback port, with one client (the dashboard under test), a few accounts in different groups, and a plain
// sign-in form. It prints "listening <issuer>" on stdout once it answers.
//
// Everything comes from the environment the test gives it:
//   PROVIDER_PORT           the port to listen on (127.0.0.1)
//   PROVIDER_ISSUER         the issuer it names in discovery and tokens (default http://127.0.0.1:<port>)
//   PROVIDER_JWKS           its signing keys, a JSON Web Key Set with private keys (the test keeps a copy, to sign
//                           tokens of its own with the same key)
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI   the dashboard's registration
//   ACCOUNTS                JSON {login: {"password": ..., "email": ..., "name": ..., "groups": [...]}}
//   ID_TOKEN_TTL_SECONDS    how long its ID tokens are valid (default 3600)
//   CLOCK_OFFSET_SECONDS    added to its clock, so a test can be handed tokens that expired already
import http from 'node:http';
import { randomBytes } from 'node:crypto';

const offset = Number(process.env.CLOCK_OFFSET_SECONDS || 0) * 1000;
if (offset) {
  const realNow = Date.now;
  Date.now = () => realNow() + offset;
}

const { default: Provider } = await import('oidc-provider');

const port = Number(process.env.PROVIDER_PORT);
const issuer = process.env.PROVIDER_ISSUER || `http://127.0.0.1:${port}`;
const accounts = JSON.parse(process.env.ACCOUNTS || '{}');

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: JSON.parse(process.env.PROVIDER_JWKS),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    IdToken: Number(process.env.ID_TOKEN_TTL_SECONDS || 3600),
    AccessToken: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  async findAccount(ctx, sub) {
    const account = accounts[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: account.email,
          email_verified: true,
          name: account.name,
          preferred_username: sub,
          groups: account.groups,
        };
      },
    };
  },
});

const escape = (text) => String(text).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>`
    + `<link rel="icon" href="data:,"></head><body><h1>${escape(title)}</h1>${body}</body></html>`);
}

function loginForm(res, uid, error) {
  page(res, error ? 401 : 200, 'Test identity provider', `
    ${error ? `<p role="alert">${escape(error)}</p>` : ''}
    <form method="post" action="/interaction/${escape(uid)}/login">
      <label>Login <input name="login" autocomplete="username" required></label>
      <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
      <button type="submit">Continue</button>
    </form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// The company's provider grants its own applications without a consent screen: consent is given at once.
async function grantConsent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, {
    mergeWithLastSubmission: true,
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'Wrong interaction', '');
  if (details.prompt.name === 'consent') return grantConsent(req, res, details);
  if (req.method === 'GET' && !action) return loginForm(res, uid);
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const account = accounts[form.get('login')];
    if (!account || account.password !== form.get('password')) {
      return loginForm(res, uid, 'Unknown login or wrong password.');
    }
    return provider.interactionFinished(req, res, { login: { accountId: form.get('login') } }, {
      mergeWithLastSubmission: false,
    });
  }
  return page(res, 405, 'Not allowed', '');
}

const handle = provider.callback();
const server = http.createServer((req, res) => {
  const match = /^\/interaction\/([\w-]+)(?:\/(\w+))?$/.exec(req.url.split('?')[0]);
  if (!match) return handle(req, res);
  return interaction(req, res, match[1], match[2]).catch((error) => {
    page(res, 400, 'Sign-in failed', `<p>${escape(error.message)}</p>`);
  });
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
