//! Words for events: shared by the live and plain views.

use crate::events::{EndedBy, Outcome, Speaker, TranscriptLine};

pub(crate) fn duration(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

pub(crate) fn line(l: &TranscriptLine) -> String {
    let who = match l.speaker {
        Speaker::Agent => "agent ",
        Speaker::Callee => "callee",
    };
    let cut = if l.interrupted { " [interrupted]" } else { "" };
    format!("  {who} › {}{cut}", l.text)
}

pub(crate) fn ended_by(by: EndedBy) -> &'static str {
    match by {
        EndedBy::Callee => "the callee",
        EndedBy::Agent => "the agent",
        EndedBy::TimeLimit => "the time limit",
        EndedBy::Operator => "you",
        EndedBy::Error => "an error",
        EndedBy::Network => "the network",
    }
}

/// The one-line summary of a call.
pub(crate) fn outcome(o: &Outcome) -> String {
    let mut parts = vec![o.status.as_str().to_string()];
    if let Some(d) = o.duration_secs {
        parts.push(duration(d));
    }
    parts.push(format!("ended by {} ({})", ended_by(o.ended_by), o.reason));
    if let Some(a) = &o.answered_by {
        parts.push(format!("answered by {a}"));
    }
    if let Some(m) = o.machine {
        parts.push(m.as_str().to_string());
    }
    if let Some(t) = &o.transfer {
        let how = match (t.answered, t.dial_status.as_deref()) {
            (Some(true), _) => "the person answered".to_string(),
            (_, Some(status)) => format!("the person did not answer: {status}"),
            (Some(false), None) => "the person did not answer".to_string(),
            (None, None) => "not known whether the person answered".to_string(),
        };
        parts.push(format!("transferred to {} ({how})", t.to));
    }
    if let Some(d) = &o.disposition {
        parts.push(format!("disposition {}", d.name));
    }
    if o.opted_out {
        parts.push("opted out".into());
    }
    if let Some(e) = &o.error {
        match &e.code {
            Some(code) if !e.message.contains(code.as_str()) => {
                parts.push(format!("error {code}: {}", e.message))
            }
            _ => parts.push(format!("error: {}", e.message)),
        }
    }
    if let Some(sid) = &o.call_sid {
        parts.push(sid.clone());
    }
    format!(
        "{} {}",
        if o.is_success() { "✔" } else { "✘" },
        parts.join(" · ")
    )
}

/// `agent back after 1.2 s (new session): the Voice Agent connection was lost mid-call`.
pub(crate) fn reconnect(r: &crate::events::AgentReconnect) -> String {
    format!(
        "agent back after {:.1} s ({}): {}",
        r.gap_ms as f64 / 1000.0,
        if r.resumed {
            "same session"
        } else {
            "new session"
        },
        r.cause
    )
}

#[cfg(test)]
mod tests {
    use crate::events::{EndedBy, FinalStatus, MachineEnd, Outcome, TransferOutcome};

    #[test]
    fn the_outcome_line_says_voicemail_left_and_transfers() {
        let mut o = Outcome::sample("+12025550105", FinalStatus::Completed, EndedBy::Agent);
        o.machine = Some(MachineEnd::VoicemailLeft);
        assert!(super::outcome(&o).contains(" · voicemail-left"));
        o.machine = None;
        o.transfer = Some(TransferOutcome {
            to: "+12025550150".into(),
            reason: "asked for a person".into(),
            answered: Some(false),
            dial_status: Some("no-answer".into()),
            dial_duration_secs: None,
        });
        assert!(
            super::outcome(&o)
                .contains("transferred to +12025550150 (the person did not answer: no-answer)"),
            "{}",
            super::outcome(&o)
        );
    }

    #[test]
    fn a_reconnect_says_how_long_and_how() {
        let r = crate::events::AgentReconnect {
            resumed: false,
            gap_ms: 1234,
            cause: "the Voice Agent connection was lost mid-call".into(),
        };
        assert_eq!(
            super::reconnect(&r),
            "agent back after 1.2 s (new session): the Voice Agent connection was lost mid-call"
        );
    }
}
