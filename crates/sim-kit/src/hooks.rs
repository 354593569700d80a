//! Test hooks of a running simulator (latency, scripted failures, throttling, counts) and the
//! middleware that applies them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::counters::{CountRules, Counters, RouteKey};
use crate::util::{lock, set_retry_after};

/// A scripted failure decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Status to answer: always a valid HTTP status ([`Hooks::fail_next`] turns a scripted code
    /// that is not one into 503, the same in every simulator).
    pub code: u16,
    /// `Retry-After` seconds to send, if any.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// The status to answer.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    }
}

/// The status a scripted failure answers for a scripted `code`: the code itself when it is a
/// valid HTTP status (100..=999), otherwise 503. Scripted failures are a test hook, not
/// something a real server does, so every simulator answers an invalid script the same way.
fn scripted_status(code: u16) -> u16 {
    StatusCode::from_u16(code)
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        .as_u16()
}

#[derive(Clone, Copy, Debug)]
struct FailNext {
    remaining: usize,
    fault: Fault,
}

/// Probabilistic throttling: a share of calls answers 429 with `Retry-After`, decided by a
/// seeded PRNG (xorshift64*), so a run is reproducible.
#[derive(Clone, Copy, Debug)]
struct Throttle {
    ratio: f64,
    retry_after: u64,
    rng: u64,
}

/// Seed of the throttle PRNG (any non-zero value).
const THROTTLE_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

impl Throttle {
    fn new(ratio: f64, retry_after: u64) -> Self {
        Throttle {
            ratio: if ratio.is_nan() {
                0.0
            } else {
                ratio.clamp(0.0, 1.0)
            },
            retry_after,
            rng: THROTTLE_SEED,
        }
    }

    /// Next uniform draw in [0, 1).
    fn next_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether this call is throttled.
    fn hit(&mut self) -> bool {
        self.ratio > 0.0 && self.next_unit() < self.ratio
    }
}

#[derive(Default)]
struct HookState {
    latency: Duration,
    fail_next: Option<FailNext>,
    throttle: Option<Throttle>,
    counts: BTreeMap<RouteKey, u64>,
}

/// The test hooks of one running simulator. Shared (`Arc`) between its handle and its
/// middleware; every method takes `&self`.
#[derive(Default)]
pub struct Hooks {
    state: Mutex<HookState>,
}

impl Hooks {
    /// Hooks with a delay of `latency` before every answer, no failure scripted, no counts.
    pub fn new(latency: Duration) -> Self {
        Hooks {
            state: Mutex::new(HookState {
                latency,
                ..HookState::default()
            }),
        }
    }

    /// Delay before every answer from now on.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.state).latency = d;
    }

    /// The current delay before every answer.
    pub fn latency(&self) -> Duration {
        lock(&self.state).latency
    }

    /// Waits the configured delay (nothing when it is zero).
    pub async fn delay(&self) {
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// The next `n` calls that can fail (see [`Observe::faults_on`]) answer `status` (503 when
    /// `status` is not a valid HTTP status), with `Retry-After: <secs>` when given. `n = 0`
    /// clears a pending failure.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        lock(&self.state).fail_next = (n > 0).then_some(FailNext {
            remaining: n,
            fault: Fault {
                code: scripted_status(status),
                retry_after,
            },
        });
    }

    /// From now on, a share `ratio` (0..=1) of the calls that can fail answers 429 with
    /// `Retry-After: <retry_after_secs>`. The PRNG is seeded the same way on every call of this
    /// method, so a given sequence of calls is throttled the same way each time. `ratio = 0`
    /// turns it off. A pending [`fail_next`](Self::fail_next) takes precedence.
    pub fn set_throttle(&self, ratio: f64, retry_after_secs: u64) {
        lock(&self.state).throttle = (ratio > 0.0).then(|| Throttle::new(ratio, retry_after_secs));
    }

    /// Decides whether this call fails: a pending scripted failure first (used up by one),
    /// then the throttle.
    pub fn take_fault(&self) -> Option<Fault> {
        let mut st = lock(&self.state);
        if let Some(f) = st.fail_next.as_mut() {
            let fault = f.fault;
            f.remaining -= 1;
            if f.remaining == 0 {
                st.fail_next = None;
            }
            return Some(fault);
        }
        let t = st.throttle.as_mut()?;
        t.hit().then_some(Fault {
            code: 429,
            retry_after: Some(t.retry_after),
        })
    }

    /// Counts one call.
    pub fn count(&self, method: &str, route: &str, status: u16) {
        *lock(&self.state)
            .counts
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// The counts so far.
    pub fn counters<R: CountRules>(&self) -> Counters<R> {
        Counters::from_map(lock(&self.state).counts.clone())
    }

    /// Clears the counts.
    pub fn reset_counters(&self) {
        lock(&self.state).counts.clear();
    }
}

type RouteFn = dyn Fn(&str) -> String + Send + Sync;
type FaultableFn = dyn Fn(&str) -> bool + Send + Sync;
type AnswerFn = dyn Fn(StatusCode) -> Response + Send + Sync;
type AdmitFn = dyn Fn(&str) -> Option<Response> + Send + Sync;
type FinishFn = dyn Fn(&str, &mut Response) + Send + Sync;

/// Middleware applying [`Hooks`] to every request: a scripted failure (for routes
/// [`faults_on`](Self::faults_on) accepts, answered by [`fault_answer`](Self::fault_answer)
/// plus `Retry-After`), else the server's own refusal ([`admit`](Self::admit)), then the delay,
/// then that answer or the real handler's, passed through [`finish`](Self::finish), then one
/// count by (method, route template, status).
#[derive(Clone)]
pub struct Observe {
    hooks: Arc<Hooks>,
    route: Arc<RouteFn>,
    faultable: Arc<FaultableFn>,
    answer: Arc<AnswerFn>,
    admit: Option<Arc<AdmitFn>>,
    finish: Option<Arc<FinishFn>>,
}

impl Observe {
    /// Observes with `hooks`; `route_template` names the route of a request path for counts
    /// (and for [`faults_on`](Self::faults_on)). By default every route can fail, and a failure
    /// answers its status with an empty body.
    pub fn new(
        hooks: Arc<Hooks>,
        route_template: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        Observe {
            hooks,
            route: Arc::new(route_template),
            faultable: Arc::new(|_| true),
            answer: Arc::new(|status| {
                let mut r = Response::default();
                *r.status_mut() = status;
                r
            }),
            admit: None,
            finish: None,
        }
    }

    /// Only calls whose route template satisfies `f` can fail (scripted or throttled).
    pub fn faults_on(mut self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.faultable = Arc::new(f);
        self
    }

    /// The answer of an injected failure, in the simulated server's own shape (`Retry-After` is
    /// added by the middleware).
    pub fn fault_answer(
        mut self,
        f: impl Fn(StatusCode) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.answer = Arc::new(f);
        self
    }

    /// A refusal the simulated server itself decides before its handler, e.g. a request quota
    /// (rate limit) used up: `f(route)` answers instead of the handler when it returns a
    /// response. Asked for every call that no scripted failure answers, before the delay.
    pub fn admit(mut self, f: impl Fn(&str) -> Option<Response> + Send + Sync + 'static) -> Self {
        self.admit = Some(Arc::new(f));
        self
    }

    /// `f(route, answer)` sees every answer before it is counted (the handler's, a scripted
    /// failure's, a refusal of [`admit`](Self::admit)), to add what the simulated server puts
    /// on all of them: rate-limit state, request ids, `Date`.
    pub fn finish(mut self, f: impl Fn(&str, &mut Response) + Send + Sync + 'static) -> Self {
        self.finish = Some(Arc::new(f));
        self
    }

    /// `router` with this middleware around every route (and its fallback).
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.layer(middleware::from_fn_with_state(self, observe))
    }
}

async fn observe(State(o): State<Observe>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = (o.route)(req.uri().path());
    let fault = if (o.faultable)(&route) {
        o.hooks.take_fault()
    } else {
        None
    };
    let refusal = match (&fault, &o.admit) {
        (None, Some(admit)) => admit(&route),
        _ => None,
    };
    o.hooks.delay().await;
    let mut response = match (fault, refusal) {
        (Some(f), _) => {
            let mut resp = (o.answer)(f.status());
            set_retry_after(&mut resp, f.retry_after);
            resp
        }
        (None, Some(resp)) => resp,
        (None, None) => next.run(req).await,
    };
    if let Some(finish) = &o.finish {
        finish(&route, &mut response);
    }
    o.hooks.count(&method, &route, response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_is_used_up_then_throttle_applies() {
        let h = Hooks::new(Duration::ZERO);
        assert_eq!(h.take_fault(), None);
        h.fail_next(2, 503, Some(7));
        h.set_throttle(1.0, 3);
        let f = Fault {
            code: 503,
            retry_after: Some(7),
        };
        assert_eq!(h.take_fault(), Some(f));
        assert_eq!(h.take_fault(), Some(f));
        let t = h.take_fault().expect("throttled");
        assert_eq!((t.code, t.retry_after), (429, Some(3)));
        h.set_throttle(0.0, 3);
        h.fail_next(1, 500, None);
        h.fail_next(0, 500, None);
        assert_eq!(h.take_fault(), None);
    }

    #[test]
    fn throttle_hits_about_the_ratio_and_is_deterministic() {
        let draws = |ratio: f64| {
            let mut t = Throttle::new(ratio, 1);
            (0..10_000).map(|_| t.hit()).collect::<Vec<bool>>()
        };
        let a = draws(0.2);
        assert_eq!(a, draws(0.2), "same seed, same sequence");
        let hits = a.iter().filter(|h| **h).count();
        assert!((1_800..=2_200).contains(&hits), "{hits} of 10000");
        assert!(draws(0.0).iter().all(|h| !h));
        assert!(draws(1.0).iter().all(|h| *h));
        assert!(draws(f64::NAN).iter().all(|h| !h));
    }

    #[test]
    fn set_throttle_reseeds() {
        let draws = |h: &Hooks| {
            (0..64)
                .map(|_| h.take_fault().is_some())
                .collect::<Vec<_>>()
        };
        let h = Hooks::new(Duration::ZERO);
        h.set_throttle(0.5, 1);
        let first = draws(&h);
        h.set_throttle(0.5, 1);
        assert_eq!(draws(&h), first);
    }

    #[test]
    fn invalid_scripted_codes_answer_503() {
        let h = Hooks::new(Duration::ZERO);
        for code in [0, 42, 99, 1000, u16::MAX] {
            h.fail_next(1, code, Some(2));
            let f = h.take_fault().expect("scripted");
            assert_eq!(
                (f.code, f.status(), f.retry_after),
                (503, StatusCode::SERVICE_UNAVAILABLE, Some(2)),
                "scripted {code}"
            );
        }
        for code in [100, 429, 500, 599, 999] {
            h.fail_next(1, code, None);
            assert_eq!(h.take_fault().map(|f| f.code), Some(code));
        }
    }
}
