//! One list-then-watch of the pods on this node, as client-go's reflector does it: list (in
//! pages) at a resourceVersion, watch from there with bookmarks, re-watch from the last version
//! seen when a watch ends, relist on `410 Gone`, and back off exponentially on errors. While the
//! API is unreachable the last known pods stay; the pipeline keeps exporting, with path labels
//! for pods it has not heard of.
use std::{
    collections::HashSet,
    pin::pin,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, WatchEvent, WatchParams},
};
use tokio::sync::{mpsc, watch};

use crate::attribution::{
    metrics::AttributionMetrics,
    pods::{
        cache::PodEvent,
        meta::{controller, pod_meta, workload_label},
        owner::Owners,
    },
};

/// Page size of the initial list (client-go's default).
const PAGE: u32 = 500;
/// Server-side watch timeout; the API server ends the watch after it and we re-watch.
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// A watch that ends this soon without delivering anything is treated as a failure, so a
/// misbehaving server cannot make us spin.
const MIN_USEFUL_WATCH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("listing pods: {0}")]
    List(#[source] kube::Error),
    #[error("the pipeline stopped")]
    Closed,
}

/// Exponential backoff with jitter: `initial`, doubling up to `max`, each delay ±20%.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self { initial, max, next: initial, seed: seed | 1 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift64: jitter only needs to differ between agents restarting together.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed % 1001) as f64 / 1000.0; // [0, 1]
        base.mul_f64(0.8 + 0.4 * unit)
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

pub struct PodWatch {
    api: Api<Pod>,
    owners: Owners,
    selector: String,
    events: mpsc::Sender<PodEvent>,
    metrics: AttributionMetrics,
    backoff: Backoff,
}

impl PodWatch {
    pub fn new(
        client: Client,
        node: &str,
        events: mpsc::Sender<PodEvent>,
        metrics: AttributionMetrics,
    ) -> Self {
        Self {
            api: Api::all(client.clone()),
            owners: Owners::new(client),
            selector: format!("spec.nodeName={node}"),
            events,
            metrics,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        }
    }

    /// Lists and watches until `shutdown` changes or the pipeline goes away.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            () = self.forever() => {}
            _ = shutdown.changed() => {}
        }
        log::debug!("pod watch stopped");
    }

    async fn forever(&mut self) {
        loop {
            let version = match self.list().await {
                Ok(v) => v,
                Err(WatchError::Closed) => return,
                Err(e) => {
                    self.failed(e.to_string()).await;
                    continue;
                }
            };
            match self.watch_from(version).await {
                Err(WatchError::Closed) => return,
                // Relist: the version we had is too old, or listing failed part-way.
                Ok(()) | Err(WatchError::List(_)) => {}
            }
        }
    }

    /// A full list; returns its resourceVersion.
    async fn list(&mut self) -> Result<String, WatchError> {
        let started = Instant::now();
        let mut listed = HashSet::new();
        let mut token: Option<String> = None;
        let version = loop {
            let mut params = ListParams::default().fields(&self.selector).limit(PAGE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = self.api.list(&params).await.map_err(WatchError::List)?;
            for pod in &page.items {
                if let Some(uid) = self.upsert(pod).await? {
                    listed.insert(uid);
                }
            }
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        log::info!(
            "Kubernetes: {} pods on this node (list at resourceVersion {version} took {:?})",
            listed.len(),
            started.elapsed()
        );
        self.send(PodEvent::Synced { uids: listed }).await?;
        self.metrics.watch_up.set(1);
        self.backoff.reset();
        Ok(version)
    }

    /// Watches from `version` until a relist is needed.
    async fn watch_from(&mut self, mut version: String) -> Result<(), WatchError> {
        let params = WatchParams::default().fields(&self.selector).timeout(WATCH_TIMEOUT_SECONDS);
        loop {
            let started = Instant::now();
            let stream = match self.api.watch(&params, &version).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 410 => return self.expired(&s.message),
                Err(e) => {
                    self.failed(e.to_string()).await;
                    continue;
                }
            };
            self.metrics.watch_up.set(1);
            let mut stream = pin!(stream);
            let mut delivered = false;
            let mut failure: Option<String> = None;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        advance(&mut version, &pod);
                        self.upsert(&pod).await?;
                    }
                    Ok(WatchEvent::Deleted(pod)) => {
                        advance(&mut version, &pod);
                        if let Some(uid) = pod.metadata.uid {
                            self.send(PodEvent::Delete { uid }).await?;
                        }
                    }
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    Ok(WatchEvent::Error(s)) if s.code == 410 => return self.expired(&s.message),
                    Ok(WatchEvent::Error(s)) => {
                        failure = Some(format!("watch error {}: {}", s.code, s.message));
                        break;
                    }
                    Err(e) => {
                        failure = Some(format!("watch stream: {e}"));
                        break;
                    }
                }
                if !delivered {
                    delivered = true;
                    self.backoff.reset();
                }
            }
            if failure.is_none() && !delivered && started.elapsed() < MIN_USEFUL_WATCH {
                failure = Some("watch ended at once".into());
            }
            if let Some(f) = failure {
                self.failed(f).await;
            }
        }
    }

    /// Converts and forwards one pod; returns its UID.
    async fn upsert(&mut self, pod: &Pod) -> Result<Option<String>, WatchError> {
        let Some(mut meta) = pod_meta(pod) else {
            log::debug!("ignoring a pod without uid or name");
            return Ok(None);
        };
        let owner = controller(&pod.metadata);
        let parent = match &owner {
            Some(o) => self.owners.parent(&meta.namespace, o).await,
            None => None,
        };
        meta.workload = workload_label(&meta.name, owner.as_ref(), parent.as_ref());
        let uid = meta.uid.clone();
        self.send(PodEvent::Upsert(meta)).await?;
        Ok(Some(uid))
    }

    async fn send(&self, event: PodEvent) -> Result<(), WatchError> {
        self.events.send(event).await.map_err(|_| WatchError::Closed)
    }

    fn expired(&mut self, message: &str) -> Result<(), WatchError> {
        log::info!("Kubernetes watch expired ({message}): relisting");
        self.metrics.restart("expired");
        Ok(())
    }

    async fn failed(&mut self, error: String) {
        let delay = self.backoff.next_delay();
        log::warn!("Kubernetes pod watch: {error}; retrying in {delay:.1?}");
        self.metrics.watch_up.set(0);
        self.metrics.restart("error");
        tokio::time::sleep(delay).await;
    }
}

/// Watch events carry the object's resourceVersion; resuming from the last one seen skips
/// nothing.
fn advance(version: &mut String, pod: &Pod) {
    if let Some(v) = &pod.metadata.resource_version {
        version.clone_from(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let bases = [500, 1000, 2000, 4000, 4000, 4000];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*d >= base.mul_f64(0.8) && *d <= base.mul_f64(1.2), "{d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(600));
    }
}
