//! Issued access tokens and what each grants, with expiry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an expired token is still known as issued (so a server that tells "expired" from
/// "unknown", like Graph, still says "expired"), before the store forgets it.
pub const EXPIRED_RETENTION: Duration = Duration::from_secs(600);

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
///
/// The store does not grow without bound over a long run: every [`insert`](Self::insert)
/// forgets the tokens that expired more than [`EXPIRED_RETENTION`] before, so it holds at most
/// the tokens issued within one token lifetime plus that retention.
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
    /// Records a token issued at `now` (the simulator's clock, which may run ahead of the real
    /// one), and forgets the tokens that expired more than [`EXPIRED_RETENTION`] before `now`.
    pub fn insert(&mut self, token: String, grant: T, expires: Instant, now: Instant) {
        if let Some(cutoff) = now.checked_sub(EXPIRED_RETENTION) {
            self.prune(cutoff);
        }
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

    /// How many tokens are held, expired or not.
    pub fn len(&self) -> usize {
        self.issued.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
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
        t.insert("a".into(), 1, now + Duration::from_secs(60), now);
        t.insert("b".into(), 2, now, now);
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

    #[test]
    fn insert_forgets_tokens_expired_beyond_the_retention() {
        // A simulator clock ahead of the real one, as after `advance_clock`.
        let long_ago = Instant::now();
        let now = long_ago + EXPIRED_RETENTION + Duration::from_secs(1);
        let mut t = Tokens::default();
        t.insert("old".into(), 1, long_ago, now);
        assert_eq!(t.len(), 1, "an insert keeps what it inserts");
        t.insert("recent".into(), 2, now, now);
        assert!(
            t.get("old").is_none(),
            "expired beyond the retention: forgotten"
        );
        t.insert("new".into(), 3, now + Duration::from_secs(60), now);
        assert_eq!(
            t.get("recent").map(|i| i.grant),
            Some(2),
            "recently expired: kept"
        );
        assert_eq!(t.len(), 2);
        // A long run that issues many short-lived tokens holds only the recent ones.
        for i in 0..1000 {
            t.insert(format!("t{i}"), i, long_ago, now);
        }
        t.insert("last".into(), 0, now, now);
        assert_eq!(t.len(), 3, "recent, new, last");
    }
}
