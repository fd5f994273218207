//! `dialer serve`: only the webhook server, until Ctrl-C.

use super::Context;
use crate::cli::ServeArgs;
use crate::error::{AppError, Exit};
use crate::shutdown::Interrupts;
use crate::startup::Startup;

pub(super) async fn run(args: &ServeArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    let mut interrupts = Interrupts::listen();
    let app = Startup::load(ctx.sources.clone(), &args.server)?
        .start(ctx.shutdown)
        .await?;
    ctx.printer.message(&format!(
        "serving Twilio webhooks on {} (public URL {}); Ctrl-C to stop",
        app.server_addr,
        app.urls.base()
    ));
    interrupts.next().await;
    app.stop().await;
    Ok(Exit::Success)
}
