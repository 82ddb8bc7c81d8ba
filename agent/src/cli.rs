//! Command line. Every `run` flag also reads an environment variable, so the DaemonSet can be
//! configured either way; `credwatch --help` documents them all.
use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{
    attribution::pods::config::KubeArgs,
    endpoints::EndpointSpec,
    features::{
        dns::args::DnsArgs, linklocal::args::LinkLocalArgs, metadata::args::DetectorArgs,
        tcp::args::TcpArgs,
    },
};

#[derive(Parser, Debug)]
#[command(
    name = "credwatch",
    version,
    about = "Per-pod metadata-credential, DNS and TCP observability from eBPF",
    long_about = "credwatch watches, per pod and without touching applications, every call to the \
cloud metadata/credential endpoints (EC2 IMDS v1/v2, ECS, EKS Pod Identity) and exports Prometheus \
metrics that flag per-request credential refreshes.\n\nKernel programs are observe-only: they never \
drop or change a packet."
)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG syntax is accepted too).
    #[arg(long, global = true, env = "CREDWATCH_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format: `text` (`[time LEVEL message]`) or `json` (one object per line with
    /// `time`, `level`, `target` and `message`, for log pipelines).
    #[arg(long, global = true, env = "CREDWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach to a cgroup v2 subtree and export metrics (what the DaemonSet runs).
    Run(Box<RunArgs>),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// cgroup v2 directory to attach to; every process below it is observed. Default: the
    /// cgroup v2 root, found in /proc/self/mountinfo.
    #[arg(long, env = "CREDWATCH_CGROUP_PATH")]
    pub cgroup_path: Option<PathBuf>,

    /// Extra metadata endpoint to watch, `ADDR:PORT` (IPv6 as `[ADDR]:PORT`), optionally with
    /// its kind: `imds=ADDR:PORT`, `ecs=…`, `pod_identity=…`, `custom=…` (the default kind).
    /// Repeatable; in the environment, comma-separated.
    #[arg(long = "metadata-endpoint", env = "CREDWATCH_METADATA_ENDPOINTS", value_delimiter = ',')]
    pub metadata_endpoints: Vec<EndpointSpec>,

    /// A metadata request with no response status line after this many seconds is counted with
    /// code="no_response" (as is one whose connection ends first).
    #[arg(long, env = "CREDWATCH_METADATA_TIMEOUT", default_value_t = 10)]
    pub metadata_timeout: u64,

    /// Do not watch the real AWS endpoints (169.254.169.254, fd00:ec2::254, 169.254.170.2,
    /// 169.254.170.23, fd00:ec2::23, port 80); only those given with --metadata-endpoint.
    #[arg(long, env = "CREDWATCH_NO_DEFAULT_ENDPOINTS")]
    pub no_default_endpoints: bool,

    /// Address for /metrics, /healthz and /readyz. The default, [::]:9500, takes IPv4 and IPv6
    /// clients (dual-stack; 0.0.0.0:9500 where the kernel has no IPv6). Use 127.0.0.1:9500
    /// behind a proxy.
    #[arg(long, env = "CREDWATCH_LISTEN", default_value = "[::]:9500")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub detector: DetectorArgs,

    #[command(flatten)]
    pub dns: DnsArgs,

    #[command(flatten)]
    pub tcp: TcpArgs,

    /// The link-local packet budget (docs/metrics.md#link-local-packet-budget).
    #[command(flatten)]
    pub linklocal: LinkLocalArgs,

    /// Kubernetes attribution and series lifecycle (docs/metrics.md#kubernetes-attribution).
    #[command(flatten)]
    pub kubernetes: KubeArgs,
}

impl RunArgs {
    /// `--metadata-timeout` (at least a second): the kernel and the unanswered-request sweep
    /// apply the same one.
    pub fn metadata_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.metadata_timeout.max(1))
    }
}
