//! `credwatch run`: attach, export, and detach on SIGTERM/SIGINT.
use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use agent_common::names;
use anyhow::Context as _;
use tokio::{signal::unix::SignalKind, sync::watch};

use prometheus_client::registry::Registry;

use crate::{
    attribution::{
        cgroup::{self, CgroupIndex},
        metrics::AttributionMetrics,
        pods,
        resolver::{Parents, Resolver},
    },
    cli::RunArgs,
    clock::Clock,
    endpoints, features, harden, http,
    http::Ready,
    kernel,
    metrics::{AgentMetrics, FeatureLabels, KernelCounters, ProgramLabels},
    observer::{Context, Setup},
    pipeline::{Pipeline, PipelineGauges},
    series::SeriesRegistry,
};

/// What an embedding caller (the demo) gets from a running agent.
#[derive(Default)]
pub struct Hooks {
    /// Receives the registry /metrics is encoded from, once the agent is ready.
    pub on_ready: Option<tokio::sync::oneshot::Sender<Arc<Registry>>>,
    /// Stops the agent when it changes (besides SIGTERM/SIGINT).
    pub stop: Option<watch::Receiver<bool>>,
    /// Keep every capability after attaching (the demo still creates sandboxes then).
    pub keep_capabilities: bool,
}

pub async fn run(args: RunArgs, hooks: Hooks) -> anyhow::Result<()> {
    let (mount, attach_to) = cgroup::resolve_attach_path(args.cgroup_path.as_deref())?;
    let mut endpoints =
        if args.no_default_endpoints { Vec::new() } else { endpoints::aws_defaults() };
    for e in &args.metadata_endpoints {
        if !endpoints.contains(e) {
            endpoints.push(*e);
        }
    }
    if endpoints.is_empty() {
        anyhow::bail!(
            "no metadata endpoints to watch: drop --no-default-endpoints or add --metadata-endpoint"
        );
    }

    // Bind first: a port already in use is the most common start-up failure; report it before
    // touching the kernel.
    let listener = http::bind(args.listen).with_context(|| {
        format!("listening on {} (is another credwatch running? see --listen)", args.listen)
    })?;
    let listen = listener.local_addr().unwrap_or(args.listen);

    if args.dns.dns_ports.contains(&0) {
        anyhow::bail!("--dns-port 0 is not a port");
    }
    let mut registry = Registry::default();
    let (kernel::Kernel { mut attachment, counters, features: kernel_features }, features) =
        kernel::load_and_attach(&attach_to, |kernel| {
            features::all(&mut Setup {
                args: &args,
                endpoints: &endpoints,
                kernel,
                registry: &mut registry,
            })
        })
        .context(
            "setting up the kernel programs and the features' maps (credwatch needs root, or \
             CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; see docs/deploy.md)",
        )?;
    let counters = KernelCounters::new(counters);
    if !hooks.keep_capabilities {
        // Before any other thread exists: capabilities are per thread.
        match harden::drop_capabilities(|| counters.readable()) {
            Ok(dropped) if dropped.bounding_set_shrunk => {
                log::info!("dropped capabilities; kept {}", dropped.kept.join(", "))
            }
            Ok(dropped) => log::info!(
                "dropped capabilities; kept {}; bounding set left as the runtime set it (no \
                 CAP_SETPCAP to shrink it; no_new_privs keeps it from being regained)",
                dropped.kept.join(", ")
            ),
            Err(e) => log::error!("dropping capabilities: {e:#}; running with all of them"),
        }
    }
    let own = AgentMetrics::register(&mut registry, Some(counters));
    for program in &attachment.programs {
        own.attached.get_or_create(&ProgramLabels { program }).set(1);
    }
    for (feature, available) in kernel_features {
        own.kernel_features.get_or_create(&FeatureLabels { feature }).set(available.into());
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = args.kubernetes.series_grace;
    let attribution = AttributionMetrics::default();
    let pod_watch = pods::start(&args.kubernetes, attribution.clone(), stop_rx.clone())
        .await
        .context("setting up Kubernetes attribution (--kubernetes off disables it)")?;
    attribution.register(&mut registry, pod_watch.is_some());
    let (pod_events, pod_task) = pod_watch.map(|s| (s.events, s.task)).unzip();
    let cx = Context {
        resolver: Resolver::new(CgroupIndex::new(mount, PathBuf::from(&attach_to)), grace)
            .with_parents(cgroup_parents(&mut attachment)?),
        series: SeriesRegistry::new(grace),
        clock: Clock::new(),
        rejects: own.userspace.clone(),
    };
    let gauges = PipelineGauges { cgroups_known: own.cgroups_known.clone(), attribution };
    let ready: Ready = Arc::default();
    // With Kubernetes attribution on, the pipeline says ready once it has the first pod list:
    // before that, every series would be labelled by pod UID and relabelled moments later.
    let kubernetes = pod_events.is_some();
    let pipeline =
        Pipeline::new(cx, features, gauges, pod_events, kubernetes.then(|| ready.clone()));

    let registry = Arc::new(registry);
    let server =
        tokio::spawn(http::serve(listener, registry.clone(), ready.clone(), stop_rx.clone()));
    let events = tokio::spawn(pipeline.run(stop_rx.clone()));
    if kubernetes {
        log::info!(
            "metrics on http://{listen}/metrics, observing {}; ready once the first pod list \
             has loaded",
            attach_to.display()
        );
    } else {
        ready.store(true, Ordering::Release);
        log::info!("ready: metrics on http://{listen}/metrics, observing {}", attach_to.display());
    }
    if let Some(tx) = hooks.on_ready {
        let _ = tx.send(registry);
    }

    wait_for_stop(hooks.stop).await?;
    log::info!("shutting down: detaching programs");
    let _ = stop_tx.send(true);
    let _ = server.await;
    match events.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!("event reader failed: {e}"),
        Err(e) => log::error!("event reader panicked: {e}"),
    }
    if let Some(task) = pod_task {
        let _ = task.await;
    }
    drop(attachment);
    Ok(())
}

/// The kernel's record of each cgroup's parent (agent_common::names::MAP_CGROUP_PARENTS).
fn cgroup_parents(attachment: &mut kernel::Attachment) -> anyhow::Result<Parents> {
    let table: aya::maps::HashMap<aya::maps::MapData, u64, u64> =
        attachment.take_map(names::MAP_CGROUP_PARENTS)?;
    Ok(Parents::new(move |cgroup_id| table.get(&cgroup_id, 0).ok()))
}

async fn wait_for_stop(extra: Option<watch::Receiver<bool>>) -> anyhow::Result<()> {
    let mut term =
        tokio::signal::unix::signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let extra = async move {
        match extra {
            Some(mut rx) => {
                let _ = rx.changed().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = extra => {}
    }
    Ok(())
}
