//! Words for events: shared by the live and plain views.

use crate::events::{EndedBy, Outcome, Speaker, TranscriptLine};

pub(crate) fn duration(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

pub(crate) fn line(l: &TranscriptLine) -> String {
    let who = match (l.speaker, l.latency_ms) {
        (Speaker::Agent, Some(ms)) => format!("agent ({ms} ms)"),
        (Speaker::Agent, None) => "agent ".to_string(),
        (Speaker::Callee, _) => "callee".to_string(),
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
    if let (Some(p50), Some(p95)) = (o.latency.reply_p50_ms, o.latency.reply_p95_ms) {
        parts.push(format!("replies p50 {p50} ms, p95 {p95} ms"));
    }
    if let Some(r) = &o.recording {
        match &r.url {
            Some(url) if r.status == "completed" => parts.push(format!("recording {url}")),
            _ => parts.push(format!("recording {} {}", r.sid, r.status)),
        }
    }
    if let Some(local) = &o.local_recording {
        match local.frames_dropped {
            0 => parts.push(format!("saved {}", local.path)),
            n => parts.push(format!(
                "saved {} ({n} frames dropped: the disk fell behind)",
                local.path
            )),
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
/// A tool the agent called, with its arguments as sent.
pub(crate) fn tool(name: &str, arguments: &serde_json::Value, ok: bool) -> String {
    format!(
        "tool {name}({arguments}){}",
        if ok { "" } else { " failed" }
    )
}

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
    use crate::events::{
        CallLatency, EndedBy, FinalStatus, LocalRecording, MachineEnd, Outcome, TransferOutcome,
        TwilioRecording,
    };

    #[test]
    fn the_outcome_line_says_how_fast_the_agent_answered_and_where_the_recordings_are() {
        let mut o = Outcome::sample("+12025550100", FinalStatus::Completed, EndedBy::Agent);
        o.latency = CallLatency::new(Some(90), vec![700, 500, 600]);
        o.recording = Some(TwilioRecording {
            sid: "RE1".into(),
            status: "completed".into(),
            url: Some("https://api.twilio.com/x/RE1".into()),
            duration_secs: Some(30),
            channels: Some(2),
        });
        o.local_recording = Some(LocalRecording {
            path: "recordings/CA1.wav".into(),
            frames_dropped: 3,
        });
        let line = super::outcome(&o);
        assert!(line.contains("replies p50 600 ms, p95 700 ms"), "{line}");
        assert!(
            line.contains("recording https://api.twilio.com/x/RE1"),
            "{line}"
        );
        assert!(
            line.contains("saved recordings/CA1.wav (3 frames dropped"),
            "{line}"
        );
        // A recording Twilio has not finished is named by its SID.
        o.recording.as_mut().unwrap().status = "in-progress".into();
        assert!(super::outcome(&o).contains("recording RE1 in-progress"));
    }

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
