//! `networking.k8s.io/v1` NetworkPolicy: the API server's defaulting and validation
//! (`pkg/apis/networking/validation`), so a policy the real server refuses is refused here too.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::errors::{FieldError, FieldErrorKind};

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const POLICY_TYPES: [&str; 2] = ["Ingress", "Egress"];

/// Defaults: a port's protocol is TCP; without `policyTypes`, Ingress, plus Egress when egress
/// rules are given.
pub fn defaults(np: &mut Value) {
    let Some(spec) = np.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for rules in ["ingress", "egress"] {
        for rule in spec
            .get_mut(rules)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for port in rule
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(p) = port.as_object_mut() {
                    p.entry("protocol").or_insert(json!("TCP"));
                }
            }
        }
    }
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

/// The validation of `ValidateNetworkPolicySpec`.
pub fn validate(np: &Value) -> Vec<FieldError> {
    let mut errs = vec![];
    let spec = &np["spec"];
    label_selector(&spec["podSelector"], "spec.podSelector", &mut errs);
    for (rules, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in items(&spec[rules]).enumerate() {
            let path = format!("spec.{rules}[{i}]");
            for (j, port) in items(&rule["ports"]).enumerate() {
                validate_port(port, &format!("{path}.ports[{j}]"), &mut errs);
            }
            for (j, peer) in items(&rule[peers]).enumerate() {
                validate_peer(peer, &format!("{path}.{peers}[{j}]"), &mut errs);
            }
        }
    }
    let types: Vec<&Value> = items(&spec["policyTypes"]).collect();
    if types.len() > POLICY_TYPES.len() {
        errs.push(FieldError::new(
            "spec.policyTypes",
            FieldErrorKind::Invalid(spec["policyTypes"].clone()),
            "may not specify more than two policyTypes",
        ));
        return errs;
    }
    for (i, t) in types.into_iter().enumerate() {
        if !t.as_str().is_some_and(|t| POLICY_TYPES.contains(&t)) {
            errs.push(FieldError::new(
                format!("spec.policyTypes[{i}]"),
                FieldErrorKind::NotSupported(t.clone(), strings(&POLICY_TYPES)),
                "",
            ));
        }
    }
    errs
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn validate_port(port: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(protocol) = port.get("protocol")
        && !protocol.as_str().is_some_and(|p| PROTOCOLS.contains(&p))
    {
        errs.push(FieldError::new(
            format!("{path}.protocol"),
            FieldErrorKind::NotSupported(protocol.clone(), strings(&PROTOCOLS)),
            "",
        ));
    }
    let end_port = port.get("endPort").filter(|v| !v.is_null());
    match port.get("port").filter(|v| !v.is_null()) {
        Some(Value::Number(n)) => {
            let number = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&number) {
                errs.push(FieldError::new(
                    format!("{path}.port"),
                    FieldErrorKind::Invalid(json!(n)),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(end) = end_port {
                let end_number = end.as_i64().unwrap_or(0);
                if end_number < number {
                    errs.push(FieldError::new(
                        format!("{path}.endPort"),
                        FieldErrorKind::Invalid(json!(n)),
                        "must be greater than or equal to `port`",
                    ));
                }
                if !(1..=65535).contains(&end_number) {
                    errs.push(FieldError::new(
                        format!("{path}.endPort"),
                        FieldErrorKind::Invalid(end.clone()),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        Some(Value::String(name)) => {
            if let Some(end) = end_port {
                errs.push(FieldError::new(
                    format!("{path}.endPort"),
                    FieldErrorKind::Invalid(end.clone()),
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for msg in port_name_problems(name) {
                errs.push(FieldError::new(
                    format!("{path}.port"),
                    FieldErrorKind::Invalid(json!(name)),
                    msg,
                ));
            }
        }
        Some(other) => errs.push(FieldError::new(
            format!("{path}.port"),
            FieldErrorKind::Invalid(other.clone()),
            "must be a port number or a port name",
        )),
        None => {
            if let Some(end) = end_port {
                errs.push(FieldError::new(
                    format!("{path}.endPort"),
                    FieldErrorKind::Invalid(end.clone()),
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

/// `validation.IsValidPortName`: an IANA service name, problems in the server's order.
fn port_name_problems(name: &str) -> Vec<&'static str> {
    let mut problems = vec![];
    if name.len() > 15 {
        problems.push("must be no more than 15 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        problems.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        problems.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        problems.push("must not begin or end with a hyphen");
    }
    problems
}

fn validate_peer(peer: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let present = |k: &str| peer.get(k).is_some_and(|v| !v.is_null());
    let mut peers = 0;
    for selector in ["podSelector", "namespaceSelector"] {
        if present(selector) {
            peers += 1;
            label_selector(&peer[selector], &format!("{path}.{selector}"), errs);
        }
    }
    let ip_block = present("ipBlock");
    if ip_block {
        peers += 1;
        validate_ip_block(&peer["ipBlock"], &format!("{path}.ipBlock"), errs);
    }
    if peers == 0 {
        errs.push(FieldError::new(
            path,
            FieldErrorKind::Required,
            "must specify a peer",
        ));
    } else if peers > 1 && ip_block {
        errs.push(FieldError::new(
            path,
            FieldErrorKind::Forbidden,
            "may not specify both ipBlock and another peer",
        ));
    }
}

const CIDR_HINT: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

fn validate_ip_block(block: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(cidr) = block["cidr"].as_str().filter(|c| !c.is_empty()) else {
        errs.push(FieldError::new(
            format!("{path}.cidr"),
            FieldErrorKind::Required,
            "",
        ));
        return;
    };
    let Some(outer) = parse_cidr(cidr) else {
        errs.push(FieldError::new(
            format!("{path}.cidr"),
            FieldErrorKind::Invalid(json!(cidr)),
            CIDR_HINT,
        ));
        return;
    };
    for (i, except) in items(&block["except"]).enumerate() {
        let except_path = format!("{path}.except[{i}]");
        let Some(inner) = except.as_str().and_then(parse_cidr) else {
            errs.push(FieldError::new(
                except_path,
                FieldErrorKind::Invalid(except.clone()),
                CIDR_HINT,
            ));
            continue;
        };
        if !outer.strictly_contains(&inner) {
            errs.push(FieldError::new(
                except_path,
                FieldErrorKind::Invalid(except.clone()),
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

/// An address block: its network address and prefix length.
#[derive(Debug, PartialEq)]
struct Cidr {
    network: u128,
    prefix: u32,
    v4: bool,
}

impl Cidr {
    fn bits(v4: bool) -> u32 {
        if v4 { 32 } else { 128 }
    }

    fn mask(prefix: u32, v4: bool) -> u128 {
        let bits = Self::bits(v4);
        if prefix == 0 {
            0
        } else {
            (u128::MAX << (bits - prefix)) & (u128::MAX >> (128 - bits))
        }
    }

    /// `other` lies inside this block and is smaller (Go: `Contains(except.IP)` and a longer mask).
    fn strictly_contains(&self, other: &Cidr) -> bool {
        self.v4 == other.v4
            && other.network & Self::mask(self.prefix, self.v4) == self.network
            && other.prefix > self.prefix
    }
}

fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u32 = prefix.parse().ok()?;
    let (raw, v4) = match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => (u128::from(u32::from(a)), true),
        IpAddr::V6(a) => (u128::from(a), false),
    };
    if prefix > Cidr::bits(v4) {
        return None;
    }
    Some(Cidr {
        network: raw & Cidr::mask(prefix, v4),
        prefix,
        v4,
    })
}

/// `ValidateLabelSelector`, for the operators and their values.
fn label_selector(selector: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (i, req) in items(&selector["matchExpressions"]).enumerate() {
        let req_path = format!("{path}.matchExpressions[{i}]");
        let has_values = req["values"].as_array().is_some_and(|v| !v.is_empty());
        match req["operator"].as_str() {
            Some("In" | "NotIn") if !has_values => errs.push(FieldError::new(
                format!("{req_path}.values"),
                FieldErrorKind::Required,
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            Some("Exists" | "DoesNotExist") if has_values => errs.push(FieldError::new(
                format!("{req_path}.values"),
                FieldErrorKind::Forbidden,
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            Some("In" | "NotIn" | "Exists" | "DoesNotExist") => {}
            _ => errs.push(FieldError::new(
                format!("{req_path}.operator"),
                FieldErrorKind::Invalid(req["operator"].clone()),
                "not a valid selector operator",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(spec: Value) -> Vec<String> {
        let mut np = json!({"metadata": {"name": "np"}, "spec": spec});
        defaults(&mut np);
        validate(&np)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn defaults_protocol_and_policy_types() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        defaults(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let mut np = json!({"spec": {"podSelector": {}}});
        defaults(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    }

    #[test]
    fn accepts_a_usual_policy() {
        let spec = json!({
            "podSelector": {"matchLabels": {"app": "x"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"port": 8080, "protocol": "TCP"}]}],
            "egress": [
                {"ports": [{"port": 53, "protocol": "UDP"}], "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]},
                {"ports": [{"port": 443}], "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
                {"ports": [{"port": 30000, "endPort": 32767}, {"port": "https"}], "to": [{"ipBlock": {"cidr": "2001:db8::/32"}}]}
            ]
        });
        assert_eq!(problems(spec), Vec::<String>::new());
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        let spec = json!({
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
            "policyTypes": ["Ingress", "Outbound"],
            "ingress": [{"ports": [{"port": 0, "protocol": "ICMP"}, {"port": "HTTPS", "endPort": 9}], "from": [{}]}],
            "egress": [{
                "ports": [{"port": 90, "endPort": 80}, {"endPort": 80}],
                "to": [
                    {"ipBlock": {"cidr": "10.0.0.0/33"}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8", "192.168.0.0/16", "nope"]}},
                    {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
                    {"ipBlock": {}}
                ]
            }]
        });
        assert_eq!(
            problems(spec),
            vec![
                "spec.podSelector.matchExpressions[0].values: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.ingress[0].ports[0].protocol: ",
                "spec.ingress[0].ports[0].port: must be between 1 and 65535, inclusive",
                "spec.ingress[0].ports[1].endPort: may not be specified when `port` is non-numeric",
                "spec.ingress[0].ports[1].port: must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ingress[0].ports[1].port: must contain at least one letter (a-z)",
                "spec.ingress[0].from[0]: must specify a peer",
                "spec.egress[0].ports[0].endPort: must be greater than or equal to `port`",
                "spec.egress[0].ports[1].endPort: may not be specified when `port` is not specified",
                "spec.egress[0].to[0].ipBlock.cidr: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.egress[0].to[1].ipBlock.except[0]: must be a strict subset of `cidr`",
                "spec.egress[0].to[1].ipBlock.except[1]: must be a strict subset of `cidr`",
                "spec.egress[0].to[1].ipBlock.except[2]: must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.egress[0].to[2]: may not specify both ipBlock and another peer",
                "spec.egress[0].to[3].ipBlock.cidr: ",
                "spec.policyTypes[1]: ",
            ]
        );
    }

    #[test]
    fn cidr_containment() {
        let outer = parse_cidr("10.0.0.0/8").unwrap();
        assert!(outer.strictly_contains(&parse_cidr("10.255.0.0/16").unwrap()));
        assert!(!outer.strictly_contains(&parse_cidr("11.0.0.0/16").unwrap()));
        assert!(!outer.strictly_contains(&parse_cidr("10.0.0.0/8").unwrap()));
        assert!(!outer.strictly_contains(&parse_cidr("::/0").unwrap()));
        let all = parse_cidr("0.0.0.0/0").unwrap();
        assert!(all.strictly_contains(&parse_cidr("169.254.169.254/32").unwrap()));
        assert_eq!(parse_cidr("10.0.0.1/8"), parse_cidr("10.0.0.0/8"));
        assert!(parse_cidr("10.0.0.0").is_none());
        assert!(parse_cidr("10.0.0.0/+8").is_none());
    }
}
