//! The Twilio REST API as dialer uses it: create, hang up, fetch and list calls, and read the
//! account, its phone numbers and verified caller IDs (for `dialer doctor`). Rate limits and
//! Twilio's own trouble (429, 5xx) are retried with jittered backoff; a create is only retried
//! once we know the first attempt did not place a call, because a person must never be dialed
//! twice.

use super::error::{ApiErrorBody, TwilioError};
use super::status::{AnsweredBy, CallStatus};
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use std::time::Duration;

/// The Call resource fields dialer uses (Twilio sends many more).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CallResource {
    pub sid: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    pub status: CallStatus,
    /// Seconds, as a string; empty or null until the call ends.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub answered_by: Option<AnsweredBy>,
    /// RFC 2822.
    #[serde(default)]
    pub date_created: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
}

impl CallResource {
    pub fn duration_secs(&self) -> Option<u64> {
        self.duration.as_deref().and_then(|d| d.trim().parse().ok())
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        parse_rfc2822(self.date_created.as_deref()?)
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        parse_rfc2822(self.start_time.as_deref()?)
    }
}

fn parse_rfc2822(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The Account resource fields dialer uses. Twilio's answer also carries the account's auth
/// token; it is left out here so that no value of this type can ever hold or print it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AccountResource {
    pub sid: String,
    #[serde(default)]
    pub friendly_name: String,
    pub status: AccountStatus,
    #[serde(rename = "type")]
    pub kind: AccountType,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Suspended,
    Closed,
    /// A status Twilio added after this was written.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum AccountType {
    /// Calls only numbers verified in the Console, and callees first hear a trial message.
    Trial,
    Full,
    #[serde(other)]
    Other,
}

/// The IncomingPhoneNumber resource fields dialer uses: a Twilio number of the account.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IncomingNumber {
    pub sid: String,
    pub phone_number: String,
    #[serde(default)]
    pub capabilities: NumberCapabilities,
    /// Where Twilio asks what to do with a call to this number; empty or null when unset.
    #[serde(default)]
    pub voice_url: Option<String>,
    #[serde(default)]
    pub voice_method: Option<String>,
    /// A TwiML App that takes the number's calls instead of `voice_url`.
    #[serde(default)]
    pub voice_application_sid: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct NumberCapabilities {
    #[serde(default)]
    pub voice: bool,
}

/// The OutgoingCallerId resource fields dialer uses: a number verified as a caller ID.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CallerId {
    pub sid: String,
    pub phone_number: String,
}

/// The `Date` header of one Twilio answer, and this machine's clock when the request left and
/// when the answer came: the server stamped its date somewhere in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerDate {
    pub date: DateTime<Utc>,
    pub sent: DateTime<Utc>,
    pub received: DateTime<Utc>,
}

#[derive(Deserialize)]
struct IncomingNumberPage {
    incoming_phone_numbers: Vec<IncomingNumber>,
}

#[derive(Deserialize)]
struct CallerIdPage {
    outgoing_caller_ids: Vec<CallerId>,
}

/// The parameters of a new call.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    pub to: &'a str,
    pub from: &'a str,
    /// Inline TwiML (≤ 4000 characters).
    pub twiml: &'a str,
    pub status_callback: &'a str,
    /// Ring time before `no-answer`, seconds.
    pub timeout_secs: u64,
    pub time_limit_secs: u64,
    /// Asynchronous answering-machine detection, verdict POSTed to this URL.
    pub amd_callback: Option<&'a str>,
}

#[derive(Deserialize)]
struct CallPage {
    calls: Vec<CallResource>,
}

/// Twilio REST client for one account.
#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: Secret,
    max_attempts: u32,
    backoff_base: Duration,
}

impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base", &self.base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

impl TwilioClient {
    /// `base` is `https://api.twilio.com` or a regional edge, or a fake's address in tests.
    pub fn new(base: &str, account_sid: &str, auth_token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("dialer/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            auth_token,
            max_attempts: 5,
            backoff_base: Duration::from_millis(400),
        }
    }

    /// Shorter retry waits, for tests against a fake that answers 429.
    pub fn with_backoff(mut self, base: Duration, max_attempts: u32) -> Self {
        self.backoff_base = base;
        self.max_attempts = max_attempts.max(1);
        self
    }

    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// The REST base every request goes to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.base, self.account_sid
        )
    }

    fn call_url(&self, sid: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}.json",
            self.base, self.account_sid, sid
        )
    }

    /// Place a call. On 429 it waits and tries again. On a 5xx or a lost answer the call may
    /// have been placed anyway, so before trying again it looks for a call to the same number
    /// created since, and adopts it instead of dialing a second time.
    pub async fn create_call(&self, call: &NewCall<'_>) -> Result<CallResource, TwilioError> {
        let mut form: Vec<(&str, String)> = vec![
            ("To", call.to.to_string()),
            ("From", call.from.to_string()),
            ("Twiml", call.twiml.to_string()),
            ("StatusCallback", call.status_callback.to_string()),
            ("StatusCallbackMethod", "POST".into()),
            ("Timeout", call.timeout_secs.to_string()),
            ("TimeLimit", call.time_limit_secs.to_string()),
        ];
        for event in ["initiated", "ringing", "answered", "completed"] {
            form.push(("StatusCallbackEvent", event.into()));
        }
        if let Some(amd) = call.amd_callback {
            // The end of a machine's greeting (its beep) is when a voicemail message goes in.
            form.push(("MachineDetection", "DetectMessageEnd".into()));
            form.push(("AsyncAmd", "true".into()));
            form.push(("AsyncAmdStatusCallback", amd.to_string()));
            form.push(("AsyncAmdStatusCallbackMethod", "POST".into()));
        }
        // Twilio's clock, not ours, stamps `date_created`; allow for skew when adopting.
        let asked_at = Utc::now() - chrono::Duration::seconds(120);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .send(self.http.post(self.calls_url()).form(&form))
                .await;
            match result {
                Ok(resp) => {
                    return match decode(resp).await {
                        Ok(created) => Ok(created),
                        // Twilio took the request: the call exists and rings, whatever the body
                        // said. Find it rather than call the number "not callable".
                        Err(err) => self.adopt(call.to, asked_at, err).await,
                    };
                }
                Err(err) if attempt < self.max_attempts && err.is_transient() => {
                    let ambiguous = !matches!(&err, TwilioError::Api { status: 429, .. });
                    self.backoff(attempt).await;
                    if ambiguous {
                        let placed = self.list_calls_to(call.to, asked_at).await?;
                        if let Some(existing) = placed.into_iter().next() {
                            tracing::warn!(sid = %existing.sid, "create call failed ambiguously but the call exists; adopting it");
                            return Ok(existing);
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The call a create request made although its answer could not be read. Listing may lag
    /// the create by a moment, so it is asked a few times; when the call does not show, the
    /// unreadable answer is returned, and it counts as transient: the call may exist, and
    /// whoever placed it settles it from Twilio's records later.
    async fn adopt(
        &self,
        to: &str,
        since: DateTime<Utc>,
        unreadable: TwilioError,
    ) -> Result<CallResource, TwilioError> {
        tracing::warn!(error = %unreadable, "Twilio accepted the call but its answer cannot be read; looking the call up");
        for attempt in 1..=self.max_attempts {
            if let Ok(placed) = self.list_calls_to(to, since).await
                && let Some(existing) = placed.into_iter().next()
            {
                return Ok(existing);
            }
            self.backoff(attempt).await;
        }
        Err(unreadable)
    }

    /// Switch a live call to other TwiML (`Twiml` on the call resource): what it was doing
    /// (the Media Stream) stops and the new document runs.
    pub(crate) async fn update_twiml(
        &self,
        sid: &str,
        twiml: &str,
    ) -> Result<CallResource, TwilioError> {
        let url = self.call_url(sid);
        self.with_retries(|| self.http.post(&url).form(&[("Twiml", twiml)]))
            .await
    }

    /// Hang up: `Status=completed` ends an in-progress call and cancels a ringing one.
    pub async fn hang_up(&self, sid: &str) -> Result<CallResource, TwilioError> {
        let url = self.call_url(sid);
        self.with_retries(|| self.http.post(&url).form(&[("Status", "completed")]))
            .await
    }

    /// Fetch a call; `Ok(None)` when Twilio does not know it (404 / 20404).
    pub async fn fetch_call(&self, sid: &str) -> Result<Option<CallResource>, TwilioError> {
        let url = self.call_url(sid);
        match self.with_retries(|| self.http.get(&url)).await {
            Ok(call) => Ok(Some(call)),
            Err(TwilioError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Calls to `to` created since `since`, newest first. No `StartTime` filter: a call that is
    /// still queued or ringing has no start time yet, and Twilio's filter would hide exactly
    /// the call a crashed run is looking for. Twilio lists newest first, so one page holds
    /// the recent ones; `since` is applied to each call's creation date here.
    pub async fn list_calls_to(
        &self,
        to: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<CallResource>, TwilioError> {
        let url = self.calls_url();
        let page: CallPage = self
            .with_retries(|| self.http.get(&url).query(&[("To", to), ("PageSize", "50")]))
            .await?;
        let mut calls: Vec<CallResource> = page
            .calls
            .into_iter()
            .filter(|c| c.created_at().is_none_or(|t| t >= since))
            .collect();
        calls.sort_by_key(|c| std::cmp::Reverse(c.created_at()));
        Ok(calls)
    }

    fn account_url(&self, resource: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}{resource}",
            self.base, self.account_sid
        )
    }

    /// Fetch the account the credentials belong to, once (a check reports what it saw rather
    /// than retrying), with the answer's `Date` whenever Twilio answered at all, refusals
    /// included.
    pub async fn fetch_account(
        &self,
    ) -> (Result<AccountResource, TwilioError>, Option<ServerDate>) {
        let sent = Utc::now();
        let resp = match self
            .send_raw(self.http.get(self.account_url(".json")))
            .await
        {
            Ok(resp) => resp,
            Err(e) => return (Err(e), None),
        };
        let received = Utc::now();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .map(|date| ServerDate {
                date,
                sent,
                received,
            });
        let result = match Self::refusal(resp).await {
            Ok(resp) => decode(resp).await,
            Err(e) => Err(e),
        };
        (result, date)
    }

    /// The account's Twilio number `number` (E.164), if it has it. Twilio's `PhoneNumber`
    /// filter also matches partial numbers, so the answer is searched for the exact one.
    pub async fn incoming_number(
        &self,
        number: &str,
    ) -> Result<Option<IncomingNumber>, TwilioError> {
        let url = self.account_url("/IncomingPhoneNumbers.json");
        let page: IncomingNumberPage = self
            .with_retries(|| {
                self.http
                    .get(&url)
                    .query(&[("PhoneNumber", number), ("PageSize", "50")])
            })
            .await?;
        Ok(page
            .incoming_phone_numbers
            .into_iter()
            .find(|n| n.phone_number == number))
    }

    /// The account's verified caller ID `number` (E.164), if it has it.
    pub async fn caller_id(&self, number: &str) -> Result<Option<CallerId>, TwilioError> {
        let url = self.account_url("/OutgoingCallerIds.json");
        let page: CallerIdPage = self
            .with_retries(|| {
                self.http
                    .get(&url)
                    .query(&[("PhoneNumber", number), ("PageSize", "50")])
            })
            .await?;
        Ok(page
            .outgoing_caller_ids
            .into_iter()
            .find(|c| c.phone_number == number))
    }

    async fn with_retries<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, TwilioError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send(build()).await {
                Ok(resp) => return decode(resp).await,
                Err(err) if attempt < self.max_attempts && err.is_transient() => {
                    self.backoff(attempt).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Send with credentials; a non-2xx answer becomes an error carrying Twilio's code.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, TwilioError> {
        Self::refusal(self.send_raw(req).await?).await
    }

    /// Send with credentials, whatever the answer's status.
    async fn send_raw(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TwilioError> {
        req.basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|source| TwilioError::Transport {
                base: self.base.clone(),
                source,
            })
    }

    /// A 2xx answer as it is; anything else as the error Twilio's body describes.
    async fn refusal(resp: reqwest::Response) -> Result<reqwest::Response, TwilioError> {
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(body) => TwilioError::Api {
                status: body.status.unwrap_or(status),
                code: body.code,
                message: body.message,
            },
            Err(_) => TwilioError::Api {
                status,
                code: None,
                message: text.chars().take(200).collect(),
            },
        })
    }

    async fn backoff(&self, attempt: u32) {
        let exp = self.backoff_base * 2u32.saturating_pow(attempt.saturating_sub(1));
        let capped = exp.min(Duration::from_secs(20));
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::time::sleep(capped.mul_f64(jitter)).await;
    }
}

/// An HTTP date (`Fri, 04 Dec 2026 09:05:00 GMT`), which is RFC 2822 with the zone named.
fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    parse_rfc2822(s.trim())
}

async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, TwilioError> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| TwilioError::Decode {
        status,
        detail: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| TwilioError::Decode {
        status,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_resource_from_documented_example() {
        let json = r#"{"account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","answered_by":null,"api_version":"2010-04-01",
            "date_created":"Tue, 31 Aug 2010 20:36:28 +0000","direction":"inbound","duration":"15",
            "end_time":"Tue, 31 Aug 2010 20:36:44 +0000","from":"+14158675308","price":"-0.03000",
            "sid":"CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","start_time":"Tue, 31 Aug 2010 20:36:29 +0000",
            "status":"completed","to":"+14158675309","queue_time":"1000"}"#;
        let call: CallResource = serde_json::from_str(json).unwrap();
        assert_eq!(call.duration_secs(), Some(15));
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.answered_by, None);
        assert_eq!(
            call.created_at().unwrap().to_rfc3339(),
            "2010-08-31T20:36:28+00:00"
        );
        let fresh: CallResource = serde_json::from_str(
            r#"{"sid":"CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","status":"queued","duration":null}"#,
        )
        .unwrap();
        assert_eq!(fresh.duration_secs(), None);
        assert_eq!(fresh.status, CallStatus::Queued);
        let machine: CallResource = serde_json::from_str(
            r#"{"sid":"CAcccccccccccccccccccccccccccccccc","status":"in-progress","answered_by":"machine_start"}"#,
        )
        .unwrap();
        assert_eq!(machine.status, CallStatus::InProgress);
        assert_eq!(machine.answered_by, Some(AnsweredBy::MachineStart));
    }

    #[test]
    fn http_dates_are_read() {
        let d = parse_http_date("Fri, 04 Dec 2026 09:05:00 GMT").unwrap();
        assert_eq!(d.to_rfc3339(), "2026-12-04T09:05:00+00:00");
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn account_number_and_caller_id_resources_from_documented_shapes() {
        // The account's auth token travels in this answer; the type has no place for it.
        let account: AccountResource = serde_json::from_str(
            r#"{"auth_token":"tok","date_created":"Thu, 30 Jul 2015 20:00:00 +0000",
            "friendly_name":"friendly_name","owner_account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","status":"active","type":"Full",
            "uri":"/2010-04-01/Accounts/ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json"}"#,
        )
        .unwrap();
        assert_eq!(account.status, AccountStatus::Active);
        assert_eq!(account.kind, AccountType::Full);
        assert!(!format!("{account:?}").contains("tok"));
        let odd: AccountResource =
            serde_json::from_str(r#"{"sid":"AC1","status":"paused","type":"Enterprise"}"#).unwrap();
        assert_eq!(
            (odd.status, odd.kind),
            (AccountStatus::Other, AccountType::Other)
        );

        let page: IncomingNumberPage = serde_json::from_str(
            r#"{"incoming_phone_numbers":[{"sid":"PNaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "phone_number":"+15005550006","capabilities":{"voice":true,"sms":false,"mms":false,"fax":false},
            "voice_url":"https://example.com/twilio/voice","voice_method":"POST","voice_application_sid":""}],
            "page":0,"page_size":50,"next_page_uri":null}"#,
        )
        .unwrap();
        let n = &page.incoming_phone_numbers[0];
        assert!(n.capabilities.voice);
        assert_eq!(n.voice_method.as_deref(), Some("POST"));
        let bare: IncomingNumber =
            serde_json::from_str(r#"{"sid":"PN1","phone_number":"+1","voice_url":null}"#).unwrap();
        assert!(!bare.capabilities.voice);
        assert_eq!(bare.voice_url, None);

        let ids: CallerIdPage = serde_json::from_str(
            r#"{"outgoing_caller_ids":[{"account_sid":"AC1","friendly_name":"(415) 867-5309",
            "phone_number":"+14158675309","sid":"PNbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]}"#,
        )
        .unwrap();
        assert_eq!(ids.outgoing_caller_ids[0].phone_number, "+14158675309");
    }
}
