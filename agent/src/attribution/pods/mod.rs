//! Kubernetes attribution: one list+watch of the pods on this node (`spec.nodeName` field
//! selector), reduced to [`PodMeta`] and sent to the event pipeline, which owns the
//! [`cache::PodCache`] (through crate::attribution::resolver::Resolver) so no lock is shared with the hot path.
//! Minimal RBAC: get/list/watch pods, get replicasets (apps) and jobs (batch).
pub mod cache;
pub mod config;
#[cfg(feature = "kubernetes")]
mod meta;
#[cfg(feature = "kubernetes")]
mod owner;
#[cfg(feature = "kubernetes")]
mod watch;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::attribution::{
    metrics::AttributionMetrics,
    pods::{
        cache::PodEvent,
        config::{ConfigError, KubeArgs, Mode},
    },
};

/// Room for a burst of watch events (a relist sends one per pod).
#[cfg(feature = "kubernetes")]
const QUEUE: usize = 1024;

/// A running watch: its events, and the task (which ends when `shutdown` changes).
pub struct Started {
    pub events: mpsc::Receiver<PodEvent>,
    pub task: JoinHandle<()>,
}

/// Starts the pod watch when `args` (and the environment) ask for it. In `auto` mode a missing
/// configuration or node name turns attribution off with a warning; in `on` mode it is an
/// error.
pub async fn start(
    args: &KubeArgs,
    metrics: AttributionMetrics,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Started>, ConfigError> {
    let env = config::Environment::current();
    let Some(source) = config::choose(args.mode, args.kubeconfig.as_deref(), &env)? else {
        log::info!(
            "Kubernetes attribution off: labelling by pod UID, container id, systemd unit or cgroup path"
        );
        return Ok(None);
    };
    let strict = args.mode == Mode::On;
    let Some(node) = args.node_name.as_deref().filter(|n| !n.is_empty()) else {
        if strict {
            return Err(ConfigError::NoNodeName);
        }
        log::warn!("Kubernetes attribution off: {} (found {source:?})", ConfigError::NoNodeName);
        return Ok(None);
    };
    connect(source, node, strict, metrics, shutdown).await
}

/// The watch of `node`'s pods through the API `source` leads to.
#[cfg(feature = "kubernetes")]
async fn connect(
    source: config::Source,
    node: &str,
    strict: bool,
    metrics: AttributionMetrics,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Started>, ConfigError> {
    let client = match config::client(&source).await {
        Ok(c) => c,
        Err(e) if !strict => {
            log::warn!("Kubernetes attribution off: {}", error_chain(&e));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    log::info!("Kubernetes attribution on: watching pods of node {node} ({source:?})");
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(watch::PodWatch::new(client, node, tx, metrics).run(shutdown));
    Ok(Some(Started { events: rx, task }))
}

/// Built without the Kubernetes client (the `kubernetes` feature): `on` is an error, `auto` off.
#[cfg(not(feature = "kubernetes"))]
async fn connect(
    source: config::Source,
    _node: &str,
    strict: bool,
    _metrics: AttributionMetrics,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Started>, ConfigError> {
    if strict {
        return Err(ConfigError::NotBuiltIn);
    }
    log::warn!("Kubernetes attribution off: {} (found {source:?})", ConfigError::NotBuiltIn);
    Ok(None)
}

/// `error: cause: cause`, for a log line.
#[cfg(feature = "kubernetes")]
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}
