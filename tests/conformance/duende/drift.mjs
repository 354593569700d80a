// Makes drift as an administrator would with Skoruba's published API client: reads Coder's
// client, turns AllowOfflineAccess off, flips RefreshTokenUsage, and PUTs the client back as
// the client library serializes it. Prints the client as read afterwards.
// Env: DUENDE_URL, OP_ID, OP_SECRET, CLIENT_ID.
import { token, clients, findId } from "./lib.mjs";

const t = await token(process.env.OP_ID, process.env.OP_SECRET);
if (t.status !== 200) throw new Error(`token: ${t.status} ${JSON.stringify(t.body)}`);
const api = clients(t.body.access_token);
const id = await findId(api, process.env.CLIENT_ID);
const c = await api.get2(id);
c.allowOfflineAccess = false;
c.refreshTokenUsage = c.refreshTokenUsage === 0 ? 1 : 0;
await api.put(c);
const after = await api.get2(id);
process.stdout.write(JSON.stringify(after.toJSON()));
