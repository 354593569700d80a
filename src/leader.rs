//! Leader election on a `coordination.k8s.io/v1` Lease, so that with several replicas only one
//! reconciles. A replica that loses the lease stops its controllers and waits to win it again.
//!
//! Clock skew between replicas cannot hand a live lease to a standby. As client-go's
//! `leaderelection` does, a standby never compares the Lease's `renewTime` with its own wall
//! clock: it records, by its own monotonic clock, when it last saw the Lease's record change
//! (holder, `renewTime`, duration, transitions), and takes the Lease over only after
//! `leaseDurationSeconds` without an observed change. Every write of the Lease is a `PUT` with the
//! `resourceVersion` read, so of two replicas racing for it exactly one wins.
//!
//! The leader stops writing before a standby can take over: [`Leadership`] holds a monotonic
//! deadline, the instant its last successful renewal was *sent* plus [`Timing::renew_deadline`]
//! (shorter than the lease duration), and every write to Kubernetes or to an identity provider
//! checks it first. The renewal loop gives up leadership at the same deadline and stops the
//! controllers. The bound is in `docs/reliability.md`.
//!
//! `/readyz` answers 200 on a healthy standby too: readiness means "this replica works", and a
//! standby that never became ready would stall rolling updates (the new pod cannot take the Lease
//! while the old leader holds it) and Argo CD's health of the operator's Deployment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::controller::{self, Settings};
use crate::error::Error;
use crate::metrics::Metrics;

/// Lease name.
pub const LEASE_NAME: &str = "oidc-refresh-operator";

/// Durations of the election (client-go's defaults for controllers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a standby waits, by its own clock, without seeing the Lease change before it
    /// takes it over (`leaseDurationSeconds`, whole seconds).
    pub lease_duration: Duration,
    /// How long the leader keeps leading (and writing) after the instant it sent its last
    /// successful renewal. Shorter than `lease_duration`: the difference is the margin for a
    /// write already under way and for clocks that run at slightly different rates.
    pub renew_deadline: Duration,
    /// Pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may write, checked before every write to Kubernetes or to an identity
/// provider. A cheap local check of a monotonic deadline; no API call.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Option<Arc<Deadline>>);

#[derive(Debug)]
struct Deadline {
    origin: Instant,
    /// Nanoseconds after `origin` until which this replica leads; 0: not leading.
    until: AtomicU64,
}

impl Leadership {
    /// No election: this replica always leads (`run` without `--leader-elect`, tests).
    pub fn unelected() -> Self {
        Leadership(None)
    }

    /// An elected leadership, not leading until [`Leadership::renewed`] is called.
    pub fn elected() -> Self {
        Leadership(Some(Arc::new(Deadline {
            origin: Instant::now(),
            until: AtomicU64::new(0),
        })))
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        match &self.0 {
            None => true,
            Some(d) => {
                let now = Instant::now()
                    .saturating_duration_since(d.origin)
                    .as_nanos();
                u128::from(d.until.load(Ordering::Acquire)) > now
            }
        }
    }

    /// `Ok` while this replica leads; otherwise [`Error::NotLeader`], which ends the reconcile
    /// before the write.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// A renewal sent at `sent` succeeded: lead until `sent + valid_for`.
    pub fn renewed(&self, sent: Instant, valid_for: Duration) {
        if let Some(d) = &self.0 {
            let until = (sent + valid_for).saturating_duration_since(d.origin);
            let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX).max(1);
            d.until.store(nanos, Ordering::Release);
        }
    }

    /// Leadership is lost or given up: stop writing at once.
    pub fn revoke(&self) {
        if let Some(d) = &self.0 {
            d.until.store(0, Ordering::Release);
        }
    }
}

/// The part of a Lease's record whose change proves its holder alive.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    acquire_time: Option<Timestamp>,
    duration_s: Option<i32>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            duration_s: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

/// Wall clock written into `renewTime`/`acquireTime` (informational for other tools: expiry is
/// never judged from it).
pub type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// One replica's candidacy for the Lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    timing: Timing,
    clock: WallClock,
    leadership: Leadership,
    /// The record last seen and when it was first seen, by this replica's monotonic clock.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// A candidate for the Lease [`LEASE_NAME`] in `namespace`.
    pub fn new(client: Client, namespace: &str, identity: &str, timing: Timing) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            timing,
            clock: Arc::new(Timestamp::now),
            leadership: Leadership::elected(),
            observed: None,
        }
    }

    /// Uses `clock` as this replica's wall clock.
    pub fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// The guard the controllers check before each write.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Campaigns until `stop` turns true: `leading` turns true once this replica holds the Lease
    /// and false as soon as it stops leading. On stop, a held Lease is released so a standby takes
    /// over at once.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.acquire() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            info!(identity = %self.identity, "acquired leadership");
            let _ = leading.send(true);
            let stopped = tokio::select! {
                _ = self.keep() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            self.leadership.revoke();
            let _ = leading.send(false);
            if stopped {
                self.release().await;
                return;
            }
            warn!(identity = %self.identity, renew_deadline_s = self.timing.renew_deadline.as_secs_f64(), "lost leadership: the Lease could not be renewed in time");
        }
    }

    /// Returns once this replica holds the Lease.
    async fn acquire(&mut self) {
        loop {
            if self.attempt(self.timing.renew_deadline).await {
                return;
            }
            tokio::time::sleep(jittered(self.timing.retry_period)).await;
        }
    }

    /// Renews the Lease every retry period; returns when a renewal did not succeed within the
    /// renew deadline of the last successful one.
    async fn keep(&mut self) {
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            loop {
                let left = self.leadership_left();
                if left.is_zero() {
                    return;
                }
                if self.attempt(left).await {
                    break;
                }
                tokio::time::sleep(self.timing.retry_period.min(self.leadership_left())).await;
            }
        }
    }

    fn leadership_left(&self) -> Duration {
        match &self.leadership.0 {
            Some(d) => {
                let until = d.origin + Duration::from_nanos(d.until.load(Ordering::Acquire));
                until.saturating_duration_since(Instant::now())
            }
            None => Duration::MAX,
        }
    }

    /// One attempt to acquire or renew, bounded by `limit`; true if this replica holds the Lease
    /// afterwards.
    async fn attempt(&mut self, limit: Duration) -> bool {
        let sent = Instant::now();
        match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
            Ok(Ok(true)) => {
                self.leadership.renewed(sent, self.timing.renew_deadline);
                true
            }
            Ok(Ok(false)) => false,
            Ok(Err(e)) => {
                debug!(error = %e, "lease not acquired or renewed");
                false
            }
            Err(_) => {
                debug!(
                    limit_s = limit.as_secs_f64(),
                    "lease call did not answer in time"
                );
                false
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime((self.clock)());
        let duration_s = i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(15);
        let mut lease = match self.api.get_opt(LEASE_NAME).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_s),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observe(&created);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        self.observe(&lease);
        let record = self.observed.as_ref().map(|(r, _)| r.clone());
        let (holder, seen_at) = match &self.observed {
            Some((r, at)) => (r.holder.clone(), *at),
            None => (None, Instant::now()),
        };
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if let Some(other) = holder.as_deref().filter(|_| !mine) {
            // Judged only by this replica's monotonic clock: the holder's `renewTime` may come
            // from a clock minutes apart from ours.
            let observed_for = seen_at.elapsed();
            if observed_for < self.timing.lease_duration {
                debug!(
                    holder = other,
                    unchanged_s = observed_for.as_secs_f64(),
                    "lease held by another replica"
                );
                return Ok(false);
            }
            info!(
                holder = other,
                unchanged_s = observed_for.as_secs_f64(),
                "lease not renewed by its holder for its whole duration; taking it over"
            );
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_s);
        spec.renew_time = Some(now.clone());
        if !mine {
            spec.acquire_time = Some(now);
            let transitions = record.and_then(|r| r.transitions).unwrap_or(0);
            spec.lease_transitions = Some(if holder.is_some() {
                transitions.saturating_add(1)
            } else {
                transitions
            });
        }
        // `replace` sends the resourceVersion read: a concurrent write makes this a conflict.
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the Lease's record, and when it was first seen as it is now.
    fn observe(&mut self, lease: &Lease) {
        let record = Record::of(lease.spec.as_ref().unwrap_or(&LeaseSpec::default()));
        if self.observed.as_ref().map(|(r, _)| r) != Some(&record) {
            self.observed = Some((record, Instant::now()));
        }
    }

    /// Gives the Lease up (holder cleared) so that a standby takes it at once.
    async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime((self.clock)()));
            spec.lease_duration_seconds = Some(1);
            self.api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        match tokio::time::timeout(self.timing.renew_deadline, result).await {
            Ok(Ok(true)) => info!("released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => warn!(error = %e, "could not release the lease"),
            Err(_) => warn!("could not release the lease in time"),
        }
    }
}

/// `period` plus up to 20 % (client-go's jitter factor), so replicas do not retry in lockstep.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(fastrand::f64() * 0.2)
}

/// Runs the controllers while this replica holds the lease, until `stop` turns true.
pub async fn run_elected(
    client: Client,
    namespace: &str,
    identity: &str,
    mut settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) {
    let elector = Elector::new(client.clone(), namespace, identity, Timing::default());
    settings.leadership = elector.leadership();
    let (tx, mut leader) = watch::channel(false);
    let task = tokio::spawn(elector.run(tx, stop.clone()));
    ready.store(true, Ordering::SeqCst);
    // The controllers' own readiness flag; this replica's readiness is `ready`.
    let running = Arc::new(AtomicBool::new(false));
    let mut stop = stop;
    loop {
        // Wait to lead (or to stop).
        tokio::select! {
            res = leader.wait_for(|l| *l) => { if res.is_err() { break; } }
            _ = stop.wait_for(|s| *s) => break,
        }
        let mut lost = leader.clone();
        let mut stop2 = stop.clone();
        controller::run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            running.clone(),
            async move {
                tokio::select! {
                    _ = lost.wait_for(|l| !*l) => warn!("stopping controllers until leadership is won again"),
                    _ = stop2.wait_for(|s| *s) => {},
                }
            },
        )
        .await;
        if *stop.borrow() {
            break;
        }
    }
    ready.store(false, Ordering::SeqCst);
    if let Err(e) = task.await {
        warn!(error = %e, "leader election task failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_at_its_deadline_without_a_renewal() {
        let l = Leadership::elected();
        assert!(!l.is_leader(), "not leading before the first renewal");
        assert!(matches!(l.check(), Err(Error::NotLeader)));
        let sent = Instant::now();
        l.renewed(sent, Duration::from_secs(10));
        assert!(l.check().is_ok());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(l.is_leader());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(
            !l.is_leader(),
            "a leader that could not renew stops writing"
        );
        l.renewed(Instant::now(), Duration::from_secs(10));
        assert!(l.is_leader());
        l.revoke();
        assert!(!l.is_leader());
    }

    #[test]
    fn without_election_this_replica_always_leads() {
        assert!(Leadership::unelected().check().is_ok());
        assert!(Leadership::default().is_leader());
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2400));
        }
    }
}
