//! The resource registry: which group/version/resources are served, their kinds,
//! scope, subresources and schema. Built-ins are fixed; custom resources are added
//! and removed as CustomResourceDefinitions come and go.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::builtin_schemas::schema_for;

/// Everything the server knows about one served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group ("" for core).
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Plural resource name.
    pub resource: String,
    /// Kind.
    pub kind: String,
    /// Singular name.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`orp`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether `/status` is served.
    pub status_subresource: bool,
    /// Whether `/scale` is served.
    pub scale_subresource: bool,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Storage key shared by all versions (and by the two Event APIs).
    pub storage: String,
    /// The version objects are stored in.
    pub storage_version: String,
    /// OpenAPI v3 schema of the whole object.
    pub schema: Arc<Value>,
    /// Whether it is a custom resource (validated/pruned/defaulted against `schema`).
    pub custom: bool,
    /// CRD `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    /// Extra field selector labels.
    pub field_selectors: Vec<&'static str>,
}

impl ResourceInfo {
    /// `apiVersion` string.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    resource: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    generation: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        kind: kind.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status_subresource: status,
        scale_subresource: false,
        has_generation: generation,
        storage: format!("{group}/{resource}"),
        storage_version: version.into(),
        schema: Arc::new(schema_for(group, kind)),
        custom: false,
        printer_columns: vec![],
        field_selectors: vec![],
    }
}

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The built-in resources.
pub fn builtins() -> Vec<ResourceInfo> {
    let mut v = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], false, false),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], false, false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
        ),
        builtin("", "v1", "services", "Service", true, &["svc"], true, false),
        builtin("", "v1", "pods", "Pod", true, &["po"], true, false),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            false,
            true,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            true,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
        ),
    ];
    for r in v.iter_mut() {
        match (r.group.as_str(), r.resource.as_str()) {
            ("", "events") => r.field_selectors = CORE_EVENT_FIELDS.to_vec(),
            ("events.k8s.io", "events") => {
                r.storage = "/events".into();
                r.field_selectors = CORE_EVENT_FIELDS.to_vec();
            }
            ("", "namespaces") => r.field_selectors = vec!["status.phase"],
            ("", "secrets") => r.field_selectors = vec!["type"],
            ("apps", "deployments") => {
                r.scale_subresource = true;
                r.categories = vec!["all".into()];
            }
            ("apps", "replicasets") => r.categories = vec!["all".into()],
            ("", "pods") => {
                r.categories = vec!["all".into()];
                r.field_selectors = vec!["spec.nodeName", "status.phase"];
            }
            ("", "services") => r.categories = vec!["all".into()],
            ("apiextensions.k8s.io", _) => r.categories = vec!["api-extensions".into()],
            _ => {}
        }
    }
    v
}

/// Build the resource entries served for a CRD object (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let singular = names["singular"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or("v1")
        .to_string();
    versions
        .iter()
        .filter(|v| v["served"].as_bool() != Some(false))
        .map(|v| {
            let mut schema = v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or_else(
                    || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                );
            crate::schema::complete_crd_schema(&mut schema);
            ResourceInfo {
                group: group.clone(),
                version: v["name"].as_str().unwrap_or_default().to_string(),
                resource: plural.clone(),
                kind: kind.clone(),
                singular: singular.clone(),
                namespaced,
                short_names: strs(&names["shortNames"]),
                categories: strs(&names["categories"]),
                status_subresource: v.pointer("/subresources/status").is_some(),
                scale_subresource: false,
                has_generation: true,
                storage: format!("{group}/{plural}"),
                storage_version: storage_version.clone(),
                schema: Arc::new(schema),
                custom: true,
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                field_selectors: vec![],
            }
        })
        .collect()
}
