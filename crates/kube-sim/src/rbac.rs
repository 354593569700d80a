//! Authentication by bearer token and the RBAC authorizer, active when
//! [`SimConfig::rbac`](crate::SimConfig::rbac) is on.
//!
//! Tokens are opaque strings issued by the simulator
//! ([`SimHandle::admin_token`](crate::SimHandle::admin_token),
//! [`SimHandle::service_account_token`](crate::SimHandle::service_account_token),
//! [`SimHandle::user_token`](crate::SimHandle::user_token)); a request without
//! one, or with an unknown one, gets `401 Unauthorized`. The authorizer follows
//! the real RBAC authorizer (`plugin/pkg/auth/authorizer/rbac`): the rules of
//! every ClusterRoleBinding and (for namespaced requests) every RoleBinding of
//! the request's namespace whose subjects match the user are checked with
//! `RuleAllows` semantics (verbs, apiGroups, resources with `resource/subresource`
//! and `*/subresource`, resourceNames). Members of `system:masters` are always
//! allowed. Denials are answered with the real server's `Forbidden` Status.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::errors::SimError;
use crate::store::State;

/// The group whose members are always allowed.
pub const MASTERS: &str = "system:masters";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:<ns>:<name>` for service accounts).
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user of a service account token.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// The cluster admin (`kubernetes-admin`, group `system:masters`).
    pub fn admin() -> Self {
        UserInfo {
            name: "kubernetes-admin".into(),
            groups: vec![MASTERS.into(), "system:authenticated".into()],
        }
    }
}

/// Issued tokens.
pub struct Tokens {
    map: Mutex<HashMap<String, UserInfo>>,
    /// The cluster-admin token.
    pub admin: String,
}

impl Tokens {
    /// A token table holding the admin token.
    pub fn new() -> Self {
        let admin = new_token();
        let mut map = HashMap::new();
        map.insert(admin.clone(), UserInfo::admin());
        Tokens {
            map: Mutex::new(map),
            admin,
        }
    }

    /// Issue a new token for `user`.
    pub fn issue(&self, user: UserInfo) -> String {
        let token = new_token();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), user);
        token
    }

    /// The user of a token.
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

fn new_token() -> String {
    format!("kube-sim.{}", uuid::Uuid::new_v4().simple())
}

/// `401 Unauthorized`, as the real server answers a missing or invalid token
/// (with anonymous authentication disabled).
pub fn unauthorized() -> SimError {
    SimError::new(401, "Unauthorized", "Unauthorized")
}

/// The attributes a resource request is authorized on
/// (`authorizer.AttributesRecord`).
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// The caller.
    pub user: &'a UserInfo,
    /// Kubernetes verb.
    pub verb: &'a str,
    /// API group ("" for core).
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource.
    pub subresource: Option<&'a str>,
    /// Namespace ("" / None at the cluster scope).
    pub namespace: Option<&'a str>,
    /// Object name ("" / None for collections and plain creates).
    pub name: Option<&'a str>,
}

/// Authorize a resource request against the RBAC objects in `st`.
/// `Err(reason)` when denied; the reason is empty unless bindings that apply
/// to the user reference missing roles (`RBAC: role.rbac... "x" not found`).
pub fn authorize(st: &State, a: &Attributes<'_>) -> Result<(), String> {
    if a.user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let mut errors: Vec<String> = Vec::new();
    let crbs = bucket(st, "rbac.authorization.k8s.io/clusterrolebindings");
    for b in crbs {
        if !applies(a.user, b, "") {
            continue;
        }
        match role_rules(st, &b["roleRef"], "") {
            Ok(rules) => {
                if rules.iter().any(|r| rule_allows(a, r)) {
                    return Ok(());
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(ns) = a.namespace.filter(|n| !n.is_empty()) {
        let rbs = st
            .objects
            .get("rbac.authorization.k8s.io/rolebindings")
            .into_iter()
            .flat_map(|b| b.iter())
            .filter(|((n, _), _)| n == ns)
            .map(|(_, v)| v.as_ref());
        for b in rbs {
            if !applies(a.user, b, ns) {
                continue;
            }
            match role_rules(st, &b["roleRef"], ns) {
                Ok(rules) => {
                    if rules.iter().any(|r| rule_allows(a, r)) {
                        return Ok(());
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    errors.dedup();
    Err(match errors.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", errors[0]),
        _ => format!("RBAC: [{}]", errors.join(", ")),
    })
}

fn bucket<'a>(st: &'a State, storage: &str) -> impl Iterator<Item = &'a Value> {
    st.objects
        .get(storage)
        .into_iter()
        .flat_map(|b| b.values())
        .map(|v| v.as_ref())
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default()
}

/// Whether a binding's subjects include the user (`appliesTo`); `namespace`
/// is the RoleBinding's namespace ("" for ClusterRoleBindings), the default
/// namespace of ServiceAccount subjects.
fn applies(user: &UserInfo, binding: &Value, namespace: &str) -> bool {
    let Some(subjects) = binding["subjects"].as_array() else {
        return false;
    };
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or("");
        match s["kind"].as_str().unwrap_or("") {
            "User" => user.name == name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                let ns = s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(namespace);
                !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

/// The rules of a binding's roleRef, or the "not found" error.
fn role_rules(st: &State, role_ref: &Value, namespace: &str) -> Result<Vec<Value>, String> {
    let name = role_ref["name"].as_str().unwrap_or("");
    let (storage, ns, what) = match role_ref["kind"].as_str().unwrap_or("") {
        "ClusterRole" => (
            "rbac.authorization.k8s.io/clusterroles",
            "",
            "clusterrole.rbac.authorization.k8s.io",
        ),
        "Role" if !namespace.is_empty() => (
            "rbac.authorization.k8s.io/roles",
            namespace,
            "role.rbac.authorization.k8s.io",
        ),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    match st.get(storage, ns, name) {
        Some(role) => Ok(role["rules"].as_array().cloned().unwrap_or_default()),
        None => Err(format!("{what} {name:?} not found")),
    }
}

/// `RuleAllows` for a resource request.
fn rule_allows(a: &Attributes<'_>, rule: &Value) -> bool {
    let verbs = str_list(&rule["verbs"]);
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    let groups = str_list(&rule["apiGroups"]);
    if !groups.iter().any(|g| *g == "*" || *g == a.group) {
        return false;
    }
    let combined = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let resources = str_list(&rule["resources"]);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || a.subresource
                .is_some_and(|s| r.strip_prefix("*/").is_some_and(|rs| rs == s))
    });
    if !resource_ok {
        return false;
    }
    let names = str_list(&rule["resourceNames"]);
    names.is_empty() || names.contains(&a.name.unwrap_or(""))
}

/// The `403 Forbidden` Status of a denied request, formatted like the real
/// server's (`responsewriters.Forbidden`): `<resource>[.<group>] ["<name>"] is
/// forbidden: User "<user>" cannot <verb> resource "<resource>[/<sub>]" in API
/// group "<group>" (in the namespace "<ns>"|at the cluster scope)[: <reason>]`.
pub fn forbidden(a: &Attributes<'_>, reason: &str) -> SimError {
    let combined = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let scope = match a.namespace.filter(|n| !n.is_empty()) {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let mut msg = format!(
        "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
        a.user.name, a.verb, combined, a.group
    );
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    forbidden_status(a, &msg)
}

/// The Forbidden Status of a create-on-patch (server-side apply of a missing
/// object) whose `create` is denied (`withAuthorization` in the real server:
/// the message is only the authorizer's reason).
pub fn forbidden_create_on_patch(a: &Attributes<'_>, reason: &str) -> SimError {
    forbidden_status(a, reason)
}

fn forbidden_status(a: &Attributes<'_>, err: &str) -> SimError {
    let qualified = if a.group.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let name = a.name.unwrap_or("");
    let message = if name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {name:?} is forbidden: {err}")
    };
    let mut details = json!({"group": a.group, "kind": a.resource});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    if a.group.is_empty() {
        details.as_object_mut().unwrap().remove("group");
    }
    SimError::new(403, "Forbidden", message).with_details(details)
}

/// The name a list or watch is authorized with: the value of a
/// `metadata.name=<x>` (or `==`) field selector requirement, as the real
/// server's `RequestInfoFactory` does.
pub fn selector_name(field_selector: Option<&str>) -> Option<String> {
    field_selector?.split(',').find_map(|req| {
        let req = req.trim();
        let v = req
            .strip_prefix("metadata.name==")
            .or_else(|| req.strip_prefix("metadata.name="))?;
        (!v.is_empty() && !v.contains('/') && v != "." && v != "..").then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(
        user: &'a UserInfo,
        verb: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            group: "apps",
            resource,
            subresource: sub,
            namespace: Some("coder"),
            name,
        }
    }

    #[test]
    fn rule_matching() {
        let u = UserInfo::service_account("a", "b");
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]});
        assert!(rule_allows(
            &attrs(&u, "get", "deployments", None, Some("x")),
            &rule
        ));
        assert!(!rule_allows(
            &attrs(&u, "patch", "deployments", None, Some("x")),
            &rule
        ));
        assert!(!rule_allows(
            &attrs(&u, "get", "deployments", Some("status"), Some("x")),
            &rule
        ));
        let sub = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(
            &attrs(&u, "patch", "deployments", Some("status"), Some("x")),
            &sub
        ));
        assert!(!rule_allows(
            &attrs(&u, "patch", "deployments", None, Some("x")),
            &sub
        ));
        let named = json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create"], "resourceNames": ["x"]});
        assert!(rule_allows(
            &attrs(&u, "get", "deployments", None, Some("x")),
            &named
        ));
        assert!(!rule_allows(
            &attrs(&u, "get", "deployments", None, Some("y")),
            &named
        ));
        assert!(!rule_allows(
            &attrs(&u, "create", "deployments", None, None),
            &named
        ));
        let all = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &attrs(&u, "update", "deployments", Some("scale"), None),
            &all
        ));
    }

    #[test]
    fn selector_names() {
        assert_eq!(selector_name(Some("metadata.name=x")).as_deref(), Some("x"));
        assert_eq!(
            selector_name(Some("type=a,metadata.name==y")).as_deref(),
            Some("y")
        );
        assert_eq!(selector_name(Some("metadata.name!=x")), None);
        assert_eq!(selector_name(None), None);
    }
}
