//! `dialer serve`: a long-running server that answers incoming calls with the inbound agent,
//! serves Twilio's webhooks and the call API (`/api/calls`), printing every call's events,
//! until Ctrl-C or SIGTERM. The first signal drains (new calls are turned away, live ones may
//! finish for `--drain`), the next hangs up whatever is left at once.

use super::Context;
use super::call::agent_config_or;
use crate::agent::config::AgentConfig;
use crate::campaign::dnc::DncList;
use crate::cli::ServeArgs;
use crate::error::{AppError, Exit};
use crate::inbound::{self, Desk};
use crate::report;
use crate::settings::Sources;
use crate::shutdown::Interrupts;
use crate::startup::{App, Startup};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long hung-up calls get to confirm their end before the server stops anyway.
const HANG_UP_WAIT: Duration = Duration::from_secs(30);
/// How often a failed trial agent session is tried again.
const AGENT_RECHECK: Duration = Duration::from_secs(30);

pub(super) async fn run(args: &ServeArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    let mut interrupts = Interrupts::listen();
    let agent = agent_config_or(&args.agent, base_agent(&ctx.sources)?)?;
    inbound::check_agent(&agent).map_err(AppError::Input)?;
    let mut sources = ctx.sources.clone();
    for (key, value) in [
        ("max_calls", &args.max_calls),
        ("drain", &args.drain),
        ("dnc_file", &args.dnc),
    ] {
        if let Some(value) = value {
            sources.flags.push((key, value.clone()));
        }
    }
    let startup = Startup::load(sources, &args.server)?;
    let serve = startup.serve_settings()?;
    let api = startup.api_settings()?;
    let allow = startup.allow_list(&[])?;
    let dnc = DncList::load(
        std::slice::from_ref(&serve.dnc_file),
        startup.default_region(),
    )
    .map_err(|e| AppError::Input(e.to_string()))?;
    let app = startup.start(ctx.shutdown).await?;
    // Anyone who can reach the port could place calls on the account.
    if api.key.is_none() && !app.server_addr.ip().is_loopback() {
        let addr = app.server_addr;
        app.stop().await;
        return Err(AppError::Input(format!(
            "DIALER_API_KEY is not set: the call API needs a key when the server listens on {} (beyond this machine); set one, or BIND_ADDRESS=127.0.0.1",
            addr.ip()
        )));
    }

    let (events, rx) = mpsc::unbounded_channel();
    let view_stop = CancellationToken::new();
    let view = tokio::spawn(report::serve::show(
        rx,
        ctx.printer.clone(),
        view_stop.clone(),
    ));
    // The agent as a caller reaches it, with the account's number for both variables.
    let from = app.settings.twilio_from_number.as_str();
    let sample = inbound::agent_for(&agent, from, from);
    let check = app
        .service
        .check_agent(&sample)
        .await
        .map_err(|e| e.to_string());
    if let Err(why) = &check {
        ctx.printer.error(&format!(
            "the trial Voice Agent session failed ({why}); incoming calls are told the assistant is unavailable, and the session is tried again every {} s",
            AGENT_RECHECK.as_secs()
        ));
    }
    app.reception.open(
        Desk {
            service: app.service.clone(),
            agent: agent.clone(),
            dnc: Arc::new(Mutex::new(dnc)),
            events,
            max_calls: serve.max_calls,
            time_limit: Duration::from_secs(args.time_limit.max(1)),
        },
        check,
    );
    // While the agent cannot be had (the trial failed, or a call found the key refused),
    // try again now and then, and take calls again once it works.
    let recheck = {
        let (reception, service, sample) =
            (app.reception.clone(), app.service.clone(), sample.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(AGENT_RECHECK).await;
                if !matches!(reception.readiness(), Err(inbound::NotReady::Agent(_))) {
                    continue;
                }
                if service.check_agent(&sample).await.is_ok() {
                    reception.agent_checked(Ok(()));
                    tracing::warn!("the Voice Agent accepts the inbound agent now: taking calls");
                }
            }
        })
    };
    app.enable_api(&api, allow, ctx.shutdown)?;
    announce(&app, &serve, ctx);
    ctx.printer.message(&format!(
        "call API on http://{addr}/api/calls ({})",
        if api.key.is_some() {
            "DIALER_API_KEY required"
        } else {
            "no key: loopback only"
        },
        addr = app.server_addr,
    ));

    tokio::select! {
        () = interrupts.next() => {}
        // Nobody reads the calls' events any more: stop as on the first Ctrl-C, as `call` does.
        () = ctx.printer.closed() => {}
    }
    app.reception.drain();
    app.close_api();
    let live = app.reception.live();
    ctx.printer.message(&format!(
        "draining: new calls are turned away; {live} live call{} may finish within {} s (Ctrl-C again hangs up now)",
        if live == 1 { "" } else { "s" },
        serve.drain.as_secs()
    ));
    let forced = tokio::select! {
        () = idle(&app) => false,
        () = tokio::time::sleep(serve.drain) => true,
        () = interrupts.next() => true,
    };
    let mut quit_now = false;
    if forced {
        let live = app.reception.live();
        ctx.printer.message(&format!(
            "hanging up {live} live call{} (Ctrl-C again quits at once)",
            if live == 1 { "" } else { "s" }
        ));
        app.reception.hang_up_all();
        app.hang_up_api_calls();
        tokio::select! {
            () = idle(&app) => {}
            () = tokio::time::sleep(HANG_UP_WAIT) => {
                ctx.printer.message("some calls did not confirm their end in time; stopping anyway");
            }
            () = interrupts.next() => quit_now = true,
        }
    }
    recheck.abort();
    if !quit_now {
        settle_simulation(&app).await;
    }
    app.stop().await;
    view_stop.cancel();
    let _ = view.await;
    Ok(Exit::Success)
}

/// No live call left: neither one brought in nor one placed through the call API.
async fn idle(app: &App) {
    app.reception.idle().await;
    while app.api_live_calls() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With `--simulate` the fake Twilio stops with this process: let the calls it is still
/// carrying (a caller turned away mid-message) end, and its answers to whoever rang it from
/// another process reach them, before it goes.
async fn settle_simulation(app: &App) {
    #[cfg(feature = "simulate")]
    if let Some(sim) = &app.simulation {
        let _ = tokio::time::timeout(SIM_SETTLE, sim.twilio.wait_idle()).await;
        // The ring's answer is written just after its call is over.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    #[cfg(not(feature = "simulate"))]
    let _ = app;
}

/// The in-process fake Twilio's base URL, with `--simulate`.
fn simulated_twilio(app: &App) -> Option<String> {
    #[cfg(feature = "simulate")]
    return app.simulation.as_ref().map(|sim| sim.twilio.base_url());
    #[cfg(not(feature = "simulate"))]
    {
        let _ = app;
        None
    }
}

/// The longest wait for the simulated calls to end after the drain.
#[cfg(feature = "simulate")]
const SIM_SETTLE: Duration = Duration::from_secs(15);

/// The inbound agent's starting point: the `[agent]` table of `dialer.toml` when it has one,
/// else the inbound defaults.
fn base_agent(sources: &Sources) -> Result<AgentConfig, AppError> {
    let defaults = AgentConfig {
        system_prompt: inbound::DEFAULT_PROMPT.into(),
        greeting: inbound::DEFAULT_GREETING.into(),
        ..AgentConfig::default()
    };
    let Some(path) = sources
        .config_file
        .as_deref()
        .filter(|p| has_agent_table(p))
    else {
        return Ok(defaults);
    };
    AgentConfig::from_file(path).map_err(|e| AppError::Input(e.to_string()))
}

fn has_agent_table(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("agent"))
}

/// Where Twilio should be pointed, and with `--simulate` how to ring the server.
fn announce(app: &App, serve: &crate::startup::ServeSettings, ctx: &Context<'_>) {
    let voice = app.urls.voice();
    let status = app.urls.number_status();
    let mut serving = serde_json::json!({
        "event": "serving",
        "listening": app.server_addr.to_string(),
        "voice_url": voice,
        "status_callback": status,
        "max_calls": serve.max_calls,
        "drain_secs": serve.drain.as_secs(),
    });
    let ring = simulated_twilio(app).map(|twilio| {
        serving["twilio_api_base_url"] = twilio.clone().into();
        format!("dialer simulators --twilio {twilio} --ring {voice} --persona agrees")
    });
    if ctx.printer.style() == report::Style::Json {
        ctx.printer.out(&serving.to_string());
    }
    ctx.printer.message(&format!(
        "answering calls on {} (public URL {}): Voice URL {voice} (POST), status callback {status}; up to {} live calls; Ctrl-C or SIGTERM drains for {} s",
        app.server_addr,
        app.urls.base(),
        serve.max_calls,
        serve.drain.as_secs()
    ));
    if let Some(ring) = ring {
        ctx.printer.message(&format!(
            "ring it from another terminal: {ring}   (personas: see README, e.g. opts-out, reschedules)"
        ));
    }
}
