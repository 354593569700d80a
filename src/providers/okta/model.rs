//! The pure part of the Okta provider: which access policy and rule apply to Coder's app, the
//! effective settings, and the plan (the app and the rule sent back whole, as read, with only the
//! owned fields changed, because Okta's `PUT`s replace the whole object).

use std::time::Duration;

use serde_json::{Value, json};

use super::KIND;
use crate::crd::Rotation;
use crate::providers::{
    Change, CoderNeeds, DesiredSettings, Finding, IdpSettings, Observation, ProviderError,
    json_str, json_strings, show_duration, unsupported_unless_none,
};

/// The grant Coder's app needs.
pub const REFRESH_GRANT: &str = "refresh_token";
/// Default grace period with `rotation: Rotate`, in seconds (Okta's own default): long enough
/// for the concurrent refreshes of one Coder page load or several Coder replicas to all get the
/// new token, short enough that a stolen rotated token is useless soon after.
pub const DEFAULT_LEEWAY: u64 = 30;
/// Longest grace period Okta accepts.
pub const MAX_LEEWAY: u64 = 60;
/// Access-token lifetime range on a rule, in minutes.
pub const ACCESS_MINUTES: (u64, u64) = (5, 1440);
/// Refresh-token idle window range on a rule, in minutes (10 minutes to five years).
pub const WINDOW_MINUTES: (u64, u64) = (10, 2_628_000);
/// Longest refresh-token lifetime on a rule, in minutes (five years).
pub const MAX_REFRESH_MINUTES: u64 = 2_628_000;
/// The org authorization server's fixed refresh-token lifetime.
pub const ORG_REFRESH_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// The org authorization server's fixed access-token lifetime.
pub const ORG_ACCESS_LIFETIME: Duration = Duration::from_secs(3600);

/// Reason of the finding for rotation without a grace period.
pub const NO_GRACE_PERIOD: &str = "StrictRefreshTokenRotation";
/// Reason of the finding for an app that is not active.
pub const APP_INACTIVE: &str = "OktaAppInactive";

/// What `observe` read.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Coder's app as `GET /api/v1/apps/{id}` returns it.
    pub app: Value,
    /// The custom authorization server's policies and rules; `None` for the org authorization
    /// server.
    pub server: Option<ServerState>,
}

/// What was read of a custom authorization server.
#[derive(Clone, Debug)]
pub struct ServerState {
    /// Its id.
    pub id: String,
    /// Every access policy, as listed.
    pub policies: Vec<Value>,
    /// The rules of the policy that applies to Coder's app (empty when none applies).
    pub rules: Vec<Value>,
}

/// A rule write: `PUT …/policies/{policy}/rules/{rule}` with `body`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleWrite {
    /// Policy id.
    pub policy: String,
    /// Rule id.
    pub rule: String,
    /// The whole rule, as read, owned fields changed.
    pub body: Value,
}

/// A plan: the changes and the writes.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Settings, changes, findings, Coder's needs.
    pub observation: Observation,
    /// The whole app for `PUT /api/v1/apps/{id}`, when it changes.
    pub app_body: Option<Value>,
    /// The rule write, when the rule changes.
    pub rule: Option<RuleWrite>,
}

/// Policy-level options of the Okta spec that the plan needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Coder's client id.
    pub client_id: String,
    /// Grace period with `rotation: Rotate`.
    pub leeway: u64,
    /// Changing a rule shared with other apps is allowed.
    pub allow_shared_rule: bool,
}

/// A duration as whole minutes, or why not (never rounded).
pub fn minutes(field: &str, d: Duration) -> Result<u64, String> {
    if d.subsec_nanos() != 0 || !d.as_secs().is_multiple_of(60) {
        return Err(format!(
            "spec.refreshTokens.{field} {} is not a whole number of minutes: Okta counts token lifetimes in minutes \
             and the operator does not round them",
            show_duration(Some(d))
        ));
    }
    Ok(d.as_secs() / 60)
}

fn in_range(field: &str, okta: &str, d: Duration, (lo, hi): (u64, u64)) -> Result<u64, String> {
    let m = minutes(field, d)?;
    if !(lo..=hi).contains(&m) {
        return Err(format!(
            "spec.refreshTokens.{field} {} ({m} minutes) is outside Okta's range for {okta}, {lo} to {hi} minutes",
            show_duration(Some(d))
        ));
    }
    Ok(m)
}

/// Settings Okta cannot honour (pure, before any request). `custom_server` is false for the org
/// authorization server, whose lifetimes are fixed.
pub fn check_desired(desired: &DesiredSettings, custom_server: bool) -> Result<(), ProviderError> {
    let mut problems = Vec::new();
    if !custom_server {
        for (set, field) in [
            (desired.lifetime.is_some(), "lifetime"),
            (desired.idle_timeout.is_some(), "idleTimeout"),
            (
                desired.access_token_lifetime.is_some(),
                "accessTokenLifetime",
            ),
        ] {
            if set {
                problems.push(format!(
                    "spec.refreshTokens.{field}: Coder uses Okta's org authorization server (no \
                     spec.provider.okta.authorizationServerId), whose token lifetimes are fixed (refresh tokens 90 \
                     days with no idle limit, access tokens 1 hour). Remove {field}, or point Coder at a custom \
                     authorization server (API Access Management) and name it in authorizationServerId"
                ));
            }
        }
    } else {
        for (wanted, field, okta_field, range) in [
            (
                desired.access_token_lifetime,
                "accessTokenLifetime",
                "accessTokenLifetimeMinutes",
                ACCESS_MINUTES,
            ),
            (
                desired.idle_timeout,
                "idleTimeout",
                "refreshTokenWindowMinutes",
                WINDOW_MINUTES,
            ),
            (
                desired.lifetime,
                "lifetime",
                "refreshTokenLifetimeMinutes",
                (ACCESS_MINUTES.0, MAX_REFRESH_MINUTES),
            ),
        ] {
            if let Some(d) = wanted
                && let Err(e) = in_range(field, okta_field, d, range)
            {
                problems.push(e);
            }
        }
    }
    unsupported_unless_none(KIND, problems)
}

/// `Okta app "Coder" (id)`.
pub fn app_target(app: &Value) -> String {
    format!(
        "Okta app {:?} ({})",
        json_str(app, "label"),
        json_str(app, "id")
    )
}

fn rule_target(server: &str, policy: &Value, rule: &Value) -> String {
    format!(
        "Okta rule {:?} of access policy {:?} (authorization server {server})",
        json_str(rule, "name"),
        json_str(policy, "name")
    )
}

/// The client id of an app.
pub fn client_id_of(app: &Value) -> &str {
    app["credentials"]["oauthClient"]["client_id"]
        .as_str()
        .unwrap_or_default()
}

fn priority(v: &Value) -> i64 {
    v["priority"].as_i64().unwrap_or(i64::MAX)
}

fn active(v: &Value) -> bool {
    matches!(
        v.get("status").and_then(Value::as_str),
        None | Some("ACTIVE")
    )
}

/// The access policy Okta evaluates for `client_id`: the active one of lowest priority whose
/// clients include it or `ALL_CLIENTS`.
pub fn applying_policy<'a>(policies: &'a [Value], client_id: &str) -> Option<&'a Value> {
    let mut candidates: Vec<&Value> = policies
        .iter()
        .filter(|p| active(p))
        .filter(|p| {
            json_strings(&p["conditions"]["clients"]["include"])
                .iter()
                .any(|c| c == client_id || c == "ALL_CLIENTS")
        })
        .collect();
    candidates.sort_by_key(|p| priority(p));
    candidates.first().copied()
}

/// The rule Okta applies to Coder's sign-ins: the active one of lowest priority whose grant
/// types include `authorization_code`.
pub fn applying_rule(rules: &[Value]) -> Option<&Value> {
    let mut candidates: Vec<&Value> = rules
        .iter()
        .filter(|r| active(r))
        .filter(|r| {
            json_strings(&r["conditions"]["grantTypes"]["include"])
                .iter()
                .any(|g| g == "authorization_code")
        })
        .collect();
    candidates.sort_by_key(|r| priority(r));
    candidates.first().copied()
}

/// The rotation an app's `refresh_token` object means.
pub fn rotation_of(rt: &Value) -> Option<Rotation> {
    match rt.get("rotation_type").and_then(Value::as_str)? {
        "STATIC" => Some(Rotation::Reuse),
        "ROTATE" if rt["leeway"].as_u64() == Some(0) => Some(Rotation::RotateStrict),
        "ROTATE" => Some(Rotation::Rotate),
        _ => None,
    }
}

/// The app as it would be sent back: as read, without the read-only link objects.
fn writable_app(app: &Value) -> Value {
    let mut out = app.clone();
    if let Some(o) = out.as_object_mut() {
        o.remove("_links");
        o.remove("_embedded");
    }
    out
}

fn writable_rule(rule: &Value) -> Value {
    let mut out = rule.clone();
    if let Some(o) = out.as_object_mut() {
        o.remove("_links");
    }
    out
}

fn check_app(app: &Value) -> Result<(), ProviderError> {
    let id = json_str(app, "id");
    if json_str(app, "signOnMode") != "OPENID_CONNECT" {
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "Okta app {id} signs on with {:?}, not OpenID Connect: spec.provider.okta.clientId must be the client \
                 ID of the OIDC web app Coder signs in with",
                json_str(app, "signOnMode")
            ),
        });
    }
    let kind = app["settings"]["oauthClient"]["application_type"]
        .as_str()
        .unwrap_or("web");
    if kind == "service" {
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "Okta app {id} is an API service app: Okta never issues refresh tokens to service apps. \
                 spec.provider.okta.clientId must be the client ID of the OIDC web app Coder signs in with"
            ),
        });
    }
    Ok(())
}

/// The plan for `desired` from `snap`.
pub fn plan(
    snap: &Snapshot,
    desired: &DesiredSettings,
    opts: &Options,
) -> Result<Plan, ProviderError> {
    check_desired(desired, snap.server.is_some())?;
    let app = &snap.app;
    check_app(app)?;
    let target = app_target(app);
    let oc = &app["settings"]["oauthClient"];
    let grants = json_strings(&oc["grant_types"]);
    let mut changes = Vec::new();
    let mut next_app = writable_app(app);
    let has_grant = grants.iter().any(|g| g == REFRESH_GRANT);
    if !has_grant {
        let mut with = grants.clone();
        with.push(REFRESH_GRANT.into());
        changes.push(Change::new(
            &target,
            "settings.oauthClient.grant_types",
            json!(grants).to_string(),
            json!(with).to_string(),
            "Okta issues refresh tokens only to apps allowed the refresh_token grant",
        ));
        next_app["settings"]["oauthClient"]["grant_types"] = json!(with);
    }
    // Without the grant, Okta hides the object; what it will hold once the grant is on is what
    // was last stored, else its defaults: unknown here, so a wanted rotation is always sent.
    let current_rt = has_grant
        .then(|| oc.get("refresh_token").cloned())
        .flatten();
    let mut effective_rotation = current_rt.as_ref().and_then(rotation_of);
    let mut window = current_rt.as_ref().and_then(|rt| {
        (rt["rotation_type"] == "ROTATE").then(|| rt["leeway"].as_u64().unwrap_or(DEFAULT_LEEWAY))
    });
    if let Some(r) = desired.rotation {
        let current = current_rt.clone().unwrap_or(Value::Null);
        let want = match r {
            Rotation::Rotate => json!({"rotation_type": "ROTATE", "leeway": opts.leeway}),
            Rotation::RotateStrict => json!({"rotation_type": "ROTATE", "leeway": 0}),
            // The leeway means nothing without rotation: keep what is stored.
            Rotation::Reuse => {
                let mut w = json!({"rotation_type": "STATIC"});
                if let Some(l) = current.get("leeway") {
                    w["leeway"] = l.clone();
                }
                w
            }
        };
        let same = current["rotation_type"] == want["rotation_type"]
            && (want.get("leeway").is_none() || current["leeway"] == want["leeway"]);
        if !same {
            let why = match r {
                Rotation::Rotate => format!(
                    "spec.refreshTokens.rotation: Rotate, with a {}s grace period so that Coder's concurrent refreshes \
                     all succeed (without one, the second refresh presents a token just rotated and Okta revokes the \
                     user's tokens)",
                    opts.leeway
                ),
                Rotation::RotateStrict => "spec.refreshTokens.rotation: RotateStrict".to_string(),
                Rotation::Reuse => "spec.refreshTokens.rotation: Reuse".to_string(),
            };
            changes.push(Change::new(
                &target,
                "settings.oauthClient.refresh_token",
                if current.is_null() {
                    "unset".to_string()
                } else {
                    current.to_string()
                },
                want.to_string(),
                why,
            ));
            next_app["settings"]["oauthClient"]["refresh_token"] = want.clone();
        }
        effective_rotation = Some(r);
        window = (r != Rotation::Reuse).then(|| want["leeway"].as_u64().unwrap_or(0));
    }
    let mut findings = Vec::new();
    if effective_rotation == Some(Rotation::RotateStrict) {
        findings.push(Finding {
            reason: NO_GRACE_PERIOD,
            message: format!(
                "{target} rotates refresh tokens with no grace period (leeway 0): when Coder refreshes a user's token \
                 from two requests at once, the second presents a token just rotated, Okta treats it as reuse and \
                 revokes the user's tokens, signing them out. rotation: Rotate keeps a {DEFAULT_LEEWAY}s grace \
                 period (spec.provider.okta.rotationLeewaySeconds)"
            ),
            blocking: false,
            expires_at: None,
        });
    }
    if !active(app) {
        findings.push(Finding {
            reason: APP_INACTIVE,
            message: format!(
                "{target} is not active: Okta signs no one in to it until it is activated"
            ),
            blocking: false,
            expires_at: None,
        });
    }
    let mut settings = IdpSettings {
        refresh_token_grant: Some(has_grant),
        rotation: effective_rotation,
        rotation_window: window.map(|w| format!("{w}s")),
        ..Default::default()
    };
    let mut rule_write = None;
    match &snap.server {
        None => {
            settings.offline_access = Some(has_grant);
            settings.lifetime = Some(ORG_REFRESH_LIFETIME);
            settings.access_token_lifetime = Some(ORG_ACCESS_LIFETIME);
        }
        Some(server) => {
            let (offline, rw) = plan_rule(server, desired, opts, &mut changes, &mut settings)?;
            settings.offline_access = Some(offline && has_grant);
            rule_write = rw;
        }
    }
    let mut coder = CoderNeeds::default();
    if desired.offline_access {
        coder.add_scopes.push("offline_access".into());
    }
    let app_changed = changes.iter().any(|c| c.target == target);
    Ok(Plan {
        observation: Observation {
            settings,
            changes,
            findings,
            coder,
        },
        app_body: app_changed.then_some(next_app),
        rule: rule_write,
    })
}

/// The rule part of a plan; returns whether the rule allows `offline_access` now, and the write.
fn plan_rule(
    server: &ServerState,
    desired: &DesiredSettings,
    opts: &Options,
    changes: &mut Vec<Change>,
    settings: &mut IdpSettings,
) -> Result<(bool, Option<RuleWrite>), ProviderError> {
    let sid = &server.id;
    let client = &opts.client_id;
    let policy = applying_policy(&server.policies, client).ok_or_else(|| {
        ProviderError::ClientNotFound {
            provider: KIND,
            what: format!("an access policy of authorization server {sid} for client {client}"),
            detail: format!(
                "no active access policy of authorization server {sid} includes client {client} (or ALL_CLIENTS), so \
                 Okta issues Coder no tokens from it. Add Coder's app to an access policy (Security > API > \
                 Authorization Servers > {sid} > Access Policies), or check spec.provider.okta.authorizationServerId"
            ),
        }
    })?;
    let rule = applying_rule(&server.rules).ok_or_else(|| ProviderError::ClientNotFound {
        provider: KIND,
        what: format!("a rule of access policy {:?}", json_str(policy, "name")),
        detail: format!(
            "access policy {:?} of authorization server {sid} has no active rule allowing the authorization code \
             grant, so Coder's sign-ins are refused. Add one in the Admin Console",
            json_str(policy, "name")
        ),
    })?;
    let target = rule_target(sid, policy, rule);
    let mut next = writable_rule(rule);
    let before = changes.len();
    let scopes = json_strings(&rule["conditions"]["scopes"]["include"]);
    let allows_offline = scopes.iter().any(|s| s == "*" || s == "offline_access");
    if desired.offline_access && !allows_offline {
        let mut with = scopes.clone();
        with.push("offline_access".into());
        changes.push(Change::new(
            &target,
            "conditions.scopes.include",
            json!(scopes).to_string(),
            json!(with).to_string(),
            "spec.refreshTokens.offlineAccess: Okta issues a refresh token only when the rule allows offline_access",
        ));
        next["conditions"]["scopes"]["include"] = json!(with);
    }
    let token = &rule["actions"]["token"];
    let current = |k: &str, default: u64| token[k].as_u64().unwrap_or(default);
    let cur_access = current("accessTokenLifetimeMinutes", 60);
    let cur_life = current("refreshTokenLifetimeMinutes", 0);
    let cur_window = current("refreshTokenWindowMinutes", 10_080);
    // check_desired accepted these.
    let want = |d: Option<Duration>| d.and_then(|d| minutes("", d).ok());
    let access = want(desired.access_token_lifetime).unwrap_or(cur_access);
    let life = want(desired.lifetime).unwrap_or(cur_life);
    let window = want(desired.idle_timeout).unwrap_or(cur_window);
    if life != 0 && life < access {
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "the refresh-token lifetime ({life} minutes) would be shorter than the access-token lifetime ({access} \
                 minutes) on {target}; Okta refuses that. Set spec.refreshTokens.lifetime to at least the access-token \
                 lifetime"
            ),
        });
    }
    if life != 0 && window > life {
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "the refresh-token idle window ({window} minutes) would be longer than the refresh-token lifetime \
                 ({life} minutes) on {target}. Set spec.refreshTokens.idleTimeout to at most the lifetime"
            ),
        });
    }
    let fmt_min = |m: u64, unlimited: bool| {
        if unlimited && m == 0 {
            "unlimited".to_string()
        } else {
            show_duration(Some(Duration::from_secs(m * 60)))
        }
    };
    for (key, cur, want, unlimited, why) in [
        (
            "accessTokenLifetimeMinutes",
            cur_access,
            access,
            false,
            "spec.refreshTokens.accessTokenLifetime",
        ),
        (
            "refreshTokenLifetimeMinutes",
            cur_life,
            life,
            true,
            "spec.refreshTokens.lifetime",
        ),
        (
            "refreshTokenWindowMinutes",
            cur_window,
            window,
            false,
            "spec.refreshTokens.idleTimeout",
        ),
    ] {
        if cur != want || token.get(key).is_none() {
            changes.push(Change::new(
                &target,
                format!("actions.token.{key}"),
                fmt_min(cur, unlimited),
                fmt_min(want, unlimited),
                why,
            ));
            next["actions"]["token"][key] = json!(want);
        }
    }
    settings.access_token_lifetime = Some(Duration::from_secs(cur_access * 60));
    settings.lifetime = (cur_life != 0).then(|| Duration::from_secs(cur_life * 60));
    settings.idle_timeout = Some(Duration::from_secs(cur_window * 60));
    if changes.len() == before {
        return Ok((allows_offline, None));
    }
    let others: Vec<String> = json_strings(&policy["conditions"]["clients"]["include"])
        .into_iter()
        .filter(|c| c != client)
        .collect();
    if !others.is_empty() && !opts.allow_shared_rule {
        let who = if others.iter().any(|c| c == "ALL_CLIENTS") {
            format!("every app of authorization server {sid}")
        } else {
            format!("client(s) {}", others.join(", "))
        };
        let what: Vec<String> = changes[before..].iter().map(ToString::to_string).collect();
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "{target} also applies to {who}: changing it ({}) would change their tokens too. Give Coder's app an \
                 access policy of its own (listed before this one), or set spec.provider.okta.allowSharedRule: true to \
                 change the shared rule",
                what.join("; ")
            ),
        });
    }
    Ok((
        allows_offline,
        Some(RuleWrite {
            policy: json_str(policy, "id").to_string(),
            rule: json_str(rule, "id").to_string(),
            body: next,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(grants: &[&str], rt: Option<Value>) -> Value {
        let mut a = json!({"id": "0oa1", "label": "Coder", "status": "ACTIVE", "signOnMode": "OPENID_CONNECT",
            "credentials": {"oauthClient": {"client_id": "coder"}},
            "settings": {"oauthClient": {"grant_types": grants, "application_type": "web",
                                          "redirect_uris": ["https://c/cb"]}},
            "_links": {"self": {}}});
        if let Some(rt) = rt {
            a["settings"]["oauthClient"]["refresh_token"] = rt;
        }
        a
    }

    fn server(clients: &[&str], scopes: &[&str]) -> ServerState {
        ServerState {
            id: "aus1".into(),
            policies: vec![
                json!({"id": "p2", "name": "Later", "status": "ACTIVE", "priority": 2,
                       "conditions": {"clients": {"include": ["coder"]}}}),
                json!({"id": "p1", "name": "First", "status": "ACTIVE", "priority": 1,
                       "conditions": {"clients": {"include": clients}}}),
            ],
            rules: vec![
                json!({"id": "r1", "name": "R", "status": "ACTIVE", "priority": 1, "type": "RESOURCE_ACCESS",
                "conditions": {"grantTypes": {"include": ["authorization_code"]}, "scopes": {"include": scopes}},
                "actions": {"token": {"accessTokenLifetimeMinutes": 60, "refreshTokenLifetimeMinutes": 0,
                                      "refreshTokenWindowMinutes": 10080}}}),
            ],
        }
    }

    fn opts() -> Options {
        Options {
            client_id: "coder".into(),
            leeway: DEFAULT_LEEWAY,
            allow_shared_rule: false,
        }
    }

    fn wanted() -> DesiredSettings {
        DesiredSettings {
            offline_access: true,
            lifetime: Some(Duration::from_secs(2160 * 3600)),
            idle_timeout: Some(Duration::from_secs(720 * 3600)),
            rotation: Some(Rotation::Rotate),
            access_token_lifetime: None,
        }
    }

    #[test]
    fn everything_owned_changes_and_nothing_else() {
        let snap = Snapshot {
            app: app(&["authorization_code", "implicit"], None),
            server: Some(server(&["coder"], &["openid"])),
        };
        let p = plan(&snap, &wanted(), &opts()).unwrap();
        let body = p.app_body.unwrap();
        assert_eq!(
            body["settings"]["oauthClient"]["grant_types"],
            json!(["authorization_code", "implicit", "refresh_token"])
        );
        assert_eq!(
            body["settings"]["oauthClient"]["refresh_token"],
            json!({"rotation_type": "ROTATE", "leeway": 30})
        );
        assert_eq!(
            body["settings"]["oauthClient"]["redirect_uris"],
            json!(["https://c/cb"])
        );
        assert!(body.get("_links").is_none());
        let rule = p.rule.unwrap();
        assert_eq!((rule.policy.as_str(), rule.rule.as_str()), ("p1", "r1"));
        assert_eq!(
            rule.body["conditions"]["scopes"]["include"],
            json!(["openid", "offline_access"])
        );
        assert_eq!(
            rule.body["actions"]["token"],
            json!({"accessTokenLifetimeMinutes": 60, "refreshTokenLifetimeMinutes": 129600,
                   "refreshTokenWindowMinutes": 43200})
        );
        assert_eq!(p.observation.changes.len(), 5);
    }

    #[test]
    fn converged_plans_nothing() {
        let mut s = server(&["coder"], &["*"]);
        s.rules[0]["actions"]["token"] = json!({"accessTokenLifetimeMinutes": 60,
            "refreshTokenLifetimeMinutes": 129600, "refreshTokenWindowMinutes": 43200});
        let snap = Snapshot {
            app: app(
                &["authorization_code", "refresh_token"],
                Some(json!({"rotation_type": "ROTATE", "leeway": 30})),
            ),
            server: Some(s),
        };
        let p = plan(&snap, &wanted(), &opts()).unwrap();
        assert!(
            p.observation.changes.is_empty(),
            "{:?}",
            p.observation.changes
        );
        assert!(p.app_body.is_none() && p.rule.is_none());
        assert_eq!(
            p.observation.settings.rotation_window.as_deref(),
            Some("30s")
        );
        assert_eq!(p.observation.settings.offline_access, Some(true));
    }

    #[test]
    fn a_shared_rule_is_reported_and_left_alone_unless_allowed() {
        let snap = Snapshot {
            app: app(&["authorization_code", "refresh_token"], None),
            server: Some(server(&["ALL_CLIENTS"], &["openid"])),
        };
        let e = plan(&snap, &wanted(), &opts()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("every app of authorization server aus1"),
            "{msg}"
        );
        assert!(msg.contains("allowSharedRule"), "{msg}");
        let o = Options {
            allow_shared_rule: true,
            ..opts()
        };
        assert!(plan(&snap, &wanted(), &o).unwrap().rule.is_some());
    }

    #[test]
    fn ranges_units_and_the_org_server() {
        let d = |s: u64| Some(Duration::from_secs(s));
        for bad in [
            DesiredSettings {
                access_token_lifetime: d(4 * 60),
                ..Default::default()
            },
            DesiredSettings {
                lifetime: d(90 * 60 + 30),
                ..Default::default()
            },
            DesiredSettings {
                idle_timeout: d(5 * 60),
                ..Default::default()
            },
        ] {
            assert!(check_desired(&bad, true).is_err());
        }
        let org = DesiredSettings {
            lifetime: d(3600),
            ..Default::default()
        };
        assert!(
            check_desired(&org, false)
                .unwrap_err()
                .to_string()
                .contains("org authorization server")
        );
        let snap = Snapshot {
            app: app(&["authorization_code"], None),
            server: None,
        };
        let p = plan(
            &snap,
            &DesiredSettings {
                offline_access: true,
                rotation: Some(Rotation::RotateStrict),
                ..Default::default()
            },
            &opts(),
        )
        .unwrap();
        assert!(p.rule.is_none());
        assert_eq!(p.observation.findings[0].reason, NO_GRACE_PERIOD);
        assert_eq!(p.observation.settings.lifetime, Some(ORG_REFRESH_LIFETIME));
        // A lifetime below the access token's.
        let snap = Snapshot {
            app: app(&["authorization_code", "refresh_token"], None),
            server: Some(server(&["coder"], &["*"])),
        };
        let short = DesiredSettings {
            lifetime: d(30 * 60),
            idle_timeout: d(20 * 60),
            ..Default::default()
        };
        assert!(plan(&snap, &short, &opts()).is_err());
    }

    #[test]
    fn the_applying_policy_and_rule_follow_priority_and_status() {
        let s = server(&["coder"], &["*"]);
        assert_eq!(applying_policy(&s.policies, "coder").unwrap()["id"], "p1");
        assert_eq!(applying_policy(&s.policies, "other"), None);
        let mut inactive = s.policies.clone();
        inactive[1]["status"] = json!("INACTIVE");
        assert_eq!(applying_policy(&inactive, "coder").unwrap()["id"], "p2");
        let rules = vec![
            json!({"id": "a", "priority": 1, "status": "ACTIVE", "conditions": {"grantTypes": {"include": ["client_credentials"]}}}),
            json!({"id": "b", "priority": 3, "status": "ACTIVE", "conditions": {"grantTypes": {"include": ["authorization_code"]}}}),
            json!({"id": "c", "priority": 2, "status": "ACTIVE", "conditions": {"grantTypes": {"include": ["authorization_code"]}}}),
        ];
        assert_eq!(applying_rule(&rules).unwrap()["id"], "c");
    }
}
