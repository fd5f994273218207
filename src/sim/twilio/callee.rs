//! The person (or machine) who answers: plays a persona's script one 20 ms frame at a time,
//! speaking with `sim::speech` and listening to what was actually played to them, and gives
//! Twilio's answering-machine-detection verdict for that persona.

use std::time::Duration;

use crate::sim::personas::{Persona, Step};
use crate::sim::speech;

/// Milliseconds per frame.
pub(super) const FRAME_MS: u64 = 20;

/// After hearing an utterance to its end, a person waits for this much quiet before answering.
const REPLY_PAUSE_MS: u64 = 600;

/// What the callee perceived during the last frame.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Ears {
    /// Agent utterances that were heard to their end during this frame.
    pub utterances_finished: usize,
    /// Milliseconds of audible agent audio played during this frame.
    pub agent_audible_ms: u64,
    /// Milliseconds since agent audio was last audible (or mid-utterance).
    pub agent_quiet_ms: u64,
}

/// One frame of the callee's side.
#[derive(Debug)]
pub(super) struct Frame {
    pub audio: Vec<u8>,
    /// A line the callee started saying in this frame.
    pub started_line: Option<&'static str>,
    pub hang_up: bool,
    /// A key pressed in this frame.
    pub key: Option<char>,
}

#[derive(Debug)]
enum Activity {
    Say {
        audio: Vec<u8>,
        pos: usize,
    },
    Pause {
        left_ms: u64,
    },
    Listen {
        heard: bool,
    },
    AgentSpeaks {
        need_ms: u64,
        got_ms: u64,
    },
    Press {
        keys: &'static str,
        next: usize,
        wait_ms: u64,
    },
}

/// Time between two keys of one `Press`.
const KEY_GAP_MS: u64 = 200;

#[derive(Debug)]
pub(super) struct Callee {
    script: &'static [Step],
    next: usize,
    current: Option<Activity>,
}

impl Callee {
    pub(super) fn new(persona: &'static Persona) -> Self {
        Self {
            script: persona.script,
            next: 0,
            current: None,
        }
    }

    /// Advance by one frame: 160 bytes of what the callee sends.
    pub(super) fn frame(&mut self, ears: Ears) -> Frame {
        let mut frame = Frame {
            audio: Vec::new(),
            started_line: None,
            hang_up: false,
            key: None,
        };
        if self.current.is_none() {
            self.current = match self.script.get(self.next) {
                None => None,
                Some(Step::Say(line)) => {
                    frame.started_line = Some(line);
                    Some(Activity::Say {
                        audio: speech::encode(line),
                        pos: 0,
                    })
                }
                Some(Step::Pause(d)) => Some(Activity::Pause {
                    left_ms: millis(*d),
                }),
                Some(Step::Listen) => Some(Activity::Listen { heard: false }),
                Some(Step::Press(keys)) => Some(Activity::Press {
                    keys,
                    next: 0,
                    wait_ms: 0,
                }),
                Some(Step::AgentSpeaksFor(d)) => Some(Activity::AgentSpeaks {
                    need_ms: millis(*d),
                    got_ms: 0,
                }),
                Some(Step::HangUp) => {
                    self.next += 1;
                    frame.hang_up = true;
                    None
                }
            };
        }
        let done = match &mut self.current {
            None => false,
            Some(Activity::Say { audio, pos }) => {
                let end = (*pos + speech::FRAME_BYTES).min(audio.len());
                frame.audio.extend_from_slice(&audio[*pos..end]);
                *pos = end;
                *pos == audio.len()
            }
            Some(Activity::Pause { left_ms }) => {
                *left_ms = left_ms.saturating_sub(FRAME_MS);
                *left_ms == 0
            }
            Some(Activity::Listen { heard }) => {
                *heard |= ears.utterances_finished > 0;
                *heard && ears.agent_quiet_ms >= REPLY_PAUSE_MS
            }
            Some(Activity::AgentSpeaks { need_ms, got_ms }) => {
                *got_ms += ears.agent_audible_ms;
                *got_ms >= *need_ms
            }
            Some(Activity::Press {
                keys,
                next,
                wait_ms,
            }) => {
                if *wait_ms > 0 {
                    *wait_ms = wait_ms.saturating_sub(FRAME_MS);
                } else if let Some(key) = keys.chars().nth(*next) {
                    frame.key = Some(key);
                    *next += 1;
                    *wait_ms = KEY_GAP_MS;
                }
                *next >= keys.chars().count() && *wait_ms == 0
            }
        };
        if done {
            self.current = None;
            self.next += 1;
        }
        frame.audio.resize(speech::FRAME_BYTES, speech::SILENCE);
        frame
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How the AMD run was configured on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AmdSettings {
    /// `DetectMessageEnd` waits for the end of a machine's greeting.
    pub detect_message_end: bool,
    pub timeout_ms: u64,
    /// Speech longer than this is a machine's greeting (`MachineDetectionSpeechThreshold`).
    pub speech_threshold_ms: u64,
    pub speech_end_threshold_ms: u64,
    pub silence_timeout_ms: u64,
}

/// Twilio's AMD verdict for a persona and how long detection takes (simulated). The verdict is
/// the persona's; the durations model what AMD waits for: a human is recognised after a short
/// greeting, a machine after its long one starts (or ends, with `DetectMessageEnd`), silence
/// only after the silence timeout.
///
/// With `DetectMessageEnd` a machine gets two verdicts: `machine_start` once its greeting
/// has outlasted the speech threshold, then `machine_end_beep` after the beep. Twilio's
/// documentation promises only the second; the first lets a client stop talking over the
/// greeting, and a client must cope with either (see the module's list of choices).
pub(super) fn amd_verdicts(persona: &Persona, settings: &AmdSettings) -> Vec<(String, Duration)> {
    let last = amd(persona, settings);
    if settings.detect_message_end && persona.answered_by == "machine_start" {
        let early = Duration::from_millis(settings.speech_threshold_ms);
        if last.0 == "machine_end_beep" && early < last.1 {
            return vec![("machine_start".to_string(), early), last];
        }
    }
    vec![last]
}

/// The final verdict and when it comes.
pub(super) fn amd(persona: &Persona, settings: &AmdSettings) -> (String, Duration) {
    let (verdict, ms) = match persona.answered_by {
        "machine_start" if settings.detect_message_end => {
            let greeting: u64 = persona
                .script
                .iter()
                .map(|s| match s {
                    Step::Say(line) => (speech::encode(line).len() / speech::BYTES_PER_MS) as u64,
                    Step::Pause(d) => millis(*d),
                    _ => 0,
                })
                .sum();
            (
                "machine_end_beep",
                greeting + settings.speech_end_threshold_ms,
            )
        }
        "machine_start" => ("machine_start", 3000),
        "unknown" => ("unknown", settings.silence_timeout_ms),
        "human" => ("human", 2000),
        other => (other, 2500),
    };
    let ms = ms.min(settings.timeout_ms);
    // Detection that runs out of time cannot tell.
    let verdict = if ms == settings.timeout_ms && verdict != "human" {
        "unknown"
    } else {
        verdict
    };
    (verdict.to_string(), Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::personas::{self, Network};

    const SAYS: &[Step] = &[
        Step::Say("hi"),
        Step::Pause(Duration::from_millis(40)),
        Step::HangUp,
    ];

    fn persona(script: &'static [Step]) -> &'static Persona {
        Box::leak(Box::new(Persona {
            code: 99,
            name: "test",
            description: "",
            network: Network::Answers {
                after: Duration::ZERO,
            },
            answered_by: "human",
            script,
        }))
    }

    #[test]
    fn says_then_pauses_then_hangs_up() {
        let mut c = Callee::new(persona(SAYS));
        let mut audio = Vec::new();
        let mut frames = 0;
        loop {
            let f = c.frame(Ears::default());
            assert_eq!(f.audio.len(), speech::FRAME_BYTES);
            audio.extend(f.audio);
            frames += 1;
            if f.hang_up {
                break;
            }
            assert!(frames < 100);
        }
        let mut l = speech::Listener::new();
        assert!(
            l.feed(&audio)
                .contains(&speech::Heard::Utterance("hi".into()))
        );
        // "hi" is 130 ms → 7 frames, the pause 2 frames, then the hang-up frame.
        assert_eq!(frames, 10);
    }

    #[test]
    fn listen_waits_for_an_utterance_and_quiet() {
        static SCRIPT: &[Step] = &[Step::Listen, Step::Say("ok")];
        let mut c = Callee::new(persona(SCRIPT));
        let quiet = |ms| Ears {
            agent_quiet_ms: ms,
            ..Ears::default()
        };
        for _ in 0..50 {
            assert!(c.frame(quiet(10_000)).started_line.is_none());
        }
        c.frame(Ears {
            utterances_finished: 1,
            agent_quiet_ms: 0,
            agent_audible_ms: 20,
        });
        assert!(c.frame(quiet(300)).started_line.is_none());
        c.frame(quiet(600));
        assert_eq!(c.frame(quiet(620)).started_line, Some("ok"));
    }

    #[test]
    fn amd_verdicts() {
        let s = AmdSettings {
            detect_message_end: false,
            timeout_ms: 30_000,
            speech_threshold_ms: 2400,
            speech_end_threshold_ms: 1200,
            silence_timeout_ms: 5000,
        };
        let vm = personas::for_number("+12025550105");
        assert_eq!(amd(vm, &s).0, "machine_start");
        let end = amd(
            vm,
            &AmdSettings {
                detect_message_end: true,
                ..s.clone()
            },
        );
        assert_eq!(end.0, "machine_end_beep");
        assert!(end.1 > Duration::from_secs(6));
        let both = super::amd_verdicts(
            vm,
            &AmdSettings {
                detect_message_end: true,
                ..s.clone()
            },
        );
        let names: Vec<_> = both.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["machine_start", "machine_end_beep"]);
        assert_eq!(both[0].1, Duration::from_millis(2400));
        assert_eq!(amd(personas::for_number("+12025550113"), &s).0, "fax");
        assert_eq!(amd(personas::for_number("+12025550100"), &s).0, "human");
        assert_eq!(
            amd(personas::for_number("+12025550107"), &s),
            ("unknown".into(), Duration::from_secs(5))
        );
    }
}
