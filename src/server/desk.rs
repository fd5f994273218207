//! What the call API does, without HTTP: check a requested call as a campaign checks a lead
//! (valid E.164, not refused, not on the do-not-call list, inside the calling window), place
//! it through the call service, and follow it to its end in a task of the shutdown tree, its
//! events written to the [`Journal`].

use crate::call::dialer::{CallRequest, DialError, Dialer, RING_TIMEOUT_SECS};
use crate::call::journal::{CallRecord, Journal, Refusal};
use crate::call::registry::Registry;
use crate::call::service::CallService;
use crate::call::tools::{NoTools, ToolHandler, ToolReply, ToolSpec};
use crate::call::wire::NewCallBody;
use crate::campaign::dnc::{DncList, Refresh};
use crate::campaign::template;
use crate::campaign::tools::{CampaignTools, OPT_OUT, RECORD_OUTCOME, opt_out_reply};
use crate::campaign::window::CallingWindow;
use crate::events::{CallEvent, Disposition, Outcome};
use crate::phone::{AllowList, E164};
use crate::shutdown::Shutdown;
use chrono::Utc;
use chrono_tz::Tz;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest call the API places: Twilio's own limit on `TimeLimit` (four hours).
const MAX_TIME_LIMIT: u64 = 4 * 3600;
const DEFAULT_RING_TIMEOUT: u64 = 30;
const DEFAULT_TIME_LIMIT: u64 = 600;

/// Why a call was not placed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlaceError {
    /// The request names a call that must not or cannot be made (HTTP 422).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// Twilio would not call the number: the outcome a local call would have had (422).
    #[error("{}", .0.reason)]
    NotPlaced(Box<Outcome>),
    /// The number already has a live call (409).
    #[error("{0}")]
    Conflict(String),
    /// The live-call limit is reached (429).
    #[error("{0}")]
    Full(String),
    /// The server is stopping, or cannot check the request now (503).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Twilio refused the account or could not be reached (502).
    #[error("{0}")]
    Twilio(DialError),
}

fn refused(code: &'static str, message: impl Into<String>) -> PlaceError {
    PlaceError::Refused {
        code,
        message: message.into(),
    }
}

/// How the desk is set up.
pub(crate) struct DeskConfig {
    /// Most live calls of the server, both ways (`MAX_CALLS`).
    pub max_calls: usize,
    /// Every live call of the server, placed or brought in.
    pub registry: Arc<Registry>,
    pub dnc: DncList,
    /// Calling hours, and the zone for calls whose request names none.
    pub window: Option<(CallingWindow, Option<Tz>)>,
    pub allow: AllowList,
    pub region: Option<String>,
    /// Where `serve` shows every call's events, beside the inbound ones.
    pub view: Option<mpsc::UnboundedSender<CallEvent>>,
    /// Where recorded calls' WAVs go (`RECORDINGS_DIR`).
    pub recordings_dir: std::path::PathBuf,
}

/// Places and follows the API's calls.
pub(crate) struct Desk {
    service: Arc<CallService>,
    journal: Arc<Journal>,
    max_calls: usize,
    registry: Arc<Registry>,
    dnc: Arc<Mutex<DncList>>,
    window: Option<(CallingWindow, Option<Tz>)>,
    allow: AllowList,
    region: Option<String>,
    view: Option<mpsc::UnboundedSender<CallEvent>>,
    recordings_dir: std::path::PathBuf,
    tasks: Shutdown,
    /// Every API call's token descends from it: cancelled with the shutdown tree, it hangs
    /// them all up.
    calls: CancellationToken,
    /// Set once the server stops taking new calls (live ones go on).
    closing: AtomicBool,
}

impl Desk {
    pub(crate) fn new(service: Arc<CallService>, config: DeskConfig, tasks: &Shutdown) -> Self {
        Self {
            service,
            journal: Arc::new(Journal::new()),
            max_calls: config.max_calls,
            registry: config.registry,
            dnc: Arc::new(Mutex::new(config.dnc)),
            window: config.window,
            allow: config.allow,
            region: config.region,
            view: config.view,
            recordings_dir: config.recordings_dir,
            calls: tasks.child(),
            tasks: tasks.clone(),
            closing: AtomicBool::new(false),
        }
    }

    pub(crate) fn journal(&self) -> &Journal {
        &self.journal
    }

    pub(crate) fn service(&self) -> &CallService {
        &self.service
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst) || self.calls.is_cancelled()
    }

    /// Refuse new calls from now on (live ones go on).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Hang up every live call (new ones are refused once [`Desk::close`] is called).
    pub(crate) fn hang_up_all(&self) {
        self.calls.cancel();
    }

    /// Check the request, place the call, and return it once Twilio has created it.
    pub(crate) async fn place(&self, body: NewCallBody) -> Result<Arc<CallRecord>, PlaceError> {
        if self.is_closing() {
            return Err(PlaceError::Unavailable {
                code: "shutting_down",
                message: "the server is shutting down and places no new calls".into(),
            });
        }
        let request = self.request(&body)?;
        let record = self
            .journal
            .start(
                &request.to,
                self.max_calls,
                self.registry.len(),
                self.calls.child_token(),
            )
            .map_err(|r| match r {
                Refusal::AlreadyLive(_) => PlaceError::Conflict(r.to_string()),
                Refusal::Full(_) => PlaceError::Full(r.to_string()),
            })?;
        let (created_tx, created_rx) = oneshot::channel();
        self.tasks.spawn(follow(
            self.service.clone(),
            self.journal.clone(),
            record.clone(),
            request,
            created_tx,
            self.view.clone(),
        ));
        match created_rx.await {
            Ok(Ok(())) => Ok(record),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PlaceError::Unavailable {
                code: "shutting_down",
                message: "the server stopped before the call was placed".into(),
            }),
        }
    }

    /// The call request, after every check a campaign makes before it dials.
    fn request(&self, body: &NewCallBody) -> Result<CallRequest, PlaceError> {
        let to = E164::parse_with_region(&body.to, self.region.as_deref())
            .map_err(|e| refused("invalid_number", format!("cannot call {}: {e}", body.to)))?;
        self.allow.check(&to).map_err(|r| {
            refused(
                "refused_number",
                format!("cannot call {to}: {r}; the server's ALLOW_PREFIXES can allow it"),
            )
        })?;
        self.check_dnc(&to)?;
        self.check_window(&to, body.timezone.as_deref())?;

        let vars = variables(body)?;
        let mut agent = body.agent.clone().unwrap_or_default();
        if let Some(p) = &body.system_prompt {
            agent.system_prompt = p.clone();
        }
        if let Some(g) = &body.greeting {
            agent.greeting = g.clone();
        }
        if let Some(v) = &body.voice {
            agent.voice = v.clone();
        }
        if let Some(td) = &body.turn_detection {
            agent.turn_detection = td.clone();
        }
        if let Some(record) = body.record {
            agent.record = record;
        }
        // A recorded call keeping the default greeting gets the one that says so; any other
        // greeting must say it itself (checked by `validate`).
        agent.prepare_recording();
        if let Some(vars) = &vars {
            agent.greeting = template::fill_spoken(&agent.greeting, &to, vars);
            agent.system_prompt = template::fill_prompt(&agent.system_prompt, &to, vars);
        }
        agent
            .validate()
            .map_err(|e| refused("invalid_agent", e.to_string()))?;

        let ring = body.ring_timeout.unwrap_or(DEFAULT_RING_TIMEOUT);
        if !RING_TIMEOUT_SECS.contains(&ring) {
            return Err(refused(
                "invalid_ring_timeout",
                format!("ring_timeout must be from 15 to 600 seconds, got {ring}"),
            ));
        }
        let limit = body.time_limit.unwrap_or(DEFAULT_TIME_LIMIT);
        if !(1..=MAX_TIME_LIMIT).contains(&limit) {
            return Err(refused(
                "invalid_time_limit",
                format!("time_limit must be from 1 to {MAX_TIME_LIMIT} seconds, got {limit}"),
            ));
        }
        let known = |d: &String| body.dispositions.iter().flatten().any(|k| k == d);
        for (keys, disposition) in &body.keypad {
            let keys_ok = !keys.is_empty()
                && keys.len() <= 32
                && keys
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
            if !keys_ok || !known(disposition) {
                return Err(refused(
                    "invalid_keypad",
                    format!(
                        "keypad entry '{}' must be keys (0-9, * and #) for one of the dispositions",
                        crate::phone::printable(keys)
                    ),
                ));
            }
        }
        if let Some(d) = body.transfer_on.iter().find(|d| !known(d)) {
            return Err(refused(
                "invalid_transfer_on",
                format!(
                    "transfer_on names '{}', which is not one of the dispositions",
                    crate::phone::printable(d)
                ),
            ));
        }
        let tools: Arc<dyn ToolHandler> = match (&body.dispositions, body.opt_out) {
            (None, false) if body.keypad.is_empty() => Arc::new(NoTools),
            (dispositions, opt_out) => Arc::new(ApiTools {
                inner: CampaignTools::new(
                    to.clone(),
                    dispositions.clone().unwrap_or_default().into(),
                    self.dnc.clone(),
                )
                .with_keys(
                    body.keypad.clone().into_iter().collect(),
                    body.transfer_on.clone(),
                ),
                record_outcome: dispositions.as_ref().is_some_and(|d| !d.is_empty()),
                opt_out,
                keeps_opt_outs: self.keeps_opt_outs(),
            }),
        };
        Ok(CallRequest {
            to,
            record: agent.record,
            agent,
            tools,
            ring_timeout: Duration::from_secs(ring),
            time_limit: Duration::from_secs(limit),
            machine_detection: body.machine_detection.unwrap_or(true),
            recordings_dir: Some(self.recordings_dir.clone()),
            late_recording: None,
        })
    }

    fn keeps_opt_outs(&self) -> bool {
        !self
            .dnc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .files()
            .is_empty()
    }

    /// Fails closed: a list that cannot be read refuses every call until it can.
    fn check_dnc(&self, to: &E164) -> Result<(), PlaceError> {
        let mut dnc = self.dnc.lock().unwrap_or_else(|e| e.into_inner());
        if let Refresh::Unavailable { problem, .. } = dnc.refresh() {
            return Err(PlaceError::Unavailable {
                code: "dnc_unavailable",
                message: problem.to_string(),
            });
        }
        if dnc.contains(to) {
            return Err(refused(
                "do_not_call",
                format!("{to} is on the do-not-call list"),
            ));
        }
        Ok(())
    }

    fn check_window(&self, to: &E164, zone: Option<&str>) -> Result<(), PlaceError> {
        let Some((window, default_zone)) = &self.window else {
            return Ok(());
        };
        let zone = match zone {
            Some(z) => z.parse::<Tz>().map_err(|_| {
                refused(
                    "invalid_timezone",
                    format!("'{z}' is not an IANA time zone such as America/Chicago"),
                )
            })?,
            None => default_zone.ok_or_else(|| {
                refused(
                    "no_timezone",
                    "the server has calling hours but no CALLING_TIMEZONE: name the callee's timezone",
                )
            })?,
        };
        let now = Utc::now();
        if window.is_open(zone, now) {
            return Ok(());
        }
        let next = window
            .next_open(zone, now)
            .map(|at| format!("; it opens at {}", at.with_timezone(&zone).to_rfc3339()))
            .unwrap_or_default();
        Err(refused(
            "outside_window",
            format!(
                "{to} may be called {} ({zone}) only{next}",
                window.describe()
            ),
        ))
    }
}

/// The request's variables as a lead's columns; `None` when it gave none, so text without
/// variables is used as it was written.
fn variables(body: &NewCallBody) -> Result<Option<Vec<(String, String)>>, PlaceError> {
    let Some(map) = &body.variables else {
        return Ok(None);
    };
    let mut vars = Vec::with_capacity(map.len());
    for (name, value) in map {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(refused(
                    "invalid_variables",
                    format!("variable '{name}' must be a string, a number or a boolean"),
                ));
            }
        };
        if text.chars().count() > 1000 {
            return Err(refused(
                "invalid_variables",
                format!("variable '{name}' is longer than 1,000 characters"),
            ));
        }
        vars.push((name.clone(), text));
    }
    Ok(Some(vars))
}

/// A campaign's tools as a request asked for them: `record_outcome` only with dispositions,
/// `opt_out` only when asked.
struct ApiTools {
    inner: CampaignTools,
    record_outcome: bool,
    opt_out: bool,
    /// Whether the server has a `DNC_FILE` to append opt-outs to; without one an opt-out is
    /// only reported in the call's events (and so to the caller).
    keeps_opt_outs: bool,
}

impl ApiTools {
    fn offers(&self, name: &str) -> bool {
        (name == RECORD_OUTCOME && self.record_outcome) || (name == OPT_OUT && self.opt_out)
    }
}

impl ToolHandler for ApiTools {
    fn specs(&self) -> Vec<ToolSpec> {
        self.inner
            .specs()
            .into_iter()
            .filter(|s| self.offers(&s.name))
            .collect()
    }

    fn keypad(&self, keys: &str) -> Option<Disposition> {
        self.inner.keypad(keys)
    }

    fn call(&self, name: &str, arguments: &Value) -> Option<ToolReply> {
        if name == OPT_OUT && self.opt_out && !self.keeps_opt_outs {
            return Some(opt_out_reply());
        }
        if self.offers(name) {
            self.inner.call(name, arguments)
        } else {
            None
        }
    }
}

/// Place the call and write its events to its record until it ends; `created` hears once
/// Twilio has created it, or why it was not.
async fn follow(
    service: Arc<CallService>,
    journal: Arc<Journal>,
    record: Arc<CallRecord>,
    request: CallRequest,
    created: oneshot::Sender<Result<(), PlaceError>>,
    view: Option<mpsc::UnboundedSender<CallEvent>>,
) {
    let to = request.to.to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut created = Some(created);
    let cancel = record.cancel_token();
    let dial = service.dial(request, tx, cancel);
    let forward = async {
        while let Some(event) = rx.recv().await {
            let is_created = if let CallEvent::Created { call_sid, .. } = &event {
                journal.created(&record, call_sid);
                true
            } else {
                false
            };
            if let Some(view) = &view {
                let _ = view.send(event.clone());
            }
            record.push(event);
            if is_created && let Some(tx) = created.take() {
                let _ = tx.send(Ok(()));
            }
        }
    };
    let (result, ()) = tokio::join!(dial, forward);
    match (result, created.take()) {
        (Ok(outcome), Some(tx)) => {
            let _ = tx.send(Err(PlaceError::NotPlaced(Box::new(outcome))));
        }
        (Err(e), Some(tx)) => {
            let _ = tx.send(Err(PlaceError::Twilio(e)));
        }
        (Ok(_), None) => {}
        (Err(e), None) => {
            // The service only fails before a call exists; should that change, the record
            // still ends, so that its readers do not wait for ever.
            let outcome =
                Outcome::failed(&to, record.sid(), e.code.map(|c| c.to_string()), e.message);
            record.push(CallEvent::Ended {
                outcome: Box::new(outcome),
            });
        }
    }
    journal.finished(&record);
}
