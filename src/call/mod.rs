//! One phone call: its state machine, the audio bridge, and the service that places calls.

pub mod bridge;
pub mod dialer;
pub(crate) mod ending;
pub mod journal;
pub mod keypad;
pub mod latency;
pub mod registry;
pub mod service;
pub(crate) mod state;
pub mod tools;
pub mod transfer;
pub mod voicemail;
pub mod wire;
