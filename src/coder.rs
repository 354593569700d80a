//! The Coder side, pure: merging `CODER_OIDC_SCOPES` and `CODER_OIDC_AUTH_URL_PARAMS`, reading
//! the named container's env entries and who owns them, building the server-side-apply body, and
//! judging the rollout. No I/O here.
//!
//! Merge rules (the product contract, `design/api.md`):
//! - The current value is the env entry's literal `value`; when the entry is absent (or empty,
//!   which Coder treats as unset), Coder's default (`openid,profile,email` and
//!   `{"access_type": "offline"}`).
//! - Scopes: every existing scope is kept in its order, then required and extra scopes are
//!   appended; no duplicates and no spaces (Coder splits on commas and does not trim, so a stray
//!   space would make a scope Coder sends but the provider does not know). Scopes the provider
//!   rejects (`offline_access` for Google) are removed.
//! - Params: the existing JSON object is parsed and every key kept; extra and then required params
//!   are set (`prompt` values combine); the result is compact JSON with sorted keys, so the same
//!   input always gives the same bytes. A live value equal in meaning is kept as it is.
//! - Owners: a manager that applies, or updates without being one of kubectl's imperative commands
//!   (or a console), owns its value declaratively and is never overwritten silently.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::EnvVar;
use serde_json::{Value, json};

use crate::crd::FIELD_MANAGER;
use crate::providers::CoderNeeds;

/// `CODER_OIDC_SCOPES`.
pub const SCOPES_ENV: &str = "CODER_OIDC_SCOPES";
/// `CODER_OIDC_AUTH_URL_PARAMS`.
pub const PARAMS_ENV: &str = "CODER_OIDC_AUTH_URL_PARAMS";
/// Coder's default scopes.
pub const DEFAULT_SCOPES: &str = "openid,profile,email";
/// Coder's default auth URL params.
pub const DEFAULT_PARAMS: &str = r#"{"access_type": "offline"}"#;

/// Field managers that edit objects by hand (kubectl's imperative commands, consoles): a value they
/// set is drift, restored by the operator. Every other manager, and every `Apply`, is treated as
/// a declarative owner whose value would come back on its next sync (Helm, Argo CD, Flux,
/// Terraform, kapp, Fleet, a CI `kubectl replace`, tools the operator does not know), so it is
/// never overwritten silently. `before-first-apply` is what the API server records as the owner
/// of every field after `managedFields` was reset: nobody's declaration, taken over like a hand
/// edit.
const IMPERATIVE_MANAGERS: &[&str] = &[
    "kubectl",
    "kubectl-edit",
    "kubectl-patch",
    "kubectl-set",
    "kubectl-create",
    "kubectl-run",
    "kubectl-label",
    "kubectl-annotate",
    "kubectl-rollout",
    "k9s",
    "Mozilla",
    "dashboard",
    "before-first-apply",
];

/// The field manager that applies the env entries of `container`: one per container, so an apply
/// for one container never prunes the operator's entries in another (two policies on two
/// containers of one Deployment, or a policy moved to another container, whose old container
/// keeps its values). The Coder chart's container `coder` keeps the plain name.
pub fn field_manager(container: &str) -> String {
    if container == crate::crd::DEFAULT_CONTAINER {
        FIELD_MANAGER.to_string()
    } else {
        format!("{FIELD_MANAGER}/{container}")
    }
}

/// Whether `manager` is one of the operator's own field managers.
pub fn is_operator_manager(manager: &str) -> bool {
    manager == FIELD_MANAGER
        || manager
            .strip_prefix(FIELD_MANAGER)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Coder flags that win over the two env variables.
pub const OVERRIDING_FLAGS: [(&str, &str); 2] = [
    ("--oidc-scopes", SCOPES_ENV),
    ("--oidc-auth-url-params", PARAMS_ENV),
];

/// Coder's YAML config file variable.
pub const CONFIG_PATH_ENV: &str = "CODER_CONFIG_PATH";

/// Merges scopes. `current` is the env value (`None` = absent).
pub fn merge_scopes(current: Option<&str>, needs: &CoderNeeds, extra: &[String]) -> String {
    let base = match current {
        Some(v) if !v.trim().is_empty() => v,
        _ => DEFAULT_SCOPES,
    };
    let remove: BTreeSet<&str> = needs
        .remove_scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !extra.iter().any(|e| e.trim() == *s))
        .collect();
    let mut seen = BTreeSet::new();
    let mut out: Vec<String> = Vec::new();
    let candidates = split_scopes(base)
        .into_iter()
        .chain(needs.add_scopes.iter().cloned())
        .chain(extra.iter().map(|s| s.trim().to_string()));
    for scope in candidates {
        if scope.is_empty() || remove.contains(scope.as_str()) {
            continue;
        }
        if seen.insert(scope.clone()) {
            out.push(scope);
        }
    }
    out.join(",")
}

/// Splits a scopes value as Coder does (CSV: commas separate, double quotes may quote), trimming
/// the spaces Coder would otherwise keep.
fn split_scopes(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The current params value is not a JSON object of strings, so it cannot be merged safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{PARAMS_ENV} is not a JSON object ({detail}); fix the value in the Deployment so it can be merged"
)]
pub struct InvalidParams {
    /// Parser message.
    pub detail: String,
}

/// Merges auth URL params. `current` is the env value (`None` = absent). The parameters refresh
/// tokens need (`needs.params`) always win over an existing value; `prompt`, a space-separated list
/// in OpenID Connect, keeps the values already there and adds the needed ones
/// (`select_account` + `consent` → `select_account consent`).
pub fn merge_params(
    current: Option<&str>,
    needs: &CoderNeeds,
    extra: &BTreeMap<String, String>,
) -> Result<String, InvalidParams> {
    let base = match current {
        Some(v) if !v.trim().is_empty() => v,
        _ => DEFAULT_PARAMS,
    };
    let parsed: Value = serde_json::from_str(base).map_err(|e| InvalidParams {
        detail: e.to_string(),
    })?;
    let Value::Object(map) = parsed else {
        return Err(InvalidParams {
            detail: format!("found a JSON {}", json_kind(&parsed)),
        });
    };
    let mut merged: BTreeMap<String, Value> = map.into_iter().collect();
    for (k, v) in extra.iter().chain(needs.params.iter()) {
        let value = match (k.as_str(), merged.get(k).and_then(Value::as_str)) {
            ("prompt", Some(old)) => union_prompt(old, v),
            _ => v.clone(),
        };
        merged.insert(k.clone(), Value::String(value));
    }
    Ok(serde_json::to_string(&merged).unwrap_or_default())
}

/// `prompt` values of `old` followed by those of `add` not in it (`none` cannot be combined, so
/// it gives way).
fn union_prompt(old: &str, add: &str) -> String {
    let mut out: Vec<&str> = old
        .split_whitespace()
        .filter(|p| *p != "none" || add.split_whitespace().all(|a| a == "none"))
        .collect();
    for p in add.split_whitespace() {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.join(" ")
}

/// A parameter of `spec.coder.authURLParams` that contradicts one refresh tokens need, as
/// `(key, the policy's value, the needed value)`. `prompt` values combine instead (unless the
/// policy asks for `none`, which cannot be combined).
pub fn conflicting_param<'a>(
    needs: &'a CoderNeeds,
    extra: &'a BTreeMap<String, String>,
) -> Option<(&'a str, &'a str, &'a str)> {
    needs.params.iter().find_map(|(k, need)| {
        let have = extra.get(k)?;
        let conflict = if k == "prompt" {
            have.split_whitespace().any(|p| p == "none")
        } else {
            have != need
        };
        conflict.then_some((k.as_str(), have.as_str(), need.as_str()))
    })
}

/// Whether two params values mean the same to Coder (equal JSON values; key order and spacing do
/// not matter).
pub fn same_params(current: Option<&str>, wanted: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<Value>(s).ok();
    match (current.and_then(parse), parse(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How one of our env entries stands in the live Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvEntry {
    /// Literal value (`None` when absent or when it uses `valueFrom`).
    pub value: Option<String>,
    /// The entry exists.
    pub present: bool,
    /// The entry uses `valueFrom`.
    pub value_from: bool,
    /// Appears more than once (server-side apply would fail).
    pub duplicated: bool,
    /// Other managers owning the value, with whether each is declarative.
    pub other_owners: Vec<Owner>,
}

/// A field manager other than ours that owns an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Manager name.
    pub manager: String,
    /// `Apply` or a known declarative tool (Helm, Argo CD, Flux, ...).
    pub declarative: bool,
}

/// What was found in the Deployment for the policy's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// The container exists.
    Found {
        /// `CODER_OIDC_SCOPES`.
        scopes: EnvEntry,
        /// `CODER_OIDC_AUTH_URL_PARAMS`.
        params: EnvEntry,
        /// `--oidc-*` flags in the container's command or args, with the variable each overrides.
        flags: Vec<(&'static str, &'static str)>,
        /// `CODER_CONFIG_PATH` as set in the container's env (`valueFrom` shown as such).
        config_path: Option<String>,
    },
    /// No container of that name; the names that exist.
    Missing(Vec<String>),
}

/// Reads the container's two env entries and their owners.
pub fn inspect(deployment: &Deployment, container: &str) -> ContainerState {
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let Some(c) = containers.iter().find(|c| c.name == container) else {
        return ContainerState::Missing(containers.iter().map(|c| c.name.clone()).collect());
    };
    let env: &[EnvVar] = c.env.as_deref().unwrap_or_default();
    let entry = |name: &str| {
        let matches: Vec<&EnvVar> = env.iter().filter(|e| e.name == name).collect();
        let first = matches.first();
        EnvEntry {
            value: first
                .filter(|e| e.value_from.is_none())
                .map(|e| e.value.clone().unwrap_or_default()),
            present: first.is_some(),
            value_from: first.is_some_and(|e| e.value_from.is_some()),
            duplicated: matches.len() > 1,
            other_owners: owners(deployment, container, name),
        }
    };
    let words = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .flat_map(|a| a.split_whitespace());
    let mut flags = Vec::new();
    for word in words {
        for (flag, env) in OVERRIDING_FLAGS {
            let named = word == flag || word.strip_prefix(flag).is_some_and(|r| r.starts_with('='));
            if named && !flags.contains(&(flag, env)) {
                flags.push((flag, env));
            }
        }
    }
    let config_path =
        env.iter()
            .find(|e| e.name == CONFIG_PATH_ENV)
            .map(|e| match (&e.value, &e.value_from) {
                (_, Some(_)) => "(from valueFrom)".to_string(),
                (Some(v), None) => v.clone(),
                (None, None) => String::new(),
            });
    ContainerState::Found {
        scopes: entry(SCOPES_ENV),
        params: entry(PARAMS_ENV),
        flags,
        config_path: config_path.filter(|p| !p.trim().is_empty()),
    }
}

/// The kind of object an `envFrom` entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `configMapRef`.
    ConfigMap,
    /// `secretRef`.
    Secret,
}

/// One `envFrom` entry of the container, in the container's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSource {
    /// ConfigMap or Secret.
    pub kind: SourceKind,
    /// Its name (in the Deployment's namespace).
    pub name: String,
    /// `prefix`, put before every key.
    pub prefix: String,
}

impl std::fmt::Display for EnvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        };
        write!(f, "{kind} {:?}", self.name)?;
        if !self.prefix.is_empty() {
            write!(f, " (prefix {:?})", self.prefix)?;
        }
        Ok(())
    }
}

/// What reading an `envFrom` source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFound {
    /// Its keys (never its values).
    Keys(BTreeSet<String>),
    /// It does not exist.
    Missing,
    /// The operator may not read it (the API server's message).
    Forbidden(String),
}

/// An `envFrom` source and what reading it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRead {
    /// The source.
    pub source: EnvSource,
    /// What was found.
    pub found: SourceFound,
}

impl SourceRead {
    /// The source sets the variable `env` (its prefix plus one of its keys).
    pub fn supplies(&self, env: &str) -> bool {
        match &self.found {
            SourceFound::Keys(keys) => env
                .strip_prefix(self.source.prefix.as_str())
                .is_some_and(|key| keys.contains(key)),
            SourceFound::Missing | SourceFound::Forbidden(_) => false,
        }
    }
}

/// The container's `envFrom` sources that could set one of our variables: only needed (and only
/// returned) when at least one of them is absent from its `env`, since an `env` entry overrides
/// anything `envFrom` sets.
pub fn env_sources(deployment: &Deployment, container: &str) -> Vec<EnvSource> {
    let ContainerState::Found { scopes, params, .. } = inspect(deployment, container) else {
        return Vec::new();
    };
    if scopes.present && params.present {
        return Vec::new();
    }
    let c = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == container));
    c.and_then(|c| c.env_from.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let (kind, name) = match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), _) => (SourceKind::ConfigMap, r.name.clone()),
                (None, Some(r)) => (SourceKind::Secret, r.name.clone()),
                (None, None) => return None,
            };
            Some(EnvSource {
                kind,
                name,
                prefix: e.prefix.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// Managers other than ours whose managed fields include the env entry's value.
fn owners(deployment: &Deployment, container: &str, env_name: &str) -> Vec<Owner> {
    let container_key = format!("k:{}", json!({ "name": container }));
    let env_key = format!("k:{}", json!({ "name": env_name }));
    let mut out = Vec::new();
    for mf in deployment.metadata.managed_fields.iter().flatten() {
        let manager = mf.manager.clone().unwrap_or_default();
        if manager == field_manager(container)
            || mf.subresource.as_deref().is_some_and(|s| !s.is_empty())
        {
            continue;
        }
        let Some(fields) = mf.fields_v1.as_ref() else {
            continue;
        };
        let owned = fields
            .0
            .pointer(&format!(
                "/f:spec/f:template/f:spec/f:containers/{}/f:env/{}",
                escape_pointer(&container_key),
                escape_pointer(&env_key)
            ))
            .and_then(Value::as_object)
            .is_some_and(|entry| {
                entry.contains_key("f:value") || entry.contains_key("f:valueFrom")
            });
        if owned {
            // Another of the operator's own managers (the one of an earlier version) is taken
            // over, never a conflict.
            let declarative = !is_operator_manager(&manager)
                && (mf.operation.as_deref() == Some("Apply")
                    || !IMPERATIVE_MANAGERS.contains(&manager.as_str()));
            if !out.iter().any(|o: &Owner| o.manager == manager) {
                out.push(Owner {
                    manager,
                    declarative,
                });
            }
        }
    }
    out
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Server-side-apply body touching only our two env entries of the container.
pub fn apply_body(
    namespace: &str,
    deployment: &str,
    container: &str,
    scopes: &str,
    params: &str,
) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": deployment, "namespace": namespace },
        "spec": { "template": { "spec": { "containers": [{
            "name": container,
            "env": [
                { "name": SCOPES_ENV, "value": scopes },
                { "name": PARAMS_ENV, "value": params },
            ]
        }]}}}
    })
}

/// Where the Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// All replicas run the current template.
    Complete,
    /// Still rolling; what is being waited for.
    InProgress(String),
    /// The Deployment controller gave up (`ProgressDeadlineExceeded`).
    Failed(String),
    /// The Deployment is paused (`spec.paused`) with the current template not rolled out: the
    /// Deployment controller creates nothing until it is resumed.
    Paused(String),
}

/// Judges the rollout the way `kubectl rollout status` and Argo CD do; a paused Deployment whose
/// rollout is not complete is `Paused`, not in progress (it would wait forever).
pub fn rollout(deployment: &Deployment) -> Rollout {
    let judged = rollout_of(deployment);
    let paused = deployment
        .spec
        .as_ref()
        .and_then(|s| s.paused)
        .unwrap_or(false);
    match judged {
        Rollout::InProgress(m) if paused => Rollout::Paused(m),
        other => other,
    }
}

fn rollout_of(deployment: &Deployment) -> Rollout {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let want = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return Rollout::InProgress(format!(
            "waiting for the Deployment controller to observe {name:?}"
        ));
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::InProgress(format!(
            "waiting for the Deployment controller to observe generation {generation}"
        ));
    }
    if let Some(p) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && p.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Rollout::Failed(format!(
            "Deployment {name:?} exceeded its progress deadline: {}",
            p.message.clone().unwrap_or_default()
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::InProgress(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Rollout::InProgress(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Rollout::InProgress(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn needs(add: &[&str], remove: &[&str], params: &[(&str, &str)]) -> CoderNeeds {
        CoderNeeds {
            add_scopes: add.iter().map(|s| s.to_string()).collect(),
            remove_scopes: remove.iter().map(|s| s.to_string()).collect(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn absent_scopes_start_from_coder_default() {
        let got = merge_scopes(
            None,
            &needs(&["offline_access"], &[], &[]),
            &["groups".into()],
        );
        assert_eq!(got, "openid,profile,email,offline_access,groups");
    }

    #[test]
    fn existing_scopes_keep_order_and_lose_spaces_and_duplicates() {
        let got = merge_scopes(
            Some("openid, groups,email,,groups"),
            &needs(&["offline_access", "email"], &[], &[]),
            &[],
        );
        assert_eq!(got, "openid,groups,email,offline_access");
    }

    #[test]
    fn google_removes_offline_access() {
        let got = merge_scopes(
            Some("openid,offline_access,profile"),
            &needs(&[], &["offline_access"], &[]),
            &[],
        );
        assert_eq!(got, "openid,profile");
    }

    #[test]
    fn quoted_csv_scopes_are_split_like_coder() {
        assert_eq!(
            merge_scopes(Some(r#""openid","email""#), &CoderNeeds::default(), &[]),
            "openid,email"
        );
    }

    #[test]
    fn params_keep_existing_keys_and_sort() {
        let got = merge_params(
            Some(r#"{"hd":"example.com","access_type":"online"}"#),
            &needs(
                &[],
                &[],
                &[("access_type", "offline"), ("prompt", "consent")],
            ),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            got,
            r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#
        );
    }

    #[test]
    fn absent_params_start_from_coder_default() {
        let got = merge_params(
            None,
            &CoderNeeds::default(),
            &BTreeMap::from([("hd".into(), "x.io".into())]),
        )
        .unwrap();
        assert_eq!(got, r#"{"access_type":"offline","hd":"x.io"}"#);
    }

    #[test]
    fn non_object_params_are_an_error() {
        assert!(merge_params(Some("[1]"), &CoderNeeds::default(), &BTreeMap::new()).is_err());
        assert!(merge_params(Some("{oops"), &CoderNeeds::default(), &BTreeMap::new()).is_err());
    }

    fn deployment(env: Value, managed: Value) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coder", "namespace": "coder", "generation": 2, "managedFields": managed},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "coder"}},
                "template": {"metadata": {"labels": {"app": "coder"}}, "spec": {"containers": [
                    {"name": "coder", "image": "ghcr.io/coder/coder:v2", "env": env}]}}},
        }))
        .unwrap()
    }

    fn env_fields(manager: &str, operation: &str, env: &str) -> Value {
        json!({"manager": manager, "operation": operation, "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"coder\"}": {
                "f:env": {format!("k:{{\"name\":\"{env}\"}}"): {".": {}, "f:name": {}, "f:value": {}}}}}}}}}})
    }

    #[test]
    fn env_from_sources_are_listed_only_while_a_variable_is_absent() {
        let with = |env: Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "coder"},
                "spec": {"selector": {}, "template": {"spec": {"containers": [
                    {"name": "sidecar", "envFrom": [{"configMapRef": {"name": "not-ours"}}]},
                    {"name": "coder", "env": env, "envFrom": [
                        {"secretRef": {"name": "coder-db"}},
                        {"configMapRef": {"name": "coder-env", "optional": true}, "prefix": "CODER_"}
                    ]}
                ]}}}
            }))
            .unwrap()
        };
        let d = with(json!([{"name": SCOPES_ENV, "value": "openid"}]));
        let sources = env_sources(&d, "coder");
        assert_eq!(
            sources,
            vec![
                EnvSource {
                    kind: SourceKind::Secret,
                    name: "coder-db".into(),
                    prefix: String::new()
                },
                EnvSource {
                    kind: SourceKind::ConfigMap,
                    name: "coder-env".into(),
                    prefix: "CODER_".into()
                },
            ]
        );
        assert_eq!(
            sources[1].to_string(),
            r#"ConfigMap "coder-env" (prefix "CODER_")"#
        );
        let read = SourceRead {
            source: sources[1].clone(),
            found: SourceFound::Keys(["OIDC_AUTH_URL_PARAMS".to_string()].into()),
        };
        assert!(read.supplies(PARAMS_ENV));
        assert!(!read.supplies(SCOPES_ENV));
        // Both set in env: envFrom cannot matter, nothing to read.
        let d = with(
            json!([{"name": SCOPES_ENV, "value": "openid"}, {"name": PARAMS_ENV, "value": "{}"}]),
        );
        assert!(env_sources(&d, "coder").is_empty());
        assert!(env_sources(&d, "missing").is_empty());
    }

    #[test]
    fn inspect_classifies_owners() {
        let d = deployment(
            json!([{"name": SCOPES_ENV, "value": "openid"}, {"name": PARAMS_ENV, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
            json!([
                env_fields("helm", "Update", SCOPES_ENV),
                env_fields("kubectl-edit", "Update", SCOPES_ENV),
                env_fields(FIELD_MANAGER, "Apply", SCOPES_ENV)
            ]),
        );
        let ContainerState::Found { scopes, params, .. } = inspect(&d, "coder") else {
            panic!("container")
        };
        assert_eq!(scopes.value.as_deref(), Some("openid"));
        assert_eq!(
            scopes.other_owners,
            vec![
                Owner {
                    manager: "helm".into(),
                    declarative: true
                },
                Owner {
                    manager: "kubectl-edit".into(),
                    declarative: false
                }
            ]
        );
        assert!(params.value_from && params.value.is_none());
        assert_eq!(
            inspect(&d, "web"),
            ContainerState::Missing(vec!["coder".into()])
        );
    }

    #[test]
    fn apply_owner_is_declarative() {
        let d = deployment(
            json!([{"name": PARAMS_ENV, "value": "{}"}]),
            json!([env_fields("argocd-controller", "Apply", PARAMS_ENV)]),
        );
        let ContainerState::Found { params, scopes, .. } = inspect(&d, "coder") else {
            panic!()
        };
        assert!(params.other_owners[0].declarative);
        assert!(!scopes.present);
    }

    #[test]
    fn rollout_states() {
        let mut d = deployment(json!([]), json!([]));
        assert!(matches!(rollout(&d), Rollout::InProgress(_)));
        d.status = Some(serde_json::from_value(json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1})).unwrap());
        assert_eq!(
            rollout(&d),
            Rollout::InProgress("1 old replicas pending termination".into())
        );
        d.status = Some(serde_json::from_value(json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1})).unwrap());
        assert_eq!(rollout(&d), Rollout::Complete);
        d.status = Some(serde_json::from_value(json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"coder-1\" has timed out progressing."}]})).unwrap());
        assert!(matches!(rollout(&d), Rollout::Failed(m) if m.contains("timed out")));
    }

    #[test]
    fn a_paused_deployment_with_a_rollout_pending_is_paused_not_in_progress() {
        let mut d = deployment(json!([]), json!([]));
        d.spec.as_mut().unwrap().paused = Some(true);
        // The template changed while paused: the controller made no new ReplicaSet.
        d.status = Some(serde_json::from_value(json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 0, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "Unknown", "reason": "DeploymentPaused", "message": "Deployment is paused"}]})).unwrap());
        assert!(matches!(rollout(&d), Rollout::Paused(m) if m.contains("0 of 1")));
        // Paused with nothing to roll out is complete.
        d.status = Some(serde_json::from_value(json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1})).unwrap());
        assert_eq!(rollout(&d), Rollout::Complete);
    }

    #[test]
    fn one_field_manager_per_container_and_all_of_them_are_ours() {
        assert_eq!(field_manager("coder"), "oidc-refresh-operator");
        assert_eq!(field_manager("proxy"), "oidc-refresh-operator/proxy");
        assert!(is_operator_manager("oidc-refresh-operator"));
        assert!(is_operator_manager("oidc-refresh-operator/proxy"));
        assert!(!is_operator_manager("oidc-refresh-operator-fork"));
        assert!(!is_operator_manager("helm"));
    }

    #[test]
    fn prompt_values_combine_and_required_params_are_checked() {
        assert_eq!(
            union_prompt("select_account", "consent"),
            "select_account consent"
        );
        assert_eq!(union_prompt("consent login", "consent"), "consent login");
        assert_eq!(union_prompt("none", "consent"), "consent");
        let google = needs(
            &[],
            &["offline_access"],
            &[("access_type", "offline"), ("prompt", "consent")],
        );
        let extra = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            conflicting_param(&google, &extra("prompt", "select_account")),
            None
        );
        assert_eq!(
            conflicting_param(&google, &extra("prompt", "none")),
            Some(("prompt", "none", "consent"))
        );
        assert_eq!(
            conflicting_param(&google, &extra("access_type", "online")),
            Some(("access_type", "online", "offline"))
        );
        assert_eq!(
            conflicting_param(&google, &extra("hd", "example.com")),
            None
        );
        assert_eq!(
            merge_params(
                Some(r#"{"prompt":"login"}"#),
                &google,
                &extra("prompt", "select_account")
            )
            .unwrap(),
            r#"{"access_type":"offline","prompt":"login select_account consent"}"#
        );
    }

    #[test]
    fn params_are_compared_as_json() {
        assert!(same_params(
            Some(DEFAULT_PARAMS),
            r#"{"access_type":"offline"}"#
        ));
        assert!(same_params(
            Some(r#"{"b":"2", "a":"1"}"#),
            r#"{"a":"1","b":"2"}"#
        ));
        assert!(!same_params(Some(r#"{"a":"1"}"#), r#"{"a":"2"}"#));
        assert!(!same_params(Some("not json"), r#"{"a":"2"}"#));
        assert!(!same_params(None, r#"{}"#));
    }

    #[test]
    fn coder_flags_are_found_in_command_and_args() {
        let mut d = deployment(
            json!([{"name": "CODER_CONFIG_PATH", "value": "/c.yaml"}]),
            json!([]),
        );
        let c = &mut d
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0];
        c.command = Some(vec!["/opt/coder".into(), "server".into()]);
        c.args = Some(vec![
            "--oidc-auth-url-params".into(),
            "{}".into(),
            "--oidc-scopes=openid".into(),
            "--oidc-scopes-extra".into(),
        ]);
        let ContainerState::Found {
            flags, config_path, ..
        } = inspect(&d, "coder")
        else {
            panic!()
        };
        assert_eq!(
            flags,
            [
                ("--oidc-auth-url-params", PARAMS_ENV),
                ("--oidc-scopes", SCOPES_ENV)
            ]
        );
        assert_eq!(config_path.as_deref(), Some("/c.yaml"));
    }

    fn scope_strategy() -> impl Strategy<Value = String> {
        prop::string::string_regex("[a-z_:.]{1,12}").unwrap()
    }

    proptest! {
        #[test]
        fn scope_merge_is_idempotent_and_keeps_existing(
            existing in prop::collection::vec(scope_strategy(), 0..6),
            add in prop::collection::vec(scope_strategy(), 0..3),
            extra in prop::collection::vec(scope_strategy(), 0..3),
        ) {
            let n = CoderNeeds { add_scopes: add, ..Default::default() };
            let current = existing.join(",");
            let once = merge_scopes(Some(&current), &n, &extra);
            let twice = merge_scopes(Some(&once), &n, &extra);
            prop_assert_eq!(&once, &twice);
            let merged: Vec<&str> = once.split(',').collect();
            for s in &existing { prop_assert!(merged.contains(&s.as_str())); }
            for s in n.add_scopes.iter().chain(&extra) { prop_assert!(merged.contains(&s.as_str())); }
            prop_assert!(!once.contains(' '));
        }

        #[test]
        fn param_merge_is_idempotent_and_keeps_existing(
            existing in prop::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,10}", 0..5),
            wanted in prop::collection::btree_map("[a-z_]{1,8}", "[a-z]{0,6}", 0..3),
        ) {
            let current = serde_json::to_string(&existing).unwrap();
            let n = CoderNeeds { params: wanted.clone(), ..Default::default() };
            let once = merge_params(Some(&current), &n, &BTreeMap::new()).unwrap();
            let twice = merge_params(Some(&once), &n, &BTreeMap::new()).unwrap();
            prop_assert_eq!(&once, &twice);
            let parsed: BTreeMap<String, String> = serde_json::from_str(&once).unwrap();
            for k in existing.keys() { prop_assert!(parsed.contains_key(k)); }
            for (k, v) in &wanted { prop_assert_eq!(parsed.get(k), Some(v)); }
        }
    }
}
