//! Legacy discovery documents (`/api`, `/apis`, resource lists) and `/version`.
//!
//! Aggregated discovery (`apidiscovery.k8s.io/v2`) is not implemented: the
//! simulator answers such requests with plain `application/json` legacy
//! documents, which makes kubectl fall back to per-group-version discovery.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
    })
}

fn groups(resources: &[ResourceInfo]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        let vs = m.entry(r.group.clone()).or_default();
        if !vs.contains(&r.version) {
            vs.push(r.version.clone());
        }
    }
    // Kubernetes sorts versions by priority: GA > beta > alpha, higher first.
    for vs in m.values_mut() {
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    m
}

/// Kube-aware version priority (v2 > v1 > v1beta2 > v1beta1 > v1alpha1).
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let re = regex::Regex::new(r"^v(\d+)(?:(alpha|beta)(\d+))?$").unwrap();
    match re.captures(v) {
        Some(c) => {
            let major: u32 = c[1].parse().unwrap_or(0);
            match c.get(2).map(|m| m.as_str()) {
                None => (3, major, 0),
                Some("beta") => (2, major, c[3].parse().unwrap_or(0)),
                _ => (1, major, c[3].parse().unwrap_or(0)),
            }
        }
        None => (0, 0, 0),
    }
}

fn group_json(group: &str, versions: &[String], resources: &[ResourceInfo]) -> Value {
    let preferred = versions
        .iter()
        .find(|v| {
            // The CRD storage version is preferred only if it is the highest; keep kube's ordering.
            resources
                .iter()
                .any(|r| r.group == group && &r.version == *v)
        })
        .cloned()
        .unwrap_or_default();
    json!({
        "name": group,
        "versions": versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect::<Vec<_>>(),
        "preferredVersion": {"groupVersion": format!("{group}/{preferred}"), "version": preferred}
    })
}

/// `/apis`.
pub fn api_group_list(resources: &[ResourceInfo]) -> Value {
    let gs = groups(resources);
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": gs.iter().map(|(g, vs)| group_json(g, vs, resources)).collect::<Vec<_>>()
    })
}

/// `/apis/{group}`.
pub fn api_group(resources: &[ResourceInfo], group: &str) -> Option<Value> {
    let gs = groups(resources);
    let vs = gs.get(group)?;
    let mut g = group_json(group, vs, resources);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn verbs(r: &ResourceInfo) -> Vec<&'static str> {
    vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
    .into_iter()
    .filter(|v| !(r.resource == "namespaces" && *v == "deletecollection"))
    .collect()
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resource_list(resources: &[ResourceInfo], group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut e = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs(r),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        e["storageVersionHash"] = json!(crate::util::safe_encode(crate::util::fnv32(
            format!("{}/{}/{}", r.group, r.storage_version, r.kind).as_bytes()
        ) as u64));
        list.push(e);
        if r.status_subresource {
            list.push(json!({"name": format!("{}/status", r.resource), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.scale_subresource {
            list.push(json!({"name": format!("{}/scale", r.resource), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ordering() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}
