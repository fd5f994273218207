//! `dialer doctor`: start the server as a call would (and the simulators with `--simulate`),
//! run every check, show them, and exit 7 when any failed.

use super::Context;
use crate::cli::DoctorArgs;
use crate::doctor;
use crate::error::{AppError, Exit};
use crate::report;
use crate::startup::Startup;

pub(super) async fn run(args: &DoctorArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    let agent = super::call::agent_config(&args.agent)?;
    // The server must listen where PUBLIC_URL leads, so it starts exactly as for a call.
    let app = Startup::load(ctx.sources.clone(), &args.server)?
        .start(ctx.shutdown)
        .await?;
    if ctx.printer.style() != report::Style::Json {
        ctx.printer
            .message("checking the settings against Twilio and AssemblyAI…");
    }
    let checks = doctor::run(&app, &agent).await;
    app.stop().await;
    report::doctor::show(&checks, ctx.printer);
    Ok(if checks.passed() {
        Exit::Success
    } else {
        Exit::CheckFailed
    })
}
