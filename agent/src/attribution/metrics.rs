//! Self metrics of attribution: is the API watch healthy, how many pods and cgroups are known.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub reason: &'static str,
}

/// Why the watch was re-established: an error (connection, HTTP, stream), or the API server
/// answered `410 Gone` and a relist followed.
const RESTART_REASONS: [&str; 2] = ["error", "expired"];

#[derive(Clone, Debug, Default)]
pub struct AttributionMetrics {
    pub cgroups_unresolved: Gauge,
    pub pods: Gauge,
    pub watch_up: Gauge,
    pub watch_restarts: Family<RestartLabels, Counter>,
}

impl AttributionMetrics {
    /// Registers the metrics; the Kubernetes ones only when the watch runs, so a host without
    /// Kubernetes does not export a watch that is always down.
    pub fn register(&self, registry: &mut Registry, kubernetes: bool) {
        registry.register(
            "credwatch_cgroups_unresolved",
            "cgroups that produced events (metadata, DNS or TCP) and look like a pod's, but have no Kubernetes metadata (pod or container not known yet)",
            self.cgroups_unresolved.clone(),
        );
        if !kubernetes {
            return;
        }
        for reason in RESTART_REASONS {
            let _ = self.watch_restarts.get_or_create(&RestartLabels { reason });
        }
        registry.register(
            "credwatch_kubernetes_watch_up",
            "1 while the watch of this node's pods is established, 0 while it is failing",
            self.watch_up.clone(),
        );
        registry.register(
            "credwatch_kubernetes_pods",
            "Pods on this node known from the Kubernetes API (deleted ones excluded)",
            self.pods.clone(),
        );
        registry.register(
            "credwatch_kubernetes_watch_restarts",
            "Times the pod watch was re-established, by reason (error, expired = 410 Gone and relist)",
            self.watch_restarts.clone(),
        );
    }

    pub fn restart(&self, reason: &'static str) {
        self.watch_restarts.get_or_create(&RestartLabels { reason }).inc();
    }
}
