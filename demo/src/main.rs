//! credwatch-demo: the incident on one host (see demo.rs), and the demo's client processes.
//! Built from the agent library; not part of the agent image.
mod client;
mod demo;
mod dns_server;
mod sandbox;
mod server;
mod summary;

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "credwatch-demo",
    version,
    about = "Show the credential-refresh storm on this host with no cluster: a private cgroup \
subtree, a KIAM-like fake credential server on loopback, a Java-SDK-v1-like client and a healthy \
one, observed by the credwatch agent. Needs root, like `credwatch run`.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG syntax is accepted too).
    #[arg(long, global = true, env = "CREDWATCH_LOG_LEVEL", default_value = "info")]
    log_level: String,

    #[command(flatten)]
    demo: DemoArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Internal: a demo client process (the demo starts two of these in its cgroups).
    #[command(hide = true)]
    DemoClient(client::ClientArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address for /metrics while the demo runs.
    #[arg(long, env = "CREDWATCH_LISTEN", default_value = "127.0.0.1:9500")]
    pub listen: SocketAddr,

    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,

    /// Application requests per second made by each demo client.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    agent::logging::init(&cli.log_level, agent::cli::LogFormat::Text);
    // As the agent: the demo runs it in this process.
    if let Err(e) = agent::harden::disable_core_dumps() {
        log::error!("disabling core dumps: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::DemoClient(args)) => client::run(&args),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(demo::run(cli.demo))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
