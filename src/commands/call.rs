//! `dialer call NUMBER`: one call with a live transcript, its outcome, and an exit code;
//! placed here, or through a `dialer serve` with `--server`.

use super::Context;
use crate::agent::config::AgentConfig;
use crate::call::dialer::{CallRequest, Dialer};
use crate::call::tools::NoTools;
use crate::cli::{AgentArgs, CallArgs};
use crate::error::{AppError, Exit};
use crate::phone::{self, E164};
use crate::remote::RemoteDialer;
use crate::report;
use crate::shutdown::Interrupts;
use crate::startup::Startup;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub(super) async fn run(args: &CallArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    let mut interrupts = Interrupts::listen();
    let mut agent = agent_config(&args.agent)?;
    if args.record {
        agent.record = true;
        agent.prepare_recording();
        agent
            .validate()
            .map_err(|e| AppError::Input(e.to_string()))?;
    }
    let mut sources = ctx.sources.clone();
    if let Some(url) = &args.remote.server {
        sources.flags.push(("dialer_server", url.clone()));
    }
    let startup = Startup::load(sources, &args.server)?;
    let to = E164::parse_with_region(&args.number, startup.default_region())
        .map_err(|e| AppError::Input(format!("cannot call {}: {e}", args.number)))?;
    phone::check_call(&to, &startup.allow_list(&args.allow_prefix)?)
        .map_err(|e| AppError::Input(format!("cannot call {to}: {e}")))?;
    let recordings_dir = startup.recordings_dir(args.recordings_dir.as_deref());
    let record = agent.record;
    let request = CallRequest {
        to,
        agent,
        tools: Arc::new(NoTools),
        ring_timeout: Duration::from_secs(args.ring_timeout),
        time_limit: Duration::from_secs(args.time_limit.max(1)),
        machine_detection: !args.no_amd,
        record,
        recordings_dir: Some(recordings_dir.clone()),
        late_recording: None,
    };
    if let Some((url, key)) = startup.remote()? {
        // The server's account (or its simulators) places the call: nothing starts here, so
        // `--simulate` only says that no accounts are needed on this machine. A recording is
        // the server's: it writes the WAV into its own RECORDINGS_DIR.
        let dialer = RemoteDialer::new(&url, key)?;
        return place(&dialer, request, &mut interrupts, ctx).await;
    }
    if record {
        repaired(ctx, &recordings_dir);
    }
    let app = startup.start(ctx.shutdown).await?;
    let result = place(app.service.as_ref(), request, &mut interrupts, ctx).await;
    app.stop().await;
    result
}

/// Place the call with a live view; Ctrl-C (or a reader that went away) hangs it up, a second
/// Ctrl-C quits at once.
async fn place<D: Dialer>(
    dialer: &D,
    request: CallRequest,
    interrupts: &mut Interrupts,
    ctx: &Context<'_>,
) -> Result<Exit, AppError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let view = ctx
        .shutdown
        .spawn(report::call::show(rx, ctx.printer.clone()));
    // This call's branch of the shutdown tree: cancelling it hangs the call up.
    let hang_up = ctx.shutdown.child();
    let dial = dialer.dial(request, tx, hang_up.clone());
    tokio::pin!(dial);
    let result = tokio::select! {
        r = &mut dial => Some(r),
        () = async {
            tokio::select! {
                () = interrupts.next() => {
                    ctx.printer.message("hanging up… (Ctrl-C again to quit at once)");
                }
                // Nobody reads the transcript any more: end the call as the operator would.
                () = ctx.printer.closed() => {}
            }
        } => {
            hang_up.cancel();
            tokio::select! {
                r = &mut dial => Some(r),
                () = interrupts.next() => None,
            }
        }
    };
    let Some(result) = result else {
        return Ok(Exit::Interrupted);
    };
    let _ = view.await;
    let outcome = result?;
    if ctx.printer.stdout_closed() {
        // As a reader that stops reading ends a search (ripgrep): a normal end.
        return Ok(Exit::Success);
    }
    Ok(Exit::for_outcome(&outcome))
}

/// Fix the headers of recordings a killed run left in `dir`, and say so.
pub(super) fn repaired(ctx: &Context<'_>, dir: &std::path::Path) {
    let fixed = crate::recording::wav::repair_dir(dir);
    if !fixed.is_empty() {
        ctx.printer.message(&format!(
            "repaired {} recording(s) in {} that a stopped run left unfinished",
            fixed.len(),
            dir.display()
        ));
    }
}

/// The agent from an agent file, then flags on top.
pub(super) fn agent_config(args: &AgentArgs) -> Result<AgentConfig, AppError> {
    agent_config_or(args, AgentConfig::default())
}

/// The agent from an agent file, else `base`, then flags on top.
pub(super) fn agent_config_or(
    args: &AgentArgs,
    base: AgentConfig,
) -> Result<AgentConfig, AppError> {
    let mut agent = match &args.agent {
        Some(path) => AgentConfig::from_file(path).map_err(|e| AppError::Input(e.to_string()))?,
        None => base,
    };
    if let Some(p) = &args.prompt {
        agent.system_prompt = p.clone();
    }
    if let Some(g) = &args.greeting {
        agent.greeting = g.clone();
    }
    if let Some(v) = &args.voice {
        agent.voice = v.clone();
    }
    if let Some(m) = &args.voicemail_message {
        agent.voicemail_message = Some(m.clone());
    }
    if let Some(t) = &args.transfer_to {
        agent.transfer_to = Some(t.clone());
    }
    let td = &mut agent.turn_detection;
    td.vad_threshold = args.vad_threshold.or(td.vad_threshold);
    td.min_silence = args.min_silence.or(td.min_silence);
    td.max_silence = args.max_silence.or(td.max_silence);
    if args.no_interrupt {
        td.interrupt_response = Some(false);
    }
    agent.prepare_recording();
    agent
        .validate()
        .map_err(|e| AppError::Input(e.to_string()))?;
    Ok(agent)
}
