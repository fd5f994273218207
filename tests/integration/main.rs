//! The integration tests, one crate (one link step): the real call stack against the
//! simulators on port 0, and the real binary run as a user runs it.

mod api;
mod calls;
mod campaign;
mod cli;
mod cli_api;
mod cli_campaign;
mod cli_recording;
mod doctor;
mod fail_closed;
mod faults;
mod helpers;
mod recording;
mod serve;
mod voice;
