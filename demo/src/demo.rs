//! The demo: the incident on one host, no cluster needed. Two pod-shaped cgroups under a
//! private subtree; a KIAM-like credential server (15-minute credentials) and an IMDS-like one
//! (6-hour credentials) on loopback; in each pod a client that follows the AWS Java SDK v1 rule
//! (refresh when less than 15 minutes remain). The agent runs attached to that subtree only, and a
//! live summary shows the KIAM pod flagged as a refresh storm while the other stays healthy.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use agent_common::EndpointKind;
use anyhow::Context as _;
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::sync::{oneshot, watch};

use agent::{
    attribution::{labels::Workload, pods::config::KubeArgs},
    cli::RunArgs,
    endpoints::EndpointSpec,
    features::{
        dns::args::DnsArgs, linklocal::args::LinkLocalArgs, metadata::args::DetectorArgs,
        tcp::args::TcpArgs,
    },
    run::{self, Hooks},
};

use crate::{DemoArgs, dns_server, sandbox, server, summary};

const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// One simulated pod: its cgroup, the credential server it talks to, and its client.
struct DemoPod {
    title: &'static str,
    workload: Workload,
    server: SocketAddr,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the demo loads eBPF programs and creates cgroups: run it as root (sudo)");
    }
    let kiam = server::start(server::Profile::kiam()).await?;
    let imds = server::start(server::Profile::ec2_instance_profile()).await?;
    let api = server::start_api().await?;
    let dns =
        dns_server::start().await.context("starting the demo DNS server on 127.0.0.153:53")?;
    let sandbox = sandbox::Sandbox::create(2).context("creating the demo cgroups")?;
    let resolv_conf = sandbox.resolv_conf(dns.ip())?;
    let upstream = format!("{}:{}", dns_server::API_NAME, api.port());
    let pods = [
        DemoPod {
            title: "java-v1 client, KIAM 15-min credentials",
            workload: sandbox.workload(0),
            server: kiam,
        },
        DemoPod {
            title: "java-v1 client, IMDS 6-h credentials  ",
            workload: sandbox.workload(1),
            server: imds,
        },
    ];

    let run_args = RunArgs {
        cgroup_path: Some(sandbox.root().to_path_buf()),
        metadata_endpoints: pods
            .iter()
            .map(|p| EndpointSpec { addr: p.server, kind: EndpointKind::Imds })
            .collect(),
        no_default_endpoints: true,
        metadata_timeout: 10,
        listen: args.listen,
        detector: DetectorArgs {
            storm_window: 120,
            storm_min_fetches: 5,
            storm_factor: 10.0,
            storm_valid_margin: 60,
        },
        dns: DnsArgs::default(),
        linklocal: LinkLocalArgs::default(),
        // The fake AWS API is on loopback: label it as what it stands for.
        tcp: TcpArgs {
            cluster_cidrs: Vec::new(),
            aws_api_cidrs: vec![format!("{}/32", api.ip()).parse()?],
        },
        // The demo's pods exist only as cgroups: label them by UID and container id.
        kubernetes: KubeArgs::default(),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let hooks = Hooks { on_ready: Some(ready_tx), stop: Some(stop_rx), keep_capabilities: true };
    let agent = run::run(run_args, hooks);
    let driver = async {
        let result = drive(&args, &sandbox, &pods, (&upstream, &resolv_conf), ready_rx).await;
        let _ = stop_tx.send(true);
        result
    };
    let (agent_result, driver_result) = tokio::join!(agent, driver);
    drop(sandbox);
    agent_result.and(driver_result)
}

async fn drive(
    args: &DemoArgs,
    sandbox: &sandbox::Sandbox,
    pods: &[DemoPod],
    (upstream, resolv_conf): (&str, &std::path::Path),
    ready: oneshot::Receiver<Arc<Registry>>,
) -> anyhow::Result<()> {
    let Ok(registry) = ready.await else {
        return Ok(()); // the agent failed to start and says why
    };
    let mut clients = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        clients.push(sandbox.spawn_client(i, pod.server, upstream, resolv_conf, args.rate)?);
    }
    println!("\ncredwatch demo: metrics on http://{}/metrics (Ctrl-C to stop)\n", args.listen);
    let started = tokio::time::Instant::now();
    let mut every = tokio::time::interval(SUMMARY_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        print_summary(started.elapsed(), pods, &registry);
        if args.duration > 0 && started.elapsed() >= Duration::from_secs(args.duration) {
            break;
        }
    }
    for mut c in clients {
        c.stop();
    }
    Ok(())
}

fn print_summary(elapsed: Duration, pods: &[DemoPod], registry: &Registry) {
    let mut text = String::new();
    if let Err(e) = encode(&mut text, registry) {
        log::warn!("encoding the metrics for the summary: {e}");
        return;
    }
    let samples = summary::samples(&text);
    let sum = |name: &str, w: &Workload, labels: &[(&str, &str)]| {
        summary::sum(&samples, name, w, labels) as u64
    };
    println!("[{:>4}s]", elapsed.as_secs());
    for pod in pods {
        let w = &pod.workload;
        let calls: u64 = ["token", "role_list", "credentials"]
            .into_iter()
            .map(|kind| {
                let labels = [("metadata_endpoint", "imds"), ("kind", kind), ("code", "200")];
                sum("credwatch_metadata_requests_total", w, &labels)
            })
            .sum();
        let role = [("metadata_endpoint", "imds"), ("role", server::ROLE)];
        let fetches = sum("credwatch_credential_fetches_total", w, &role);
        let flagged = sum("credwatch_credential_refresh_storm", w, &[("role", server::ROLE)]) == 1;
        let api = [("destination", "aws_api"), ("result", "established")];
        let api_calls = sum("credwatch_tcp_connects_total", w, &api);
        let dns: u64 = ["A", "AAAA"]
            .into_iter()
            .flat_map(|qtype| ["NOERROR", "NXDOMAIN"].map(|rcode| (qtype, rcode)))
            .map(|(qtype, rcode)| {
                sum("credwatch_dns_requests_total", w, &[("qtype", qtype), ("rcode", rcode)])
            })
            .sum();
        let extra = sum("credwatch_dns_search_expansion_queries_total", w, &[]);
        println!(
            "  pod {} ({}): API calls {api_calls:>4} | metadata calls {calls:>4}, credential fetches {fetches:>4} {} | DNS queries {dns:>4}, {extra:>4} only for the search list",
            &w.pod[..8],
            pod.title,
            if flagged { "REFRESH STORM" } else { "healthy      " },
        );
    }
}
