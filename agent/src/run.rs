//! `credwatch run`: attach, export, and detach on SIGTERM/SIGINT.
use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{net::TcpListener, signal::unix::SignalKind, sync::watch};

use crate::{
    attribution::{
        cgroup::{self, CgroupIndex},
        metrics::AttributionMetrics,
        pods,
        resolver::Resolver,
    },
    cli::RunArgs,
    clock::Clock,
    endpoints,
    features::{
        dns::observer::DnsObserver,
        metadata::{detector::Rule, observer::MetadataObserver, unanswered::Unanswered},
        tcp::{classify::Classifier, observer::TcpObserver},
    },
    harden, http,
    http::Ready,
    kernel,
    metrics::{FeatureLabels, KernelCounters, Metrics, ProgramLabels},
    observer::{Context, Delivery, Feature},
    pipeline::{Pipeline, PipelineGauges},
    series::SeriesRegistry,
};

/// What an embedding caller (the demo) gets from a running agent.
#[derive(Default)]
pub struct Hooks {
    /// Receives the metrics once the agent is ready.
    pub on_ready: Option<tokio::sync::oneshot::Sender<Metrics>>,
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
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!("listening on {} (is another credwatch running? see --listen)", args.listen)
    })?;
    let listen = listener.local_addr().unwrap_or(args.listen);

    if args.dns.dns_ports.contains(&0) {
        anyhow::bail!("--dns-port 0 is not a port");
    }
    let dns_timeout = Duration::from_secs(args.dns.dns_timeout.max(1));
    let metadata_timeout = Duration::from_secs(args.metadata_timeout.max(1));
    let settings = kernel::Settings {
        endpoints: &endpoints,
        dns_ports: &args.dns.dns_ports,
        dns_all_names: args.dns.dns_top_names > 0,
        dns_timeout,
        metadata_timeout,
    };
    let kernel::Kernel {
        attachment,
        events,
        dns_events,
        tcp_events,
        counters,
        flows,
        dns_tables,
        features,
    } = kernel::load_and_attach(&attach_to, &settings).context(
        "setting up the kernel programs (credwatch needs root, or CAP_BPF, CAP_PERFMON and \
                 CAP_NET_ADMIN; see docs/deploy.md)",
    )?;
    let counters = KernelCounters::new(counters);
    if !hooks.keep_capabilities {
        // Before any other thread exists: capabilities are per thread.
        match harden::drop_capabilities(|| counters.readable()) {
            Ok(kept) => log::info!("dropped capabilities; kept {}", kept.join(", ")),
            Err(e) => log::error!("dropping capabilities: {e:#}; running with all of them"),
        }
    }
    let (metrics, mut registry) = Metrics::new(Some(counters));
    for program in &attachment.programs {
        metrics.attached.get_or_create(&ProgramLabels { program }).set(1);
    }
    for (feature, available) in features {
        metrics.kernel_features.get_or_create(&FeatureLabels { feature }).set(available.into());
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = args.kubernetes.series_grace;
    let attribution = AttributionMetrics::default();
    let pod_watch = pods::start(&args.kubernetes, attribution.clone(), stop_rx.clone())
        .await
        .context("setting up Kubernetes attribution (--kubernetes off disables it)")?;
    attribution.register(&mut registry, pod_watch.is_some());
    let (pod_events, pod_task) = pod_watch.map(|s| (s.events, s.task)).unzip();
    let resolver = Resolver::new(CgroupIndex::new(mount, PathBuf::from(&attach_to)), grace);
    let dns =
        DnsObserver::new(dns_timeout, args.dns.dns_top_names, dns_tables, metrics.dns.clone());
    let classifier = Classifier {
        metadata: endpoints.clone(),
        dns_ports: args.dns.dns_ports.clone(),
        cluster: args.tcp.cluster_cidrs.clone(),
        aws_api: args.tcp.aws_api_cidrs.clone(),
    };
    let features = vec![
        // DNS events (NXDOMAIN answers) are read as they come: the search-list analysis reads
        // the pod's resolv.conf through one of its processes, and a short-lived resolver may be
        // gone a poll later. They are few (the kernel counts everything else).
        Feature {
            name: "dns",
            ring: dns_events,
            delivery: Delivery::Woken,
            observer: Box::new(dns),
        },
        Feature {
            name: "tcp",
            ring: tcp_events,
            delivery: Delivery::Polled,
            observer: Box::new(TcpObserver::new(classifier, metrics.tcp.clone())),
        },
        Feature {
            name: "metadata",
            ring: events,
            delivery: Delivery::Polled,
            observer: Box::new(MetadataObserver::new(
                Rule::from(&args.detector),
                Unanswered::new(flows, metadata_timeout),
                metrics.metadata.clone(),
            )),
        },
    ];
    let cx = Context {
        resolver,
        series: SeriesRegistry::new(grace),
        clock: Clock::new(),
        rejects: metrics.userspace.clone(),
    };
    let gauges = PipelineGauges { cgroups_known: metrics.cgroups_known.clone(), attribution };
    let pipeline = Pipeline::new(cx, features, gauges, pod_events);

    let ready: Ready = Arc::default();
    let server =
        tokio::spawn(http::serve(listener, Arc::new(registry), ready.clone(), stop_rx.clone()));
    let events = tokio::spawn(pipeline.run(stop_rx.clone()));
    ready.store(true, Ordering::Release);
    log::info!("ready: metrics on http://{listen}/metrics, observing {}", attach_to.display());
    if let Some(tx) = hooks.on_ready {
        let _ = tx.send(metrics);
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
