//! `dialer serve`: only the webhook server, until Ctrl-C.

use super::{Interrupts, Stack};
use crate::cli::ServerArgs;
use crate::error::{AppError, Exit};
use crate::settings::Sources;

pub async fn run(server: &ServerArgs, sources: Sources) -> Result<Exit, AppError> {
    let stack = Stack::start(server, sources).await?;
    eprintln!(
        "dialer: serving Twilio webhooks on {} (public URL {}); Ctrl-C to stop",
        stack.server_addr, stack.public_url
    );
    Interrupts::listen().next().await;
    stack.stop().await;
    Ok(Exit::Success)
}
