// A real OIDC provider with an interactive login page, on loopback, for flowgate's console
// sign-in tests: npm `oidc-provider` (a certified implementation) with its development
// interactions (a login form that accepts any password for the accounts below).
//
// Usage: node server.mjs --port N --client-id ID --client-secret SECRET --redirect URL
//                        --post-logout URL --tenant GUID --foreign-tenant GUID
//
// --redirect and --post-logout take comma-separated lists (one client, several gateways).
//
// Accounts (the login name is the account id): `admin` (roles Flowgate.Admin), `viewer`
// (Flowgate.Viewer), `norole` (no role), all of --tenant; `foreign` (Flowgate.Admin) of
// --foreign-tenant. ID tokens carry tid, oid and roles (conformIdTokenClaims off) and are
// signed RS256 with a key made at start. Consent is granted on first use, so the login
// form is the only interaction. Prints "listening URL" once ready.
import Provider from 'oidc-provider';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const port = Number(arg('port'));
const issuer = `http://127.0.0.1:${port}`;
const tenant = arg('tenant');
const foreignTenant = arg('foreign-tenant');

const accounts = {
  admin: { tid: tenant, oid: '0a0a0a0a-0000-4000-8000-000000000001', roles: ['Flowgate.Admin'] },
  viewer: { tid: tenant, oid: '0a0a0a0a-0000-4000-8000-000000000002', roles: ['Flowgate.Viewer'] },
  norole: { tid: tenant, oid: '0a0a0a0a-0000-4000-8000-000000000003', roles: [] },
  foreign: { tid: foreignTenant, oid: '0b0b0b0b-0000-4000-8000-000000000004', roles: ['Flowgate.Admin'] },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'login-1', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: arg('client-id'),
      client_secret: arg('client-secret'),
      redirect_uris: arg('redirect').split(','),
      post_logout_redirect_uris: arg('post-logout').split(','),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: { openid: ['sub', 'tid', 'oid', 'roles'], profile: ['name'] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  async findAccount(ctx, id) {
    const account = accounts[id] ?? { tid: tenant, oid: '0c0c0c0c-0000-4000-8000-000000000009', roles: [] };
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: id, ...account };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile');
    grant.addOIDCClaims(['tid', 'oid', 'roles', 'name']);
    await grant.save();
    return grant;
  },
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
