//! Handing a call over to a person: where to (`transfer_to`: E.164 or a SIP URI), the
//! built-in `transfer_call` tool the agent gets when a target is configured, the `<Dial>`
//! TwiML the live call is switched to, and what Twilio's `<Dial action>` callback says about
//! whether the person answered. Decisions only; the bridge and the call service act on them.

use crate::agent::protocol::ToolSpec;
use crate::phone::E164;
use crate::twilio::twiml::escape;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The built-in tool's name.
pub const TRANSFER_CALL: &str = "transfer_call";

/// How long the person's phone rings before the callee hears the fallback.
pub const RING_TIMEOUT: Duration = Duration::from_secs(20);

/// What the callee hears when nobody takes the transfer, before the call ends.
pub(crate) const NOBODY_ANSWERED: &str = "Sorry, nobody is available to take your call right now. We will call you back as soon as we can. Goodbye.";

/// The mark sent after the agent's hand-off line: its echo means the callee heard it.
pub const TRANSFER_MARK: &str = "dialer-transfer";

/// What the agent is told once the transfer is under way: say one hand-off line, no goodbye.
const HAND_OFF: &str = "The call is being transferred to a person now. In one short sentence, tell the person you are connecting them to a colleague and ask them to hold. Do not say goodbye and do not call end_call.";

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Number(E164),
    /// A SIP URI, `sip:user@host` (kept as written).
    Sip(String),
}

impl Target {
    /// An E.164 number (`+15551234567`) or a SIP URI (`sip:desk@pbx.example.com`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text
            .strip_prefix("sip:")
            .or_else(|| text.strip_prefix("SIP:"))
        {
            let valid = rest.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && !host.is_empty() && !host.contains('@')
            }) && !rest
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == '"');
            return if valid {
                Ok(Self::Sip(format!("sip:{rest}")))
            } else {
                Err(format!(
                    "{text:?} is not a SIP URI of the form sip:user@host"
                ))
            };
        }
        E164::parse(text)
            .map(Self::Number)
            .map_err(|e| format!("{text:?} is neither an E.164 number nor a sip: URI ({e})"))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Number(n) => n.as_str(),
            Self::Sip(uri) => uri,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in tool through which the agent hands the call to a person.
pub fn transfer_call_spec() -> ToolSpec {
    ToolSpec {
        name: TRANSFER_CALL.into(),
        description: "Transfer the call to a person on our team. Call this when the person asks to speak to a human, or when the conversation needs one. The call leaves you once the transfer starts.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "Why the call is transferred, in a few words."
                }
            },
            "required": ["reason"]
        }),
    }
}

/// The reason the agent gave, cut to a sensible length.
pub(crate) fn reason(arguments: &Value) -> String {
    arguments
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .chars()
        .take(500)
        .collect()
}

/// The tool result that starts the hand-off: the agent's next reply is its hand-off line.
pub(crate) fn hand_off_result() -> Value {
    json!({ "transferring": true, "next": HAND_OFF })
}

/// The TwiML a live call is switched to: dial the person, with our number as caller ID, and
/// report how it went at `action` (whose answer says the fallback when nobody took it).
pub(crate) fn dial_twiml(target: &Target, caller_id: &str, action: &str) -> String {
    let noun = match target {
        Target::Number(n) => format!("<Number>{}</Number>", escape(n.as_str())),
        Target::Sip(uri) => format!("<Sip>{}</Sip>", escape(uri)),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="{}" timeout="{}" action="{}" method="POST">{noun}</Dial></Response>"#,
        escape(caller_id),
        RING_TIMEOUT.as_secs(),
        escape(action),
    )
}

/// The answer to the `<Dial action>` request: nothing more after a conversation with the
/// person; the apology when nobody took the call.
pub(crate) fn after_dial_twiml(answered: bool) -> String {
    if answered {
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#.to_string()
    } else {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>{}</Say><Hangup/></Response>"#,
            escape(NOBODY_ANSWERED)
        )
    }
}

/// Whether `DialCallStatus` says the person picked up (`completed`, or `answered` when the
/// callee hung up first).
pub(crate) fn person_answered(dial_call_status: &str) -> bool {
    matches!(dial_call_status, "completed" | "answered")
}

/// Where the hand-off stands in the conversation: asked for (the tool result not yet sent),
/// announced (the agent's hand-off line is the next reply), and marked (the line is done; its
/// mark's echo starts the transfer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum HandOff {
    #[default]
    None,
    Requested {
        reason: String,
    },
    Announcing {
        reason: String,
        started: bool,
    },
    Marked {
        reason: String,
    },
}

impl HandOff {
    /// Ask for a transfer; `false` when one is under way already.
    pub(crate) fn request(&mut self, reason: String) -> bool {
        if *self != Self::None {
            return false;
        }
        *self = Self::Requested { reason };
        true
    }

    pub(crate) fn active(&self) -> bool {
        *self != Self::None
    }

    /// The tool result went out: the next reply is the hand-off line. `true` when this moved
    /// the hand-off on.
    pub(crate) fn result_sent(&mut self) -> bool {
        if let Self::Requested { reason } = self {
            *self = Self::Announcing {
                reason: std::mem::take(reason),
                started: false,
            };
            return true;
        }
        false
    }

    /// A reply started: the hand-off line, when one is due.
    pub(crate) fn reply_started(&mut self) -> bool {
        if let Self::Announcing { started, .. } = self
            && !*started
        {
            *started = true;
            return true;
        }
        false
    }

    /// A reply is done; `true` when it was the hand-off line, whose mark is to be sent now.
    pub(crate) fn reply_done(&mut self) -> bool {
        if let Self::Announcing {
            reason,
            started: true,
        } = self
        {
            *self = Self::Marked {
                reason: std::mem::take(reason),
            };
            return true;
        }
        false
    }

    pub(crate) fn reason(&self) -> &str {
        match self {
            Self::None => "",
            Self::Requested { reason }
            | Self::Announcing { reason, .. }
            | Self::Marked { reason } => reason,
        }
    }
}

/// What a call that was transferred came to, for its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TransferOutcome {
    /// Where the call was sent.
    pub to: String,
    /// Why, in the agent's words (or the campaign's rule).
    pub reason: String,
    /// Whether the person answered; `None` until Twilio says (a call that ended first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<bool>,
    /// Twilio's `DialCallStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_status: Option<String>,
    /// Seconds the person was on the line (`DialCallDuration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_duration_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_numbers_or_sip_uris() {
        assert_eq!(
            Target::parse("+12025550150").unwrap().as_str(),
            "+12025550150"
        );
        assert_eq!(
            Target::parse("sip:desk@pbx.example.com").unwrap(),
            Target::Sip("sip:desk@pbx.example.com".into())
        );
        for bad in [
            "",
            "desk",
            "sip:",
            "sip:desk",
            "sip:@host",
            "sip:a b@host",
            "12345",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dial_twiml_dials_the_person_and_reports_back() {
        let doc = dial_twiml(
            &Target::parse("+12025550150").unwrap(),
            "+15005550006",
            "https://x.example/twilio/dial/t&1",
        );
        assert_eq!(
            doc,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+15005550006" timeout="20" action="https://x.example/twilio/dial/t&amp;1" method="POST"><Number>+12025550150</Number></Dial></Response>"#
        );
        let sip = dial_twiml(&Target::Sip("sip:a@b".into()), "+1", "https://x");
        assert!(sip.contains("<Sip>sip:a@b</Sip>"), "{sip}");
    }

    #[test]
    fn the_hand_off_line_is_the_reply_after_the_result() {
        let mut h = HandOff::default();
        assert!(!h.reply_done() && !h.result_sent());
        assert!(h.request("asked for a person".into()));
        assert!(!h.request("again".into()), "one transfer per call");
        // The reply that carried the tool call ends before the result goes out.
        assert!(!h.reply_done());
        assert!(h.result_sent());
        assert!(!h.reply_done(), "not before the hand-off line started");
        assert!(h.reply_started());
        assert!(h.reply_done());
        assert_eq!(
            h,
            HandOff::Marked {
                reason: "asked for a person".into()
            }
        );
        assert_eq!(h.reason(), "asked for a person");
    }

    #[test]
    fn only_a_person_who_picked_up_counts_as_answered() {
        assert!(person_answered("completed") && person_answered("answered"));
        for s in ["no-answer", "busy", "failed", "canceled", ""] {
            assert!(!person_answered(s));
        }
        assert!(after_dial_twiml(false).contains(&escape(NOBODY_ANSWERED)));
        assert!(!after_dial_twiml(true).contains("<Say>"));
    }
}
