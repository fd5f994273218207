//! Twilio: the Calls REST API client, TwiML, Media Streams messages and request signatures.

pub mod client;
pub mod error;
pub mod media;
pub mod signature;
pub mod twiml;

pub use client::{CallResource, NewCall, TwilioClient};
pub use error::TwilioError;
