//! Top-level errors of the controller. Provider errors are reported in conditions, not here; these
//! are failures to talk to Kubernetes, which are retried with backoff.

/// Controller errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed while trying to {operation}: {source}")]
    Kube {
        /// What was being done.
        operation: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The reconcile panicked (a bug; the panic's text is not repeated, it may hold remote
    /// text). The controller keeps running and retries the policy with backoff.
    #[error("the reconcile stopped on an internal error (a bug); retrying with backoff")]
    Panicked,
    /// The reconcile ran longer than its deadline (a slow identity provider or API server) and
    /// was cancelled; retried with backoff.
    #[error("the reconcile did not finish within its deadline of {}s and was cancelled; retrying with backoff", .0.as_secs())]
    DeadlineExceeded(std::time::Duration),
    /// This replica no longer holds the leader-election Lease (or could not renew it in time):
    /// the reconcile stopped before its next write. The replica that leads now reconciles the
    /// policy; nothing is wrong with it.
    #[error(
        "this replica is not the leader; the reconcile stopped before writing and the leader takes over"
    )]
    NotLeader,
}

impl Error {
    /// Wraps a kube error with what was being done.
    pub fn kube(operation: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            operation: operation.into(),
            source,
        }
    }

    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409 => "kube_conflict",
            Error::Kube { .. } => "kube",
            Error::Panicked => "panic",
            Error::DeadlineExceeded(_) => "deadline",
            Error::NotLeader => "not_leader",
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
