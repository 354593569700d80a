//! Request counters by (verb, resource, outcome).

use std::collections::BTreeMap;

/// A snapshot of request counts keyed by `(verb, resource, outcome)`.
///
/// `resource` includes the subresource (`deployments/status`), `outcome` is the
/// HTTP status code as a string (`"200"`, `"409"`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounters {
    pub(crate) map: BTreeMap<(String, String, String), u64>,
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl RequestCounters {
    /// Count of requests with this verb and resource, any outcome.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.map
            .iter()
            .filter(|((v, r, _), _)| v == verb && r == resource)
            .map(|(_, c)| *c)
            .sum()
    }

    /// Count of writes (create, update, patch, delete, deletecollection) to all resources.
    pub fn writes(&self) -> u64 {
        self.map
            .iter()
            .filter(|((v, _, _), _)| WRITE_VERBS.contains(&v.as_str()))
            .map(|(_, c)| *c)
            .sum()
    }

    /// Count of writes to one resource (e.g. `deployments` or `deployments/status`).
    pub fn writes_to(&self, resource: &str) -> u64 {
        self.map
            .iter()
            .filter(|((v, r, _), _)| WRITE_VERBS.contains(&v.as_str()) && r == resource)
            .map(|(_, c)| *c)
            .sum()
    }

    /// Count of all requests.
    pub fn total(&self) -> u64 {
        self.map.values().sum()
    }

    /// Counts that happened since `earlier` (entries that did not change are dropped).
    pub fn diff(&self, earlier: &RequestCounters) -> RequestCounters {
        let mut map = BTreeMap::new();
        for (k, v) in &self.map {
            let before = earlier.map.get(k).copied().unwrap_or(0);
            if *v > before {
                map.insert(k.clone(), v - before);
            }
        }
        RequestCounters { map }
    }

    /// All entries: (verb, resource, outcome, count).
    pub fn entries(&self) -> Vec<(String, String, String, u64)> {
        self.map
            .iter()
            .map(|((v, r, o), c)| (v.clone(), r.clone(), o.clone(), *c))
            .collect()
    }

    pub(crate) fn record(&mut self, verb: &str, resource: &str, outcome: u16) {
        *self
            .map
            .entry((verb.to_string(), resource.to_string(), outcome.to_string()))
            .or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_diff() {
        let mut c = RequestCounters::default();
        c.record("get", "deployments", 200);
        c.record("get", "deployments", 404);
        c.record("patch", "deployments/status", 200);
        let before = c.clone();
        c.record("create", "events", 201);
        assert_eq!(c.get("get", "deployments"), 2);
        assert_eq!(c.writes(), 2);
        assert_eq!(c.writes_to("deployments/status"), 1);
        assert_eq!(c.total(), 4);
        let d = c.diff(&before);
        assert_eq!(
            d.entries(),
            vec![("create".into(), "events".into(), "201".into(), 1)]
        );
    }
}
