//! The `dialer` binary: parse the command line, set up the terminal and logging, run the
//! command, and turn the result into one line on stderr and an exit code.

use clap::Parser;
use dialer::cli::Cli;
use dialer::error::Exit;
use dialer::report::{Printer, Style};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(Style::choose(cli.json));
    dialer::telemetry::init(cli.verbose, &printer);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"));
            printer.flush();
            return Exit::Failure.code();
        }
    };
    let result = runtime.block_on(dialer::commands::run(cli, &printer));
    // Every task of ours has finished (the shutdown tree waited for them); what may be left is
    // a blocking DNS lookup, which nothing waits for.
    runtime.shutdown_background();
    let code = match result {
        Ok(exit) => exit.code(),
        Err(e) => {
            printer.error(&e.to_string());
            e.exit().code()
        }
    };
    // The terminal is written by the printer's own thread: let it finish before exiting.
    printer.flush();
    code
}
