// Conformance suite: drives a Keycloak Admin REST API (the simulator in crates/sim-keycloak, or a
// real Keycloak 26 seeded the same way) with Keycloak's official admin client and asserts what
// Keycloak 26 answers. Where the client and the server disagree, the server is wrong.
//
// Environment: KC_URL (base URL, e.g. http://127.0.0.1:8080). The server must hold the fixtures
// that crates/sim-keycloak/tests/conformance.rs seeds (see `seed` there): realm `coder` with the
// clients `coder`, `authz-app`, `disabled-svc`, `app-1`..`app-3`, the service accounts `operator`,
// `viewer`, `lister`, the user `alice`; realm `master` with the user `admin`.
//
// Run: KC_URL=... node --test suite.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import KcAdminClient, { NetworkError } from "@keycloak/keycloak-admin-client";

const baseUrl = process.env.KC_URL;
if (!baseUrl) {
  throw new Error("KC_URL is not set");
}
const REALM = "coder";

/** Decodes a JWT's payload (the client does the same to decide when to refresh). */
function claims(token) {
  const [, payload] = token.split(".");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}

async function signIn(clientId, clientSecret, realmName = REALM) {
  const kc = new KcAdminClient({ baseUrl, realmName });
  await kc.auth({ grantType: "client_credentials", clientId, clientSecret });
  return kc;
}

async function operator() {
  return signIn("operator", "operator-secret");
}

/** Asserts that `promise` fails with HTTP `status` and returns the error body. */
async function rejectsWith(promise, status) {
  let caught;
  await assert.rejects(promise, (err) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof NetworkError, `expected a NetworkError, got ${caught}`);
  assert.equal(caught.response.status, status, JSON.stringify(caught.responseData));
  return caught.responseData;
}

async function clientByClientId(kc, clientId) {
  const found = await kc.clients.find({ clientId });
  assert.equal(found.length, 1, `exactly one client ${clientId}`);
  return found[0];
}

async function tokenRequest(form, headers = {}) {
  const res = await fetch(`${baseUrl}/realms/${REALM}/protocol/openid-connect/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

test("client-credentials sign-in with HTTP Basic; token lifetime is the realm's", async () => {
  const kc = await operator();
  const t = claims(kc.accessToken);
  assert.equal(t.exp - t.iat, 300, "accessTokenLifespan of a new realm");
  assert.equal(kc.refreshToken, undefined, "no refresh token for client_credentials");
});

test("password sign-in in master: 60 s admin tokens, then work on another realm", async () => {
  const kc = new KcAdminClient({ baseUrl, realmName: "master" });
  await kc.auth({
    grantType: "password",
    clientId: "admin-cli",
    username: "admin",
    password: "admin-pw",
  });
  const t = claims(kc.accessToken);
  assert.equal(t.exp - t.iat, 60, "master's accessTokenLifespan is 60");
  const r = claims(kc.refreshToken);
  assert.equal(r.exp - r.iat, 1800, "refresh token bound to ssoSessionIdleTimeout");
  kc.setConfig({ realmName: REALM });
  const realm = await kc.realms.findOne({ realm: REALM });
  assert.equal(realm.realm, REALM);
  const coder = await clientByClientId(kc, "coder");
  assert.equal(coder.clientId, "coder");
});

test("token endpoint errors", async () => {
  const wrongSecret = await rejectsWith(signIn("operator", "nope"), 401);
  assert.deepEqual(wrongSecret, {
    error: "unauthorized_client",
    error_description: "Invalid client or Invalid client credentials",
  });
  const unknown = await rejectsWith(signIn("no-such-client", "x"), 401);
  assert.deepEqual(unknown, {
    error: "invalid_client",
    error_description: "Invalid client or Invalid client credentials",
  });
  const disabled = await rejectsWith(signIn("disabled-svc", "disabled-secret"), 401);
  assert.equal(disabled.error, "invalid_client", "no tokens for a disabled client");
  const kc = new KcAdminClient({ baseUrl, realmName: "master" });
  const badUser = await rejectsWith(
    kc.auth({ grantType: "password", clientId: "admin-cli", username: "admin", password: "x" }),
    401,
  );
  assert.deepEqual(badUser, { error: "invalid_grant", error_description: "Invalid user credentials" });
  // Secret in the form instead of the Basic header works too.
  const form = await tokenRequest({
    grant_type: "client_credentials",
    client_id: "operator",
    client_secret: "operator-secret",
  });
  assert.equal(form.status, 200);
  const missing = await tokenRequest({ grant_type: "client_credentials" });
  assert.equal(missing.status, 400);
  assert.equal(missing.body.error, "invalid_client");
});

test("find clients: trailing-slash collection URL, exact clientId, search, paging", async () => {
  const kc = await operator();
  const all = await kc.clients.find();
  const ids = all.map((c) => c.clientId);
  for (const c of ["coder", "operator", "admin-cli", "app-1", "app-2", "app-3"]) {
    assert.ok(ids.includes(c), `${c} listed`);
  }
  assert.deepEqual(await kc.clients.find({ clientId: "code" }), [], "clientId is an exact match");
  const searched = await kc.clients.find({ clientId: "APP-", search: true });
  assert.deepEqual(searched.map((c) => c.clientId).sort(), ["app-1", "app-2", "app-3"]);
  const page = await kc.clients.find({ first: 1, max: 2 });
  assert.equal(page.length, 2);
  assert.deepEqual(
    page.map((c) => c.id),
    all.slice(1, 3).map((c) => c.id),
    "first/max page the same order",
  );
  const pagedSearch = await kc.clients.find({ clientId: "app-", search: true, first: 2, max: 5 });
  assert.equal(pagedSearch.length, 1);
  assert.equal(await kc.clients.findOne({ id: "00000000-0000-0000-0000-000000000000" }), null);
});

test("get a client and PUT the whole representation back: nothing changes but the edit", async () => {
  const kc = await operator();
  const { id } = await clientByClientId(kc, "coder");
  const before = await kc.clients.findOne({ id });
  assert.equal(before.secret, "coder-secret", "a manager sees the secret");
  assert.deepEqual(before.access, { view: true, configure: true, manage: true });
  assert.equal(before.authorizationServicesEnabled, false);
  const edited = structuredClone(before);
  edited.attributes["use.refresh.tokens"] = "true";
  assert.equal(await kc.clients.update({ id }, edited), "");
  const after = await kc.clients.findOne({ id });
  assert.deepEqual(after, edited);
});

test("partial client updates: present fields only, attributes merge, blank deletes, coercion", async () => {
  const kc = await operator();
  const { id } = await clientByClientId(kc, "coder");
  const before = await kc.clients.findOne({ id });
  await kc.clients.update({ id }, { attributes: { "client.session.idle.timeout": "3600" } });
  let c = await kc.clients.findOne({ id });
  assert.equal(c.attributes["client.session.idle.timeout"], "3600");
  assert.equal(c.attributes["use.refresh.tokens"], before.attributes["use.refresh.tokens"]);
  assert.deepEqual(c.redirectUris, before.redirectUris);
  assert.equal(c.secret, before.secret, "a body without secret keeps it");
  await kc.clients.update({ id }, { attributes: { "client.session.idle.timeout": "" } });
  c = await kc.clients.findOne({ id });
  assert.equal(
    Object.hasOwn(c.attributes, "client.session.idle.timeout"),
    false,
    "an empty attribute value deletes the attribute",
  );
  // Jackson coerces scalars: a boolean for a string attribute, a string for a boolean.
  await kc.clients.update({ id }, { attributes: { "pkce.code.challenge.method": "S256", "x.flag": true }, consentRequired: "false" });
  c = await kc.clients.findOne({ id });
  assert.equal(c.attributes["x.flag"], "true");
  assert.equal(c.consentRequired, false);
  // null means "not sent".
  await kc.clients.update({ id }, { description: null, rootUrl: null });
  c = await kc.clients.findOne({ id });
  assert.equal(c.rootUrl, before.rootUrl);
});

test("unknown fields are rejected with 400 (FAIL_ON_UNKNOWN_PROPERTIES)", async () => {
  const kc = await operator();
  const { id } = await clientByClientId(kc, "coder");
  const err = await rejectsWith(kc.clients.update({ id }, { description: "x", bogusField: 1 }), 400);
  assert.match(
    err.error,
    /^Unrecognized field "bogusField" \(class org\.keycloak\.representations\.idm\.ClientRepresentation\), not marked as ignorable/,
  );
  assert.notEqual((await kc.clients.findOne({ id })).description, "x", "nothing stored");
  const realmErr = await rejectsWith(kc.realms.update({ realm: REALM }, { bogusRealmField: true }), 400);
  assert.match(realmErr.error, /^Unrecognized field "bogusRealmField" \(class org\.keycloak\.representations\.idm\.RealmRepresentation\)/);
  const nested = await rejectsWith(
    kc.realms.update({ realm: REALM }, { defaultRole: { name: "x", bogus: 1 } }),
    400,
  );
  assert.match(nested.error, /^Unrecognized field "bogus" \(class org\.keycloak\.representations\.idm\.RoleRepresentation\)/);
  const badType = await rejectsWith(kc.clients.update({ id }, { enabled: "maybe" }), 400);
  assert.match(badType.error, /Cannot deserialize value of type `java\.lang\.Boolean`/);
});

test("client validation: an illegal URL scheme is 400 invalid_input and nothing is stored", async () => {
  const kc = await operator();
  const { id } = await clientByClientId(kc, "coder");
  const err = await rejectsWith(
    kc.clients.update({ id }, { rootUrl: "javascript:alert(1)", description: "should not stick" }),
    400,
  );
  assert.deepEqual(err, { error: "invalid_input", error_description: "Root URL uses an illegal scheme" });
  const c = await kc.clients.findOne({ id });
  assert.notEqual(c.description, "should not stick");
});

test("an update that omits authorizationServicesEnabled turns authorization services off", async () => {
  const kc = await operator();
  const { id } = await clientByClientId(kc, "authz-app");
  assert.equal((await kc.clients.findOne({ id })).authorizationServicesEnabled, true);
  await kc.clients.update({ id }, { description: "touched" });
  assert.equal((await kc.clients.findOne({ id })).authorizationServicesEnabled, false);
});

test("client scopes: list, link and unlink default/optional", async () => {
  const kc = await operator();
  const { id } = await clientByClientId(kc, "coder");
  const scopes = await kc.clientScopes.find();
  const offline = scopes.find((s) => s.name === "offline_access");
  assert.ok(offline, "built-in offline_access scope");
  assert.equal(offline.protocol, "openid-connect");
  const byName = await kc.clientScopes.findOneByName({ name: "offline_access" });
  assert.equal(byName.id, offline.id);
  const mapped = await kc.clientScopes.listRealmScopeMappings({ id: offline.id });
  assert.deepEqual(mapped.map((r) => r.name), ["offline_access"], "the scope carries the offline_access role");

  const optional = () => kc.clients.listOptionalClientScopes({ id }).then((l) => l.map((s) => s.name));
  const defaults = () => kc.clients.listDefaultClientScopes({ id }).then((l) => l.map((s) => s.name));
  assert.equal((await optional()).includes("offline_access"), false, "seeded unlinked");
  await kc.clients.addOptionalClientScope({ id, clientScopeId: offline.id });
  assert.ok((await optional()).includes("offline_access"));
  // Linking again as default is a no-op: it stays optional.
  await kc.clients.addDefaultClientScope({ id, clientScopeId: offline.id });
  assert.equal((await defaults()).includes("offline_access"), false);
  assert.ok((await optional()).includes("offline_access"));
  // Removing it "as default" removes the link whatever its kind.
  await kc.clients.delDefaultClientScope({ id, clientScopeId: offline.id });
  assert.equal((await optional()).includes("offline_access"), false);
  await kc.clients.addOptionalClientScope({ id, clientScopeId: offline.id });
  const c = await kc.clients.findOne({ id });
  assert.ok(c.optionalClientScopes.includes("offline_access"));
  const missing = await rejectsWith(
    kc.clients.addOptionalClientScope({ id, clientScopeId: "no-such-scope" }),
    404,
  );
  assert.equal(missing.error, "Client scope not found");
  // defaultClientScopes/optionalClientScopes in a client PUT are ignored.
  await kc.clients.update({ id }, { optionalClientScopes: [] });
  assert.ok((await optional()).includes("offline_access"));
});

test("realm scope mappings of a client", async () => {
  const kc = await operator();
  const { id } = await clientByClientId(kc, "coder");
  const role = await kc.roles.findOneByName({ name: "offline_access" });
  assert.equal(role.name, "offline_access");
  assert.equal(role.clientRole, false);
  assert.deepEqual(await kc.clients.listRealmScopeMappings({ id }), []);
  const effectiveBefore = await kc.clients.listCompositeRealmScopeMappings({ id });
  assert.equal(effectiveBefore.some((r) => r.name === "offline_access"), false, "fullScopeAllowed is off");
  await kc.clients.addRealmScopeMappings({ id }, [role]);
  await kc.clients.addRealmScopeMappings({ id }, [role]);
  const mapped = await kc.clients.listRealmScopeMappings({ id });
  assert.deepEqual(mapped.map((r) => r.name), ["offline_access"]);
  const effective = await kc.clients.listCompositeRealmScopeMappings({ id });
  assert.ok(effective.some((r) => r.name === "offline_access"));
  const available = await kc.clients.listAvailableRealmScopeMappings({ id });
  assert.equal(available.some((r) => r.name === "offline_access"), false);
  const byName = await rejectsWith(
    kc.clients.addRealmScopeMappings({ id }, [{ name: "offline_access" }]),
    404,
  );
  assert.equal(byName.error, "Role not found", "roles are looked up by id only");
  await kc.clients.delRealmScopeMappings({ id }, [role]);
  assert.deepEqual(await kc.clients.listRealmScopeMappings({ id }), []);
  const all = await kc.roles.find();
  assert.ok(all.some((r) => r.name === `default-roles-${REALM}`));
});

test("realm update keeps what it did not send, except device/CIBA/PAR settings, which reset", async () => {
  const kc = await operator();
  const original = await kc.realms.findOne({ realm: REALM });
  assert.equal(original.attributes.cibaBackchannelTokenDeliveryMode, "poll");
  assert.equal(original.oauth2DeviceCodeLifespan, 600);

  // A full round trip with changes keeps every field.
  const full = structuredClone(original);
  full.accessTokenLifespan = 600;
  full.ssoSessionIdleTimeout = 7200;
  full.clientSessionIdleTimeout = 1000;
  full.oauth2DeviceCodeLifespan = 900;
  full.oauth2DevicePollingInterval = 10;
  full.attributes = {
    ...full.attributes,
    cibaBackchannelTokenDeliveryMode: "ping",
    cibaExpiresIn: "300",
    cibaInterval: "10",
    cibaAuthRequestedUserHint: "id_token_hint",
    parRequestUriLifespan: "90",
    "my.custom": "kept",
    clientSessionIdleTimeout: "1000",
    oauth2DeviceCodeLifespan: "900",
    oauth2DevicePollingInterval: "10",
  };
  await kc.realms.update({ realm: REALM }, full);
  const afterFull = await kc.realms.findOne({ realm: REALM });
  assert.deepEqual(afterFull, full);

  // A partial update (as the operator sends for token settings).
  await kc.realms.update({ realm: REALM }, { offlineSessionIdleTimeout: 3888000, revokeRefreshToken: "false" });
  const afterPartial = await kc.realms.findOne({ realm: REALM });
  const expected = structuredClone(afterFull);
  expected.offlineSessionIdleTimeout = 3888000;
  expected.revokeRefreshToken = false;
  // Keycloak always rewrites these from the body; not sent means default.
  expected.oauth2DeviceCodeLifespan = 600;
  expected.oauth2DevicePollingInterval = 5;
  expected.attributes = {
    ...expected.attributes,
    cibaBackchannelTokenDeliveryMode: "poll",
    cibaExpiresIn: "120",
    cibaInterval: "5",
    cibaAuthRequestedUserHint: "login_hint",
    parRequestUriLifespan: "60",
    oauth2DeviceCodeLifespan: "600",
    oauth2DevicePollingInterval: "5",
  };
  assert.deepEqual(afterPartial, expected);

  // `attributes`, when sent, replace the realm's attributes: the others are removed (and the
  // attribute-backed client session settings fall back to 0).
  await kc.realms.update({ realm: REALM }, { attributes: { "only.this": "1" } });
  const afterAttrs = await kc.realms.findOne({ realm: REALM });
  assert.equal(afterAttrs.attributes["only.this"], "1");
  assert.equal(Object.hasOwn(afterAttrs.attributes, "my.custom"), false);
  assert.equal(afterAttrs.clientSessionIdleTimeout, 0);
  assert.equal(afterAttrs.accessTokenLifespan, 600, "top-level fields are untouched");

  // Coercion of numbers sent as strings; restore the original settings.
  await kc.realms.update({ realm: REALM }, { ...original, accessTokenLifespan: "300" });
  const restored = await kc.realms.findOne({ realm: REALM });
  assert.equal(restored.accessTokenLifespan, 300);
  assert.deepEqual(restored.attributes, original.attributes);
});

test("an admin with query-clients only lists no clients (200 []) and may not read one", async () => {
  const kcOp = await operator();
  const { id } = await clientByClientId(kcOp, "coder");
  const kc = await signIn("lister", "lister-secret");
  assert.deepEqual(await kc.clients.find(), []);
  assert.deepEqual(await kc.clients.find({ clientId: "coder" }), []);
  await rejectsWith(kc.clients.findOne({ id }), 403);
  // Without view-realm, the realm comes back brief: no token settings.
  assert.deepEqual(await kc.realms.findOne({ realm: REALM }), {
    realm: REALM,
    displayName: REALM,
    supportedLocales: [],
    bruteForceProtected: false,
    organizationsEnabled: false,
  });
});

test("a viewer sees masked secrets and its access; it may not update", async () => {
  const kcOp = await operator();
  const { id } = await clientByClientId(kcOp, "coder");
  const kc = await signIn("viewer", "viewer-secret");
  const c = await kc.clients.findOne({ id });
  assert.equal(c.secret, "**********");
  assert.deepEqual(c.access, { view: true, configure: false, manage: false });
  await rejectsWith(kc.clients.update({ id }, { description: "x" }), 403);
  await rejectsWith(kc.realms.update({ realm: REALM }, { accessTokenLifespan: 1 }), 403);
  const sa = await kc.clients.getServiceAccountUser({ id: (await clientByClientId(kc, "operator")).id });
  assert.equal(sa.username, "service-account-operator");
});

test("discovery lists the scopes Keycloak publishes and refresh_token", async () => {
  const res = await fetch(`${baseUrl}/realms/${REALM}/.well-known/openid-configuration`);
  assert.equal(res.status, 200);
  const d = await res.json();
  assert.ok(d.grant_types_supported.includes("refresh_token"));
  assert.ok(d.scopes_supported.includes("openid"));
  assert.ok(d.scopes_supported.includes("offline_access"));
  assert.equal(
    d.scopes_supported.includes("microprofile-jwt"),
    false,
    "a scope with include.in.openid.provider.metadata=false is not listed",
  );
  assert.equal(d.issuer, `${baseUrl}/realms/${REALM}`);
});

test("offline tokens: no max unless the realm switch or the client attribute sets one", async () => {
  const kc = await operator();
  const form = {
    grant_type: "password",
    client_id: "admin-cli",
    username: "alice",
    password: "alice-pw",
    scope: "openid offline_access",
  };
  let t = await tokenRequest(form);
  assert.equal(t.status, 200, JSON.stringify(t.body));
  assert.equal(claims(t.body.refresh_token).typ, "Offline");
  assert.equal(t.body.refresh_expires_in, 0, "offline token without exp when no max applies");
  // The client attribute alone (realm switch off) caps the offline session.
  const cli = await clientByClientId(kc, "admin-cli");
  await kc.clients.update({ id: cli.id }, { attributes: { "client.offline.session.max.lifespan": "86400" } });
  t = await tokenRequest(form);
  assert.equal(t.body.refresh_expires_in, 86400);
  await kc.clients.update({ id: cli.id }, { attributes: { "client.offline.session.max.lifespan": "" } });
  // Online refresh token: ssoSessionIdleTimeout.
  t = await tokenRequest({ ...form, scope: "openid" });
  assert.equal(t.body.refresh_expires_in, 1800);
  const refreshed = await tokenRequest({
    grant_type: "refresh_token",
    client_id: "admin-cli",
    refresh_token: t.body.refresh_token,
  });
  assert.equal(refreshed.status, 200);
  assert.ok(refreshed.body.access_token);
});
