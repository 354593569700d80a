//! Request counts by (method, route template, status).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// (method, route template, status), e.g. `("PATCH", "/api/applications/{id}", 200)`.
pub type RouteKey = (String, String, u16);

/// Methods counted as reads, in every simulator: `GET`, and `HEAD` (a `GET` without the body;
/// it changes nothing on any server simulated).
pub const READ_METHODS: &[&str] = &["GET", "HEAD"];

/// What a simulated server's calls are, for the sums of [`Counters`].
pub trait CountRules {
    /// Route template of the token endpoint, when the simulator serves one: its calls are token
    /// requests, not writes.
    const TOKEN_ROUTE: Option<&'static str> = None;
}

/// A snapshot of request counts by (method, route template, status). `R` says which route is
/// the token endpoint (see [`CountRules`]); reads are [`READ_METHODS`].
pub struct Counters<R> {
    /// Count per (method, route template, status).
    pub by_route: BTreeMap<RouteKey, u64>,
    rules: PhantomData<fn() -> R>,
}

impl<R: CountRules> Counters<R> {
    /// Counts from a map of (method, route template, status) to count.
    pub fn from_map(by_route: BTreeMap<RouteKey, u64>) -> Self {
        Counters {
            by_route,
            rules: PhantomData,
        }
    }

    /// Calls other than reads and token requests.
    pub fn writes(&self) -> u64 {
        self.sum(|m, r, _| !READ_METHODS.contains(&m) && !is_token(R::TOKEN_ROUTE, r))
    }

    /// Reads: `GET` and `HEAD` ([`READ_METHODS`]).
    pub fn reads(&self) -> u64 {
        self.sum(|m, _, _| READ_METHODS.contains(&m))
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.sum(|_, _, _| true)
    }

    /// Token requests (none when the simulator serves no token endpoint).
    pub fn token_requests(&self) -> u64 {
        self.sum(|_, r, _| is_token(R::TOKEN_ROUTE, r))
    }

    /// Calls to one (method, route template), any status.
    pub fn calls(&self, method: &str, route: &str) -> u64 {
        self.sum(|m, r, _| m == method && r == route)
    }

    /// Same as [`calls`](Self::calls).
    pub fn get(&self, method: &str, route: &str) -> u64 {
        self.calls(method, route)
    }

    /// Calls answered with `status`.
    pub fn with_status(&self, status: u16) -> u64 {
        self.sum(|_, _, s| s == status)
    }

    /// Counts since `earlier` (keys that did not grow are left out).
    pub fn diff(&self, earlier: &Self) -> Self {
        let mut by_route = BTreeMap::new();
        for (k, v) in &self.by_route {
            let before = earlier.by_route.get(k).copied().unwrap_or(0);
            if *v > before {
                by_route.insert(k.clone(), v - before);
            }
        }
        Self::from_map(by_route)
    }

    /// Calls whose (method, route template, status) satisfy `f`.
    pub fn sum(&self, f: impl Fn(&str, &str, u16) -> bool) -> u64 {
        self.by_route
            .iter()
            .filter(|((m, r, s), _)| f(m, r, *s))
            .map(|(_, n)| n)
            .sum()
    }
}

fn is_token(token_route: Option<&str>, route: &str) -> bool {
    token_route == Some(route)
}

// Derived impls would require `R` itself to be Clone, Debug…; `R` is only a marker.
impl<R> Clone for Counters<R> {
    fn clone(&self) -> Self {
        Counters {
            by_route: self.by_route.clone(),
            rules: PhantomData,
        }
    }
}

impl<R> Default for Counters<R> {
    fn default() -> Self {
        Counters {
            by_route: BTreeMap::new(),
            rules: PhantomData,
        }
    }
}

impl<R> PartialEq for Counters<R> {
    fn eq(&self, other: &Self) -> bool {
        self.by_route == other.by_route
    }
}

impl<R> Eq for Counters<R> {}

impl<R> fmt::Debug for Counters<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("by_route", &self.by_route)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct WithToken;
    impl CountRules for WithToken {
        const TOKEN_ROUTE: Option<&'static str> = Some("/token");
    }
    struct NoToken;
    impl CountRules for NoToken {}

    fn map(rows: &[(&str, &str, u16, u64)]) -> BTreeMap<RouteKey, u64> {
        rows.iter()
            .map(|(m, r, s, n)| ((m.to_string(), r.to_string(), *s), *n))
            .collect()
    }

    #[test]
    fn sums_follow_the_rules() {
        let rows = [
            ("GET", "/a", 200, 3),
            ("HEAD", "/a", 200, 1),
            ("PUT", "/a", 204, 2),
            ("PUT", "/a", 429, 1),
            ("POST", "/token", 200, 5),
        ];
        let c = Counters::<WithToken>::from_map(map(&rows));
        assert_eq!(c.reads(), 4, "a HEAD is a read");
        assert_eq!(c.writes(), 3);
        assert_eq!(c.token_requests(), 5);
        assert_eq!(c.total(), 12);
        assert_eq!(c.calls("PUT", "/a"), 3);
        assert_eq!(c.with_status(429), 1);
        let c = Counters::<NoToken>::from_map(map(&rows));
        assert_eq!(c.reads(), 4);
        assert_eq!(c.writes(), 8);
        assert_eq!(c.token_requests(), 0);
    }

    #[test]
    fn diff_keeps_what_grew() {
        let before = Counters::<NoToken>::from_map(map(&[("GET", "/a", 200, 2)]));
        let after =
            Counters::<NoToken>::from_map(map(&[("GET", "/a", 200, 2), ("PUT", "/a", 204, 1)]));
        let d = after.diff(&before);
        assert_eq!(d.by_route, map(&[("PUT", "/a", 204, 1)]));
        assert_eq!(d.writes(), 1);
    }
}
