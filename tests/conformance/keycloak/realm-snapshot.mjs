// Reads (and, first, prepares) a realm's whole representation through Keycloak's official admin
// client, for a test that checks a realm write made by the operator between two snapshots.
//
// Environment: KC_URL (base URL), KC_REALM, KC_CLIENT_ID and KC_CLIENT_SECRET (a service account
// of that realm with view-realm and manage-realm).
//
//   node realm-snapshot.mjs prepare <out.json>
//     Sets a non-default value, as an administrator would in the admin console, on realm settings
//     the operator never owns: device authorization, CIBA and PAR (realm attributes), token and
//     session lifespans, login and security settings, an attribute of the administrator's own. The update sends the whole representation
//     read with those fields changed (Keycloak resets settings a body leaves out). Reads the realm
//     back, checks every value stuck, and writes that representation to <out.json>.
//   node realm-snapshot.mjs read <out.json>
//     Writes the realm representation as the official client reads it to <out.json>.

import { writeFileSync } from "node:fs";
import assert from "node:assert/strict";
import KcAdminClient from "@keycloak/keycloak-admin-client";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const [mode, out] = process.argv.slice(2);
if (!["prepare", "read"].includes(mode) || !out) {
  throw new Error("usage: realm-snapshot.mjs prepare|read <out.json>");
}
const realm = env("KC_REALM");
const kc = new KcAdminClient({ baseUrl: env("KC_URL"), realmName: realm });
await kc.auth({
  grantType: "client_credentials",
  clientId: env("KC_CLIENT_ID"),
  clientSecret: env("KC_CLIENT_SECRET"),
});

/** Realm settings an administrator changed from Keycloak's defaults; none is the operator's. */
const ADMINISTRATOR_CHOICES = {
  // Device authorization grant (OAuth 2.0 Device Authorization Grant).
  oauth2DeviceCodeLifespan: 900,
  oauth2DevicePollingInterval: 7,
  // Tokens and sessions the operator does not need.
  accessTokenLifespan: 420,
  accessCodeLifespan: 90,
  actionTokenGeneratedByUserLifespan: 600,
  ssoSessionMaxLifespan: 72000,
  clientSessionIdleTimeout: 3600,
  // Login and security.
  displayName: "Coder's realm",
  registrationAllowed: true,
  rememberMe: true,
  bruteForceProtected: true,
  failureFactor: 7,
};

/**
 * Realm attributes an administrator changed: client-initiated backchannel authentication (CIBA)
 * and pushed authorization requests (PAR) live there (`CibaConfig`, `ParConfig`; the admin
 * console's Realm settings > Tokens tab sends them so), and one of the administrator's own.
 */
const ADMINISTRATOR_ATTRIBUTES = {
  cibaBackchannelTokenDeliveryMode: "ping",
  cibaExpiresIn: "240",
  cibaInterval: "9",
  parRequestUriLifespan: "90",
  "example.com/owner": "platform-team",
};

if (mode === "prepare") {
  const current = await kc.realms.findOne({ realm });
  assert.ok(current, `realm ${realm} exists`);
  await kc.realms.update(
    { realm },
    {
      ...current,
      ...ADMINISTRATOR_CHOICES,
      attributes: { ...(current.attributes ?? {}), ...ADMINISTRATOR_ATTRIBUTES },
    },
  );
}
const snapshot = await kc.realms.findOne({ realm });
if (mode === "prepare") {
  for (const [field, value] of Object.entries(ADMINISTRATOR_CHOICES)) {
    assert.deepEqual(snapshot[field], value, `realm ${field} was set`);
  }
  for (const [name, value] of Object.entries(ADMINISTRATOR_ATTRIBUTES)) {
    assert.equal(snapshot.attributes?.[name], value, `realm attribute ${name} was set`);
  }
}
writeFileSync(out, JSON.stringify(snapshot, null, 2));
