//! `dialer simulators`: the Twilio and Voice Agent simulators on their own, for pointing a
//! separate dialer process at them (the crash-and-resume tests kill that process, not these)
//! or for trying another client against them. Prints the settings as one JSON line on stdout.

use super::Interrupts;
use crate::cli::SimulatorsArgs;
use crate::error::{AppError, Exit};
use crate::sim::{Simulation, TimeScale};
use std::io::Write;
use tokio_util::sync::CancellationToken;

pub async fn run(args: &SimulatorsArgs) -> Result<Exit, AppError> {
    if !(args.sim_speed > 0.0 && args.sim_speed.is_finite()) {
        return Err(AppError::Input(
            "--sim-speed must be a positive number".into(),
        ));
    }
    let shutdown = CancellationToken::new();
    let sim = Simulation::start(TimeScale(1.0 / args.sim_speed), shutdown.child_token())
        .await
        .map_err(|e| AppError::Other(format!("cannot start the simulators: {e}")))?;
    let endpoints = sim.endpoints();
    // The fake accounts' credentials are not secrets: printing them is the point.
    let settings = serde_json::json!({
        "TWILIO_API_BASE_URL": endpoints.twilio_api_base_url,
        "TWILIO_ACCOUNT_SID": endpoints.account_sid,
        "TWILIO_AUTH_TOKEN": endpoints.auth_token,
        "TWILIO_FROM_NUMBER": endpoints.from_number,
        "ASSEMBLYAI_AGENT_URL": endpoints.agent_url,
        "ASSEMBLYAI_API_KEY": endpoints.api_key,
    });
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{settings}");
        let _ = out.flush();
    }
    eprintln!("dialer: simulators running; Ctrl-C stops them");
    Interrupts::listen().next().await;
    shutdown.cancel();
    Ok(Exit::Success)
}
