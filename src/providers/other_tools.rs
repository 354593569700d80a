//! Other tools that manage identity-provider objects from Kubernetes custom resources.
//!
//! Some tools declare a Keycloak client or an Entra ID app registration in a custom resource
//! and write it to the identity provider themselves. Changing such an object behind the other
//! tool's back is a fight: the other tool's next update reverts it, or the object's settings end
//! up declared in two places. A provider names the custom resources that may manage its object
//! ([`ToolQuery`]); the reconciler lists them (only when their CRD is served, see
//! `src/reconcile/other_tools.rs`) and hands them back as opaque JSON to
//! [`IdentityProvider::managed_by_other_tools`](super::IdentityProvider::managed_by_other_tools),
//! which decides, with the provider's own knowledge of what identifies "the same object" and of
//! what the other tool writes, whether the plan conflicts (a blocking [`Finding`](super::Finding)
//! naming the resource and what to put into it).

use std::any::Any;

use serde_json::Value;

use super::{Finding, IdpPlan};

/// A kind of custom resource with which another tool manages identity-provider objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ToolKind {
    /// The tool, for people (`the Keycloak operator`).
    pub tool: &'static str,
    /// API group.
    pub group: &'static str,
    /// API version (the one whose fields the provider reads).
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
}

impl ToolKind {
    /// `group/version`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// `KeycloakOIDCClient (k8s.keycloak.org/v2alpha1)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.kind, self.api_version())
    }
}

/// A cluster-wide list of one kind a provider asks for, narrowed by a field selector when the
/// object's identity is in the resource's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolQuery {
    /// The kind.
    pub kind: ToolKind,
    /// A field selector (`metadata.name=coder`), if any.
    pub field_selector: Option<String>,
}

/// What `judge` finds in the provider's own writes `W` of `plan` when `query` is about `kind`;
/// nothing for another kind or a plan without writes.
pub fn judge<W: Any>(
    plan: &IdpPlan,
    query: &ToolQuery,
    kind: ToolKind,
    judge: impl FnOnce(&W) -> Option<Finding>,
) -> Vec<Finding> {
    match plan.writes::<W>() {
        Ok(writes) if query.kind == kind => judge(writes).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// `namespace/name` of a listed resource, for messages.
pub fn object_ref(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (ns, name) = (s("/metadata/namespace"), s("/metadata/name"));
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// The string at a JSON pointer of a listed resource, trimmed, if non-empty.
pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_and_fields() {
        let kind = ToolKind {
            tool: "t",
            group: "g.example",
            version: "v1",
            kind: "K",
            plural: "ks",
        };
        assert_eq!(kind.describe(), "K (g.example/v1)");
        let obj =
            json!({"metadata": {"namespace": "a", "name": "b"}, "spec": {"x": " y ", "e": ""}});
        assert_eq!(object_ref(&obj), "a/b");
        assert_eq!(object_ref(&json!({"metadata": {"name": "b"}})), "b");
        assert_eq!(str_at(&obj, "/spec/x"), Some("y"));
        assert_eq!(str_at(&obj, "/spec/e"), None);
        assert_eq!(str_at(&obj, "/spec/missing"), None);
    }
}
