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
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
