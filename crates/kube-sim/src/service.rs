//! core/v1 Service: the API server's defaulting (`pkg/apis/core/v1/defaults.go`
//! `SetDefaults_Service`), its ClusterIP allocation and update rules (`pkg/registry/core/service/
//! storage/alloc.go`, `storage.go` `patchAllocatedValues`, `pkg/registry/core/service/ipallocator`)
//! and the immutability of an allocated ClusterIP (`pkg/apis/core/validation`
//! `validateUpgradeDowngradeClusterIPs`), for a single-stack IPv4 cluster with kubeadm's default
//! service CIDR. Clients read these fields: Helm's legacy `--wait` takes a Service without
//! `spec.clusterIP` as not ready.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::errors::{FieldError, FieldErrorKind};
use crate::store::State;

/// The service CIDR (kubeadm's default `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SIZE: u32 = 1 << 20;
/// Addresses at the start of the range kept for static (user-chosen) ClusterIPs:
/// `min(max(16, size/16), 256)` (ipallocator `calculateRangeOffset`).
const STATIC_BAND: u32 = 256;

fn kind(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn needs_cluster_ip(svc: &Value) -> bool {
    kind(svc) != "ExternalName"
}

/// `SetDefaults_Service`, then on an update the allocated values of the old object the new one
/// leaves out (`patchAllocatedValues`: a PUT or patch without `clusterIP` keeps it).
pub fn defaults(svc: &mut Value, old: Option<&Value>) {
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
    let spec = &mut svc["spec"];
    if spec["type"].as_str().is_none_or(str::is_empty) {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].as_str().is_none_or(str::is_empty) {
        spec["sessionAffinity"] = json!("None");
    }
    if spec["sessionAffinity"] == "ClientIP"
        && spec
            .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .is_none()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
    }
    for port in spec["ports"].as_array_mut().into_iter().flatten() {
        if port["protocol"].as_str().is_none_or(str::is_empty) {
            port["protocol"] = json!("TCP");
        }
        let unset = match &port["targetPort"] {
            Value::Null => true,
            Value::Number(n) => n.as_i64() == Some(0),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
        if unset {
            port["targetPort"] = port["port"].clone();
        }
    }
    let t = spec["type"].as_str().unwrap_or_default().to_string();
    if (t == "NodePort" || t == "LoadBalancer")
        && spec["externalTrafficPolicy"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if t != "ExternalName" && spec["internalTrafficPolicy"].is_null() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if t == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"].is_null() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    if let Some(old) = old
        && needs_cluster_ip(old)
        && needs_cluster_ip(svc)
    {
        let spec = &mut svc["spec"];
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let empty = match &spec[field] {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if empty && !old["spec"][field].is_null() {
                spec[field] = old["spec"][field].clone();
            }
        }
    }
    if needs_cluster_ip(svc) {
        let spec = &mut svc["spec"];
        if spec["ipFamilyPolicy"].as_str().is_none_or(str::is_empty) {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        if spec["ipFamilies"].as_array().is_none_or(Vec::is_empty) {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
    } else {
        // ExternalName: no ClusterIP fields (`dropTypeDependentFields` on a type change).
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(o) = svc["spec"].as_object_mut() {
                o.remove(field);
            }
        }
    }
}

fn in_range(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    n > BASE && n < BASE + SIZE - 1
}

/// Allocates the ClusterIP of a new Service (random, from the range above the static band, as
/// the allocator does for dynamic requests), checks a requested one (in range, not taken), and
/// refuses a change of an allocated one.
pub fn allocate(st: &State, svc: &mut Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
    if !needs_cluster_ip(svc) {
        return Ok(());
    }
    let spec = &mut svc["spec"];
    let requested = spec["clusterIP"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            spec.pointer("/clusterIPs/0")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let old_ip = old
        .filter(|o| needs_cluster_ip(o))
        .and_then(|o| o.pointer("/spec/clusterIPs/0").and_then(Value::as_str));
    if let Some(old_ip) = old_ip {
        let new_ip = requested.clone().unwrap_or_default();
        if new_ip != old_ip {
            return Err(vec![FieldError::new(
                "spec.clusterIPs[0]",
                FieldErrorKind::Invalid(json!(new_ip)),
                "may not change once set",
            )]);
        }
        return Ok(());
    }
    let ip = match requested.as_deref() {
        Some("None") => "None".to_string(),
        Some(r) => {
            let fail = |why: String| {
                vec![FieldError::new(
                    "spec.clusterIPs",
                    FieldErrorKind::InvalidRaw(format!("[]string{{{r:?}}}")),
                    format!("failed to allocate IP {r}: {why}"),
                )]
            };
            let parsed: Ipv4Addr = r.parse().map_err(|_| {
                vec![FieldError::new(
                    "spec.clusterIPs[0]",
                    FieldErrorKind::Invalid(json!(r)),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )]
            })?;
            if !in_range(parsed) {
                return Err(fail(format!(
                    "the provided IP ({r}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"
                )));
            }
            if used(st).contains(&u32::from(parsed)) {
                return Err(fail("provided IP is already allocated".into()));
            }
            r.to_string()
        }
        None => {
            let used = used(st);
            let span = SIZE - 1 - STATIC_BAND;
            let start = (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u32;
            let free = (0..span)
                .map(|i| BASE + STATIC_BAND + (start + i) % span)
                .find(|n| !used.contains(n));
            match free {
                Some(n) => Ipv4Addr::from(n).to_string(),
                None => {
                    return Err(vec![FieldError::new(
                        "spec.clusterIPs",
                        FieldErrorKind::Internal,
                        "failed to allocate a serviceIP: range is full",
                    )]);
                }
            }
        }
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    Ok(())
}

/// ClusterIPs held by stored Services.
fn used(st: &State) -> BTreeSet<u32> {
    st.objects
        .get("/services")
        .into_iter()
        .flat_map(|bucket| bucket.values())
        .filter_map(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .collect()
}
