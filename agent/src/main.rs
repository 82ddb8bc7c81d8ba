//! credwatch: the agent's command line (`credwatch run`); everything else is the agent library.
use agent::{cli, harden, logging, run};
use anyhow::Context as _;
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    if let Err(e) = harden::disable_core_dumps() {
        log::error!("disabling core dumps: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                match cli.command {
                    cli::Command::Run(args) => run::run(*args, run::Hooks::default()).await,
                }
            })
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
