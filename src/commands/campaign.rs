//! `dialer campaign leads.csv`: load and check the campaign, start the server (and the
//! simulators), run the leads with a live view, write the results folder, and exit with a code
//! that says whether the campaign reached its end. Re-running the same command resumes it.
//! With `--server` the calls are placed through a `dialer serve`; everything else stays here.

use super::Context;
use crate::call::dialer::Dialer;
use crate::campaign::clock::Clock;
use crate::campaign::runner::Runner;
use crate::campaign::{self, CampaignEvent, Paths, export, store::Store};
use crate::cli::CampaignArgs;
use crate::error::{AppError, Exit};
use crate::remote::RemoteDialer;
use crate::report;
use crate::shutdown::Interrupts;
use crate::startup::Startup;
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(super) async fn run(args: &CampaignArgs, ctx: &Context<'_>) -> Result<Exit, AppError> {
    let mut interrupts = Interrupts::listen();
    let printer = ctx.printer;
    let paths = Paths::beside(
        &args.csv,
        args.campaign.clone(),
        args.db.clone(),
        args.out.clone(),
        args.server.simulate,
    );
    if args.export {
        if !paths.db.exists() {
            return Err(AppError::Input(format!(
                "no campaign database {}: run the campaign first (or name the database with --db)",
                paths.db.display()
            )));
        }
        let store = Store::open(&paths.db).map_err(campaign::LoadError::from)?;
        let written = export::export(&store, &paths.out)?;
        printer.out(&format!(
            "wrote {} and {} transcript(s) in {}",
            written.results.display(),
            written.transcripts,
            paths.out.join("transcripts").display()
        ));
        return Ok(Exit::Success);
    }

    // Every file is read and checked before anything starts or dials.
    let mut sources = ctx.sources.clone();
    if let Some(url) = &args.remote.server {
        sources.flags.push(("dialer_server", url.clone()));
    }
    let startup = Startup::load(sources, &args.server)?;
    let loaded = campaign::load(&paths, startup.default_region(), Utc::now())?;
    let (leads, finished) = loaded.store.counts().map_err(campaign::LoadError::from)?;
    if leads > 0 && leads == finished && printer.style() != report::Style::Json {
        printer.message(&format!(
            "every lead of this campaign is already finished; to run it again from the start, delete {}",
            paths.db.display()
        ));
    }
    let clock = Arc::new(match (startup.sim_speed(), loaded.config.sim_clock_start) {
        (Some(speed), Some(start)) => Clock::simulated(start, speed),
        (Some(speed), None) => Clock::simulated(Utc::now(), speed),
        (None, _) => Clock::system(),
    });
    if let Some((url, key)) = startup.remote()? {
        // Calls go through the server's account (or its simulators); the leads, their state,
        // the do-not-call files and the clock stay here. Recordings are the server's.
        let dialer = Arc::new(RemoteDialer::new(&url, key)?);
        return run_leads(dialer, loaded, &paths, clock, &mut interrupts, ctx).await;
    }
    if loaded.config.agent.record {
        super::call::repaired(ctx, &paths.out.join("recordings"));
    }
    let app = startup.start(ctx.shutdown).await?;
    // Only when someone may be called: a finished campaign needs no agent.
    if leads > finished
        && let Err(e) = app.service.check_agent(&loaded.config.agent).await
    {
        app.stop().await;
        return Err(AppError::nobody_called(e));
    }
    let result = run_leads(
        app.service.clone(),
        loaded,
        &paths,
        clock,
        &mut interrupts,
        ctx,
    )
    .await;
    app.stop().await;
    result
}

/// Run the leads through `dialer` with the live view, then write the results.
async fn run_leads<D: Dialer>(
    dialer: Arc<D>,
    loaded: campaign::Loaded,
    paths: &Paths,
    clock: Arc<Clock>,
    interrupts: &mut Interrupts,
    ctx: &Context<'_>,
) -> Result<Exit, AppError> {
    let printer = ctx.printer;
    let (tx, rx) = mpsc::unbounded_channel();
    let view = ctx
        .shutdown
        .spawn(report::campaign::show(rx, printer.clone()));
    for row in &loaded.bad_rows {
        let _ = tx.send(CampaignEvent::BadRow {
            line: row.line,
            reason: row.reason.clone(),
        });
    }
    for d in &loaded.duplicates {
        let _ = tx.send(CampaignEvent::Duplicate {
            line: d.line,
            to: d.phone.to_string(),
            first_line: d.first_line,
        });
    }

    let runner = Arc::new(
        Runner::new(
            dialer,
            loaded.store,
            loaded.config,
            loaded.dnc,
            clock,
            tx.clone(),
        )
        // A campaign's recordings belong with its results.
        .with_recordings_dir(paths.out.join("recordings")),
    );
    // The campaign's branch of the shutdown tree hangs up its calls; below it, `stop` only
    // stops the dialing, so the first Ctrl-C lets live calls finish.
    let hang_up = ctx.shutdown.child();
    let stop = hang_up.child_token();
    let work = runner.clone().run(stop.clone(), hang_up.clone());
    tokio::pin!(work);
    let mut interrupted = false;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            // A reader that stopped reading stops the dialing, as a first Ctrl-C does.
            () = printer.closed(), if !stop.is_cancelled() => stop.cancel(),
            () = interrupts.next() => {
                if !interrupted {
                    interrupted = true;
                    stop.cancel();
                } else if !hang_up.is_cancelled() {
                    printer.message("hanging up the live calls…");
                    hang_up.cancel();
                } else {
                    printer.message("still waiting for Twilio to confirm the hang-ups…");
                }
            }
        }
    };

    // Results and the summary come from the database, whatever stopped the run.
    let summary = runner.summary().await;
    let out = paths.out.clone();
    let written = runner
        .with_store(move |store| export::export(store, &out))
        .await;
    if let Ok(summary) = &summary {
        let _ = tx.send(CampaignEvent::Done {
            summary: summary.clone(),
            complete: matches!(result, Ok(true)),
        });
    }
    drop(tx);
    drop(runner);
    let _ = view.await;
    let written = written?;
    if printer.style() != report::Style::Json {
        printer.message(&format!(
            "results in {} ({} transcript(s)); state in {}",
            written.results.display(),
            written.transcripts,
            paths.db.display()
        ));
    }
    summary?;
    match result {
        Ok(_) if interrupted => Ok(Exit::Interrupted),
        Ok(_) => Ok(Exit::Success),
        Err(e) => Err(e.into()),
    }
}
