//! `dialer simulators`: the Twilio and Voice Agent simulators on their own, for pointing a
//! separate dialer process at them (the crash-and-resume tests kill that process, not these)
//! or for trying another client against them. Prints the settings as one JSON line on stdout.

use super::Context;
use crate::cli::SimulatorsArgs;
use crate::error::{AppError, Exit};
use crate::shutdown::Interrupts;
use crate::startup;

pub(super) async fn run(args: &SimulatorsArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    let mut interrupts = Interrupts::listen();
    let (_, sim) = startup::simulate(args.sim_speed, None, ctx.shutdown).await?;
    let endpoints = sim.endpoints();
    // The fake accounts' credentials are not secrets: printing them is the point.
    let printed = serde_json::json!({
        "TWILIO_API_BASE_URL": endpoints.twilio_api_base_url,
        "TWILIO_ACCOUNT_SID": endpoints.account_sid,
        "TWILIO_AUTH_TOKEN": endpoints.auth_token,
        "TWILIO_FROM_NUMBER": endpoints.from_number,
        "ASSEMBLYAI_AGENT_URL": endpoints.agent_url,
        "ASSEMBLYAI_API_KEY": endpoints.api_key,
    });
    ctx.printer.out(&printed.to_string());
    ctx.printer.message("simulators running; Ctrl-C stops them");
    interrupts.next().await;
    drop(sim);
    Ok(Exit::Success)
}
