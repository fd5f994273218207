//! The view of one call (`dialer call`): progress, each line as it is spoken, the callee's
//! partial transcript updated in place on a terminal, and the outcome.

use super::{Printer, Style, format};
use crate::events::CallEvent;
use crate::twilio::CallStatus;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;
use tokio::sync::mpsc;

/// Show events until the channel closes.
pub(crate) async fn show(mut events: mpsc::UnboundedReceiver<CallEvent>, printer: Printer) {
    let style = printer.style();
    let bar = (style == Style::Live).then(|| {
        let bar = printer.bars().add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let mut status = String::from("starting");
    while let Some(event) = events.recv().await {
        match style {
            Style::Json => {
                if let Ok(json) = serde_json::to_string(&event) {
                    printer.out(&json);
                }
            }
            Style::Plain => {
                if let Some(text) = plain(&event) {
                    printer.out(&text);
                }
            }
            Style::Live => {
                let Some(bar) = &bar else { continue };
                match &event {
                    CallEvent::Partial { text, .. } => {
                        bar.set_message(format!("{status} · callee › {text}…"));
                        continue;
                    }
                    CallEvent::Line { line, .. } => {
                        printer.out(&format::line(line));
                        bar.set_message(status.clone());
                        continue;
                    }
                    CallEvent::Ended { outcome } => {
                        bar.finish_and_clear();
                        printer.out(&format::outcome(outcome));
                        continue;
                    }
                    _ => {}
                }
                if let Some(text) = progress(&event) {
                    status = text;
                    bar.set_message(status.clone());
                }
                if let Some(text) = notable(&event) {
                    printer.out(&text);
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
        printer.bars().remove(&bar);
    }
}

fn progress(event: &CallEvent) -> Option<String> {
    Some(match event {
        CallEvent::Dialing { to } => format!("{to} · dialing"),
        CallEvent::Created { to, .. } => format!("{to} · queued"),
        CallEvent::Status { to, status } => match status {
            CallStatus::InProgress => format!("{to} · answered"),
            s => format!("{to} · {s}"),
        },
        CallEvent::Connected { to, .. } => format!("{to} · talking"),
        _ => return None,
    })
}

fn notable(event: &CallEvent) -> Option<String> {
    match event {
        CallEvent::AnsweredBy { answered_by, .. } => Some(format!("  answered by {answered_by}")),
        CallEvent::Tool {
            name,
            arguments,
            ok,
            ..
        } if name != "end_call" => Some(format!(
            "  tool {name}({arguments}){}",
            if *ok { "" } else { " failed" }
        )),
        CallEvent::Disposition { disposition, .. } => {
            Some(format!("  disposition: {}", disposition.name))
        }
        CallEvent::Transferring { target, reason, .. } => Some(if reason.is_empty() {
            format!("  transferring to {target}")
        } else {
            format!("  transferring to {target} ({reason})")
        }),
        CallEvent::Reconnected { reconnect, .. } => {
            Some(format!("  {}", format::reconnect(reconnect)))
        }
        _ => None,
    }
}

fn plain(event: &CallEvent) -> Option<String> {
    match event {
        CallEvent::Partial { .. } => None,
        CallEvent::Line { line, .. } => Some(format::line(line)),
        CallEvent::Ended { outcome } => Some(format::outcome(outcome)),
        other => progress(other).or_else(|| notable(other)),
    }
}
