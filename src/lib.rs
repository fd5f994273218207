//! dialer: outbound AI phone calls.
//!
//! # Layout
//! Lower modules never import higher ones: `sim` imports nothing of the client's; `agent`
//! does not know calls; `call` does not know the server; `server` hands signals to calls
//! through `call::registry` and incoming calls to `inbound::Reception`; only `startup` wires
//! them together.
//!
//! - [`secret`]: strings that never print (keys, tokens).
//! - [`phone`]: phone numbers in E.164, and numbers never to dial.
//! - [`settings`]: settings from defaults, `dialer.toml`, `.env`, the environment and flags.
//! - [`events`]: what happens on a call, as data for every view.
//! - [`ws`]: WebSocket frames as the bridge sees them, and the RFC 6455 framing of both legs.
//! - [`webhooks`]: the public URLs Twilio is given, shared by the call service and the server.
//! - [`twilio`]: Calls REST client, TwiML, Media Streams messages, request signatures.
//! - [`agent`]: the Voice Agent API: its wire protocol, the client, the agent's configuration.
//! - [`call`]: one call's state machine, the audio bridge, the service that places calls.
//! - [`recording`]: `--record`: Twilio's recording callbacks, and the local stereo WAV.
//! - [`campaign`]: many calls from a CSV of leads, paced, retried, persisted.
//! - [`server`]: the webhook and Media Stream server, and the call API (the only module that
//!   knows warp).
//! - [`remote`]: a [`call::dialer::Dialer`] that places calls through another `dialer serve`'s
//!   call API.
//! - [`inbound`]: calls Twilio brings to `dialer serve`: who may call in, the agent they reach,
//!   the drain before shutdown.
//! - [`metrics`]: the process's counters, lock-free, and their Prometheus text.
//! - [`sim`]: local simulators of Twilio and the Voice Agent API (feature `simulate`).
//! - [`shutdown`]: the one shutdown tree, its task tracker, and the operator's interrupts.
//! - [`startup`]: builds the running application from settings (or the simulators).
//! - [`report`]: views over call and campaign events, and the printer that owns the terminal.
//! - [`telemetry`]: logging through the printer, with secrets kept out.
//! - [`error`]: the errors that stop a command, and their exit codes.
//! - [`cli`]: the command line, each argument validated by its parser.
//! - [`doctor`]: every setting checked against the real services, as results to show.
//! - [`commands`]: `call`, `campaign`, `serve`, `doctor`, `simulators`: parse, build, run,
//!   report.
//! - `props` (tests only): the shared helpers of the parsers' property tests.

pub mod agent;
pub mod call;
pub mod campaign;
pub mod cli;
pub mod commands;
pub mod doctor;
pub mod error;
pub mod events;
pub mod inbound;
mod json;
pub mod metrics;
pub mod phone;
#[cfg(test)]
mod props;
pub mod recording;
pub mod remote;
pub mod report;
pub mod secret;
pub(crate) mod server;
pub mod settings;
mod shards;
pub mod shutdown;
#[cfg(feature = "simulate")]
pub mod sim;
pub mod startup;
pub mod telemetry;
pub mod twilio;
pub(crate) mod webhooks;
pub mod ws;
