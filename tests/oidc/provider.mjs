// A real OpenID Provider (the npm package oidc-provider, pinned by
// package-lock.json) on 127.0.0.1 for baton's end-to-end tests.
//
// It issues OAuth 2.0 client-credentials access tokens in the RFC 9068 JWT
// format (header typ "at+jwt"), one resource server per signing algorithm:
// the token's `aud` is the resource requested and its alg is the one that
// resource is configured with, so a test gets an RS256, PS256, ES256 or
// EdDSA (Ed25519) token by asking for the matching resource. Each algorithm
// has its own freshly generated key, published with its `alg` in the JWKS.
//
// Usage: node provider.mjs [--port N]
// Prints one JSON line (issuer, token endpoint, client credentials, the
// resource of each algorithm), then serves until stdin closes or SIGTERM.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

const ALGS = {
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  PS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  EdDSA: () => generateKeyPairSync('ed25519'),
};
const SCOPE = 'api:read';

function argPort() {
  const i = process.argv.indexOf('--port');
  return i > 0 ? Number(process.argv[i + 1]) : 0;
}

const keys = Object.entries(ALGS).map(([alg, gen]) => {
  const jwk = gen().privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}` };
});

const server = http.createServer();
server.listen(argPort(), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const resources = Object.fromEntries(
    Object.keys(ALGS).map((alg) => [alg, `https://api.baton.test/${alg.toLowerCase()}`]));
  const byResource = Object.fromEntries(Object.entries(resources).map(([a, r]) => [r, a]));
  const client = { client_id: 'baton-e2e', client_secret: randomBytes(24).toString('hex') };

  const provider = new Provider(issuer, {
    jwks: { keys },
    clients: [{
      ...client,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPE,
    }],
    scopes: [SCOPE],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resources.RS256,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const alg = byResource[resource];
          if (!alg) throw new Provider.errors.InvalidTarget();
          return {
            scope: SCOPE,
            audience: resource,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    enabledJWA: {
      idTokenSigningAlgValues: Object.keys(ALGS),
    },
    cookies: { keys: [randomBytes(16).toString('hex')] },
  });
  provider.on('server_error', (ctx, err) => process.stderr.write(`provider error: ${err.stack}\n`));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({
    issuer,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    ...client,
    scope: SCOPE,
    resources,
    kids: Object.fromEntries(keys.map((k) => [k.alg, k.kid])),
  })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
