//! The `dialer` binary: parse the command line, set up logging, run the command, and turn the
//! result into one line on stderr and an exit code.

use clap::Parser;
use dialer::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    dialer::telemetry::init(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dialer: error: cannot start the async runtime: {e}");
            return dialer::error::Exit::Failure.code();
        }
    };
    let result = runtime.block_on(dialer::commands::run(cli));
    // Do not wait for stray background tasks (a webhook still in flight) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(exit) => exit.code(),
        Err(e) => {
            eprintln!("dialer: error: {e}");
            e.exit().code()
        }
    }
}
