//! Kubernetes API server simulator.
