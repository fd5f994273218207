//! The commands: each parses what it was given, builds the application through
//! [`crate::startup`], runs, and reports. `main` only maps the result to an exit code.

mod call;
mod campaign;
mod doctor;
mod serve;
#[cfg(feature = "simulate")]
mod simulators;

use crate::cli::{Cli, Command};
use crate::error::{AppError, Exit};
use crate::report::Printer;
use crate::settings::Sources;
use crate::shutdown::Shutdown;

/// What every command is given.
pub(crate) struct Context<'a> {
    /// Where settings come from (before the command's own flags).
    pub sources: Sources,
    pub printer: &'a Printer,
    /// The root of the shutdown tree.
    pub shutdown: &'a Shutdown,
}

/// Run the parsed command line, then stop everything it started and wait for it.
pub async fn run(cli: Cli, printer: &Printer) -> Result<Exit, AppError> {
    let shutdown = Shutdown::new();
    let ctx = Context {
        sources: Sources::standard(cli.config.clone(), cli.env_file.clone()),
        printer,
        shutdown: &shutdown,
    };
    let result = match &cli.command {
        Command::Call(args) => call::run(args, &ctx).await,
        Command::Campaign(args) => campaign::run(args, &ctx).await,
        Command::Serve(args) => serve::run(args, &ctx).await,
        Command::Doctor(args) => doctor::run(args, &ctx).await,
        #[cfg(feature = "simulate")]
        Command::Simulators(args) => simulators::run(args, &ctx).await,
    };
    shutdown.finish().await;
    result
}
