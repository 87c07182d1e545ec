// A real OIDC provider on loopback for flowgate's auth integration tests, built on
// oauth2-mock-server from npm: discovery, JWKS and a client-credentials token endpoint.
//
// Usage: node server.mjs --port N --state DIR --kid KID [--tenant GUID]
//
// The RS256 signing key named by --kid is loaded from DIR/KID.json, or generated and saved
// there on first use, so a test can restart the provider with another kid to rotate keys
// (only the current key is published: the previous one is retired).
//
// Client-credentials requests (form body) may carry: client_id, aud, oid, roles
// (comma-separated) and tid (defaults to --tenant). The token gets Entra-style claims:
// tid, oid, roles, azp and appid (= client_id), idtyp = "app".
import { OAuth2Server } from 'oauth2-mock-server';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return fallback;
}

const port = Number(arg('port'));
const state = arg('state');
const kid = arg('kid');
const tenant = arg('tenant', '72f988bf-86f1-41af-91ab-2d7cd011db47');

const server = new OAuth2Server();
mkdirSync(state, { recursive: true });
const keyFile = join(state, `${kid}.json`);
if (existsSync(keyFile)) {
  await server.issuer.keys.add(JSON.parse(readFileSync(keyFile, 'utf8')));
} else {
  await server.issuer.keys.generate('RS256', { kid });
  const [jwk] = server.issuer.keys.toJSON(true);
  writeFileSync(keyFile, JSON.stringify(jwk), { mode: 0o600 });
}

server.service.on('beforeTokenSigning', (token, req) => {
  const body = req.body ?? {};
  let clientId = body.client_id;
  const auth = req.headers?.authorization;
  if (!clientId && typeof auth === 'string' && auth.startsWith('Basic ')) {
    clientId = Buffer.from(auth.slice(6), 'base64').toString('utf8').split(':')[0];
  }
  token.payload.tid = body.tid ?? tenant;
  if (body.oid) token.payload.oid = body.oid;
  if (body.roles) token.payload.roles = String(body.roles).split(',').filter((r) => r.length > 0);
  if (clientId) {
    token.payload.azp = clientId;
    token.payload.appid = clientId;
  }
  token.payload.idtyp = 'app';
  if (token.payload.scope === undefined) delete token.payload.scope;
});

server.issuer.url = `http://127.0.0.1:${port}`;
await server.start(port, '127.0.0.1');
console.log(`listening ${server.issuer.url} kid=${kid}`);

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
