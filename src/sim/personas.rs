//! Simulated callees, chosen by phone number, so that every call outcome can be produced on
//! demand. The fictional NANP range `NXX-555-01YY` is reserved for fiction, so no real person is
//! ever behind one of these numbers; the last two digits pick the persona.
//!
//! This table is the contract between the fake Twilio (which plays the callee) and the README's
//! persona table. The fake Voice Agent knows nothing of it: it only hears what the callee says.

use std::time::Duration;

/// How the network treats a call to this number before anyone speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The callee picks up after ringing this long.
    Answers { after: Duration },
    /// The line is busy (`CallStatus=busy`, no ringing).
    Busy,
    /// It rings until the call's `Timeout` runs out (`no-answer`).
    NoAnswer,
    /// The carrier fails the call (`failed`).
    Fails,
    /// Busy on the first attempt of a simulator run, then answers as `then` on later attempts.
    BusyThenAnswers,
}

/// One step of what the callee does once the call is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Wait until an agent utterance has been heard completely (played to its end), then pause
    /// briefly as a person would before answering.
    Listen,
    /// Wait until the agent has been speaking for this long (for barge-in and hang-ups).
    AgentSpeaksFor(Duration),
    /// Speak this line (at the speaking rate of `sim::speech`).
    Say(&'static str),
    /// Stay silent for this long.
    Pause(Duration),
    /// Press these keys on the phone's keypad, one `dtmf` event each, 200 ms apart.
    Press(&'static str),
    /// Hang up the phone.
    HangUp,
}

/// A simulated callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    /// Last two digits of the number (`01YY` → YY).
    pub code: u8,
    pub name: &'static str,
    pub description: &'static str,
    pub network: Network,
    /// Twilio's Answering Machine Detection verdict, when AMD was requested.
    pub answered_by: &'static str,
    /// What the callee does after answering. After the last step it stays on the line, silent,
    /// until the call is ended by someone else.
    pub script: &'static [Step],
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Every persona, in code order.
pub static PERSONAS: &[Persona] = &[
    Persona {
        code: 0,
        name: "agrees",
        description: "answers, listens, confirms the appointment, says goodbye",
        network: Network::Answers { after: secs(2) },
        answered_by: "human",
        script: &[
            Step::Listen,
            Step::Say("Yes, that works for me. I'll be there."),
            Step::Listen,
            Step::Say("Thanks, bye."),
        ],
    },
    Persona {
        code: 1,
        name: "busy",
        description: "the line is busy",
        network: Network::Busy,
        answered_by: "unknown",
        script: &[],
    },
    Persona {
        code: 2,
        name: "no-answer",
        description: "rings until the ring timeout",
        network: Network::NoAnswer,
        answered_by: "unknown",
        script: &[],
    },
    Persona {
        code: 3,
        name: "failed",
        description: "the carrier cannot complete the call",
        network: Network::Fails,
        answered_by: "unknown",
        script: &[],
    },
    Persona {
        code: 4,
        name: "hangs-up",
        description: "answers and hangs up in the middle of the greeting",
        network: Network::Answers { after: secs(1) },
        answered_by: "human",
        script: &[Step::AgentSpeaksFor(ms(1500)), Step::HangUp],
    },
    Persona {
        code: 5,
        name: "voicemail",
        description: "an answering machine: greeting, beep, then records (AMD: machine_start during the greeting, machine_end_beep after the beep)",
        network: Network::Answers { after: secs(3) },
        answered_by: "machine_start",
        script: &[
            Step::Say(
                "Hi, you've reached Sam. I can't take your call right now. Please leave a message after the tone.",
            ),
            Step::Pause(ms(300)),
            Step::Say("beep"),
        ],
    },
    Persona {
        code: 6,
        name: "opts-out",
        description: "asks to be removed from the calling list",
        network: Network::Answers { after: secs(2) },
        answered_by: "human",
        script: &[
            Step::Listen,
            Step::Say("Please take me off your list and do not call me again."),
        ],
    },
    Persona {
        code: 7,
        name: "silent",
        description: "answers and never says a word",
        network: Network::Answers { after: secs(1) },
        answered_by: "unknown",
        script: &[],
    },
    Persona {
        code: 8,
        name: "talks-over",
        description: "talks over the agent's greeting (barge-in), then confirms",
        network: Network::Answers { after: secs(1) },
        answered_by: "human",
        script: &[
            Step::AgentSpeaksFor(ms(1200)),
            Step::Say("Sorry, who is this? What is this about?"),
            Step::Listen,
            Step::Say("Oh right. Yes, I'll be there."),
            Step::Listen,
        ],
    },
    Persona {
        code: 9,
        name: "reschedules",
        description: "cannot make it and asks to reschedule",
        network: Network::Answers { after: secs(2) },
        answered_by: "human",
        script: &[
            Step::Listen,
            Step::Say("I can't make it then. Can we reschedule to another day?"),
            Step::Listen,
        ],
    },
    Persona {
        code: 10,
        name: "wrong-number",
        description: "says the agent has the wrong number",
        network: Network::Answers { after: secs(2) },
        answered_by: "human",
        script: &[
            Step::Listen,
            Step::Say("I think you have the wrong number. There's nobody here by that name."),
            Step::Listen,
        ],
    },
    Persona {
        code: 11,
        name: "busy-then-agrees",
        description: "busy on the first attempt, answers and confirms when called again",
        network: Network::BusyThenAnswers,
        answered_by: "human",
        script: &[
            Step::Listen,
            Step::Say("Yes, that works for me. I'll be there."),
            Step::Listen,
        ],
    },
    Persona {
        code: 12,
        name: "not-interested",
        description: "politely declines",
        network: Network::Answers { after: secs(2) },
        answered_by: "human",
        script: &[
            Step::Listen,
            Step::Say("No thanks, I'm not interested."),
            Step::Listen,
        ],
    },
    Persona {
        code: 13,
        name: "fax",
        description: "a fax machine answers (AMD: fax)",
        network: Network::Answers { after: secs(2) },
        answered_by: "fax",
        script: &[],
    },
    Persona {
        code: 14,
        name: "asks-for-person",
        description: "asks to speak to a real person, then waits to be connected",
        network: Network::Answers { after: secs(2) },
        answered_by: "human",
        script: &[
            Step::Listen,
            Step::Say("Can I speak to a real person, please?"),
            Step::Listen,
        ],
    },
    Persona {
        code: 15,
        name: "keypad",
        description: "answers by pressing 1 on the keypad instead of speaking",
        network: Network::Answers { after: secs(2) },
        answered_by: "human",
        script: &[Step::Listen, Step::Press("1"), Step::Listen],
    },
];

/// The persona for a number in E.164 form: `+1NXX55501YY` picks code `YY` (when defined);
/// every other number gets the agreeable persona.
pub fn for_number(e164: &str) -> &'static Persona {
    code_of(e164)
        .and_then(|code| PERSONAS.iter().find(|p| p.code == code))
        .unwrap_or(&PERSONAS[0])
}

/// A number that reaches the persona called `name`: `+1202555 01YY`.
pub fn number_of(name: &str) -> Option<String> {
    PERSONAS
        .iter()
        .find(|p| p.name == name)
        .map(|p| format!("+120255501{:02}", p.code))
}

fn code_of(e164: &str) -> Option<u8> {
    let digits = e164.strip_prefix("+1")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if &digits[3..8] != "55501" {
        return None;
    }
    digits[8..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_pick_personas() {
        assert_eq!(for_number("+12025550101").name, "busy");
        assert_eq!(for_number("+13125550108").name, "talks-over");
        assert_eq!(for_number("+12025550100").name, "agrees");
        assert_eq!(for_number("+12025550199").name, "agrees");
        assert_eq!(for_number("+442071838750").name, "agrees");
        assert_eq!(for_number("+12025550105").name, "voicemail");
        assert_eq!(for_number("+12025550113").name, "fax");
        assert_eq!(for_number("+12025550114").name, "asks-for-person");
        assert_eq!(for_number("+12025550115").name, "keypad");
    }

    #[test]
    fn every_persona_has_a_number_that_picks_it() {
        for p in PERSONAS {
            let number = number_of(p.name).unwrap();
            assert_eq!(for_number(&number).name, p.name);
        }
        assert_eq!(number_of("nobody"), None);
    }

    #[test]
    fn codes_are_unique_and_ordered() {
        for (i, p) in PERSONAS.iter().enumerate() {
            assert_eq!(usize::from(p.code), i);
        }
    }
}
