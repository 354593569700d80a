//! When a policy is reconciled again.
//!
//! The rules, in the order they are applied to a finished pass:
//!
//! 1. **Transient identity-provider failure** (unreachable, throttled, an answer not understood,
//!    a write not persisted): exponential backoff per policy, `base · 2^(n-1)` with ±10 % jitter,
//!    capped at `max`, and never shorter than the provider's `Retry-After`. The backoff *holds*:
//!    passes of the same generation triggered before it ends (by the operator's own status write,
//!    a watch event, a resync) are skipped, so nothing hammers a struggling provider. A spec change
//!    (new generation) is never held.
//! 2. **Blocked by something fixed outside Kubernetes** (RBAC, the IdP's credentials, its
//!    permissions, a wrong client id): the same exponential backoff, but never later than the
//!    policy's `interval`, and not held: a fixed Secret is picked up at once by its watch.
//! 3. **A rollout under way, the Deployment just written, or another policy managing the same
//!    container**: looked at again soon, starting at 5 s and doubling up to 30 s (at most
//!    `interval`), so a rollout that takes long (a quota-starved one) or a duplicate that stays is
//!    not polled every 5 s forever; watch events still trigger a pass at once. Not held.
//! 4. **Converged, or blocked by something a watch reports** (a missing Secret or Deployment, a
//!    bad spec, a conflict): again at `interval` with ±10 % jitter; the backoff is reset.
//!
//! A reconcile that fails before it is finished (a Kubernetes API error) backs off by rule 1
//! without holding (see `controller::error_policy`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use tracing::{debug, warn};

use crate::status::{Reason, State, Verdict};

/// Namespace and name of a policy.
pub type PolicyKey = (String, String);

/// What a finished pass asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Rule 4: converged or blocked by something a watch will report.
    Interval,
    /// Rule 3: a rollout is under way.
    Soon,
    /// Rule 1: transient failure, with the server's `Retry-After`.
    Backoff(Option<Duration>),
    /// Rule 2: blocked by something fixed outside any object the operator watches.
    Retry,
}

/// Stall reasons whose fix changes no object the operator watches, so only a retry notices it.
fn fixed_outside_kubernetes(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Forbidden | Reason::AuthenticationFailed | Reason::ClientNotFound
    )
}

/// The rule that applies to a pass with these verdicts (pure).
pub fn next(
    idp: &Verdict,
    coder: &Verdict,
    rollout: &Verdict,
    coder_written: bool,
    retry_after: Option<Duration>,
) -> Next {
    let fixed_elsewhere = [idp, coder]
        .iter()
        .any(|v| v.state == State::Stalled && fixed_outside_kubernetes(v.reason));
    if idp.state == State::Progressing {
        Next::Backoff(retry_after)
    } else if fixed_elsewhere {
        Next::Retry
    } else if rollout.state == State::Progressing || coder_written {
        Next::Soon
    } else {
        Next::Interval
    }
}

/// Retry state of one policy.
#[derive(Clone, Copy, Debug)]
struct Retry {
    attempts: u32,
    /// Consecutive passes under rule 3.
    follows: u32,
    /// No new pass of the same generation before this, whatever triggers it.
    not_before: Option<Instant>,
    generation: i64,
}

/// Entries kept before those whose hold is over are swept (deleted policies leave theirs behind
/// only until then, or until the controller sees them go).
const MAX_ENTRIES: usize = 4096;

/// Per-policy retry state.
pub struct Backoff {
    retries: Mutex<HashMap<PolicyKey, Retry>>,
    /// First delay.
    pub base: Duration,
    /// Cap.
    pub max: Duration,
}

impl Backoff {
    /// Empty state with these bounds.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            retries: Mutex::new(HashMap::new()),
            base,
            max,
        }
    }

    /// Next delay for a failure of `key` (rule 1 without holding).
    pub fn next_delay(&self, key: &PolicyKey, retry_after: Option<Duration>) -> Duration {
        self.delay(key, retry_after, None)
    }

    /// Next delay for a failure of `key`; with `hold`, passes of that generation are skipped
    /// until it has passed (see [`Backoff::held`]).
    pub fn delay(
        &self,
        key: &PolicyKey,
        retry_after: Option<Duration>,
        hold: Option<i64>,
    ) -> Duration {
        let mut map = self.retries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            // Entries of policies deleted while backing off, whose holds are over.
            let now = Instant::now();
            map.retain(|_, r| r.not_before.is_some_and(|t| t > now));
        }
        let r = map.entry(key.clone()).or_insert(Retry {
            attempts: 0,
            follows: 0,
            not_before: None,
            generation: 0,
        });
        r.attempts = r.attempts.saturating_add(1);
        let d = backoff_delay(r.attempts, self.base, self.max, retry_after);
        r.not_before = hold.and_then(|_| Instant::now().checked_add(d));
        r.generation = hold.unwrap_or(r.generation);
        d
    }

    /// Time left before `key` may be reconciled again after a transient failure of the same
    /// `generation`; `None` when it may run now.
    pub fn held(&self, key: &PolicyKey, generation: i64) -> Option<Duration> {
        let map = self.retries.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.get(key)?;
        let until = r.not_before?;
        (r.generation == generation)
            .then(|| until.checked_duration_since(Instant::now()))
            .flatten()
    }

    /// Policies with retry state.
    pub fn len(&self) -> usize {
        self.retries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// No retry state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one more pass under rule 3 for `key` (1-based) and clears its failure backoff.
    pub fn follow(&self, key: &PolicyKey) -> u32 {
        let mut map = self.retries.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.entry(key.clone()).or_insert(Retry {
            attempts: 0,
            follows: 0,
            not_before: None,
            generation: 0,
        });
        r.attempts = 0;
        r.not_before = None;
        r.follows = r.follows.saturating_add(1);
        r.follows
    }

    /// Forgets the state of `key`.
    pub fn reset(&self, key: &PolicyKey) {
        self.retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The requeue for a finished pass of `key` at `generation`.
    pub fn requeue(
        &self,
        key: &PolicyKey,
        generation: i64,
        interval: Duration,
        next: Next,
        reason: Reason,
    ) -> Action {
        match next {
            Next::Backoff(retry_after) => {
                let d = self.delay(key, retry_after, Some(generation));
                warn!(delay_s = d.as_secs_f64(), reason = %reason, "identity provider not reachable, backing off");
                Action::requeue(d)
            }
            Next::Retry => {
                let d = self.next_delay(key, None).min(jitter(interval));
                debug!(
                    delay_s = d.as_secs_f64(),
                    "blocked by a permission or credential outside Kubernetes; retrying"
                );
                Action::requeue(d)
            }
            Next::Soon => {
                let d = backoff_delay(self.follow(key), SOON, SOON_MAX, None);
                Action::requeue(d.min(interval))
            }
            Next::Interval => {
                self.reset(key);
                Action::requeue(jitter(interval))
            }
        }
    }
}

/// First delay of rule 3.
const SOON: Duration = Duration::from_secs(5);
/// Longest delay of rule 3.
const SOON_MAX: Duration = Duration::from_secs(30);

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at `max`, with
/// jitter, but never shorter than the server's `Retry-After`, and never longer than `max` (a
/// `Retry-After` longer than the cap is cut to it).
pub fn backoff_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    // A `Retry-After` is the server's to choose: it never parks a policy beyond the cap.
    jitter(exp.min(max))
        .max(retry_after.unwrap_or_default())
        .min(max)
}

/// ±10 % jitter so many policies do not resync in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let f = 0.9 + fastrand::f64() * 0.2;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(state: State, reason: Reason) -> Verdict {
        Verdict::new(state, reason, "")
    }

    #[test]
    fn a_transient_backoff_holds_passes_of_the_same_generation_only() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        let key = ("ns".to_string(), "p".to_string());
        assert_eq!(b.held(&key, 1), None);
        let d = b.delay(&key, Some(Duration::from_secs(60)), Some(1));
        assert_eq!(d, Duration::from_secs(60));
        let left = b.held(&key, 1).expect("held");
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
        assert_eq!(b.held(&key, 2), None, "a spec change is never held");
        // Stalls retry without holding other triggers (a fixed Secret must be seen at once).
        b.next_delay(&key, None);
        assert_eq!(b.held(&key, 1), None);
        b.reset(&key);
        assert_eq!(b.held(&key, 1), None);
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let within = |d: Duration, want: u64| {
            let w = Duration::from_secs(want);
            d >= w.mul_f64(0.9) && d <= w.mul_f64(1.1)
        };
        assert!(within(backoff_delay(1, base, max, None), 5));
        assert!(within(backoff_delay(2, base, max, None), 10));
        assert!(within(backoff_delay(4, base, max, None), 40));
        assert!(within(backoff_delay(30, base, max, None), 300));
        assert_eq!(
            backoff_delay(1, base, max, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn a_retry_after_never_parks_a_policy_beyond_the_cap() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        assert_eq!(
            backoff_delay(1, base, max, Some(Duration::from_secs(86_400))),
            max
        );
        assert_eq!(
            backoff_delay(1, base, max, Some(Duration::MAX)),
            max,
            "no overflow either"
        );
        let b = Backoff::new(base, max);
        let key = ("ns".to_string(), "p".to_string());
        let d = b.delay(&key, Some(Duration::from_secs(86_400)), Some(1));
        assert_eq!(d, max);
        assert!(b.held(&key, 1).unwrap() <= max);
    }

    #[test]
    fn entries_of_gone_policies_are_swept() {
        let b = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        for i in 0..(MAX_ENTRIES + 10) {
            b.next_delay(&("ns".to_string(), format!("p{i}")), None);
        }
        assert!(b.len() <= MAX_ENTRIES, "{}", b.len());
    }

    #[test]
    fn following_a_rollout_slows_down_and_a_converged_pass_resets_it() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        let key = ("ns".to_string(), "p".to_string());
        let interval = Duration::from_secs(600);
        let delays: Vec<u32> = (0..7).map(|_| b.follow(&key)).collect();
        assert_eq!(delays, [1, 2, 3, 4, 5, 6, 7]);
        let d = backoff_delay(7, SOON, SOON_MAX, None);
        assert!(
            d <= SOON_MAX.mul_f64(1.1) && d >= SOON_MAX.mul_f64(0.9),
            "{d:?}"
        );
        b.requeue(&key, 1, interval, Next::Interval, Reason::Configured);
        assert_eq!(b.follow(&key), 1, "reset after converging");
        let soon = b.requeue(
            &key,
            1,
            Duration::from_secs(2),
            Next::Soon,
            Reason::Configured,
        );
        assert_eq!(
            soon,
            Action::requeue(Duration::from_secs(2)),
            "never beyond the interval"
        );
    }

    #[test]
    fn the_rules_apply_in_order() {
        let done = v(State::Done, Reason::Configured);
        let unreachable = v(State::Progressing, Reason::Unreachable);
        let forbidden = v(State::Stalled, Reason::Forbidden);
        let rolling = v(State::Progressing, Reason::RolloutInProgress);
        let missing = v(State::Stalled, Reason::DeploymentNotFound);
        let ra = Some(Duration::from_secs(7));
        assert_eq!(
            next(&unreachable, &forbidden, &rolling, true, ra),
            Next::Backoff(ra)
        );
        assert_eq!(next(&done, &forbidden, &rolling, true, None), Next::Retry);
        assert_eq!(next(&forbidden, &done, &done, false, None), Next::Retry);
        assert_eq!(next(&done, &done, &rolling, false, None), Next::Soon);
        assert_eq!(next(&done, &done, &done, true, None), Next::Soon);
        assert_eq!(next(&done, &missing, &done, false, None), Next::Interval);
        assert_eq!(next(&done, &done, &done, false, None), Next::Interval);
    }
}
