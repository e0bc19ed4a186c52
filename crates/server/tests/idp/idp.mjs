// A test OpenID provider (npm oidc-provider) for Berth's login tests.
// Usage: node idp.mjs   with IDP_REDIRECT_URI set to Berth's callback.
// Prints {"issuer": "..."} as its first line of output, then serves.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const USERS = {
  alice: { password: 'alice-pw', groups: ['artifact-workloads'] },
  root: { password: 'root-pw', groups: ['admins', 'artifact-workloads'] },
  carol: { password: 'carol-pw', groups: [] },
  // Claims alice's address without the provider having verified it.
  mallory: { password: 'mallory-pw', groups: [], email: 'alice@example.test', verified: false },
};

const server = http.createServer();
await new Promise((done) => server.listen(0, '127.0.0.1', done));
const issuer = `http://127.0.0.1:${server.address().port}`;
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'berth-test', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'berth',
    client_secret: 'berth-test-secret',
    redirect_uris: [process.env.IDP_REDIRECT_URI],
    response_types: ['code'],
    grant_types: ['authorization_code'],
  }],
  jwks: { keys: [signing] },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid'],
  ttl: { AccessToken: 600, AuthorizationCode: 120, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const user = USERS[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub, name: sub, preferred_username: sub,
          email: user.email ?? `${sub}@example.test`, email_verified: user.verified ?? true,
          groups: user.groups,
        };
      },
    };
  },
});

// Grants whatever the client asked for: consent is not what is under test.
async function grantAll(accountId, params, existing) {
  const grant = existing ? await provider.Grant.find(existing) : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope ?? 'openid'));
  return grant.save();
}

function loginPage(uid, message) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Example SSO</title></head><body>
<h1>Example SSO</h1><p id="message">${message}</p>
<form method="post" action="/interaction/${uid}/login">
<label>User <input id="login" name="login" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button></form></body></html>`;
}

async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

const oidc = provider.callback();
server.on('request', async (req, res) => {
  const match = /^\/interaction\/([^/?]+)(\/login)?/.exec(req.url);
  if (!match) return oidc(req, res);
  res.setHeader('Cache-Control', 'no-store');
  try {
    const { uid, prompt, params, session, grantId } = await provider.interactionDetails(req, res);
    if (req.method === 'GET' && prompt.name === 'login') {
      res.setHeader('Content-Type', 'text/html');
      return res.end(loginPage(uid, ''));
    }
    if (req.method === 'GET' && prompt.name === 'consent') {
      const id = await grantAll(session.accountId, params, grantId);
      return provider.interactionFinished(req, res, { consent: grantId ? {} : { grantId: id } }, { mergeWithLastSubmission: true });
    }
    if (req.method === 'POST' && match[2]) {
      const { login, password } = await form(req);
      const user = USERS[login];
      if (!user || user.password !== password) {
        res.statusCode = 401;
        res.setHeader('Content-Type', 'text/html');
        return res.end(loginPage(uid, 'Invalid user or password.'));
      }
      const id = await grantAll(login, params);
      return provider.interactionFinished(req, res, { login: { accountId: login }, consent: { grantId: id } }, { mergeWithLastSubmission: false });
    }
    res.statusCode = 400;
    res.end('unexpected interaction');
  } catch (err) {
    res.statusCode = 400;
    res.end(String(err));
  }
});

console.log(JSON.stringify({ issuer }));
