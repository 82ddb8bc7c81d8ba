//! credwatch: wires the command line to the agent library, the demo and the demo's client.
use agent::{cli, demo, harden, run};
use anyhow::Context as _;
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(&cli.log_level);
    if let Err(e) = harden::disable_core_dumps() {
        log::error!("disabling core dumps: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        cli::Command::DemoClient(args) => demo::client::run(&args),
        command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| {
                rt.block_on(async {
                    match command {
                        cli::Command::Run(args) => run::run(*args, run::Hooks::default()).await,
                        cli::Command::Demo(args) => demo::run(args).await,
                        cli::Command::DemoClient(_) => unreachable!("handled above"),
                    }
                })
            }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    env_logger::Builder::new()
        // The Kubernetes client logs each failed request itself; agent::attribution::pods says the same once,
        // with the retry delay. `--log-level info,kube_client=debug` brings them back.
        .filter_module("kube_client", log::LevelFilter::Off)
        .parse_filters(level)
        .format_target(false)
        .init();
}
