//! `dialer call NUMBER`: one call with a live transcript, its outcome, and an exit code.

use super::{Interrupts, Stack};
use crate::agent::config::AgentConfig;
use crate::call::dialer::{CallRequest, Dialer};
use crate::call::tools::NoTools;
use crate::cli::{AgentArgs, CallArgs, ServerArgs};
use crate::error::{AppError, Exit};
use crate::phone::E164;
use crate::report::{self, Style};
use crate::settings::Sources;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub async fn run(
    server: &ServerArgs,
    args: &CallArgs,
    sources: Sources,
    json: bool,
) -> Result<Exit, AppError> {
    let agent = agent_config(&args.agent)?;
    if !(15..=600).contains(&args.ring_timeout) {
        return Err(AppError::Input(format!(
            "--ring-timeout {} is outside 15–600 seconds (shorter than 15 s hangs up on people reaching for the phone)",
            args.ring_timeout
        )));
    }
    let stack = Stack::start(server, sources).await?;
    let to = E164::parse_with_region(&args.number, stack.default_region.as_deref())
        .map_err(|e| AppError::Input(format!("cannot call {}: {e}", args.number)));
    let to = match to {
        Ok(to) => to,
        Err(e) => {
            stack.stop().await;
            return Err(e);
        }
    };
    let request = CallRequest {
        to,
        agent,
        tools: Arc::new(NoTools),
        ring_timeout: Duration::from_secs(args.ring_timeout),
        time_limit: Duration::from_secs(args.time_limit.max(1)),
        machine_detection: !args.no_amd,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let view = tokio::spawn(report::call::show(rx, Style::choose(json)));
    let cancel = CancellationToken::new();
    let mut interrupts = Interrupts::listen();
    let service = stack.service.clone();
    let dial = service.dial(request, tx, cancel.clone());
    tokio::pin!(dial);
    let result = tokio::select! {
        r = &mut dial => Some(r),
        () = interrupts.next() => {
            // First Ctrl-C: hang up through Twilio and wait for the final status.
            cancel.cancel();
            eprintln!("dialer: hanging up… (Ctrl-C again to quit at once)");
            tokio::select! {
                r = &mut dial => Some(r),
                () = interrupts.next() => None,
            }
        }
    };
    let Some(result) = result else {
        stack.stop().await;
        return Ok(Exit::Interrupted);
    };
    let _ = view.await;
    stack.stop().await;
    let outcome = result?;
    Ok(Exit::for_outcome(&outcome))
}

/// The agent from an agent file, then flags on top.
pub fn agent_config(args: &AgentArgs) -> Result<AgentConfig, AppError> {
    let mut agent = match &args.agent {
        Some(path) => AgentConfig::from_file(path).map_err(|e| AppError::Input(e.to_string()))?,
        None => AgentConfig::default(),
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
    let td = &mut agent.turn_detection;
    td.vad_threshold = args.vad_threshold.or(td.vad_threshold);
    td.min_silence = args.min_silence.or(td.min_silence);
    td.max_silence = args.max_silence.or(td.max_silence);
    if args.no_interrupt {
        td.interrupt_response = Some(false);
    }
    agent
        .validate()
        .map_err(|e| AppError::Input(e.to_string()))?;
    Ok(agent)
}
