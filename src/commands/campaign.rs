//! `dialer campaign leads.csv`: load and check the campaign, start the server (and the
//! simulators), run the leads with a live view, write the results folder, and exit with a code
//! that says whether the campaign reached its end. Re-running the same command resumes it.

use super::{Interrupts, Stack};
use crate::agent::client::PreflightError;
use crate::campaign::clock::Clock;
use crate::campaign::runner::{CampaignError, Runner};
use crate::campaign::{self, CampaignEvent, Paths, export, store::Store};
use crate::cli::{CampaignArgs, ServerArgs};
use crate::error::{AppError, Exit};
use crate::report::{self, Style};
use crate::settings::{RawSettings, Sources};
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

impl From<campaign::LoadError> for AppError {
    fn from(e: campaign::LoadError) -> Self {
        match e {
            campaign::LoadError::Store(campaign::store::StoreError::Sql(e)) => {
                AppError::Other(format!("campaign database: {e}"))
            }
            other => AppError::Input(other.to_string()),
        }
    }
}

impl From<export::ExportError> for AppError {
    fn from(e: export::ExportError) -> Self {
        AppError::Other(e.to_string())
    }
}

impl From<CampaignError> for AppError {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Dial(e) => AppError::Dial(e),
            CampaignError::Agent(message) => AppError::Input(message),
            other => AppError::Other(other.to_string()),
        }
    }
}

pub async fn run(
    server: &ServerArgs,
    args: &CampaignArgs,
    sources: Sources,
    json: bool,
) -> Result<Exit, AppError> {
    let paths = Paths::beside(
        &args.csv,
        args.campaign.clone(),
        args.db.clone(),
        args.out.clone(),
        server.simulate,
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
        println!(
            "wrote {} and {} transcript(s) in {}",
            written.results.display(),
            written.transcripts,
            paths.out.join("transcripts").display()
        );
        return Ok(Exit::Success);
    }

    // Every file is read and checked before anything starts or dials.
    let region = RawSettings::load(&sources)?.default_region;
    let loaded = campaign::load(&paths, region.as_deref(), Utc::now())?;
    let (leads, finished) = loaded.store.counts().map_err(campaign::LoadError::from)?;
    if leads > 0 && leads == finished && !json {
        eprintln!(
            "dialer: every lead of this campaign is already finished; to run it again from the start, delete {}",
            paths.db.display()
        );
    }
    let stack = Stack::start(server, sources).await?;
    // Only when someone may be called: a finished campaign needs no agent.
    let to_call = leads > finished;
    if to_call && let Err(e) = stack.service.check_agent(&loaded.config.agent).await {
        stack.stop().await;
        return Err(match &e {
            PreflightError::Rejected(error) if error.code.is_configuration() => {
                AppError::Input(format!("{e}; nobody was called"))
            }
            _ => AppError::Other(format!("{e}; nobody was called")),
        });
    }
    let clock = Arc::new(match (&stack.simulation, loaded.config.sim_clock_start) {
        (Some(_), Some(start)) => Clock::simulated(start, server.sim_speed),
        (Some(_), None) => Clock::simulated(Utc::now(), server.sim_speed),
        (None, _) => Clock::system(),
    });

    let (tx, rx) = mpsc::unbounded_channel();
    let view = tokio::spawn(report::campaign::show(rx, Style::choose(json)));
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
    for w in &loaded.dnc_warnings {
        tracing::warn!(file = %w.path.display(), line = w.line, reason = %w.reason, "do-not-call list line ignored");
    }

    let runner = Arc::new(Runner::new(
        stack.service.clone(),
        loaded.store,
        loaded.config,
        loaded.dnc,
        clock,
        tx.clone(),
    ));
    let stop = CancellationToken::new();
    let hang_up = CancellationToken::new();
    let mut interrupts = Interrupts::listen();
    let work = runner.clone().run(stop.clone(), hang_up.clone());
    tokio::pin!(work);
    let mut interrupted = false;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            () = interrupts.next() => {
                if !interrupted {
                    interrupted = true;
                    stop.cancel();
                } else if !hang_up.is_cancelled() {
                    eprintln!("dialer: hanging up the live calls…");
                    hang_up.cancel();
                } else {
                    eprintln!("dialer: still waiting for Twilio to confirm the hang-ups…");
                }
            }
        }
    };

    // Results and the summary come from the database, whatever stopped the run.
    let summary = runner.summary();
    let written = runner.with_store(|store| export::export(store, &paths.out));
    if let Ok(summary) = &summary {
        let _ = tx.send(CampaignEvent::Done {
            summary: summary.clone(),
            complete: matches!(result, Ok(true)),
        });
    }
    drop(tx);
    drop(runner);
    let _ = view.await;
    stack.stop().await;
    let written = written?;
    if !json {
        eprintln!(
            "dialer: results in {} ({} transcript(s)); state in {}",
            written.results.display(),
            written.transcripts,
            paths.db.display()
        );
    }
    summary?;
    match result {
        Ok(_) if interrupted => Ok(Exit::Interrupted),
        Ok(_) => Ok(Exit::Success),
        Err(e) => Err(e.into()),
    }
}
