//! The process's counters, for `/metrics`: calls by direction and outcome, live calls, bridge
//! frames, agent setup and reply latency, webhook signature rejections, API requests by status.
//! Every figure is an atomic, so feeding one never takes a lock; the call path counts frames in
//! plain integers of its own and adds them here once, at the end of the call. Rendering in
//! Prometheus' text format is here too, hand-written: it is a few lines per family.

use crate::events::{Direction, FinalStatus};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

const DIRECTIONS: [Direction; 2] = [Direction::Outbound, Direction::Inbound];
const STATUSES: [FinalStatus; 5] = [
    FinalStatus::Completed,
    FinalStatus::Busy,
    FinalStatus::NoAnswer,
    FinalStatus::Failed,
    FinalStatus::Canceled,
];

/// Why an inbound call was answered with a short message and a hang-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// At the live-call limit.
    Full,
    /// Draining before shutdown.
    Draining,
    /// The Voice Agent refused our key or the agent at start.
    AgentUnavailable,
    /// This process does not answer calls (it runs `dialer call` or `campaign`).
    NotServing,
}

const REFUSALS: [Refusal; 4] = [
    Refusal::Full,
    Refusal::Draining,
    Refusal::AgentUnavailable,
    Refusal::NotServing,
];

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Draining => "draining",
            Self::AgentUnavailable => "agent_unavailable",
            Self::NotServing => "not_serving",
        }
    }

    fn index(self) -> usize {
        REFUSALS.iter().position(|r| *r == self).unwrap_or(0)
    }
}

fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
    }
}

fn status_index(s: FinalStatus) -> usize {
    STATUSES.iter().position(|x| *x == s).unwrap_or(0)
}

/// Upper bounds of the latency histograms' buckets, in seconds (the last, `+Inf`, is implied).
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0];

/// A latency histogram: counts per bucket (not cumulative; summed when rendered), the sum in
/// microseconds, and the count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        // The count is the +Inf bucket, read once, so the two never disagree in one scrape.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// HTTP statuses an API request can be answered with (100–599).
const API_STATUSES: usize = 500;

/// The counters. Shared as `Arc<Metrics>`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    live: [AtomicI64; 2],
    calls: [[AtomicU64; STATUSES.len()]; 2],
    refused: [AtomicU64; REFUSALS.len()],
    frames_to_agent: AtomicU64,
    frames_to_phone: AtomicU64,
    agent_setup: Histogram,
    reply_latency: Histogram,
    signature_rejections: AtomicU64,
    api_requests: Box<[AtomicU64; API_STATUSES]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            live: Default::default(),
            calls: Default::default(),
            refused: Default::default(),
            frames_to_agent: AtomicU64::new(0),
            frames_to_phone: AtomicU64::new(0),
            agent_setup: Histogram::default(),
            reply_latency: Histogram::default(),
            signature_rejections: AtomicU64::new(0),
            api_requests: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// A live call, counted until dropped.
#[derive(Debug)]
pub struct Live<'a> {
    metrics: &'a Metrics,
    direction: Direction,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.metrics.live[direction_index(self.direction)].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count a call as live until the guard is dropped.
    pub fn live(&self, direction: Direction) -> Live<'_> {
        self.live[direction_index(direction)].fetch_add(1, Ordering::Relaxed);
        Live {
            metrics: self,
            direction,
        }
    }

    pub fn live_calls(&self) -> i64 {
        self.live.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }

    /// A call reached its final status.
    pub fn call_ended(&self, direction: Direction, status: FinalStatus) {
        self.calls[direction_index(direction)][status_index(status)]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls_ended(&self, direction: Direction, status: FinalStatus) -> u64 {
        self.calls[direction_index(direction)][status_index(status)].load(Ordering::Relaxed)
    }

    /// An inbound call answered with a message and a hang-up.
    pub fn refused(&self, why: Refusal) {
        self.refused[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// One call's bridge frames, added once the bridge is over.
    pub fn frames(&self, to_agent: u64, to_phone: u64) {
        self.frames_to_agent.fetch_add(to_agent, Ordering::Relaxed);
        self.frames_to_phone.fetch_add(to_phone, Ordering::Relaxed);
    }

    /// From opening the agent's connection to `session.ready`.
    pub fn agent_setup(&self, d: Duration) {
        self.agent_setup.observe(d);
    }

    /// From the end of the callee's turn to the agent's first audio.
    pub fn reply_latency(&self, d: Duration) {
        self.reply_latency.observe(d);
    }

    /// A Twilio request whose `X-Twilio-Signature` did not check out.
    pub fn signature_rejected(&self) {
        self.signature_rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn signature_rejections(&self) -> u64 {
        self.signature_rejections.load(Ordering::Relaxed)
    }

    /// A request to the call API, by the HTTP status it was answered with.
    pub fn api_request(&self, status: u16) {
        let i = usize::from(status.clamp(100, 599)) - 100;
        self.api_requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        family(o, "dialer_live_calls", "gauge", "Calls in progress.");
        for d in DIRECTIONS {
            let n = self.live[direction_index(d)].load(Ordering::Relaxed).max(0);
            let _ = writeln!(o, "dialer_live_calls{{direction=\"{}\"}} {n}", d.as_str());
        }
        family(
            o,
            "dialer_calls_total",
            "counter",
            "Calls that ended, by direction and final status.",
        );
        for d in DIRECTIONS {
            for s in STATUSES {
                let n = self.calls[direction_index(d)][status_index(s)].load(Ordering::Relaxed);
                let _ = writeln!(
                    o,
                    "dialer_calls_total{{direction=\"{}\",status=\"{}\"}} {n}",
                    d.as_str(),
                    s.as_str()
                );
            }
        }
        family(
            o,
            "dialer_inbound_refused_total",
            "counter",
            "Inbound calls answered with a message and a hang-up, by reason.",
        );
        for r in REFUSALS {
            let n = self.refused[r.index()].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "dialer_inbound_refused_total{{reason=\"{}\"}} {n}",
                r.as_str()
            );
        }
        family(
            o,
            "dialer_bridge_frames_total",
            "counter",
            "Audio frames the bridge forwarded (added when each call ends).",
        );
        let _ = writeln!(
            o,
            "dialer_bridge_frames_total{{to=\"agent\"}} {}",
            self.frames_to_agent.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "dialer_bridge_frames_total{{to=\"phone\"}} {}",
            self.frames_to_phone.load(Ordering::Relaxed)
        );
        self.agent_setup.render(
            o,
            "dialer_agent_setup_seconds",
            "From connecting to the Voice Agent to session.ready.",
        );
        self.reply_latency.render(
            o,
            "dialer_agent_reply_latency_seconds",
            "From the end of the callee's turn to the agent's first audio.",
        );
        family(
            o,
            "dialer_webhook_signature_rejections_total",
            "counter",
            "Twilio requests refused for a missing or wrong X-Twilio-Signature.",
        );
        let _ = writeln!(
            o,
            "dialer_webhook_signature_rejections_total {}",
            self.signature_rejections.load(Ordering::Relaxed)
        );
        family(
            o,
            "dialer_api_requests_total",
            "counter",
            "Call API requests, by HTTP status.",
        );
        for (i, n) in self.api_requests.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(o, "dialer_api_requests_total{{status=\"{}\"}} {n}", i + 100);
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one sample line, by its full name and labels.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_reach_the_exposition_with_their_labels() {
        let m = Metrics::new();
        m.call_ended(Direction::Inbound, FinalStatus::Completed);
        m.call_ended(Direction::Inbound, FinalStatus::Completed);
        m.call_ended(Direction::Outbound, FinalStatus::Busy);
        m.frames(10, 7);
        m.frames(1, 2);
        m.signature_rejected();
        m.api_request(201);
        m.api_request(401);
        m.api_request(401);
        m.refused(Refusal::Full);
        let live = m.live(Direction::Inbound);
        let text = m.render();
        let v = |s: &str| sample(&text, s);
        assert_eq!(
            v(r#"dialer_calls_total{direction="inbound",status="completed"}"#),
            Some(2.0)
        );
        assert_eq!(
            v(r#"dialer_calls_total{direction="outbound",status="busy"}"#),
            Some(1.0)
        );
        assert_eq!(
            v(r#"dialer_calls_total{direction="outbound",status="completed"}"#),
            Some(0.0)
        );
        assert_eq!(v(r#"dialer_live_calls{direction="inbound"}"#), Some(1.0));
        assert_eq!(v(r#"dialer_bridge_frames_total{to="agent"}"#), Some(11.0));
        assert_eq!(v(r#"dialer_bridge_frames_total{to="phone"}"#), Some(9.0));
        assert_eq!(v("dialer_webhook_signature_rejections_total"), Some(1.0));
        assert_eq!(v(r#"dialer_api_requests_total{status="401"}"#), Some(2.0));
        assert_eq!(v(r#"dialer_api_requests_total{status="201"}"#), Some(1.0));
        assert_eq!(
            v(r#"dialer_inbound_refused_total{reason="full"}"#),
            Some(1.0)
        );
        drop(live);
        assert_eq!(
            sample(&m.render(), r#"dialer_live_calls{direction="inbound"}"#),
            Some(0.0)
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let m = Metrics::new();
        for ms in [10, 60, 60, 400, 20_000] {
            m.agent_setup(Duration::from_millis(ms));
        }
        let text = m.render();
        let v = |s: &str| sample(&text, s);
        assert_eq!(
            v(r#"dialer_agent_setup_seconds_bucket{le="0.05"}"#),
            Some(1.0)
        );
        assert_eq!(
            v(r#"dialer_agent_setup_seconds_bucket{le="0.1"}"#),
            Some(3.0)
        );
        assert_eq!(
            v(r#"dialer_agent_setup_seconds_bucket{le="0.5"}"#),
            Some(4.0)
        );
        assert_eq!(
            v(r#"dialer_agent_setup_seconds_bucket{le="10"}"#),
            Some(4.0)
        );
        assert_eq!(
            v(r#"dialer_agent_setup_seconds_bucket{le="+Inf"}"#),
            Some(5.0)
        );
        assert_eq!(v("dialer_agent_setup_seconds_count"), Some(5.0));
        assert_eq!(v("dialer_agent_setup_seconds_sum"), Some(20.53));
        assert_eq!(
            v(r#"dialer_agent_reply_latency_seconds_bucket{le="+Inf"}"#),
            Some(0.0)
        );
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample_with_a_number() {
        let m = Metrics::new();
        m.reply_latency(Duration::from_millis(700));
        for line in m.render().lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("dialer_"), "{line}");
        }
    }
}
