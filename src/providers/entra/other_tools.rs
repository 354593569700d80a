//! Azure Service Operator's Entra `Application` custom resources (Azure/azure-service-operator
//! v2: `api/entra/v1/application_types.go`, `internal/reconcilers/entra/`).
//!
//! Group `entra.azure.com`, version `v1`, kind `Application`, namespaced. ASO keeps the app's
//! object id in the annotation `serviceoperator.azure.com/resource-id` and mirrors `entraID` and
//! `appId` in `status`; before it has one, it adopts the single app whose `displayName` equals
//! `spec.displayName` (unless `spec.operatorSpec.creationMode` is `AlwaysCreate`). On every
//! reconcile it PATCHes the app with a body built from its spec alone: `displayName`,
//! `identifierUris` and `tags` always, and `description`, `signInAudience`, `web`, `spa`,
//! `publicClient`, `isFallbackPublicClient`, `groupMembershipClaims` when the spec sets them.
//!
//! Its spec has no `requiredResourceAccess`, and its PATCH never sends one: the delegated
//! permissions the operator adds are not reverted by ASO and do not conflict. The one property
//! both write is `isFallbackPublicClient`: a spec that sets it to `true` puts it back after the
//! operator turns it off. ASO's `ServicePrincipal` kind manages the service principal, which the
//! operator never writes.

use serde_json::Value;

use super::model::{Plan, Snapshot};
use crate::providers::Finding;
use crate::providers::other_tools::{ToolKind, ToolQuery, object_ref, str_at};

/// `Application` of Azure Service Operator.
pub const ASO_APPLICATION: ToolKind = ToolKind {
    tool: "Azure Service Operator",
    group: "entra.azure.com",
    version: "v1",
    kind: "Application",
    plural: "applications",
};

/// Where ASO records the object id of the app a resource manages.
pub const ASO_RESOURCE_ID_ANNOTATION: &str = "serviceoperator.azure.com/resource-id";

/// Every `Application` (their names are free; the app is recognised by id or display name).
pub fn query() -> ToolQuery {
    ToolQuery {
        kind: ASO_APPLICATION,
        field_selector: None,
    }
}

/// Whether the ASO `Application` `obj` manages the app `app` (Graph's representation): by the
/// object id it recorded, by the ids in its status, or (not yet adopted) by the display name it
/// would adopt.
fn manages(obj: &Value, app: &Value) -> bool {
    let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    let object_id = str_at(app, "/id");
    let recorded = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ASO_RESOURCE_ID_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if same(recorded, object_id)
        || same(str_at(obj, "/status/entraID"), object_id)
        || same(str_at(obj, "/status/appId"), str_at(app, "/appId"))
    {
        return true;
    }
    let adopts = str_at(obj, "/spec/operatorSpec/creationMode") != Some("AlwaysCreate");
    recorded.is_none()
        && adopts
        && str_at(obj, "/spec/displayName").is_some()
        && str_at(obj, "/spec/displayName") == str_at(app, "/displayName")
}

/// A blocking finding when an ASO `Application` in `found` manages the app and its spec sets
/// `isFallbackPublicClient: true` while the plan turns it off: ASO's next reconcile would turn it
/// on again.
pub fn aso_finding(plan: &Plan, snap: &Snapshot, app_id: &str, found: &[Value]) -> Option<Finding> {
    if !plan.disable_public_client {
        return None;
    }
    let owner = found.iter().find(|o| {
        manages(o, &snap.app)
            && o.pointer("/spec/isFallbackPublicClient")
                .and_then(Value::as_bool)
                == Some(true)
    })?;
    let name = object_ref(owner);
    Some(Finding {
        reason: "ManagedByAzureServiceOperator",
        message: format!(
            "app registration {app_id} is managed by Azure Service Operator ({} {name}), whose spec sets isFallbackPublicClient: true and whose next reconcile would turn \"allow public client flows\" on again after the operator turns it off, so the operator changes nothing. Set spec.isFallbackPublicClient: false (Coder is a confidential client) in Application {name} and apply it; the operator then only checks the result (ASO does not manage requiredResourceAccess, which the operator keeps)",
            ASO_APPLICATION.describe(),
        ),
        blocking: true,
        expires_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const APP: &str = "3d7f2b9a-6c41-4e85-a0d2-9b1c7e5f4a68";
    const OBJ: &str = "0a1b2c3d-0000-4000-8000-000000000001";

    fn snap() -> Snapshot {
        Snapshot {
            app: json!({"id": OBJ, "appId": APP, "displayName": "Coder", "isFallbackPublicClient": true}),
            scope_ids: Default::default(),
            scope_names: Default::default(),
            scopes_from_graph: false,
            consent: super::super::model::Consent::NotChecked,
            policies: None,
        }
    }

    fn plan(disable_public_client: bool) -> Plan {
        Plan {
            required_resource_access: None,
            disable_public_client,
            policy: super::super::model::PolicyPlan::Keep,
        }
    }

    fn app_cr(meta: Value, spec: Value, status: Value) -> Value {
        let mut m = json!({"namespace": "platform", "name": "coder-app"});
        m.as_object_mut()
            .unwrap()
            .extend(meta.as_object().unwrap().clone());
        json!({"apiVersion": "entra.azure.com/v1", "kind": "Application", "metadata": m, "spec": spec, "status": status})
    }

    #[test]
    fn an_application_that_sets_public_client_flows_on_is_a_conflict() {
        let by_annotation = app_cr(
            json!({"annotations": {ASO_RESOURCE_ID_ANNOTATION: OBJ.to_uppercase()}}),
            json!({"displayName": "Renamed", "isFallbackPublicClient": true}),
            json!({}),
        );
        let f = aso_finding(&plan(true), &snap(), APP, &[by_annotation]).unwrap();
        assert_eq!(f.reason, "ManagedByAzureServiceOperator");
        assert!(f.blocking);
        assert!(
            f.message
                .contains("Application (entra.azure.com/v1) platform/coder-app"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("Set spec.isFallbackPublicClient: false"),
            "{}",
            f.message
        );
        // By status, or by the display name it is about to adopt.
        for cr in [
            app_cr(
                json!({}),
                json!({"displayName": "X", "isFallbackPublicClient": true}),
                json!({"appId": APP}),
            ),
            app_cr(
                json!({}),
                json!({"displayName": "X", "isFallbackPublicClient": true}),
                json!({"entraID": OBJ}),
            ),
            app_cr(
                json!({}),
                json!({"displayName": "Coder", "isFallbackPublicClient": true}),
                json!({}),
            ),
        ] {
            assert!(aso_finding(&plan(true), &snap(), APP, &[cr]).is_some());
        }
    }

    #[test]
    fn other_apps_unset_fields_and_unchanged_properties_are_no_conflict() {
        let set = json!({"displayName": "Coder", "isFallbackPublicClient": true});
        // Nothing the Application declares is changed by the plan.
        assert!(
            aso_finding(
                &plan(false),
                &snap(),
                APP,
                &[app_cr(json!({}), set.clone(), json!({}))]
            )
            .is_none()
        );
        // The spec leaves isFallbackPublicClient alone: ASO never sends it.
        let unset = app_cr(json!({}), json!({"displayName": "Coder"}), json!({}));
        assert!(aso_finding(&plan(true), &snap(), APP, &[unset]).is_none());
        // Another app; a same-named one that would be created, not adopted; one already bound
        // to another object.
        for cr in [
            app_cr(
                json!({}),
                json!({"displayName": "Other", "isFallbackPublicClient": true}),
                json!({}),
            ),
            app_cr(
                json!({}),
                json!({"displayName": "Coder", "isFallbackPublicClient": true, "operatorSpec": {"creationMode": "AlwaysCreate"}}),
                json!({}),
            ),
            app_cr(
                json!({"annotations": {ASO_RESOURCE_ID_ANNOTATION: "ffffffff-0000-4000-8000-000000000009"}}),
                set.clone(),
                json!({}),
            ),
        ] {
            assert!(aso_finding(&plan(true), &snap(), APP, &[cr]).is_none());
        }
    }
}
