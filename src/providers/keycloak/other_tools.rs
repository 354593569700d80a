//! The Keycloak operator's `KeycloakOIDCClient` custom resources (keycloak/keycloak, `operator/`:
//! `crds/v2alpha1/client/`, `controllers/KeycloakClientBaseController.java`).
//!
//! Group `k8s.keycloak.org`, version `v2alpha1`, namespaced. `spec.keycloakCRName` names a
//! `Keycloak` resource in the same namespace, `spec.realm` the realm (immutable), `spec.client`
//! the client as the client admin API v2 represents it (`displayName`, `description`, `enabled`,
//! `appUrl`, `redirectUris`, `roles`, `loginFlows`, `auth`, `webOrigins`, `serviceAccountRoles`).
//! The client's `clientId` is the resource's `metadata.name` (the representation's own `clientId`
//! is ignored). The Keycloak operator creates or updates the client
//! (`PUT /admin/api/{realm}/clients/{clientId}`, a preview API behind the `client-admin-api:v2`
//! feature) whenever the resource's spec changes, and deletes the client when the resource is
//! deleted. The representation has no field for client scopes, realm-role scope mappings or
//! client attributes: what the operator would set cannot be declared there. Whether an update
//! through that API keeps what its representation lacks is not settled (the server side,
//! `DefaultClientService.createOrUpdate`, maps the representation onto the client with a "TODO:
//! defaulting, validation, canonicalization"); the client's lifecycle is the Keycloak operator's
//! in any case, so the operator leaves it alone and says what the client needs.
//!
//! The Keycloak operator has no other client kind for OIDC (`KeycloakSAMLClient` is for SAML
//! clients); realms it imports once from `KeycloakRealmImport` resources are not managed
//! afterwards and are not looked for.

use serde_json::Value;

use super::model::{Plan, client_field_changes};
use crate::providers::Finding;
use crate::providers::other_tools::{ToolKind, ToolQuery, object_ref, str_at};

/// `KeycloakOIDCClient` of the Keycloak operator.
pub const KEYCLOAK_OIDC_CLIENT: ToolKind = ToolKind {
    tool: "the Keycloak operator",
    group: "k8s.keycloak.org",
    version: "v2alpha1",
    kind: "KeycloakOIDCClient",
    plural: "keycloakoidcclients",
};

/// The resources that could manage `client_id`: their name is the clientId.
pub fn query(client_id: &str) -> ToolQuery {
    ToolQuery {
        kind: KEYCLOAK_OIDC_CLIENT,
        field_selector: Some(format!("metadata.name={client_id}")),
    }
}

/// A blocking finding when a `KeycloakOIDCClient` in `found` manages the client (same realm, its
/// name the clientId) and `todo` would change the client: the client belongs to the Keycloak
/// operator, which creates, updates and deletes it from that resource.
pub fn keycloak_operator_finding(
    todo: &Plan,
    realm: &str,
    client_id: &str,
    found: &[Value],
) -> Option<Finding> {
    let owner = found.iter().find(|o| {
        str_at(o, "/metadata/name") == Some(client_id) && str_at(o, "/spec/realm") == Some(realm)
    })?;
    let mut fields = client_field_changes(todo);
    if todo.map_offline_role {
        fields.push("add the offline_access realm role to the client's scope mappings".into());
    }
    if fields.is_empty() {
        return None;
    }
    Some(Finding {
        reason: "ManagedByKeycloakOperator",
        message: format!(
            "client {client_id} in realm {realm} is managed by the Keycloak operator ({} {}), which creates, updates and deletes it from that resource, so the operator changes nothing in it. The client needs: {}. A KeycloakOIDCClient cannot hold these (its spec.client, the client admin API v2 representation, has no field for client scopes, scope mappings or client attributes), so make them in Keycloak itself (admin console or kcadm.sh) or in the realm's import; the operator then only checks the result",
            KEYCLOAK_OIDC_CLIENT.describe(),
            object_ref(owner),
            fields.join("; ")
        ),
        blocking: true,
        expires_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::keycloak::AttrChange;
    use serde_json::json;

    fn cr(ns: &str, name: &str, realm: &str) -> Value {
        json!({
            "apiVersion": "k8s.keycloak.org/v2alpha1",
            "kind": "KeycloakOIDCClient",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"keycloakCRName": "kc", "realm": realm, "client": {"redirectUris": ["https://coder.example.com/api/v2/users/oidc/callback"]}}
        })
    }

    fn todo() -> Plan {
        Plan {
            attributes: vec![AttrChange {
                key: "use.refresh.tokens",
                from: None,
                to: "true".into(),
            }],
            link_offline_scope: true,
            map_offline_role: false,
            realm: vec![],
        }
    }

    #[test]
    fn the_same_realm_and_client_id_is_a_conflict_naming_the_resource() {
        let found = [
            cr("keycloak", "coder", "other"),
            cr("keycloak", "coder", "coder"),
        ];
        let f = keycloak_operator_finding(&todo(), "coder", "coder", &found).unwrap();
        assert_eq!(f.reason, "ManagedByKeycloakOperator");
        assert!(f.blocking);
        assert_eq!(
            f.message,
            "client coder in realm coder is managed by the Keycloak operator (KeycloakOIDCClient (k8s.keycloak.org/v2alpha1) keycloak/coder), which creates, updates and deletes it from that resource, so the operator changes nothing in it. The client needs: add offline_access to optionalClientScopes; set attributes {\"use.refresh.tokens\": \"true\"}. A KeycloakOIDCClient cannot hold these (its spec.client, the client admin API v2 representation, has no field for client scopes, scope mappings or client attributes), so make them in Keycloak itself (admin console or kcadm.sh) or in the realm's import; the operator then only checks the result"
        );
    }

    #[test]
    fn another_realm_or_client_or_nothing_to_change_is_no_conflict() {
        assert!(
            keycloak_operator_finding(&todo(), "coder", "coder", &[cr("a", "coder", "x")])
                .is_none()
        );
        assert!(
            keycloak_operator_finding(&todo(), "coder", "coder", &[cr("a", "other", "coder")])
                .is_none()
        );
        assert!(keycloak_operator_finding(&todo(), "coder", "coder", &[]).is_none());
        let realm_only = Plan {
            attributes: vec![],
            link_offline_scope: false,
            map_offline_role: false,
            realm: todo().realm,
        };
        assert!(
            keycloak_operator_finding(&realm_only, "coder", "coder", &[cr("a", "coder", "coder")])
                .is_none()
        );
        assert_eq!(
            query("coder").field_selector.as_deref(),
            Some("metadata.name=coder")
        );
    }
}
