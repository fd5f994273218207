//! `dialer doctor`: each setting checked against the service it is for — Twilio's account,
//! caller ID, number set-up and clock, the Voice Agent key, and whether `PUBLIC_URL` reaches
//! this very process — as plain results for a view to show. A check that needs another's
//! answer is skipped when that one failed, never failed in its own name. No result carries a
//! secret: credentials are only ever sent, and URLs are shown without user, password or query.

use crate::agent::client::{ConnectError, PreflightError};
use crate::agent::config::AgentConfig;
use crate::phone::{E164, escape_controls};
use crate::startup::App;
use crate::twilio::{
    AccountResource, AccountStatus, AccountType, CallerId, IncomingNumber, ServerDate,
    TwilioClient, TwilioError,
};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Clock differences above this are worth a warning: calling hours are kept by this clock.
const CLOCK_WARN: Duration = Duration::from_secs(5);
/// Above this a campaign would call people minutes outside their calling hours.
const CLOCK_FAIL: Duration = Duration::from_secs(5 * 60);
/// How long `PUBLIC_URL` has to answer; a tunnel adds a round trip or two.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Which check a result is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    TwilioAccount,
    FromNumber,
    Agent,
    PublicUrl,
    VoiceUrl,
    Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Works, but something the user may want to change (a trial account, inbound not set up).
    Warn,
    Fail,
    /// Not run: a check it needs failed.
    Skipped,
}

/// One check's result: which setting, what was found, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: CheckId,
    /// The setting (or settings) the result is about, as the user writes them.
    pub setting: String,
    pub status: Status,
    /// What was found, or for a skipped check why it did not run.
    pub detail: String,
    /// What to do, when something is to be done.
    pub fix: Option<String>,
}

impl Check {
    fn new(check: CheckId, setting: impl Into<String>, status: Status, detail: String) -> Self {
        Self {
            check,
            setting: setting.into(),
            status,
            detail,
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    fn skipped(check: CheckId, setting: impl Into<String>, because: &str) -> Self {
        Self::new(check, setting, Status::Skipped, because.to_string())
    }
}

/// Every check, in the order they are shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// Whether everything needed for calls works (warnings allowed).
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    pub fn get(&self, check: CheckId) -> Option<&Check> {
        self.checks.iter().find(|c| c.check == check)
    }
}

/// Run every check against the services `app` is set up for, with its server listening.
pub async fn run(app: &App, agent: &AgentConfig) -> Report {
    let settings = &app.settings;
    let twilio = app.service.twilio();
    // The route `dialer serve` answers incoming calls on.
    let expected_voice_url = app.urls.voice();
    let twilio_checks = async {
        let (account, date) = twilio.fetch_account().await;
        let account_check = account_check(&account, twilio, &settings.twilio_account_sid);
        let (number_check, voice_check) = match &account {
            Err(_) => (
                Check::skipped(
                    CheckId::FromNumber,
                    "TWILIO_FROM_NUMBER",
                    "needs the Twilio account check to pass",
                ),
                Check::skipped(
                    CheckId::VoiceUrl,
                    VOICE_URL_SETTING,
                    "needs the Twilio account check to pass",
                ),
            ),
            Ok(_) => {
                let from = &settings.twilio_from_number;
                let found = look_up(twilio, from).await;
                let voice = voice_url_check(&found, from, &expected_voice_url);
                (from_number_check(&found, from), voice)
            }
        };
        (account_check, number_check, voice_check, clock_check(date))
    };
    let agent_check = async { agent_check(app.service.check_agent(agent).await, settings) };
    let url_check = public_url_check(app);
    let ((account, number, voice, clock), agent, url) =
        tokio::join!(twilio_checks, agent_check, url_check);
    Report {
        checks: vec![account, number, agent, url, voice, clock],
    }
}

const VOICE_URL_SETTING: &str = "TWILIO_FROM_NUMBER's Voice URL";

fn account_check(
    account: &Result<AccountResource, TwilioError>,
    twilio: &TwilioClient,
    sid: &str,
) -> Check {
    let id = CheckId::TwilioAccount;
    let both = "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN";
    let account = match account {
        Ok(account) => account,
        Err(e) => return twilio_failure(id, e, twilio, sid),
    };
    let name = escape_controls(&account.friendly_name);
    let kind = match account.kind {
        AccountType::Full => "full",
        AccountType::Trial => "trial",
        AccountType::Other => "of an unknown type",
    };
    let what = format!("account “{name}” ({sid})");
    match (account.status, account.kind) {
        (AccountStatus::Active, AccountType::Trial) => Check::new(
            id,
            both,
            Status::Warn,
            format!("{what} is active, and a trial account"),
        )
        .fix(
            "a trial account calls only numbers verified in the Twilio Console, and callees hear a trial notice first; upgrade it to call anyone",
        ),
        (AccountStatus::Active, _) => {
            Check::new(id, both, Status::Pass, format!("{what} is active ({kind})"))
        }
        (AccountStatus::Suspended, _) => Check::new(
            id,
            both,
            Status::Fail,
            format!("{what} is suspended: it cannot place calls"),
        )
        .fix("see why in the Twilio Console (often billing) and reactivate it, or use another account's credentials"),
        (AccountStatus::Closed, _) => Check::new(
            id,
            both,
            Status::Fail,
            format!("{what} is closed"),
        )
        .fix("a closed account cannot be reopened: use another account's Account SID and Auth Token"),
        (AccountStatus::Other, _) => Check::new(
            id,
            both,
            Status::Warn,
            format!("{what} has a status dialer does not know ({kind})"),
        )
        .fix("check the account in the Twilio Console"),
    }
}

/// A Twilio request that failed, said in terms of the setting to change.
fn twilio_failure(id: CheckId, e: &TwilioError, twilio: &TwilioClient, sid: &str) -> Check {
    match e {
        TwilioError::Api { status, code, .. } if *status == 401 || *code == Some(20003) => {
            Check::new(
                id,
                "TWILIO_AUTH_TOKEN",
                Status::Fail,
                "Twilio refused the credentials (20003)".into(),
            )
            .fix("copy the Account SID and Auth Token from console.twilio.com (Account info) into TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; a suspended account is refused the same way")
        }
        TwilioError::Api {
            code: Some(20404), ..
        }
        | TwilioError::Api { status: 404, .. } => Check::new(
            id,
            "TWILIO_ACCOUNT_SID",
            Status::Fail,
            format!("Twilio knows no account {sid} (20404)"),
        )
        .fix("copy the Account SID (AC…) from console.twilio.com"),
        TwilioError::Transport { source, .. } => Check::new(
            id,
            "TWILIO_API_BASE_URL",
            Status::Fail,
            format!(
                "cannot reach Twilio at {}: {}",
                twilio.base_url(),
                root_cause(source)
            ),
        )
        .fix("check this machine's network (and HTTPS_PROXY), or TWILIO_API_BASE_URL"),
        TwilioError::Decode { status, .. } => Check::new(
            id,
            "TWILIO_API_BASE_URL",
            Status::Fail,
            format!(
                "{} answered HTTP {status} with something that is not Twilio's API",
                twilio.base_url()
            ),
        )
        .fix("set TWILIO_API_BASE_URL to https://api.twilio.com or a Twilio edge"),
        TwilioError::Api { status, .. } if *status == 429 || *status >= 500 => Check::new(
            id,
            "Twilio",
            Status::Fail,
            format!("Twilio could not answer: {e}"),
        )
        .fix("try again in a minute; status.twilio.com says whether Twilio is having trouble"),
        TwilioError::Api { .. } => Check::new(
            id,
            "TWILIO_ACCOUNT_SID",
            Status::Fail,
            format!("Twilio refused the request: {e}"),
        ),
    }
}

/// What `TWILIO_FROM_NUMBER` is to the account.
#[derive(Debug, Clone, PartialEq)]
pub enum FromNumber {
    /// One of the account's Twilio numbers.
    Twilio(IncomingNumber),
    /// A number verified as a caller ID, not a Twilio number.
    Verified(CallerId),
    /// Neither: Twilio refuses calls from it (21210).
    Unknown,
}

async fn look_up(twilio: &TwilioClient, from: &E164) -> Result<FromNumber, TwilioError> {
    if let Some(number) = twilio.incoming_number(from.as_str()).await? {
        return Ok(FromNumber::Twilio(number));
    }
    Ok(match twilio.caller_id(from.as_str()).await? {
        Some(id) => FromNumber::Verified(id),
        None => FromNumber::Unknown,
    })
}

fn from_number_check(found: &Result<FromNumber, TwilioError>, from: &E164) -> Check {
    let id = CheckId::FromNumber;
    let setting = "TWILIO_FROM_NUMBER";
    match found {
        Ok(FromNumber::Twilio(n)) if n.capabilities.voice => Check::new(
            id,
            setting,
            Status::Pass,
            format!("{from} is a voice-capable Twilio number of this account"),
        ),
        Ok(FromNumber::Twilio(_)) => Check::new(
            id,
            setting,
            Status::Fail,
            format!("{from} is a Twilio number of this account, but it cannot make voice calls"),
        )
        .fix("set TWILIO_FROM_NUMBER to a voice-capable number (Twilio Console → Phone Numbers)"),
        Ok(FromNumber::Verified(_)) => Check::new(
            id,
            setting,
            Status::Pass,
            format!(
                "{from} is a verified caller ID of this account (not a Twilio number, so calls to it do not come back to Twilio)"
            ),
        ),
        Ok(FromNumber::Unknown) => Check::new(
            id,
            setting,
            Status::Fail,
            format!(
                "{from} is neither a Twilio number of this account nor a verified caller ID: Twilio would refuse every call from it (21210)"
            ),
        )
        .fix("buy or verify it in the Twilio Console (Phone Numbers), or set TWILIO_FROM_NUMBER to one that is"),
        Err(e) => Check::new(
            id,
            setting,
            Status::Fail,
            format!("cannot look {from} up at Twilio: {e}"),
        )
        .fix("run dialer doctor again; if it persists, see status.twilio.com"),
    }
}

/// Only inbound calls use the number's Voice URL, so a Voice URL that points elsewhere is a
/// warning: outbound calls and campaigns work either way, and the line says so.
fn voice_url_check(found: &Result<FromNumber, TwilioError>, from: &E164, expected: &str) -> Check {
    let id = CheckId::VoiceUrl;
    let number = match found {
        Ok(FromNumber::Twilio(n)) if n.capabilities.voice => n,
        Ok(FromNumber::Twilio(_)) => {
            return Check::skipped(
                id,
                VOICE_URL_SETTING,
                "needs TWILIO_FROM_NUMBER to be voice-capable",
            );
        }
        Ok(FromNumber::Verified(_)) => {
            return Check::skipped(
                id,
                VOICE_URL_SETTING,
                "a verified caller ID has no Voice URL: calls to it do not reach Twilio",
            );
        }
        Ok(FromNumber::Unknown) | Err(_) => {
            return Check::skipped(
                id,
                VOICE_URL_SETTING,
                "needs TWILIO_FROM_NUMBER to be a number of the account",
            );
        }
    };
    let set_it = format!(
        "only inbound calls need it: to take them, set it to {expected} with HTTP POST (Twilio Console → Phone Numbers → {from} → Voice Configuration)"
    );
    let warn = |detail: String| Check::new(id, VOICE_URL_SETTING, Status::Warn, detail);
    if let Some(app) = number
        .voice_application_sid
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        return warn(format!(
            "calls to {from} go to the TwiML App {}, not to this server",
            escape_controls(app)
        ))
        .fix(set_it);
    }
    let Some(url) = number.voice_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return warn(format!(
            "{from} has no Voice URL: calls to it are not answered by dialer"
        ))
        .fix(set_it);
    };
    if !same_url(url, expected) {
        return warn(format!(
            "calls to {from} go to {}, not to this server",
            shown_url(url)
        ))
        .fix(set_it);
    }
    let method = number.voice_method.as_deref().unwrap_or("POST");
    if !method.eq_ignore_ascii_case("POST") {
        return warn(format!(
            "calls to {from} come to this server, but with HTTP {}; dialer takes POST",
            escape_controls(method)
        ))
        .fix("set the Voice URL's method to HTTP POST in the Twilio Console");
    }
    Check::new(
        id,
        VOICE_URL_SETTING,
        Status::Pass,
        format!("calls to {from} come to this server (POST {expected})"),
    )
}

/// Whether two URLs name the same resource: scheme and host in any case, a trailing slash
/// ignored.
fn same_url(a: &str, b: &str) -> bool {
    let parse = |s: &str| url::Url::parse(s.trim().trim_end_matches('/')).ok();
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A URL fit to print: no user, password or query (any of them may hold a credential).
fn shown_url(raw: &str) -> String {
    match url::Url::parse(raw.trim()) {
        Ok(mut u) => {
            let hidden = !u.username().is_empty() || u.password().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let query = u.query().is_some();
            u.set_query(None);
            let mut shown = u.to_string();
            if query {
                shown.push_str("?…");
            }
            if hidden {
                shown.push_str(" (credentials hidden)");
            }
            escape_controls(&shown)
        }
        Err(_) => "a URL that cannot be read".into(),
    }
}

fn agent_check(result: Result<(), PreflightError>, settings: &crate::settings::Settings) -> Check {
    let id = CheckId::Agent;
    let url = shown_url(&settings.assemblyai_agent_url);
    let key_fix = "copy an API key with Voice Agent access from the AssemblyAI dashboard into ASSEMBLYAI_API_KEY";
    let fail = |setting: &str, detail: String| Check::new(id, setting, Status::Fail, detail);
    match result {
        Ok(()) => Check::new(
            id,
            "ASSEMBLYAI_API_KEY",
            Status::Pass,
            format!("a trial Voice Agent session with this agent opened at {url} and closed"),
        ),
        Err(PreflightError::Connect(ConnectError::Refused(status))) => fail(
            "ASSEMBLYAI_API_KEY",
            format!("AssemblyAI refused the connection (HTTP {status})"),
        )
        .fix(key_fix),
        Err(PreflightError::Connect(e @ ConnectError::BadUrl { .. })) => {
            fail("ASSEMBLYAI_AGENT_URL", e.to_string())
                .fix("set it to wss://agents.assemblyai.com/v1/ws (or the EU host)")
        }
        Err(PreflightError::Connect(
            e @ (ConnectError::Unreachable { .. } | ConnectError::Tls { .. }),
        )) => fail("ASSEMBLYAI_AGENT_URL", e.to_string())
            .fix("check this machine's network, or ASSEMBLYAI_AGENT_URL"),
        Err(PreflightError::Rejected(e)) if e.code.refuses_key() => {
            fail("ASSEMBLYAI_API_KEY", e.to_string()).fix(key_fix)
        }
        Err(PreflightError::Rejected(e)) if e.code.is_configuration() => {
            fail("agent (--agent, --voice, …)", e.to_string())
                .fix("change the agent setting the service refused (voice names are listed in AssemblyAI's docs)")
        }
        Err(PreflightError::Rejected(e)) => fail("Voice Agent API", e.to_string())
            .fix("try again shortly; if it persists, see AssemblyAI's status page"),
        Err(e @ (PreflightError::Timeout(_) | PreflightError::Closed)) => {
            fail("ASSEMBLYAI_AGENT_URL", format!("{e} at {url}"))
                .fix("try again; if it persists, check that ASSEMBLYAI_AGENT_URL is the Voice Agent API")
        }
    }
}

/// Ask for `/health` through the public URL and compare the instance that answers with this
/// one: any server would answer 200, and another dialer would answer in the same words.
async fn public_url_check(app: &App) -> Check {
    let id = CheckId::PublicUrl;
    let port = app.server_addr.port();
    let base = app.urls.base();
    let url = format!("{base}/health");
    let tunnel = format!(
        "start the tunnel to this machine's port {port} (ngrok http {port}, or cloudflared tunnel --url http://localhost:{port}) and set PUBLIC_URL to its https:// address"
    );
    let fail = |detail: String| Check::new(id, "PUBLIC_URL", Status::Fail, detail);
    let client = match reqwest::Client::builder()
        .timeout(HEALTH_TIMEOUT)
        .user_agent(concat!("dialer-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => return fail(format!("cannot make an HTTP client: {}", root_cause(&e))),
    };
    let started = Instant::now();
    let response = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            return fail(format!("{url} does not answer: {}", root_cause(&e))).fix(tunnel);
        }
    };
    let status = response.status().as_u16();
    let body = response.json::<serde_json::Value>().await.ok();
    let instance = body
        .as_ref()
        .and_then(|b| b.get("instance"))
        .and_then(|i| i.as_str());
    health_verdict(
        &url,
        status,
        instance,
        &app.instance,
        started.elapsed(),
        app.settings.public_url.is_empty(),
    )
    .map_fix(|| tunnel)
}

impl Check {
    /// Add the fix `f` gives to a failed check that has none.
    fn map_fix(self, f: impl FnOnce() -> String) -> Self {
        if self.status == Status::Fail && self.fix.is_none() {
            self.fix(f())
        } else {
            self
        }
    }
}

/// What an answer from `/health` through the public URL says about it.
fn health_verdict(
    url: &str,
    status: u16,
    instance: Option<&str>,
    ours: &str,
    took: Duration,
    unset: bool,
) -> Check {
    let id = CheckId::PublicUrl;
    let fail = |detail: String| Check::new(id, "PUBLIC_URL", Status::Fail, detail);
    match (status, instance) {
        (200, Some(i)) if i == ours => Check::new(
            id,
            "PUBLIC_URL",
            Status::Pass,
            if unset {
                format!(
                    "not needed with Twilio on this machine, which reaches this process at {url} ({} ms)",
                    took.as_millis()
                )
            } else {
                format!("{url} reaches this process ({} ms)", took.as_millis())
            },
        ),
        (200, Some(_)) => fail(format!(
            "{url} is answered by another dialer process, not this one"
        ))
        .fix("the tunnel points at another port or machine: point it at this process's port (or stop the other dialer)"),
        (502..=504, _) => fail(format!(
            "{url} answered HTTP {status}: the tunnel is up but nothing answers where it points"
        )),
        (_, _) => fail(format!(
            "{url} answered HTTP {status}, and not as dialer answers: something else is behind PUBLIC_URL"
        )),
    }
}

/// The clock is compared when Twilio answered at all, refusals included: the answer's `Date`
/// is all it needs.
fn clock_check(date: Option<ServerDate>) -> Check {
    let id = CheckId::Clock;
    let setting = "this machine's clock";
    let Some(d) = date else {
        return Check::skipped(
            id,
            setting,
            "needs an answer from Twilio that carries its time",
        );
    };
    let (offset, uncertainty) = clock_offset(&d);
    let sure = offset.abs() - uncertainty;
    let secs = offset.abs();
    let how = if offset > 0.0 { "behind" } else { "ahead of" };
    let fix = "turn on time synchronisation (NTP), e.g. timedatectl set-ntp true";
    if sure > CLOCK_FAIL.as_secs_f64() {
        Check::new(
            id,
            setting,
            Status::Fail,
            format!(
                "{secs:.0} s {how} Twilio's: calling hours are kept by this clock, so calls would be placed outside them"
            ),
        )
        .fix(fix)
    } else if sure > CLOCK_WARN.as_secs_f64() {
        Check::new(
            id,
            setting,
            Status::Warn,
            format!("{secs:.0} s {how} Twilio's: calling hours are kept by this clock"),
        )
        .fix(fix)
    } else {
        Check::new(
            id,
            setting,
            Status::Pass,
            format!(
                "agrees with Twilio's within {:.0} s",
                (secs + uncertainty).max(1.0).ceil()
            ),
        )
    }
}

/// Twilio's clock minus ours, in seconds, and how far off that estimate may be. Twilio's
/// `Date` has whole seconds, cut short, stamped somewhere between our sending and receiving.
fn clock_offset(d: &ServerDate) -> (f64, f64) {
    let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
    let server = ms(d.date) + 0.5;
    let local = (ms(d.sent) + ms(d.received)) / 2.0;
    let round_trip = (ms(d.received) - ms(d.sent)).max(0.0);
    (server - local, 0.5 + round_trip / 2.0)
}

/// The innermost cause of an error: reqwest's own text only says that a request failed.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    escape_controls(&cause.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{AgentError, AgentErrorCode};
    use crate::secret::Secret;
    use crate::twilio::client::NumberCapabilities;
    use chrono::{TimeZone, Utc};

    fn client() -> TwilioClient {
        TwilioClient::new(
            "https://api.twilio.com",
            "AC00000000000000000000000000000000",
            Secret::new("tok"),
        )
    }

    fn account(status: AccountStatus, kind: AccountType) -> Result<AccountResource, TwilioError> {
        Ok(AccountResource {
            sid: "AC00000000000000000000000000000000".into(),
            friendly_name: "Ops\u{1b}[2J".into(),
            status,
            kind,
        })
    }

    fn from() -> E164 {
        E164::parse("+15005550006").unwrap()
    }

    fn number(voice_url: Option<&str>, method: &str) -> IncomingNumber {
        IncomingNumber {
            sid: "PN1".into(),
            phone_number: "+15005550006".into(),
            capabilities: NumberCapabilities { voice: true },
            voice_url: voice_url.map(str::to_string),
            voice_method: Some(method.into()),
            voice_application_sid: Some(String::new()),
        }
    }

    const SID: &str = "AC00000000000000000000000000000000";

    #[test]
    fn account_states_read_as_the_user_needs_them() {
        let c = client();
        let check = |s, k| account_check(&account(s, k), &c, SID);
        let full = check(AccountStatus::Active, AccountType::Full);
        assert_eq!(full.status, Status::Pass);
        assert!(full.detail.contains("active (full)"), "{}", full.detail);
        assert!(
            !full.detail.contains('\u{1b}'),
            "control characters escaped"
        );
        let trial = check(AccountStatus::Active, AccountType::Trial);
        assert_eq!(trial.status, Status::Warn);
        assert!(trial.fix.unwrap().contains("verified"));
        assert_eq!(
            check(AccountStatus::Suspended, AccountType::Full).status,
            Status::Fail
        );
        assert_eq!(
            check(AccountStatus::Closed, AccountType::Trial).status,
            Status::Fail
        );
    }

    #[test]
    fn refused_credentials_name_the_token_and_unknown_accounts_the_sid() {
        let c = client();
        let refused = account_check(
            &Err(TwilioError::Api {
                status: 401,
                code: Some(20003),
                message: "Authenticate".into(),
            }),
            &c,
            SID,
        );
        assert_eq!(refused.status, Status::Fail);
        assert_eq!(refused.setting, "TWILIO_AUTH_TOKEN");
        assert!(refused.detail.contains("20003"));
        assert!(refused.fix.unwrap().contains("console.twilio.com"));
        let unknown = account_check(
            &Err(TwilioError::Api {
                status: 404,
                code: Some(20404),
                message: String::new(),
            }),
            &c,
            SID,
        );
        assert_eq!(unknown.setting, "TWILIO_ACCOUNT_SID");
        let garbled = account_check(
            &Err(TwilioError::Decode {
                status: 200,
                detail: "expected value".into(),
            }),
            &c,
            SID,
        );
        assert_eq!(garbled.setting, "TWILIO_API_BASE_URL");
    }

    #[test]
    fn the_from_number_is_a_twilio_number_a_caller_id_or_neither() {
        let twilio = from_number_check(&Ok(FromNumber::Twilio(number(None, "POST"))), &from());
        assert_eq!(twilio.status, Status::Pass);
        let mut sms_only = number(None, "POST");
        sms_only.capabilities.voice = false;
        let sms = from_number_check(&Ok(FromNumber::Twilio(sms_only)), &from());
        assert_eq!(sms.status, Status::Fail);
        let verified = from_number_check(
            &Ok(FromNumber::Verified(CallerId {
                sid: "PN2".into(),
                phone_number: "+15005550006".into(),
            })),
            &from(),
        );
        assert_eq!(verified.status, Status::Pass);
        assert!(verified.detail.contains("verified caller ID"));
        let neither = from_number_check(&Ok(FromNumber::Unknown), &from());
        assert_eq!(neither.status, Status::Fail);
        assert!(neither.detail.contains("21210"));
        assert!(neither.fix.unwrap().contains("verify"));
    }

    #[test]
    fn the_voice_url_is_a_warning_unless_it_points_here_with_post() {
        let here = "https://abc.ngrok.app/twilio/voice";
        let check = |n: IncomingNumber| voice_url_check(&Ok(FromNumber::Twilio(n)), &from(), here);
        assert_eq!(check(number(Some(here), "POST")).status, Status::Pass);
        assert_eq!(
            check(number(Some("HTTPS://ABC.ngrok.app/twilio/voice/"), "post")).status,
            Status::Pass,
            "case of scheme and host, a trailing slash and the method's case do not matter"
        );
        let get = check(number(Some(here), "GET"));
        assert_eq!(get.status, Status::Warn);
        assert!(get.detail.contains("GET"));
        let unset = check(number(None, "POST"));
        assert_eq!(unset.status, Status::Warn);
        assert!(unset.fix.as_deref().unwrap().contains(here));
        assert!(unset.fix.unwrap().contains("only inbound calls need it"));
        let elsewhere = check(number(
            Some("https://bob:hunter2@demo.twilio.com/welcome/voice/?key=s3cret"),
            "POST",
        ));
        assert_eq!(elsewhere.status, Status::Warn);
        assert!(
            elsewhere
                .detail
                .contains("demo.twilio.com/welcome/voice/?…")
        );
        assert!(!elsewhere.detail.contains("hunter2") && !elsewhere.detail.contains("s3cret"));
        let mut app = number(Some(here), "POST");
        app.voice_application_sid = Some("AP123".into());
        assert_eq!(check(app).status, Status::Warn);
        let mut sms_only = number(Some(here), "POST");
        sms_only.capabilities.voice = false;
        assert_eq!(check(sms_only).status, Status::Skipped);
        let verified = voice_url_check(
            &Ok(FromNumber::Verified(CallerId {
                sid: "PN2".into(),
                phone_number: "+15005550006".into(),
            })),
            &from(),
            here,
        );
        assert_eq!(verified.status, Status::Skipped);
        assert_eq!(
            voice_url_check(&Ok(FromNumber::Unknown), &from(), here).status,
            Status::Skipped
        );
    }

    fn dated(server: &str, sent_ms: i64, rtt_ms: i64) -> ServerDate {
        let date = chrono::DateTime::parse_from_rfc3339(server)
            .unwrap()
            .with_timezone(&Utc);
        let sent = Utc.timestamp_millis_opt(sent_ms).unwrap();
        ServerDate {
            date,
            sent,
            received: sent + chrono::Duration::milliseconds(rtt_ms),
        }
    }

    #[test]
    fn the_clock_warns_and_fails_only_beyond_what_the_date_header_can_tell() {
        // 2026-12-04T09:00:00Z in milliseconds.
        let t = 1_796_374_800_000;
        let check = |server: &str, sent, rtt| clock_check(Some(dated(server, sent, rtt)));
        assert_eq!(check("2026-12-04T09:00:00Z", t, 200).status, Status::Pass);
        // Twilio's second is cut short: a clock 0.9 s ahead is still agreement.
        assert_eq!(
            check("2026-12-04T09:00:00Z", t + 900, 100).status,
            Status::Pass
        );
        let behind = check("2026-12-04T09:00:09Z", t, 200);
        assert_eq!(behind.status, Status::Warn);
        assert!(behind.detail.starts_with("9 s behind"), "{}", behind.detail);
        // Six seconds off but a five-second round trip: it cannot be told from agreement.
        assert_eq!(
            check("2026-12-04T09:00:06Z", t - 2000, 5000).status,
            Status::Pass
        );
        let ahead = check("2026-12-04T08:50:00Z", t, 200);
        assert_eq!(ahead.status, Status::Fail);
        assert!(ahead.detail.contains("ahead of"), "{}", ahead.detail);
        assert_eq!(clock_check(None).status, Status::Skipped);
    }

    #[test]
    fn health_must_come_from_this_process() {
        let url = "https://abc.ngrok.app/health";
        let took = Duration::from_millis(42);
        let ok = health_verdict(url, 200, Some("a1"), "a1", took, false);
        assert_eq!(ok.status, Status::Pass);
        assert!(ok.detail.contains("42 ms"));
        let other = health_verdict(url, 200, Some("b2"), "a1", took, false);
        assert_eq!(other.status, Status::Fail);
        assert!(other.detail.contains("another dialer process"));
        assert_eq!(
            health_verdict(url, 200, None, "a1", took, false).status,
            Status::Fail,
            "a server that is not dialer answering 200"
        );
        assert!(
            health_verdict(url, 502, None, "a1", took, false)
                .detail
                .contains("nothing answers")
        );
    }

    #[test]
    fn agent_failures_name_the_setting_to_change() {
        let settings = crate::settings::Settings {
            twilio_account_sid: SID.into(),
            twilio_auth_token: Secret::new("tok"),
            twilio_from_number: from(),
            assemblyai_api_key: Secret::new("key"),
            public_url: String::new(),
            port: 0,
            bind_address: [127, 0, 0, 1].into(),
            twilio_api_base_url: "https://api.twilio.com".into(),
            assemblyai_agent_url: "wss://agents.assemblyai.com/v1/ws?token=key".into(),
            default_region: None,
        };
        let ok = agent_check(Ok(()), &settings);
        assert_eq!(ok.status, Status::Pass);
        assert!(!ok.detail.contains("token=key"), "{}", ok.detail);
        let rejected = |code| {
            agent_check(
                Err(PreflightError::Rejected(AgentError {
                    code,
                    message: String::new(),
                })),
                &settings,
            )
        };
        assert_eq!(
            rejected(AgentErrorCode::Unauthorized).setting,
            "ASSEMBLYAI_API_KEY"
        );
        assert!(
            rejected(AgentErrorCode::InvalidValue)
                .setting
                .starts_with("agent")
        );
        assert_eq!(
            agent_check(
                Err(PreflightError::Connect(ConnectError::Refused(401))),
                &settings
            )
            .setting,
            "ASSEMBLYAI_API_KEY"
        );
        assert_eq!(
            agent_check(Err(PreflightError::Timeout(10)), &settings).setting,
            "ASSEMBLYAI_AGENT_URL"
        );
    }
}
