//! Twilio: the Calls REST API client, call statuses, TwiML, Media Streams messages and request
//! signatures.

pub mod client;
pub mod error;
pub(crate) mod media;
pub mod signature;
pub mod status;
pub(crate) mod twiml;

pub use client::{
    AccountResource, AccountStatus, AccountType, CallResource, CallerId, IncomingNumber, NewCall,
    ServerDate, TwilioClient,
};
pub use error::TwilioError;
pub use status::{AnsweredBy, CallStatus, FinalStatus};
