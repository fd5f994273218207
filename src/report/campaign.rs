//! The view of a campaign (`dialer campaign`): on a terminal, an overall progress bar and one
//! line per live call, with each finished call's result and transcript scrolling above them;
//! otherwise one line per event, or one JSON object per line; and the closing table.

use super::{Printer, Style, format};
use crate::campaign::{CampaignEvent, LeadStatus, Summary};
use crate::events::{CallEvent, Outcome, Speaker};
use crate::twilio::CallStatus;
use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::mpsc;

/// Live-call lines shown at most: the rest are counted on one line, so hundreds of concurrent
/// calls keep the view a fixed height.
const SHOWN_CALLS: usize = 20;
/// Characters of the last thing said kept on a live-call line.
const SAID_CHARS: usize = 60;

/// Show events until the channel closes.
pub(crate) async fn show(mut events: mpsc::UnboundedReceiver<CampaignEvent>, printer: Printer) {
    match printer.style() {
        Style::Json => {
            while let Some(event) = events.recv().await {
                if let Ok(json) = serde_json::to_string(&event) {
                    printer.out(&json);
                }
            }
        }
        Style::Plain => {
            while let Some(event) = events.recv().await {
                if let Some(text) = plain(&event) {
                    printer.out(&text);
                }
            }
        }
        Style::Live => {
            let mut live = Live::new(printer);
            while let Some(event) = events.recv().await {
                live.show(event);
            }
            live.clear();
        }
    }
}

/// The closing table: leads per status, dispositions, attempts, connect rate, talk time, cost.
pub(crate) fn summary_table(summary: &Summary) -> String {
    let mut rows = vec![("leads".to_string(), summary.leads.to_string())];
    rows.extend(
        summary
            .statuses
            .iter()
            .map(|(status, n)| (format!("  {status}"), n.to_string())),
    );
    if !summary.dispositions.is_empty() {
        rows.push(("dispositions".into(), String::new()));
        rows.extend(
            summary
                .dispositions
                .iter()
                .map(|(name, n)| (format!("  {name}"), n.to_string())),
        );
    }
    let rate = match summary.attempts {
        0 => "–".to_string(),
        n => format!("{:.1}%", summary.answered as f64 * 100.0 / n as f64),
    };
    rows.extend([
        ("attempts".into(), summary.attempts.to_string()),
        ("answered".into(), summary.answered.to_string()),
        ("connect rate".into(), rate),
        ("talk time".into(), hms(summary.talk_secs)),
        (
            "estimated cost".into(),
            format!("${:.2}", summary.estimated_cost_usd),
        ),
    ]);
    if let (Some(p50), Some(p95)) = (summary.reply_p50_ms, summary.reply_p95_ms) {
        rows.push(("reply latency p50".into(), format!("{p50} ms")));
        rows.push(("reply latency p95".into(), format!("{p95} ms")));
    }
    if let Some(setup) = summary.agent_setup_p50_ms {
        rows.push(("agent setup p50".into(), format!("{setup} ms")));
    }
    let label = rows.iter().map(|(l, _)| l.chars().count()).max();
    let value = rows.iter().map(|(_, v)| v.chars().count()).max();
    let (label, value) = (label.unwrap_or(0), value.unwrap_or(0));
    rows.iter()
        .map(|(l, v)| format!("{l:<label$}  {v:>value$}").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The end of the output: a blank line, the table, and when leads are left, how to carry on.
fn closing(summary: &Summary, complete: bool) -> String {
    let table = format!("\n{}", summary_table(summary));
    if complete {
        return table;
    }
    let left: u64 = summary
        .statuses
        .iter()
        .filter(|(status, _)| !status.is_final())
        .map(|(_, n)| n)
        .sum();
    let left = match left {
        0 => "The campaign stopped before the end".to_string(),
        n => plural(n, "lead remains", "leads remain"),
    };
    format!("{table}\n{left}: run the same command again to resume.")
}

/// One line (the closing table for `Done`) per meaningful event, for logs and pipes.
fn plain(event: &CampaignEvent) -> Option<String> {
    Some(match event {
        CampaignEvent::Dialing { to, attempt, .. } => format!("{to} dialing, attempt {attempt}"),
        CampaignEvent::Call { call, .. } => return call_line(call),
        CampaignEvent::Finished {
            to,
            attempt,
            status,
            disposition,
            retry_at,
            ..
        } => result(to, *attempt, *status, disposition.as_deref(), *retry_at),
        CampaignEvent::Done { summary, complete } => closing(summary, *complete),
        other => return notice(other),
    })
}

/// Events that are neither a live call's progress nor its end: printed as they come.
fn notice(event: &CampaignEvent) -> Option<String> {
    Some(match event {
        CampaignEvent::Plan {
            campaign,
            leads,
            finished,
        } => match finished {
            0 => format!("campaign {campaign}: {}", plural(*leads, "lead", "leads")),
            f => format!(
                "campaign {campaign}: {}, {f} finished in earlier runs",
                plural(*leads, "lead", "leads")
            ),
        },
        CampaignEvent::BadRow { line, reason } => format!("line {line}: not imported: {reason}"),
        CampaignEvent::Duplicate {
            line,
            to,
            first_line,
        } => format!("{to} line {line}: same number as line {first_line}, dialed once"),
        CampaignEvent::Skipped {
            to, status, reason, ..
        } => format!("{to} not dialed, {status}: {reason}"),
        CampaignEvent::Reconciled {
            to,
            call_sid,
            status,
            ..
        } => match call_sid {
            Some(sid) => format!("{to} {status}, settled from an earlier run's call {sid}"),
            None => format!("{to} {status}, settled from an earlier run"),
        },
        CampaignEvent::Waiting { until, leads } => format!(
            "nothing to dial until {} ({} waiting)",
            when(*until),
            plural(*leads, "lead", "leads")
        ),
        CampaignEvent::Draining { live } => format!(
            "finishing {}; Ctrl-C again hangs them up",
            plural(*live as u64, "live call", "live calls")
        ),
        CampaignEvent::TwilioTrouble {
            reason,
            retry_in_secs,
        } => format!(
            "dialing paused: Twilio is in trouble ({reason}); trying again in {retry_in_secs} s"
        ),
        CampaignEvent::TwilioBack => "Twilio answers again: dialing goes on".to_string(),
        CampaignEvent::DialingPaused { file, reason } => {
            format!("dialing paused: do-not-call list {file} cannot be read ({reason})")
        }
        CampaignEvent::DialingResumed { file } => {
            format!("do-not-call list {file} can be read again: dialing goes on")
        }
        _ => return None,
    })
}

/// A call event as a plain line, prefixed by the number; `None` for partials and the steps
/// the campaign events already say.
fn call_line(call: &CallEvent) -> Option<String> {
    let text = match call {
        CallEvent::Status { status, .. } => call_state(status)?.to_string(),
        CallEvent::Connected { .. } => "talking".into(),
        CallEvent::AnsweredBy { answered_by, .. } => format!("answered by {answered_by}"),
        CallEvent::Line { line, .. } => format::line(line).trim_start().to_string(),
        CallEvent::Tool {
            name,
            arguments,
            ok,
            ..
        } if name != "end_call" => format::tool(name, arguments, *ok),
        CallEvent::Disposition { disposition, .. } => format!("disposition {}", disposition.name),
        CallEvent::Keypad { keys, .. } => format!("keypad {keys}"),
        CallEvent::Transferring { target, .. } => format!("transferring to {target}"),
        CallEvent::Reconnected { reconnect, .. } => format::reconnect(reconnect),
        CallEvent::Ended { outcome } => format::outcome(outcome),
        _ => return None,
    };
    Some(format!("{} {text}", call.to()))
}

/// The live-call state a Twilio progress status means.
fn call_state(status: &CallStatus) -> Option<&'static str> {
    match status {
        CallStatus::Ringing => Some("ringing"),
        CallStatus::InProgress => Some("answered"),
        _ => None,
    }
}

/// What an attempt meant for its lead.
fn result(
    to: &str,
    attempt: u32,
    status: LeadStatus,
    disposition: Option<&str>,
    retry_at: Option<DateTime<Utc>>,
) -> String {
    let mut text = format!("{to} → {status}");
    if let Some(d) = disposition {
        text += &format!(" · {d}");
    }
    if attempt > 1 {
        text += &format!(" · attempt {attempt}");
    }
    if let Some(t) = retry_at {
        text += &format!(" · retry at {}", when(t));
    }
    text
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn hms(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Time left at the pace of this run (leads done per elapsed time); "–" before the first.
fn eta(done: u64, remaining: u64, elapsed: Duration) -> String {
    if done == 0 {
        return "–".into();
    }
    hms((elapsed.as_secs_f64() * remaining as f64 / done as f64).round() as u64)
}

/// At most the last `max` characters of `text` on one line, "…" first when cut: the newest
/// words of what is being said.
fn tail(text: &str, max: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let text = words.join(" ");
    let len = text.chars().count();
    if len <= max {
        return text;
    }
    let cut = len - max.saturating_sub(1);
    let kept: String = text.chars().skip(cut).collect();
    // Start at a word when the cut fell inside one and a later word fits.
    let kept = match text.chars().nth(cut - 1) {
        Some(c) if !c.is_whitespace() => kept.split_once(' ').map_or(kept.as_str(), |(_, w)| w),
        _ => kept.as_str(),
    };
    format!("…{kept}")
}

/// The overall counts: leads done out of the total, live calls, final statuses reached.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    total: u64,
    done: u64,
    live: u64,
    finals: BTreeMap<LeadStatus, u64>,
}

impl Counts {
    /// Count an event; whether anything changed.
    fn apply(&mut self, event: &CampaignEvent) -> bool {
        match event {
            CampaignEvent::Plan {
                leads, finished, ..
            } => {
                self.total = *leads;
                self.done = *finished;
            }
            CampaignEvent::Dialing { .. } => self.live += 1,
            CampaignEvent::Finished { status, .. } => {
                self.live = self.live.saturating_sub(1);
                self.settle(*status);
            }
            CampaignEvent::Skipped { status, .. } | CampaignEvent::Reconciled { status, .. } => {
                self.settle(*status)
            }
            _ => return false,
        }
        true
    }

    fn settle(&mut self, status: LeadStatus) {
        if status.is_final() {
            self.done += 1;
            *self.finals.entry(status).or_default() += 1;
        }
    }

    fn message(&self) -> String {
        let mut parts = vec![format!("{} live", self.live)];
        parts.extend(self.finals.iter().map(|(s, n)| format!("{s} {n}")));
        parts.join(" · ")
    }
}

/// A call in flight, as its line shows it.
struct LiveCall {
    to: String,
    attempt: u32,
    state: &'static str,
    said: String,
    outcome: Option<Box<Outcome>>,
    /// `None` while it is among the calls counted on the "more" line.
    bar: Option<ProgressBar>,
}

impl LiveCall {
    fn message(&self) -> String {
        let mut text = self.state.to_string();
        if self.attempt > 1 {
            text += &format!(" (attempt {})", self.attempt);
        }
        if !self.said.is_empty() {
            text += &format!(" · {}", self.said);
        }
        text
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.message());
        }
    }
}

/// The terminal view.
struct Live {
    printer: Printer,
    multi: MultiProgress,
    overall: ProgressBar,
    call_style: ProgressStyle,
    counts: Counts,
    calls: HashMap<i64, LiveCall>,
    /// Live calls without a line; the lowest lead id gets the next free one.
    hidden: BTreeSet<i64>,
    more: Option<ProgressBar>,
    dialed: bool,
}

impl Live {
    fn new(printer: Printer) -> Self {
        let multi = printer.bars().clone();
        let overall = multi.add(ProgressBar::new_spinner().with_style(style("{spinner} {msg}")));
        overall.set_message("loading leads…");
        overall.enable_steady_tick(Duration::from_millis(100));
        Self {
            printer,
            multi,
            overall,
            call_style: style("  {prefix:16} {wide_msg}"),
            counts: Counts::default(),
            calls: HashMap::new(),
            hidden: BTreeSet::new(),
            more: None,
            dialed: false,
        }
    }

    fn show(&mut self, event: CampaignEvent) {
        if self.counts.apply(&event) {
            self.overall.set_length(self.counts.total);
            self.overall.set_position(self.counts.done);
            self.overall.set_message(self.counts.message());
        }
        // The pace counts from the first dial: leads settled before it (reconciled from an
        // earlier run) took no calling time.
        match &event {
            CampaignEvent::Plan { .. } => self.start_overall(),
            CampaignEvent::Dialing { .. } if !self.dialed => {
                self.dialed = true;
                self.start_overall();
            }
            _ => {}
        }
        match event {
            CampaignEvent::Dialing { lead, to, attempt } => self.dialing(lead, to, attempt),
            CampaignEvent::Call { lead, call } => self.call(lead, call),
            CampaignEvent::Finished {
                lead,
                to,
                attempt,
                status,
                disposition,
                retry_at,
            } => {
                let outcome = self.remove(lead).and_then(|c| c.outcome);
                // The call's outcome line names the disposition itself.
                let shown = disposition.as_deref().filter(|_| outcome.is_none());
                let mut text = result(&to, attempt, status, shown, retry_at);
                if let Some(outcome) = outcome {
                    text += &format!(" — {}", format::outcome(&outcome));
                    for line in &outcome.transcript {
                        text += &format!("\n{}", format::line(line));
                    }
                }
                self.printer.out(&text);
            }
            CampaignEvent::Done { summary, complete } => {
                self.clear();
                self.printer.out(&closing(&summary, complete));
            }
            other => {
                if let Some(text) = notice(&other) {
                    self.printer.out(&text);
                }
            }
        }
    }

    /// The bar proper, its ETA at the pace since now.
    fn start_overall(&self) {
        let from = self.counts.done;
        let left = move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let remaining = state.len().unwrap_or(0).saturating_sub(state.pos());
            let done = state.pos().saturating_sub(from);
            let _ = w.write_str(&eta(done, remaining, state.elapsed()));
        };
        self.overall.set_style(
            style("{spinner} [{bar:24}] {pos}/{len} · ETA {left} · {wide_msg}")
                .with_key("left", left)
                .progress_chars("=> "),
        );
        self.overall.reset_elapsed();
    }

    fn dialing(&mut self, lead: i64, to: String, attempt: u32) {
        self.remove(lead);
        let mut call = LiveCall {
            to,
            attempt,
            state: "dialing",
            said: String::new(),
            outcome: None,
            bar: None,
        };
        if self.calls.len() - self.hidden.len() < SHOWN_CALLS {
            call.bar = Some(self.add_bar(&call));
        } else {
            self.hidden.insert(lead);
            self.update_more();
        }
        self.calls.insert(lead, call);
    }

    fn call(&mut self, lead: i64, event: CallEvent) {
        let Some(call) = self.calls.get_mut(&lead) else {
            return;
        };
        match event {
            CallEvent::Status { status, .. } => match call_state(&status) {
                Some(state) => call.state = state,
                None => return,
            },
            CallEvent::Connected { .. } => call.state = "talking",
            CallEvent::Partial { text, .. } => {
                call.said = format!("callee › {}…", tail(&text, SAID_CHARS))
            }
            CallEvent::Line { line, .. } => {
                let who = match line.speaker {
                    Speaker::Agent => "agent",
                    Speaker::Callee => "callee",
                };
                call.said = format!("{who} › {}", tail(&line.text, SAID_CHARS));
            }
            CallEvent::Ended { outcome } => {
                call.outcome = Some(outcome);
                return;
            }
            _ => return,
        }
        call.refresh();
    }

    /// Take a call off the view, giving its line to the oldest call without one.
    fn remove(&mut self, lead: i64) -> Option<LiveCall> {
        let call = self.calls.remove(&lead)?;
        match &call.bar {
            Some(bar) => {
                self.drop_bar(bar);
                if let Some(next) = self.hidden.pop_first() {
                    let bar = self.calls.get(&next).map(|c| self.add_bar(c));
                    if let Some(c) = self.calls.get_mut(&next) {
                        c.bar = bar;
                    }
                    self.update_more();
                }
            }
            None => {
                self.hidden.remove(&lead);
                self.update_more();
            }
        }
        Some(call)
    }

    fn add_bar(&self, call: &LiveCall) -> ProgressBar {
        let bar = ProgressBar::new_spinner()
            .with_style(self.call_style.clone())
            .with_prefix(call.to.clone())
            .with_message(call.message());
        let bar = match &self.more {
            Some(more) => self.multi.insert_before(more, bar),
            None => self.multi.add(bar),
        };
        // A bar shows nothing until it draws itself once.
        bar.tick();
        bar
    }

    fn drop_bar(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        self.multi.remove(bar);
    }

    fn update_more(&mut self) {
        let text = format!("  … and {} more", self.hidden.len());
        match (&self.more, self.hidden.is_empty()) {
            (Some(more), true) => {
                self.drop_bar(more);
                self.more = None;
            }
            (Some(more), false) => more.set_message(text),
            (None, true) => {}
            (None, false) => {
                let more = ProgressBar::new_spinner().with_style(style("{wide_msg}"));
                let more = self.multi.add(more);
                more.set_message(text);
                self.more = Some(more);
            }
        }
    }

    fn clear(&mut self) {
        for call in self.calls.values() {
            if let Some(bar) = &call.bar {
                self.drop_bar(bar);
            }
        }
        self.calls.clear();
        self.hidden.clear();
        self.update_more();
        self.drop_bar(&self.overall);
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EndedBy, FinalStatus, TranscriptLine};
    use chrono::TimeZone;

    const TO: &str = "+15551230001";

    fn finished(status: LeadStatus) -> CampaignEvent {
        CampaignEvent::Finished {
            lead: 1,
            to: TO.into(),
            attempt: 1,
            status,
            disposition: None,
            retry_at: None,
        }
    }

    fn summary() -> Summary {
        Summary {
            leads: 12,
            statuses: vec![
                (LeadStatus::Pending, 2),
                (LeadStatus::Completed, 7),
                (LeadStatus::NoAnswer, 3),
            ],
            dispositions: vec![("interested".into(), 4), ("not-interested".into(), 3)],
            attempts: 16,
            answered: 10,
            talk_secs: 3723,
            estimated_cost_usd: 1.25,
            reply_p50_ms: Some(612),
            reply_p95_ms: Some(880),
            agent_setup_p50_ms: Some(95),
        }
    }

    #[test]
    fn summary_table_aligns_every_row() {
        let table = summary_table(&summary());
        assert_eq!(
            table,
            "\
leads                   12
  pending                2
  completed              7
  no-answer              3
dispositions
  interested             4
  not-interested         3
attempts                16
answered                10
connect rate         62.5%
talk time          1:02:03
estimated cost       $1.25
reply latency p50   612 ms
reply latency p95   880 ms
agent setup p50      95 ms"
        );
        assert!(!table.contains('\x1b'));
    }

    #[test]
    fn summary_table_with_no_attempts_has_no_rate_and_no_dispositions() {
        let table = summary_table(&Summary {
            leads: 3,
            statuses: vec![(LeadStatus::DoNotCall, 3)],
            ..Summary::default()
        });
        assert_eq!(
            table,
            "\
leads                 3
  do-not-call         3
attempts              0
answered              0
connect rate          –
talk time       0:00:00
estimated cost    $0.00"
        );
    }

    #[test]
    fn summary_table_rounds_rate_and_cost() {
        let table = summary_table(&Summary {
            attempts: 3,
            answered: 1,
            estimated_cost_usd: 1234.567,
            ..Summary::default()
        });
        assert!(table.contains("33.3%"), "{table}");
        assert!(table.contains("$1234.57"), "{table}");
    }

    #[test]
    fn closing_says_how_to_resume_only_when_incomplete() {
        assert_eq!(
            closing(&summary(), true),
            format!("\n{}", summary_table(&summary()))
        );
        let text = closing(&summary(), false);
        assert!(
            text.ends_with("\n2 leads remain: run the same command again to resume."),
            "{text}"
        );
        let none_left = Summary::default();
        assert!(closing(&none_left, false).contains("stopped before the end"));
    }

    #[test]
    fn plain_lines_for_campaign_events() {
        let at = Utc.with_ymd_and_hms(2025, 3, 4, 9, 0, 0).unwrap();
        let cases = [
            (
                CampaignEvent::Plan {
                    campaign: "spring".into(),
                    leads: 10,
                    finished: 0,
                },
                "campaign spring: 10 leads",
            ),
            (
                CampaignEvent::Plan {
                    campaign: "spring".into(),
                    leads: 1,
                    finished: 1,
                },
                "campaign spring: 1 lead, 1 finished in earlier runs",
            ),
            (
                CampaignEvent::BadRow {
                    line: 4,
                    reason: "no phone number".into(),
                },
                "line 4: not imported: no phone number",
            ),
            (
                CampaignEvent::Duplicate {
                    line: 9,
                    to: TO.into(),
                    first_line: 2,
                },
                "+15551230001 line 9: same number as line 2, dialed once",
            ),
            (
                CampaignEvent::Skipped {
                    lead: 1,
                    to: TO.into(),
                    status: LeadStatus::DoNotCall,
                    reason: "listed in dnc.txt".into(),
                },
                "+15551230001 not dialed, do-not-call: listed in dnc.txt",
            ),
            (
                CampaignEvent::Reconciled {
                    lead: 1,
                    to: TO.into(),
                    call_sid: Some("CA1".into()),
                    status: LeadStatus::Completed,
                },
                "+15551230001 completed, settled from an earlier run's call CA1",
            ),
            (
                CampaignEvent::Reconciled {
                    lead: 1,
                    to: TO.into(),
                    call_sid: None,
                    status: LeadStatus::Retry,
                },
                "+15551230001 retry, settled from an earlier run",
            ),
            (
                CampaignEvent::Dialing {
                    lead: 1,
                    to: TO.into(),
                    attempt: 2,
                },
                "+15551230001 dialing, attempt 2",
            ),
            (
                CampaignEvent::Finished {
                    lead: 1,
                    to: TO.into(),
                    attempt: 2,
                    status: LeadStatus::Retry,
                    disposition: Some("call-back".into()),
                    retry_at: Some(at),
                },
                "+15551230001 → retry · call-back · attempt 2 · retry at 2025-03-04 09:00 UTC",
            ),
            (finished(LeadStatus::OptedOut), "+15551230001 → opted-out"),
            (
                CampaignEvent::Waiting {
                    until: at,
                    leads: 1,
                },
                "nothing to dial until 2025-03-04 09:00 UTC (1 lead waiting)",
            ),
            (
                CampaignEvent::Draining { live: 3 },
                "finishing 3 live calls; Ctrl-C again hangs them up",
            ),
        ];
        for (event, want) in cases {
            assert_eq!(plain(&event).as_deref(), Some(want), "{event:?}");
        }
    }

    #[test]
    fn plain_done_is_the_closing_table() {
        let event = CampaignEvent::Done {
            summary: summary(),
            complete: false,
        };
        assert_eq!(plain(&event), Some(closing(&summary(), false)));
    }

    fn call(call: CallEvent) -> CampaignEvent {
        CampaignEvent::Call { lead: 1, call }
    }

    #[test]
    fn plain_call_lines_are_prefixed_by_the_number_and_skip_partials() {
        let to = || TO.to_string();
        let outcome = Outcome {
            call_sid: Some("CA9".into()),
            reason: "busy".into(),
            ..Outcome::sample(TO, FinalStatus::Busy, EndedBy::Network)
        };
        let cases = [
            (CallEvent::Dialing { to: to() }, None),
            (
                CallEvent::Created {
                    to: to(),
                    call_sid: "CA9".into(),
                    direction: crate::events::Direction::Outbound,
                },
                None,
            ),
            (
                CallEvent::Status {
                    to: to(),
                    status: CallStatus::Initiated,
                },
                None,
            ),
            (
                CallEvent::Status {
                    to: to(),
                    status: CallStatus::InProgress,
                },
                Some("+15551230001 answered".to_string()),
            ),
            (
                CallEvent::Connected {
                    to: to(),
                    session_id: "s".into(),
                    setup_ms: 900,
                },
                Some("+15551230001 talking".into()),
            ),
            (
                CallEvent::Partial {
                    to: to(),
                    text: "hel".into(),
                },
                None,
            ),
            (
                CallEvent::Line {
                    to: to(),
                    line: TranscriptLine {
                        speaker: Speaker::Callee,
                        text: "hello".into(),
                        at_ms: 10,
                        interrupted: false,
                        latency_ms: None,
                    },
                },
                Some("+15551230001 callee › hello".into()),
            ),
            (
                CallEvent::Tool {
                    to: to(),
                    name: "end_call".into(),
                    arguments: serde_json::json!({}),
                    ok: true,
                },
                None,
            ),
            (
                CallEvent::Tool {
                    to: to(),
                    name: "transfer".into(),
                    arguments: serde_json::json!({"to": "sales"}),
                    ok: false,
                },
                Some(r#"+15551230001 tool transfer({"to":"sales"}) failed"#.into()),
            ),
            (
                CallEvent::Ended {
                    outcome: Box::new(outcome.clone()),
                },
                Some(format!("+15551230001 {}", format::outcome(&outcome))),
            ),
        ];
        for (event, want) in cases {
            assert_eq!(plain(&call(event.clone())), want, "{event:?}");
        }
    }

    #[test]
    fn counts_start_from_the_plan_and_count_final_statuses_only() {
        let mut counts = Counts::default();
        let plan = CampaignEvent::Plan {
            campaign: "c".into(),
            leads: 10,
            finished: 4,
        };
        assert!(counts.apply(&plan));
        let dialing = CampaignEvent::Dialing {
            lead: 1,
            to: TO.into(),
            attempt: 1,
        };
        counts.apply(&dialing);
        counts.apply(&dialing);
        assert_eq!((counts.done, counts.live), (4, 2));
        counts.apply(&finished(LeadStatus::Completed));
        counts.apply(&finished(LeadStatus::Retry));
        counts.apply(&CampaignEvent::Skipped {
            lead: 2,
            to: TO.into(),
            status: LeadStatus::DoNotCall,
            reason: "dnc".into(),
        });
        counts.apply(&CampaignEvent::Reconciled {
            lead: 3,
            to: TO.into(),
            call_sid: None,
            status: LeadStatus::Retry,
        });
        counts.apply(&CampaignEvent::Reconciled {
            lead: 4,
            to: TO.into(),
            call_sid: None,
            status: LeadStatus::Completed,
        });
        assert_eq!((counts.total, counts.done, counts.live), (10, 7, 0));
        assert_eq!(counts.message(), "0 live · completed 2 · do-not-call 1");
    }

    #[test]
    fn counts_ignore_other_events_and_never_go_below_zero_live() {
        let mut counts = Counts::default();
        assert!(!counts.apply(&CampaignEvent::Draining { live: 2 }));
        counts.apply(&finished(LeadStatus::Busy));
        assert_eq!(counts.live, 0);
        assert_eq!(counts.message(), "0 live · busy 1");
    }

    #[test]
    fn eta_follows_this_runs_pace() {
        assert_eq!(eta(0, 10, Duration::from_secs(60)), "–");
        assert_eq!(eta(2, 6, Duration::from_secs(60)), "0:03:00");
        assert_eq!(eta(5, 0, Duration::from_secs(60)), "0:00:00");
    }

    #[test]
    fn hms_counts_hours_past_a_day() {
        assert_eq!(hms(0), "0:00:00");
        assert_eq!(hms(59), "0:00:59");
        assert_eq!(hms(3723), "1:02:03");
        assert_eq!(hms(90_000), "25:00:00");
    }

    #[test]
    fn tail_keeps_the_newest_words_on_one_line() {
        assert_eq!(tail("short", 10), "short");
        assert_eq!(tail("exactly10!", 10), "exactly10!");
        assert_eq!(tail("one two three four", 8), "…four");
        assert_eq!(tail("one two three four", 11), "…three four");
        assert_eq!(tail("onetwothree", 6), "…three");
        assert_eq!(tail("line one\nline  two", 20), "line one line two");
        assert_eq!(tail("ça va très bien, merci", 6), "…merci");
        assert_eq!(tail("", 5), "");
        assert_eq!(tail("abc", 0), "…");
    }

    #[test]
    fn live_call_message_shows_state_attempt_and_what_was_said() {
        let mut call = LiveCall {
            to: TO.into(),
            attempt: 1,
            state: "ringing",
            said: String::new(),
            outcome: None,
            bar: None,
        };
        assert_eq!(call.message(), "ringing");
        call.attempt = 3;
        call.said = "agent › hi".into();
        assert_eq!(call.message(), "ringing (attempt 3) · agent › hi");
    }
}
