//! The view of `dialer serve`: one line per event of every call the server runs, whichever
//! way it goes and whoever started it (an inbound caller, the call API), each line led by the
//! other party's number and the call's direction, so interleaved calls stay readable; or one
//! JSON event per line with `--json`. A partial transcript is not shown: with several calls
//! live there is no one place to update in place.

use super::{Printer, Style, format};
use crate::events::{CallEvent, Direction};
use crate::twilio::CallStatus;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Show events until `stop`, then show what is already queued and return. Every call source
/// of the server sends into the channel; its senders live as long as the server.
pub(crate) async fn show(
    mut events: mpsc::UnboundedReceiver<CallEvent>,
    printer: Printer,
    stop: CancellationToken,
) {
    let mut view = View::default();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = stop.cancelled() => None,
        };
        let Some(event) = event else { break };
        view.show(&event, &printer);
    }
    while let Ok(event) = events.try_recv() {
        view.show(&event, &printer);
    }
}

/// Which way each live call goes, learnt from its first event that says.
#[derive(Default)]
struct View {
    directions: HashMap<String, Direction>,
}

impl View {
    fn show(&mut self, event: &CallEvent, printer: &Printer) {
        if printer.style() == Style::Json {
            if let Ok(json) = serde_json::to_string(event) {
                printer.out(&json);
            }
            return;
        }
        let to = event.to().to_string();
        let direction = match event {
            CallEvent::Created { direction, .. } => {
                self.directions.insert(to.clone(), *direction);
                *direction
            }
            CallEvent::Ended { outcome } => {
                self.directions.remove(&to);
                outcome.direction
            }
            _ => self.directions.get(&to).copied().unwrap_or_default(),
        };
        if let Some(text) = line(event) {
            printer.out(&format!("{} {to} {text}", arrow(direction)));
        }
    }
}

fn arrow(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "←",
        Direction::Outbound => "→",
    }
}

/// One event in words, without its number.
fn line(event: &CallEvent) -> Option<String> {
    Some(match event {
        CallEvent::Dialing { .. } => "dialing".into(),
        CallEvent::Created {
            direction: Direction::Inbound,
            call_sid,
            ..
        } => format!("incoming call {call_sid}"),
        CallEvent::Created { call_sid, .. } => format!("queued {call_sid}"),
        CallEvent::Status { status, .. } => match status {
            CallStatus::InProgress => "answered".into(),
            s => s.to_string(),
        },
        CallEvent::AnsweredBy { answered_by, .. } => format!("answered by {answered_by}"),
        CallEvent::Connected { .. } => "talking".into(),
        CallEvent::Partial { .. } => return None,
        CallEvent::Line { line, .. } => format::line(line).trim_start().to_string(),
        CallEvent::Tool {
            name,
            arguments,
            ok,
            ..
        } if name != "end_call" => format::tool(name, arguments, *ok),
        CallEvent::Tool { .. } => return None,
        CallEvent::Disposition { disposition, .. } => {
            format!("disposition: {}", disposition.name)
        }
        CallEvent::Reconnected { reconnect, .. } => format::reconnect(reconnect),
        CallEvent::Keypad { keys, .. } => format!("keypad {keys}"),
        CallEvent::Transferring { target, reason, .. } if reason.is_empty() => {
            format!("transferring to {target}")
        }
        CallEvent::Transferring { target, reason, .. } => {
            format!("transferring to {target} ({reason})")
        }
        CallEvent::Recording { recording, .. } => {
            format!("Twilio's recording {} {}", recording.sid, recording.status)
        }
        CallEvent::Ended { outcome } => format::outcome(outcome),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EndedBy, FinalStatus, Outcome, Speaker, TranscriptLine};

    #[test]
    fn lines_name_the_number_and_the_direction_and_skip_partials() {
        let to = "+12025550106".to_string();
        let created = CallEvent::Created {
            to: to.clone(),
            call_sid: "CA1".into(),
            direction: Direction::Inbound,
        };
        assert_eq!(line(&created).unwrap(), "incoming call CA1");
        let said = CallEvent::Line {
            to: to.clone(),
            line: TranscriptLine {
                speaker: Speaker::Callee,
                text: "Please remove me.".into(),
                at_ms: 10,
                interrupted: false,
                latency_ms: None,
            },
        };
        assert_eq!(line(&said).unwrap(), "callee › Please remove me.");
        assert_eq!(
            line(&CallEvent::Partial {
                to: to.clone(),
                text: "Plea".into()
            }),
            None
        );
        let mut outcome = Outcome::sample(&to, FinalStatus::Completed, EndedBy::Agent);
        outcome.direction = Direction::Inbound;
        outcome.opted_out = true;
        let ended = line(&CallEvent::Ended {
            outcome: Box::new(outcome),
        })
        .unwrap();
        assert!(
            ended.starts_with("✔ completed") && ended.contains("opted out"),
            "{ended}"
        );

        let mut view = View::default();
        let printer = Printer::new(Style::Plain);
        view.show(&created, &printer);
        assert_eq!(view.directions.get(&to), Some(&Direction::Inbound));
    }

    #[test]
    fn json_events_carry_the_direction() {
        let created = CallEvent::Created {
            to: "+12025550106".into(),
            call_sid: "CA1".into(),
            direction: Direction::Inbound,
        };
        let v = serde_json::to_value(&created).unwrap();
        assert_eq!(v["direction"], "inbound");
        assert_eq!(v["event"], "created");
        assert_eq!(v["call_sid"], "CA1");
    }
}
