//! TCP connects and accepts → per-workload counts by destination class and result, and connect
//! latency.
use super::{
    classify::Classifier,
    metrics::{TcpConnectLabels, TcpDestinationLabels, TcpMetrics},
    record::{self, TcpObservation},
};
use crate::{
    observer::{Context, Observer},
    record::RecordError,
};

#[derive(Debug)]
pub struct TcpObserver {
    metrics: TcpMetrics,
    classifier: Classifier,
}

impl TcpObserver {
    pub fn new(classifier: Classifier, metrics: TcpMetrics) -> Self {
        Self { metrics, classifier }
    }
}

impl Observer for TcpObserver {
    fn on_record(&mut self, bytes: &[u8], cx: &mut Context) -> Result<(), RecordError> {
        let m = &self.metrics;
        match record::decode(bytes)? {
            TcpObservation::Connect { cgroup_id, addr, port, result, latency_ns } => {
                let workload = cx.resolver.workload_or_fallback(cgroup_id);
                let destination = self.classifier.classify(addr, port);
                let labels = TcpConnectLabels { workload: workload.clone(), destination, result };
                cx.series.get_or_create(&m.connects, &labels).inc();
                if result == "established" {
                    let labels = TcpDestinationLabels { workload, destination };
                    cx.series.get_or_create(&m.duration, &labels).observe(latency_ns as f64 / 1e9);
                }
            }
            TcpObservation::Accept { cgroup_id, .. } => {
                let workload = cx.resolver.workload_or_fallback(cgroup_id);
                cx.series.get_or_create(&m.accepts, &workload).inc();
            }
        }
        Ok(())
    }
}
