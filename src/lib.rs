//! dialer: outbound AI phone calls.
//!
//! # Layout
//! - [`phone`]: phone numbers in E.164.
//! - [`events`]: what happens on a call, as data for every view.
//! - [`twilio`]: Calls REST client, TwiML, Media Streams messages, request signatures.
//! - [`agent`]: the Voice Agent API client and the agent's configuration.
//! - [`call`]: one call's state machine, the audio bridge, the service that places calls.
//! - [`campaign`]: many calls from a CSV of leads, paced, retried, persisted.
//! - [`sim`]: local simulators of Twilio and the Voice Agent API.

pub mod agent;
pub mod call;
pub mod campaign;
pub mod cli;
pub mod commands;
pub mod error;
pub mod events;
pub mod phone;
pub mod report;
pub mod secret;
pub mod server;
pub mod settings;
#[cfg(feature = "simulate")]
pub mod sim;
pub mod telemetry;
pub mod twilio;
pub mod ws;
