//! `dialer serve`: the webhook server and the call API (`/api/calls`), until Ctrl-C.

use super::Context;
use crate::cli::ServeArgs;
use crate::error::{AppError, Exit};
use crate::shutdown::Interrupts;
use crate::startup::Startup;

pub(super) async fn run(args: &ServeArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    let mut interrupts = Interrupts::listen();
    let startup = Startup::load(ctx.sources.clone(), &args.server)?;
    let api = startup.api_settings()?;
    let allow = startup.allow_list(&[])?;
    let app = startup.start(ctx.shutdown).await?;
    // Anyone who can reach the port could place calls on the account.
    if api.key.is_none() && !app.server_addr.ip().is_loopback() {
        let addr = app.server_addr;
        app.stop().await;
        return Err(AppError::Input(format!(
            "DIALER_API_KEY is not set: the call API needs a key when the server listens on {} (beyond this machine); set one, or BIND_ADDRESS=127.0.0.1",
            addr.ip()
        )));
    }
    app.enable_api(&api, allow, ctx.shutdown)?;
    ctx.printer.message(&format!(
        "serving on http://{addr} (call API http://{addr}/api/calls{}; Twilio webhooks at {}); Ctrl-C to stop",
        if api.key.is_some() {
            ", key required"
        } else {
            ", no key: loopback only"
        },
        app.urls.base(),
        addr = app.server_addr,
    ));
    if api.dnc_file.is_none() {
        ctx.printer.message(
            "no DNC_FILE: API calls are checked against no do-not-call list, and an opt-out is only reported to the caller",
        );
    }
    interrupts.next().await;
    // No new calls from here. Live ones are hung up while the server still runs, so that
    // Twilio's confirmations reach them and each ends as the operator's hang-up.
    app.close_api();
    app.hang_up_api_calls();
    if app.api_live_calls() > 0 {
        ctx.printer
            .message("hanging up the live calls… (Ctrl-C again to stop at once)");
        tokio::select! {
            () = async {
                while app.api_live_calls() > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            } => {}
            () = interrupts.next() => {}
        }
    }
    app.stop().await;
    Ok(Exit::Success)
}
