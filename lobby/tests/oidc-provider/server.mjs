// A real OpenID provider for the lobby's OpenID Connect / OAuth2 login tests:
// panva's oidc-provider (OpenID Certified), in memory, on loopback, with a
// browserless login page and a few test-only control endpoints.
//
//   node server.mjs [--port N]
//
// Binds 127.0.0.1 (port N, or one the OS picks), then prints exactly one line
// on stdout, {"issuer":"http://127.0.0.1:PORT"}, once it is listening; nothing
// else goes to stdout (errors go to stderr). Exits when stdin closes (so a test
// process that dies never leaves it behind) and on SIGTERM / SIGINT.
//
// Clients (PKCE S256 is required of the public ones, oidc-provider's default;
// a confidential client may use it, and then it is checked):
//   rally               public (token_endpoint_auth_method none), native
//   rally-confidential  client_secret_basic, secret rally-confidential-secret-0123456789abcdef
//   rally-other         public, native (an audience that is not ours)
// All are application_type native, so a registered http://127.0.0.1/callback
// also accepts http://127.0.0.1:ANY_PORT/callback (RFC 8252 section 7.3;
// oidc-provider compares loopback redirect URIs without their port).
// Grant types: authorization_code, refresh_token, device_code (RFC 8628).
// Scopes: openid profile email offline_access; profile = name, preferred_username;
// email = email. Every login name is an account: sub = the name,
// name = "Name of <sub>", preferred_username = <sub>, email = <sub>@example.test.
// ID tokens carry the scope's claims too (conformIdTokenClaims: false), and
// /me answers the opaque access token of the code or device flow.
//
// HTML contract (no browser UI library; a script reads the forms):
//   GET  /interaction/:uid        login prompt: a page with
//                                 <form id="login" method="post" action="/interaction/:uid/login">
//                                 and <input type="text" name="login">; a consent
//                                 prompt (oidc-provider asks native clients for
//                                 consent on every authorization) is granted at
//                                 once: 303 back to the authorization.
//   POST /interaction/:uid/login  form login=NAME: signs NAME in AND grants the
//                                 requested scopes and claims (one step), 303 on.
//   GET  /device?user_code=…      <form id="op.deviceInputForm" …> with hidden xsrf
//   POST /device                  → <form id="op.deviceConfirmForm" …> (hidden xsrf,
//                                 user_code, confirm=yes) → POST → /interaction/:uid
//                                 → … → the success page, <body data-device="success">.
//   POST /device/auth             its JSON answer carries "interval": 1 (seconds);
//                                 oidc-provider itself sends no interval (RFC
//                                 8628 then means 5 s) and never answers
//                                 slow_down, so 1 s is honoured as given.
//
// Test control (only the tests use these):
//   GET  /test/health   200
//   POST /test/tamper   JSON {"mode": M}: the next /token answer of an
//                       authorization_code or device_code grant gets its id_token
//                       replaced (one shot). M: nonce | expired | audience | issuer |
//                       unknown-kid | alg-none | hs256-public-key (see tamperIdToken).
//   POST /test/rotate   a new signing key (new kid) signs from now on; the JWKS
//                       publishes it first and keeps the older ones (see rotate()).

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

// stdout carries the one JSON line only: oidc-provider's notices (console.info)
// and anything else that logs go to stderr.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

const log = (...args) => console.error('[oidc-provider]', ...args);

function parsePort(argv) {
  const i = argv.indexOf('--port');
  if (i === -1) return 0;
  const port = Number(argv[i + 1]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    log(`--port wants an integer 0..65535, got ${JSON.stringify(argv[i + 1])}`);
    process.exit(2);
  }
  return port;
}

// ---------------------------------------------------------------- keys

function newKid(prefix) {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

// A signing key pair: the private JWK for the provider's jwks, the KeyObjects
// for the tamper modes.
function generateSigningKey(alg) {
  const { privateKey, publicKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = newKid(alg === 'RS256' ? 'rsa' : 'ec');
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  return { kid, alg, jwk, privateKey, publicKey };
}

// Newest first: oidc-provider signs with the first key that fits the alg, and
// publishes all of them at /jwks.
let signingKeys = [generateSigningKey('RS256'), generateSigningKey('ES256')];
const currentRsaKey = () => signingKeys.find((k) => k.alg === 'RS256');
// Signs the unknown-kid tamper: a real RS256 key whose kid is never published.
const strangerKey = generateSigningKey('RS256');
// Cookie signing keys outlive provider instances, so sessions survive rotation.
const cookieKeys = [crypto.randomBytes(32).toString('hex')];

// ---------------------------------------------------------------- clients, accounts

const CLIENT_BASE = {
  application_type: 'native',
  grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback', 'https://game.example/callback'],
};
const CLIENTS = [
  { ...CLIENT_BASE, client_id: 'rally', token_endpoint_auth_method: 'none' },
  {
    ...CLIENT_BASE,
    client_id: 'rally-confidential',
    client_secret: 'rally-confidential-secret-0123456789abcdef',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  { ...CLIENT_BASE, client_id: 'rally-other', token_endpoint_auth_method: 'none' },
];

async function findAccount(_ctx, sub) {
  if (typeof sub !== 'string' || sub === '') return undefined;
  return {
    accountId: sub,
    async claims() {
      return {
        sub, name: `Name of ${sub}`, preferred_username: sub, email: `${sub}@example.test`,
      };
    },
  };
}

// ---------------------------------------------------------------- device flow pages

const page = (title, attrs, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${title}</title></head>
<body ${attrs}>
${body}
</body></html>
`;

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// `form` is oidc-provider's own <form> (its hidden xsrf field included); the
// submit buttons point at it by id.
async function userCodeInputSource(ctx, form, _out, err) {
  const msg = err ? `<p class="error">${escapeHtml(err.name ?? 'error')}: ${escapeHtml(err.message ?? '')}</p>` : '';
  ctx.body = page('Device sign-in', 'data-device="input"', `${msg}
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

async function userCodeConfirmSource(ctx, form, client, _deviceInfo, userCode) {
  ctx.body = page('Confirm device', 'data-device="confirm"', `<p>${escapeHtml(client.clientId)} shows <code>${escapeHtml(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
}

async function successSource(ctx) {
  ctx.body = page('Device signed in', 'data-device="success"', `<p>Signed in ${escapeHtml(ctx.oidc.client?.clientId ?? '')}; you can close this page.</p>`);
}

// ---------------------------------------------------------------- tampering

let pendingTamper; // one shot: the mode for the next code / device token answer
const TAMPER_MODES = new Set(['nonce', 'expired', 'audience', 'issuer', 'unknown-kid', 'alg-none', 'hs256-public-key']);

const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
  };
}

function signRs256(header, payload, privateKey) {
  const input = `${b64json(header)}.${b64json(payload)}`;
  const signature = crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${signature}`;
}

// Every mode but alg-none and hs256-public-key yields a token whose signature
// is valid RS256 under a published key (or, for unknown-kid, under a key that
// is not published), so a client must catch the claim or kid itself.
function tamperIdToken(idToken, mode) {
  const { header, payload } = decodeJwt(idToken);
  const key = currentRsaKey();
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'nonce':
      payload.nonce = `tampered-${crypto.randomBytes(8).toString('hex')}`;
      return signRs256(header, payload, key.privateKey);
    case 'expired': {
      // Expired 10 minutes ago, beyond any clock skew allowance; iat keeps the
      // token's lifetime before that.
      const lifetime = typeof payload.exp === 'number' && typeof payload.iat === 'number'
        ? Math.max(payload.exp - payload.iat, 1) : 3600;
      payload.exp = now - 600;
      payload.iat = payload.exp - lifetime;
      return signRs256(header, payload, key.privateKey);
    }
    case 'audience':
      payload.aud = 'rally-other';
      return signRs256(header, payload, key.privateKey);
    case 'issuer':
      payload.iss = 'http://127.0.0.1:1/other';
      return signRs256(header, payload, key.privateKey);
    case 'unknown-kid':
      return signRs256({ ...header, alg: 'RS256', kid: strangerKey.kid }, payload, strangerKey.privateKey);
    case 'alg-none':
      // The rest of the header (typ, kid) is kept; the signature is empty.
      return `${b64json({ ...header, alg: 'none' })}.${b64json(payload)}.`;
    case 'hs256-public-key': {
      // The classic key-confusion attack: HMAC keyed with the PEM (SPKI,
      // "-----BEGIN PUBLIC KEY-----...\n", as a verifier would hold it) of the
      // real RSA public key, under the real kid.
      const pem = key.publicKey.export({ type: 'spki', format: 'pem' });
      const input = `${b64json({ ...header, alg: 'HS256', kid: key.kid })}.${b64json(payload)}`;
      const mac = crypto.createHmac('sha256', pem).update(input).digest('base64url');
      return `${input}.${mac}`;
    }
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
}

const TAMPERED_GRANTS = new Set(['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code']);

// Koa middleware on each provider instance: post-processes JSON answers.
async function testHooks(ctx, next) {
  await next();
  const route = ctx.oidc?.route;
  const body = ctx.body;
  if (ctx.status !== 200 || body === null || typeof body !== 'object' || Buffer.isBuffer(body)) return;
  if (route === 'device_authorization') {
    // See the header: oidc-provider has no interval of its own and no slow_down.
    body.interval = 1;
  } else if (route === 'token' && pendingTamper !== undefined && typeof body.id_token === 'string'
    && TAMPERED_GRANTS.has(ctx.oidc?.params?.grant_type)) {
    const mode = pendingTamper;
    pendingTamper = undefined;
    try {
      body.id_token = tamperIdToken(body.id_token, mode);
    } catch (err) {
      log('tampering failed:', err);
    }
  }
}

// ---------------------------------------------------------------- the provider

const port = parsePort(process.argv.slice(2));
const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    log('request failed:', req.method, req.url, err);
    if (!res.headersSent) {
      res.statusCode = err.statusCode ?? 500;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end(`${err.name ?? 'Error'}: ${err.message ?? err}\n`);
    } else {
      res.destroy();
    }
  });
});

let issuer;
let provider;
let providerCallback;

function makeProvider() {
  const p = new Provider(issuer, {
    clients: CLIENTS,
    jwks: { keys: signingKeys.map((k) => k.jwk) },
    cookies: { keys: cookieKeys },
    findAccount,
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email'] },
    // The scope's claims in the ID token too (not only at /me), as many real
    // providers do, so a client may read either.
    conformIdTokenClaims: false,
    // Fixed lifetimes (seconds), which also keeps oidc-provider's notices about
    // its default ttl functions off stderr.
    ttl: {
      AccessToken: 3600, AuthorizationCode: 60, DeviceCode: 600, Grant: 86400,
      IdToken: 3600, Interaction: 600, RefreshToken: 86400, Session: 86400,
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true, userCodeInputSource, userCodeConfirmSource, successSource,
      },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', 'data-error="true"', `<pre>${escapeHtml(JSON.stringify(out))}</pre>`);
    },
  });
  p.use(testHooks);
  p.on('server_error', (_ctx, err) => log('server_error:', err));
  return p;
}

// Rotation. oidc-provider fixes its key set when a Provider is constructed, so
// a rotation constructs a new Provider (same issuer, clients, cookie keys) with
// [new RSA key, new EC key, ...older keys] and points the HTTP server at it.
// Its default MemoryAdapter keeps its storage in a module-level LRU shared by
// every instance in this process, so sessions, interactions, grants, codes,
// device codes and tokens issued before the rotation stay valid after it; the
// port never changes because the listening socket is the same.
function rotate() {
  signingKeys = [generateSigningKey('RS256'), generateSigningKey('ES256'), ...signingKeys];
  provider = makeProvider();
  providerCallback = provider.callback();
}

// ---------------------------------------------------------------- plain routes

const MAX_BODY = 64 * 1024;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('request body too large'), { statusCode: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}
const sendJson = (res, status, value) => send(res, status, 'application/json', `${JSON.stringify(value)}\n`);
const sendHtml = (res, status, html) => send(res, status, 'text/html; charset=utf-8', html);

function loginPage(uid, details, message) {
  const params = details.params ?? {};
  return page('Sign in', 'data-prompt="login"', `${message ? `<p class="error">${escapeHtml(message)}</p>` : ''}
<p>Signing in to <code>${escapeHtml(params.client_id)}</code> for <code>${escapeHtml(params.scope ?? '')}</code></p>
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login">
<input type="text" name="login" autofocus autocomplete="username">
<button type="submit">Sign in</button>
</form>`);
}

// Claim names asked for in the `claims` request parameter, if any.
function requestedClaims(params) {
  if (typeof params.claims !== 'string') return [];
  try {
    const claims = JSON.parse(params.claims);
    return [...new Set([...Object.keys(claims?.id_token ?? {}), ...Object.keys(claims?.userinfo ?? {})])];
  } catch {
    return [];
  }
}

async function grantFor(details, accountId) {
  const { params } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant || grant.accountId !== accountId || grant.clientId !== params.client_id) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }
  return grant;
}

async function handle(req, res) {
  if (provider === undefined) {
    send(res, 503, 'text/plain; charset=utf-8', 'starting\n');
    return;
  }
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const path = url.pathname;

  if (path === '/test/health' && req.method === 'GET') {
    sendJson(res, 200, { ok: true });
    return;
  }
  if (path === '/test/tamper' && req.method === 'POST') {
    let mode;
    try {
      ({ mode } = JSON.parse(await readBody(req)));
    } catch {
      sendJson(res, 400, { error: 'want JSON {"mode": M}' });
      return;
    }
    if (!TAMPER_MODES.has(mode)) {
      sendJson(res, 400, { error: `unknown mode ${JSON.stringify(mode)}; modes: ${[...TAMPER_MODES].join(', ')}` });
      return;
    }
    pendingTamper = mode;
    sendJson(res, 200, { mode });
    return;
  }
  if (path === '/test/rotate' && req.method === 'POST') {
    rotate();
    sendJson(res, 200, { kids: signingKeys.map((k) => k.kid) });
    return;
  }

  const interaction = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/.exec(path);
  if (interaction) {
    const [, uid, login] = interaction;
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) {
      sendHtml(res, 400, page('Error', 'data-error="true"', '<p>interaction cookie does not match the URL</p>'));
      return;
    }
    const { prompt } = details;
    if (!login && req.method === 'GET') {
      if (prompt.name === 'consent') {
        // Consent is granted at once, for what the prompt says is missing.
        const grant = await grantFor(details, details.session?.accountId);
        const d = prompt.details ?? {};
        if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
        if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
        for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
        const grantId = await grant.save();
        await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
        return;
      }
      sendHtml(res, 200, loginPage(uid, details));
      return;
    }
    if (login && req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      const accountId = (form.get('login') ?? '').trim();
      if (accountId === '') {
        sendHtml(res, 400, loginPage(uid, details, 'a login name is required'));
        return;
      }
      // Login and consent in one step: grant what was asked for.
      const grant = await grantFor(details, accountId);
      if (details.params.scope) grant.addOIDCScope(details.params.scope);
      const claims = requestedClaims(details.params);
      if (claims.length) grant.addOIDCClaims(claims);
      const grantId = await grant.save();
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId }, consent: { grantId } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    sendHtml(res, 405, page('Error', 'data-error="true"', '<p>method not allowed</p>'));
    return;
  }

  await providerCallback(req, res);
}

// ---------------------------------------------------------------- start, stop

function shutdown(code) {
  server.close();
  process.exit(code);
}
process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.stdin.on('end', () => shutdown(0));
process.stdin.on('close', () => shutdown(0));
process.stdin.on('error', () => shutdown(0));
process.stdin.resume();

server.on('error', (err) => {
  log('listen failed:', err);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  const address = server.address();
  issuer = `http://127.0.0.1:${address.port}`;
  provider = makeProvider();
  providerCallback = provider.callback();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
