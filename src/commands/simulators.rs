//! `dialer simulators`: the Twilio and Voice Agent simulators on their own, for pointing a
//! separate dialer process at them (the crash-and-resume tests kill that process, not these)
//! or for trying another client against them. Prints the settings as one JSON line on stdout.
//!
//! `--ring`: instead, ask a running fake Twilio (its own process, or the one inside `dialer
//! serve --simulate`) to ring a server's Voice URL as an inbound caller, wait for the call to
//! end, and print what happened on it.

use super::Context;
use crate::cli::SimulatorsArgs;
use crate::error::{AppError, Exit};
use crate::report::Style;
use crate::shutdown::Interrupts;
use crate::sim::personas;
use crate::sim::twilio::{FakeTwilioConfig, RING_PATH};
use crate::startup;

pub(super) async fn run(args: &SimulatorsArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    if let (Some(voice_url), Some(twilio)) = (&args.ring, &args.twilio) {
        return ring(args, voice_url, twilio, ctx).await;
    }
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

/// Have the fake Twilio at `twilio` ring `voice_url`, and report the call once it is over.
async fn ring(
    args: &SimulatorsArgs,
    voice_url: &str,
    twilio: &str,
    ctx: &Context<'_>,
) -> Result<Exit, AppError> {
    let from = match (&args.persona, &args.from) {
        (Some(name), _) => personas::number_of(name).ok_or_else(|| {
            let names: Vec<&str> = personas::PERSONAS.iter().map(|p| p.name).collect();
            AppError::Input(format!(
                "no persona is called {name:?}; try one of: {}",
                names.join(", ")
            ))
        })?,
        (None, Some(from)) => from.clone(),
        (None, None) => personas::number_of("agrees").unwrap_or_default(),
    };
    let status_callback = args.status_callback.clone().or_else(|| {
        voice_url
            .strip_suffix("/twilio/voice")
            .map(|base| format!("{base}/twilio/status"))
    });
    let persona = personas::for_number(&from).name;
    ctx.printer.message(&format!(
        "ringing {voice_url} from {from} ({persona}); the call is shown by the server, its end here"
    ));
    // The fake's default account: the one `dialer serve --simulate` and `dialer simulators` run.
    let account = FakeTwilioConfig::default();
    let mut form = vec![("Url", voice_url.to_string()), ("From", from)];
    if let Some(cb) = status_callback {
        form.push(("StatusCallback", cb));
    }
    let url = format!("{}{RING_PATH}", twilio.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .basic_auth(&account.account_sid, Some(&account.auth_token))
        .form(&form)
        .send()
        .await
        .map_err(|e| AppError::Other(format!("cannot reach the fake Twilio at {twilio}: {e}")))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| {
        AppError::Other(format!(
            "the fake Twilio at {twilio} answered {status} with no readable body: {e}"
        ))
    })?;
    if !status.is_success() {
        let why = body["message"].as_str().unwrap_or("no reason given");
        return Err(AppError::Input(format!(
            "the fake Twilio refused to ring: {why}"
        )));
    }
    if ctx.printer.style() == Style::Json {
        ctx.printer.out(&body.to_string());
    } else {
        for line in body["said"].as_array().into_iter().flatten() {
            ctx.printer
                .out(&format!("  caller › {}", line.as_str().unwrap_or_default()));
        }
        let refused = !body["stream_opened"].as_bool().unwrap_or(false);
        ctx.printer.out(&format!(
            "{} {} · {} · ended by {}{}",
            body["sid"].as_str().unwrap_or_default(),
            body["status"].as_str().unwrap_or_default(),
            if refused {
                "no conversation (the server turned the call away or never streamed)"
            } else {
                "conversation"
            },
            body["ended_by"].as_str().unwrap_or("?"),
            match body["errors"].as_array() {
                Some(errors) if !errors.is_empty() => format!(" · errors: {errors:?}"),
                _ => String::new(),
            }
        ));
    }
    Ok(Exit::Success)
}
