//! Clean identity-provider plans remembered between passes.
//!
//! A pass that only follows the Coder side (the operator's own Deployment patch and status
//! writes, the rollout, an edit of the Deployment) reuses the last clean plan of the policy
//! (nothing to write, nothing blocking) instead of reading the provider again. The provider is
//! read again at every interval (a plan is kept for half of it), on a spec change and when the
//! credentials Secret changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::backoff::PolicyKey;
use crate::providers::IdpPlan;

/// Which policy, at which generation and credentials, a plan is for.
#[derive(Clone, Debug)]
pub struct MemoKey {
    /// Namespace and name of the policy.
    pub policy: PolicyKey,
    /// `metadata.generation` (a spec change reads the provider again).
    pub generation: i64,
    /// How long a clean plan is reused: half the policy's interval, so every resync at the
    /// interval reads the provider.
    pub window: Duration,
}

struct Memo {
    generation: i64,
    secret_version: Option<String>,
    until: Instant,
    plan: IdpPlan,
}

/// The remembered plans.
#[derive(Default)]
pub struct Memos {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    entries: HashMap<PolicyKey, Memo>,
    /// Size after the last sweep of expired entries (sweeps are amortized).
    swept_at: usize,
}

impl Memos {
    /// The clean plan remembered for `key` with these credentials, if still fresh.
    pub fn get(&self, key: &MemoKey, secret_version: Option<&str>) -> Option<IdpPlan> {
        let memos = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let m = memos.entries.get(&key.policy)?;
        (m.generation == key.generation
            && m.secret_version.as_deref() == secret_version
            && m.until > Instant::now())
        .then(|| m.plan.clone())
    }

    /// Remembers `plan` when it is clean (nothing to write, nothing blocking); forgets any
    /// earlier one otherwise.
    pub fn remember(&self, key: &MemoKey, secret_version: Option<&str>, plan: &IdpPlan) {
        let clean = plan.is_empty() && !plan.observation.findings.iter().any(|f| f.blocking);
        let mut memos = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !clean {
            memos.entries.remove(&key.policy);
            return;
        }
        let now = Instant::now();
        if memos.entries.len() >= 2 * memos.swept_at.max(64) {
            memos.entries.retain(|_, m| m.until > now);
            memos.swept_at = memos.entries.len();
        }
        let Some(until) = now.checked_add(key.window) else {
            return;
        };
        memos.entries.insert(
            key.policy.clone(),
            Memo {
                generation: key.generation,
                secret_version: secret_version.map(str::to_string),
                until,
                plan: plan.clone(),
            },
        );
    }

    /// Forgets the plan of `key`.
    pub fn forget(&self, key: &MemoKey) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .remove(&key.policy);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{
        Change, DesiredSettings, Finding, IdpSettings, Observation, ProviderKind,
    };

    fn plan(o: Observation) -> IdpPlan {
        IdpPlan::new(ProviderKind::Google, &DesiredSettings::default(), o, ())
    }

    fn seen(m: &Memos, key: &MemoKey, v: Option<&str>) -> Option<Observation> {
        m.get(key, v).map(|p| p.observation)
    }

    #[test]
    fn a_clean_plan_is_reused_only_for_the_same_generation_credentials_and_window() {
        let m = Memos::default();
        let key = MemoKey {
            policy: ("ns".into(), "p".into()),
            generation: 3,
            window: Duration::from_secs(60),
        };
        let clean = Observation {
            settings: IdpSettings {
                refresh_token_grant: Some(true),
                ..IdpSettings::default()
            },
            ..Observation::default()
        };
        assert_eq!(seen(&m, &key, Some("7")), None);
        m.remember(&key, Some("7"), &plan(clean.clone()));
        assert_eq!(seen(&m, &key, Some("7")), Some(clean.clone()));
        assert_eq!(seen(&m, &key, Some("8")), None, "the Secret changed");
        assert_eq!(seen(&m, &key, None), None);
        let next = MemoKey {
            generation: 4,
            ..key.clone()
        };
        assert_eq!(seen(&m, &next, Some("7")), None, "the spec changed");
        let other = MemoKey {
            policy: ("ns".into(), "q".into()),
            ..key.clone()
        };
        assert_eq!(seen(&m, &other, Some("7")), None);

        // Something to change or a blocking finding: not remembered, and the old one is dropped.
        let pending = Observation {
            changes: vec![Change::new("t", "s", "a", "b", "w")],
            ..clean.clone()
        };
        m.remember(&key, Some("7"), &plan(pending));
        assert_eq!(seen(&m, &key, Some("7")), None);
        let blocked = Observation {
            findings: vec![Finding {
                reason: "X",
                message: "m".into(),
                blocking: true,
                expires_at: None,
            }],
            ..clean.clone()
        };
        m.remember(&key, Some("7"), &plan(blocked));
        assert_eq!(seen(&m, &key, Some("7")), None);

        m.remember(&key, Some("7"), &plan(clean.clone()));
        m.forget(&key);
        assert_eq!(seen(&m, &key, Some("7")), None);

        // It expires after the window.
        let short = MemoKey {
            window: Duration::ZERO,
            ..key.clone()
        };
        m.remember(&short, Some("7"), &plan(clean.clone()));
        assert_eq!(seen(&m, &short, Some("7")), None);

        // Expired entries of many policies are swept as the map grows.
        for i in 0..200 {
            let k = MemoKey {
                policy: ("ns".into(), format!("p{i}")),
                ..short.clone()
            };
            m.remember(&k, None, &plan(clean.clone()));
        }
        assert!(m.len() < 200, "expired entries are swept: {}", m.len());
    }
}
