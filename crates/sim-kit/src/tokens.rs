//! Issued access tokens and what each grants, with expiry.

use std::collections::HashMap;
use std::time::Instant;

/// One issued token: what it grants (the simulator's own type) and when it expires.
#[derive(Clone, Debug)]
pub struct Issued<T> {
    /// What the token grants (tenant, client, scopes, principal…).
    pub grant: T,
    /// When it stops working.
    pub expires: Instant,
}

impl<T> Issued<T> {
    /// Whether it still works at `now`.
    pub fn live_at(&self, now: Instant) -> bool {
        self.expires > now
    }
}

/// The access tokens a simulator issued, by token string. The token's format (opaque,
/// JWT-shaped) and the checks of what it grants stay the simulator's.
#[derive(Clone, Debug)]
pub struct Tokens<T> {
    issued: HashMap<String, Issued<T>>,
}

impl<T> Default for Tokens<T> {
    fn default() -> Self {
        Tokens {
            issued: HashMap::new(),
        }
    }
}

impl<T> Tokens<T> {
    /// Records an issued token.
    pub fn insert(&mut self, token: String, grant: T, expires: Instant) {
        self.issued.insert(token, Issued { grant, expires });
    }

    /// A token as issued, expired or not.
    pub fn get(&self, token: &str) -> Option<&Issued<T>> {
        self.issued.get(token)
    }

    /// What a token grants, if it was issued and has not expired at `now`.
    pub fn live(&self, token: &str, now: Instant) -> Option<&T> {
        self.get(token).filter(|t| t.live_at(now)).map(|t| &t.grant)
    }

    /// Makes every issued token expire at `now`.
    pub fn expire_all(&mut self, now: Instant) {
        for t in self.issued.values_mut() {
            t.expires = now;
        }
    }

    /// How many tokens still work at `now`.
    pub fn live_count(&self, now: Instant) -> usize {
        self.issued.values().filter(|t| t.live_at(now)).count()
    }

    /// Forgets the tokens that expired by `now`.
    pub fn prune(&mut self, now: Instant) {
        self.issued.retain(|_, t| t.live_at(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expiry() {
        let now = Instant::now();
        let mut t = Tokens::default();
        t.insert("a".into(), 1, now + Duration::from_secs(60));
        t.insert("b".into(), 2, now);
        assert_eq!(t.live("a", now), Some(&1));
        assert_eq!(t.live("b", now), None, "expires at now: dead");
        assert_eq!(t.get("b").map(|i| i.grant), Some(2));
        assert_eq!(t.live_count(now), 1);
        t.prune(now);
        assert!(t.get("b").is_none());
        t.expire_all(now);
        assert_eq!((t.live("a", now), t.live_count(now)), (None, 0));
        assert!(t.get("a").is_some());
    }
}
