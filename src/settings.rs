//! Settings, layered from lowest to highest precedence: built-in defaults, `dialer.toml`,
//! `.env`, the process environment, command-line flags. The environment is read into a map
//! and never modified, so tests can inject values and the runtime never races `set_var`.
//! What comes out is validated: a missing or malformed setting is one line naming it and
//! saying what to do.

use crate::agent::client::DEFAULT_URL as DEFAULT_AGENT_URL;
use crate::phone::{E164, escape_controls, printable};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

pub const DEFAULT_TWILIO_API: &str = "https://api.twilio.com";
pub const DEFAULT_PORT: u16 = 8080;

/// Every setting's name as it appears in the environment and `.env` (lower case in
/// `dialer.toml`).
pub const NAMES: &[&str] = &[
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "ASSEMBLYAI_API_KEY",
    "PUBLIC_URL",
    "PORT",
    "BIND_ADDRESS",
    "TWILIO_API_BASE_URL",
    "ASSEMBLYAI_AGENT_URL",
    "DEFAULT_REGION",
    "ALLOW_PREFIXES",
    "RECORDINGS_DIR",
    "MAX_CALLS",
    "DRAIN",
    "DNC_FILE",
    "DIALER_API_KEY",
    "DIALER_SERVER",
    "API_RATE_LIMIT",
    "CALLING_WINDOW",
    "CALLING_TIMEZONE",
];

/// Where `dialer call --record` writes its WAV files when `RECORDINGS_DIR` is not set.
pub const DEFAULT_RECORDINGS_DIR: &str = "recordings";

/// Live calls one core carries comfortably: BENCHMARKS.md measured 1,000 on a 2-core machine.
const CALLS_PER_CORE: usize = 500;
/// `DRAIN`'s default and its ceiling.
pub const DEFAULT_DRAIN: std::time::Duration = std::time::Duration::from_secs(60);
const MAX_DRAIN: std::time::Duration = std::time::Duration::from_secs(3600);
/// `DNC_FILE`'s default, for `dialer serve`.
pub const DEFAULT_DNC_FILE: &str = "do-not-call.txt";

/// Where settings come from. `env` is the process environment (or a test's map).
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `dialer.toml`; a missing file is fine unless it was named explicitly.
    pub config_file: Option<PathBuf>,
    pub config_file_required: bool,
    /// `.env`; a missing file is fine unless it was named explicitly.
    pub dotenv_file: Option<PathBuf>,
    pub dotenv_required: bool,
    pub env: HashMap<String, String>,
    /// Command-line flags, by lower-case setting name.
    pub flags: Vec<(&'static str, String)>,
}

impl Sources {
    /// The usual sources: `./dialer.toml`, `./.env`, the process environment.
    pub fn standard(config: Option<PathBuf>, dotenv: Option<PathBuf>) -> Self {
        Self {
            config_file_required: config.is_some(),
            config_file: Some(config.unwrap_or_else(|| PathBuf::from("dialer.toml"))),
            dotenv_required: dotenv.is_some(),
            dotenv_file: Some(dotenv.unwrap_or_else(|| PathBuf::from(".env"))),
            env: std::env::vars().collect(),
            flags: Vec::new(),
        }
    }
}

/// The merged settings before validation: everything optional.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawSettings {
    pub twilio_account_sid: Option<String>,
    pub twilio_auth_token: Option<String>,
    pub twilio_from_number: Option<String>,
    pub assemblyai_api_key: Option<String>,
    pub public_url: Option<String>,
    pub port: Option<String>,
    pub bind_address: Option<String>,
    pub twilio_api_base_url: Option<String>,
    pub assemblyai_agent_url: Option<String>,
    pub default_region: Option<String>,
    /// Comma-separated prefixes that may be dialed although refused by default (premium rate,
    /// satellite, N11): `+1900,+44`.
    pub allow_prefixes: Option<String>,
    /// Folder of `dialer call --record`'s WAV files.
    pub recordings_dir: Option<String>,
    /// `dialer serve`: most live calls, both ways, before incoming calls are turned away.
    pub max_calls: Option<String>,
    /// `dialer serve`: how long live calls may go on after the first Ctrl-C or SIGTERM.
    pub drain: Option<String>,
    /// `dialer serve`: the do-not-call list inbound callers' opt-outs are written to.
    pub dnc_file: Option<String>,
    /// The call API's bearer key: `serve` requires it, `--server` clients send it.
    pub dialer_api_key: Option<String>,
    /// A `dialer serve` to place calls through (`--server`).
    pub dialer_server: Option<String>,
    /// Call API requests per minute per key.
    pub api_rate_limit: Option<String>,
    /// The server's calling hours for API calls: `09:00-20:00 mon-sat`.
    pub calling_window: Option<String>,
    /// The zone of `CALLING_WINDOW`, for a call whose request names none.
    pub calling_timezone: Option<String>,
}

/// What `serve` needs for the call API, checked.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `None` only when no `DIALER_API_KEY` is set; `serve` then refuses to listen beyond
    /// loopback.
    pub key: Option<Secret>,
    /// Requests per minute per key; also the burst.
    pub rate_per_minute: u32,
    pub max_calls: usize,
    pub dnc_file: Option<PathBuf>,
    pub window: Option<(
        crate::campaign::window::CallingWindow,
        Option<chrono_tz::Tz>,
    )>,
    /// Where the WAVs of calls placed with `record` go (`RECORDINGS_DIR`).
    pub recordings_dir: PathBuf,
}

pub const DEFAULT_API_RATE_LIMIT: u32 = 120;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub twilio_account_sid: String,
    pub twilio_auth_token: Secret,
    pub twilio_from_number: E164,
    pub assemblyai_api_key: Secret,
    /// `https://…` without a trailing slash.
    pub public_url: String,
    pub port: u16,
    pub bind_address: IpAddr,
    pub twilio_api_base_url: String,
    pub assemblyai_agent_url: String,
    pub default_region: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{name} is not set: {hint}")]
    Missing {
        name: &'static str,
        hint: &'static str,
    },
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("cannot read {path}: {why}")]
    File { path: String, why: String },
}

fn hint(name: &str) -> &'static str {
    match name {
        "TWILIO_ACCOUNT_SID" => "copy the Account SID (AC…) from the Twilio Console into .env",
        "TWILIO_AUTH_TOKEN" => "copy the Auth Token from the Twilio Console into .env",
        "TWILIO_FROM_NUMBER" => {
            "set it to a Twilio phone number of your account, in E.164 (+15551234567)"
        }
        "ASSEMBLYAI_API_KEY" => "copy an API key from the AssemblyAI dashboard into .env",
        "PUBLIC_URL" => {
            "set it to the public HTTPS address that reaches this machine (e.g. a tunnel: https://abc.ngrok.app)"
        }
        _ => "see the settings table in README.md",
    }
}

impl RawSettings {
    /// `ALLOW_PREFIXES`, checked.
    pub fn allow_prefixes(&self) -> Result<Vec<String>, SettingsError> {
        let list = self.allow_prefixes.as_deref().unwrap_or_default();
        crate::phone::AllowList::parse(list)
            .map(|allow| allow.prefixes().to_vec())
            .map_err(|why| SettingsError::Invalid {
                name: "ALLOW_PREFIXES",
                why,
            })
    }

    /// `RECORDINGS_DIR`, or `recordings` in the current folder.
    pub fn recordings_dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(
            self.recordings_dir
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .unwrap_or(DEFAULT_RECORDINGS_DIR),
        )
    }

    /// `DIALER_API_KEY`, when set to something.
    pub fn api_key(&self) -> Option<Secret> {
        self.dialer_api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Secret::new)
    }

    /// `DIALER_SERVER` (or `--server`), checked: an `http(s)://` base URL.
    pub fn server(&self) -> Result<Option<url::Url>, SettingsError> {
        let Some(value) = self.dialer_server.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        let checked = check_url("DIALER_SERVER", value, &["https", "http"])?;
        let url = url::Url::parse(&checked).map_err(|e| SettingsError::Invalid {
            name: "DIALER_SERVER",
            why: e.to_string(),
        })?;
        // The URL is shown in messages; the key travels in DIALER_API_KEY, never in it.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SettingsError::Invalid {
                name: "DIALER_SERVER",
                why: "must not carry credentials; put the server's key in DIALER_API_KEY".into(),
            });
        }
        Ok(Some(url))
    }

    /// The call API's settings, checked.
    pub fn api(&self) -> Result<ApiSettings, SettingsError> {
        let number = |name: &'static str, value: Option<&str>, default: u64, max: u64| match value
            .map(str::trim)
        {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| SettingsError::Invalid {
                    name,
                    why: format!("'{}' is not a whole number from 1 to {max}", printable(v)),
                }),
        };
        let rate = number(
            "API_RATE_LIMIT",
            self.api_rate_limit.as_deref(),
            DEFAULT_API_RATE_LIMIT.into(),
            1_000_000,
        )?;
        // One limit for every live call of the server, placed through the API or brought in.
        let max_calls = self.max_calls()?;
        let zone = match self.calling_timezone.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(z) => Some(
                z.parse::<chrono_tz::Tz>()
                    .map_err(|_| SettingsError::Invalid {
                        name: "CALLING_TIMEZONE",
                        why: format!(
                            "'{}' is not an IANA time zone such as America/Chicago",
                            printable(z)
                        ),
                    })?,
            ),
        };
        let window =
            match self.calling_window.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(w) => {
                    let mut parts = w.split_whitespace();
                    let hours = parts.next().unwrap_or_default();
                    let days: Vec<String> = parts.map(str::to_string).collect();
                    let days = if days.is_empty() {
                        vec!["mon-sun".to_string()]
                    } else {
                        days
                    };
                    let window = crate::campaign::window::CallingWindow::parse(hours, &days)
                        .map_err(|why| SettingsError::Invalid {
                            name: "CALLING_WINDOW",
                            why: format!("{why} (e.g. \"09:00-20:00 mon-sat\")"),
                        })?;
                    Some((window, zone))
                }
            };
        Ok(ApiSettings {
            key: self.api_key(),
            rate_per_minute: u32::try_from(rate).unwrap_or(u32::MAX),
            max_calls,
            // The server's one list: inbound opt-outs and API calls' opt-outs go to it.
            dnc_file: Some(self.dnc_file()),
            window,
            recordings_dir: self.recordings_dir(),
        })
    }

    /// `MAX_CALLS`, or what this machine carries: 500 live calls per core.
    pub fn max_calls(&self) -> Result<usize, SettingsError> {
        match self.max_calls.as_deref().map(str::trim) {
            None | Some("") => Ok(default_max_calls()),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=100_000).contains(&n) => Ok(n),
                _ => Err(SettingsError::Invalid {
                    name: "MAX_CALLS",
                    why: format!(
                        "'{}' is not a number of calls from 1 to 100000",
                        printable(v)
                    ),
                }),
            },
        }
    }

    /// `DRAIN`: seconds (`60`, `60s`) or minutes (`2m`), at most an hour; 60 s by default.
    pub fn drain(&self) -> Result<std::time::Duration, SettingsError> {
        match self.drain.as_deref().map(str::trim) {
            None | Some("") => Ok(DEFAULT_DRAIN),
            Some(v) => {
                parse_drain(v)
                    .filter(|d| *d <= MAX_DRAIN)
                    .ok_or_else(|| SettingsError::Invalid {
                        name: "DRAIN",
                        why: format!(
                            "'{}' is not a time from 0s to 60m (e.g. 60s or 2m)",
                            printable(v)
                        ),
                    })
            }
        }
    }

    /// `DNC_FILE`, or `do-not-call.txt` in the working directory.
    pub fn dnc_file(&self) -> PathBuf {
        match self.dnc_file.as_deref().map(str::trim) {
            None | Some("") => PathBuf::from(DEFAULT_DNC_FILE),
            Some(path) => PathBuf::from(path),
        }
    }

    /// `DEFAULT_REGION`, when set to something.
    pub fn default_region(&self) -> Option<&str> {
        self.default_region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

    /// Merge the sources in precedence order.
    pub fn load(sources: &Sources) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &sources.config_file
            && (path.exists() || sources.config_file_required)
        {
            builder = builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        if let Some(path) = &sources.dotenv_file
            && (path.exists() || sources.dotenv_required)
        {
            let map = read_dotenv(path)?;
            builder = builder.add_source(config::Environment::default().source(Some(map)));
        }
        let env: HashMap<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| NAMES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(config::Environment::default().source(Some(env)));
        for (key, value) in &sources.flags {
            builder =
                builder
                    .set_override(*key, value.clone())
                    .map_err(|e| SettingsError::Invalid {
                        name: "flag",
                        why: one_line(&e.to_string()),
                    })?;
        }
        let merged = builder.build().map_err(|e| SettingsError::File {
            path: sources
                .config_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            why: one_line(&e.to_string()),
        })?;
        merged
            .try_deserialize()
            .map_err(|e| SettingsError::Invalid {
                name: "settings",
                why: one_line(&e.to_string()),
            })
    }

    /// Validate for talking to the real services.
    pub fn resolve(self) -> Result<Settings, SettingsError> {
        let default_region = self.default_region().map(str::to_string);
        let sid = required("TWILIO_ACCOUNT_SID", self.twilio_account_sid)?;
        if !(sid.len() == 34
            && sid.starts_with("AC")
            && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(SettingsError::Invalid {
                name: "TWILIO_ACCOUNT_SID",
                why: "an Account SID is AC followed by 32 hexadecimal characters".into(),
            });
        }
        let token = required("TWILIO_AUTH_TOKEN", self.twilio_auth_token)?;
        let from = required("TWILIO_FROM_NUMBER", self.twilio_from_number)?;
        let from = E164::parse(&from).map_err(|e| SettingsError::Invalid {
            name: "TWILIO_FROM_NUMBER",
            why: e.to_string(),
        })?;
        let key = required("ASSEMBLYAI_API_KEY", self.assemblyai_api_key)?;
        let twilio_api_base_url = check_url(
            "TWILIO_API_BASE_URL",
            self.twilio_api_base_url
                .as_deref()
                .unwrap_or(DEFAULT_TWILIO_API),
            &["https", "http"],
        )?;
        let public_url = match self.public_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => check_public_url(&url)?,
            // A Twilio on this machine (a simulator in another process) reaches the server
            // where it listens, whatever port it got; the real one needs PUBLIC_URL.
            None if is_loopback_url(&twilio_api_base_url) => String::new(),
            None => required("PUBLIC_URL", None)?,
        };
        Ok(Settings {
            twilio_account_sid: sid,
            twilio_auth_token: Secret::new(token),
            twilio_from_number: from,
            assemblyai_api_key: Secret::new(key),
            public_url,
            port: parse_port(self.port.as_deref())?,
            bind_address: parse_bind(self.bind_address.as_deref())?,
            twilio_api_base_url,
            assemblyai_agent_url: check_url(
                "ASSEMBLYAI_AGENT_URL",
                self.assemblyai_agent_url
                    .as_deref()
                    .unwrap_or(DEFAULT_AGENT_URL),
                &["wss", "ws"],
            )?,
            default_region,
        })
    }
}

/// What this machine carries: 500 live calls per core it has.
pub fn default_max_calls() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) * CALLS_PER_CORE
}

/// `60`, `60s`, `2m`: whole seconds or minutes.
pub fn parse_drain(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    let (digits, unit) = match v.strip_suffix('m') {
        Some(d) => (d, 60),
        None => (v.strip_suffix('s').unwrap_or(v), 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(std::time::Duration::from_secs(n.checked_mul(unit)?))
}

fn required(name: &'static str, value: Option<String>) -> Result<String, SettingsError> {
    match value.map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(SettingsError::Missing {
            name,
            hint: hint(name),
        }),
    }
}

fn check_url(name: &'static str, value: &str, schemes: &[&str]) -> Result<String, SettingsError> {
    let parsed = url::Url::parse(value.trim()).map_err(|e| SettingsError::Invalid {
        name,
        why: format!("'{}' is not a URL ({e})", printable(value)),
    })?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(SettingsError::Invalid {
            name,
            why: format!(
                "'{}' must start with {}://",
                printable(value),
                schemes.join(":// or ")
            ),
        });
    }
    // The parser's form, not the text: the parser drops tabs, newlines and leading control
    // characters, so the text could be a valid URL here and an invalid one where it is used.
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

fn check_public_url(url: &str) -> Result<String, SettingsError> {
    check_url("PUBLIC_URL", url, &["https", "http"])?;
    let invalid = |why: &str| SettingsError::Invalid {
        name: "PUBLIC_URL",
        why: why.into(),
    };
    let parsed = url::Url::parse(url.trim()).map_err(|e| invalid(&e.to_string()))?;
    if parsed.fragment().is_some() {
        return Err(invalid(
            "it must not contain a #fragment (Twilio would not send it back)",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "it must not contain a user name or password (Twilio signs requests instead)",
        ));
    }
    // Every URL given to Twilio is built from this one, and signatures are checked over them:
    // the parser's form (lower-case scheme and host) is the one Twilio will send back.
    let public_url = parsed.as_str().trim_end_matches('/').to_string();
    if public_url.starts_with("http://") && !is_loopback_url(&public_url) {
        return Err(SettingsError::Invalid {
            name: "PUBLIC_URL",
            why: "Twilio only opens Media Streams over wss://, so PUBLIC_URL must be https://"
                .into(),
        });
    }
    if public_url.contains('?') {
        return Err(SettingsError::Invalid {
            name: "PUBLIC_URL",
            why: "it must not contain a query string (Twilio stream URLs cannot have one)".into(),
        });
    }
    Ok(public_url)
}

fn is_loopback_url(u: &str) -> bool {
    url::Url::parse(u)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]")
        })
        .unwrap_or(false)
}

fn parse_port(value: Option<&str>) -> Result<u16, SettingsError> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_PORT),
        Some(v) => v.parse().map_err(|_| SettingsError::Invalid {
            name: "PORT",
            why: format!(
                "'{}' is not a port number (0–65535; 0 picks a free port)",
                printable(v)
            ),
        }),
    }
}

fn parse_bind(value: Option<&str>) -> Result<IpAddr, SettingsError> {
    match value.map(str::trim) {
        None | Some("") => Ok(IpAddr::from([127, 0, 0, 1])),
        Some(v) => v.parse().map_err(|_| SettingsError::Invalid {
            name: "BIND_ADDRESS",
            why: format!(
                "'{}' is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)",
                printable(v)
            ),
        }),
    }
}

fn read_dotenv(path: &std::path::Path) -> Result<HashMap<String, String>, SettingsError> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| SettingsError::File {
        path: path.display().to_string(),
        why: one_line(&e.to_string()),
    })?;
    let mut map = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| SettingsError::File {
            path: path.display().to_string(),
            why: one_line(&e.to_string()),
        })?;
        map.insert(k, v);
    }
    Ok(map)
}

/// A library's reason on one line, as every settings error is. TOML's reasons draw the line at
/// fault under a caret over several lines: the drawing is left out (the line and column are
/// kept), the rest is joined, and what remains is escaped and cut in the middle, since .env's
/// reasons quote the whole line at fault and a line can be any length.
fn one_line(reason: &str) -> String {
    let drawing = |line: &str| {
        line.starts_with('|')
            || line
                .split_once(" |")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let lines: Vec<&str> = reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !drawing(l))
        .collect();
    let text = escape_controls(&lines.join("; "));
    const HEAD: usize = 200;
    const TAIL: usize = 80;
    let chars = text.chars().count();
    if chars <= HEAD + TAIL {
        return text;
    }
    let head: String = text.chars().take(HEAD).collect();
    let tail: String = text.chars().skip(chars - TAIL).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn full_env() -> HashMap<String, String> {
        [
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_FROM_NUMBER", "+15005550006"),
            ("ASSEMBLYAI_API_KEY", "key"),
            ("PUBLIC_URL", "https://example.ngrok.app/"),
            ("PATH", "/usr/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn layers_in_precedence_order() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("dialer.toml");
        std::fs::write(
            &toml,
            "port = 7000\npublic_url = \"https://from-toml.example\"\ndefault_region = \"GB\"\n",
        )
        .unwrap();
        let dotenv = dir.path().join(".env");
        std::fs::write(&dotenv, "PORT=7100\nDEFAULT_REGION=US\n").unwrap();
        let mut env = full_env();
        env.remove("PUBLIC_URL");
        env.insert("PORT".into(), "7200".into());
        let mut sources = Sources {
            config_file: Some(toml),
            config_file_required: true,
            dotenv_file: Some(dotenv),
            dotenv_required: true,
            env,
            flags: vec![],
        };
        let s = RawSettings::load(&sources).unwrap().resolve().unwrap();
        assert_eq!(
            s.public_url, "https://from-toml.example",
            "toml when nothing overrides it"
        );
        assert_eq!(s.default_region.as_deref(), Some("US"), ".env beats toml");
        assert_eq!(s.port, 7200, "environment beats .env");
        sources.flags.push(("port", "0".into()));
        let s = RawSettings::load(&sources).unwrap().resolve().unwrap();
        assert_eq!(s.port, 0, "flags beat everything");
        assert_eq!(s.twilio_api_base_url, DEFAULT_TWILIO_API);
        assert_eq!(s.assemblyai_agent_url, DEFAULT_AGENT_URL);
    }

    #[test]
    fn missing_setting_names_itself_and_the_fix() {
        let mut env = full_env();
        env.remove("ASSEMBLYAI_API_KEY");
        let sources = Sources {
            env,
            ..Sources::default()
        };
        let err = RawSettings::load(&sources).unwrap().resolve().unwrap_err();
        assert_eq!(
            err,
            SettingsError::Missing {
                name: "ASSEMBLYAI_API_KEY",
                hint: hint("ASSEMBLYAI_API_KEY")
            }
        );
        assert!(
            err.to_string()
                .starts_with("ASSEMBLYAI_API_KEY is not set: ")
        );
    }

    #[test]
    fn malformed_settings_are_named() {
        for (name, value) in [
            ("TWILIO_ACCOUNT_SID", "SK123"),
            ("TWILIO_FROM_NUMBER", "555-0100"),
            ("PUBLIC_URL", "http://example.com"),
            ("PUBLIC_URL", "not a url"),
            ("PUBLIC_URL", "https://example.com/#top"),
            ("PUBLIC_URL", "HTTP://example.com"),
            ("PUBLIC_URL", "https://user:pw@example.com"),
            ("PORT", "80000"),
            (
                "ASSEMBLYAI_AGENT_URL",
                "https://agents.assemblyai.com/v1/ws",
            ),
        ] {
            let mut env = full_env();
            env.insert(name.into(), value.into());
            let sources = Sources {
                env,
                ..Sources::default()
            };
            let err = RawSettings::load(&sources).unwrap().resolve().unwrap_err();
            assert!(
                matches!(err, SettingsError::Invalid { name: n, .. } if n == name),
                "{name}={value}: {err}"
            );
        }
    }

    #[test]
    fn public_url_may_be_left_out_only_for_a_twilio_on_this_machine() {
        let mut env = full_env();
        env.remove("PUBLIC_URL");
        let load = |env: &HashMap<String, String>| {
            let sources = Sources {
                env: env.clone(),
                ..Sources::default()
            };
            RawSettings::load(&sources).unwrap().resolve()
        };
        assert!(matches!(
            load(&env),
            Err(SettingsError::Missing {
                name: "PUBLIC_URL",
                ..
            })
        ));
        env.insert("TWILIO_API_BASE_URL".into(), "http://127.0.0.1:4010".into());
        assert_eq!(load(&env).unwrap().public_url, "");
    }

    #[test]
    fn the_server_url_is_checked_and_carries_no_credentials() {
        let raw = |v: &str| RawSettings {
            dialer_server: Some(v.into()),
            ..RawSettings::default()
        };
        assert_eq!(
            raw("http://127.0.0.1:8080/")
                .server()
                .unwrap()
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(raw("  ").server().unwrap(), None);
        for bad in ["ftp://x", "not a url", "https://k:secret@example.com"] {
            let e = raw(bad).server().unwrap_err().to_string();
            assert!(e.starts_with("DIALER_SERVER is invalid"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn api_settings_are_checked_and_named() {
        let api = RawSettings::default().api().unwrap();
        assert_eq!(
            (api.rate_per_minute, api.max_calls),
            (120, default_max_calls())
        );
        assert_eq!(api.dnc_file, Some(PathBuf::from(DEFAULT_DNC_FILE)));
        assert!(api.key.is_none() && api.window.is_none());
        let raw = RawSettings {
            dialer_api_key: Some(" k ".into()),
            calling_window: Some("09:00-17:00 mon-fri".into()),
            calling_timezone: Some("America/Chicago".into()),
            max_calls: Some("3".into()),
            ..RawSettings::default()
        };
        let api = raw.api().unwrap();
        assert_eq!(api.key.unwrap().expose(), "k");
        assert_eq!(api.max_calls, 3);
        assert_eq!(api.window.unwrap().1, Some(chrono_tz::America::Chicago));
        for (raw, name) in [
            (
                RawSettings {
                    max_calls: Some("0".into()),
                    ..RawSettings::default()
                },
                "MAX_CALLS",
            ),
            (
                RawSettings {
                    api_rate_limit: Some("x".into()),
                    ..RawSettings::default()
                },
                "API_RATE_LIMIT",
            ),
            (
                RawSettings {
                    calling_window: Some("9-5".into()),
                    ..RawSettings::default()
                },
                "CALLING_WINDOW",
            ),
            (
                RawSettings {
                    calling_timezone: Some("Mars/X".into()),
                    ..RawSettings::default()
                },
                "CALLING_TIMEZONE",
            ),
        ] {
            let e = raw.api().unwrap_err().to_string();
            assert!(e.starts_with(&format!("{name} is invalid")), "{e}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let sources = Sources {
            env: full_env(),
            ..Sources::default()
        };
        let s = RawSettings::load(&sources).unwrap().resolve().unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("tok\"") && !shown.contains("\"key\""),
            "{shown}"
        );
        assert_eq!(s.public_url, "https://example.ngrok.app");
    }

    #[test]
    fn public_url_is_normalised_to_what_twilio_sends_back() {
        let mut env = full_env();
        env.insert("PUBLIC_URL".into(), "HTTPS://Example.NGROK.app/".into());
        let sources = Sources {
            env,
            ..Sources::default()
        };
        let s = RawSettings::load(&sources).unwrap().resolve().unwrap();
        assert_eq!(s.public_url, "https://example.ngrok.app");
    }

    #[test]
    fn a_url_is_kept_as_it_was_checked() {
        let mut env = full_env();
        env.insert(
            "ASSEMBLYAI_AGENT_URL".into(),
            "\u{1b}wss://agents.example.com/v1/\tws".into(),
        );
        env.insert(
            "TWILIO_API_BASE_URL".into(),
            "HTTPS://API.example.com/".into(),
        );
        let sources = Sources {
            env,
            ..Sources::default()
        };
        let s = RawSettings::load(&sources).unwrap().resolve().unwrap();
        assert_eq!(s.assemblyai_agent_url, "wss://agents.example.com/v1/ws");
        assert_eq!(s.twilio_api_base_url, "https://api.example.com");
    }

    #[test]
    fn file_errors_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("dialer.toml");
        std::fs::write(&toml, "port = 8080\npublic_url =\n").unwrap();
        let dotenv = dir.path().join(".env");
        std::fs::write(&dotenv, format!("PORT='{}\u{1b}[2J\n", "x".repeat(10_000))).unwrap();
        for (config_file, dotenv_file, expected) in [
            (
                Some(toml),
                None,
                "line 2, column 13; string values must be quoted",
            ),
            (None, Some(dotenv), "…"),
        ] {
            let sources = Sources {
                config_file_required: config_file.is_some(),
                config_file,
                dotenv_required: dotenv_file.is_some(),
                dotenv_file,
                ..Sources::default()
            };
            let e = RawSettings::load(&sources).unwrap_err().to_string();
            crate::props::assert_clear(&e, MAX_MESSAGE);
            assert!(e.starts_with("cannot read "), "{e}");
            assert!(e.contains(expected), "{e}");
        }
    }

    /// Longest settings error: it quotes the value cut short, and a library's reason on one line.
    const MAX_MESSAGE: usize = 400;

    /// Values near what each setting takes, and garbage.
    fn value(rng: &mut rand::rngs::StdRng) -> Option<String> {
        use crate::props;
        use rand::Rng;
        const NEAR: [&str; 24] = [
            SID,
            "AC0123456789abcdef0123456789abcdeg",
            "ACé123456789abcdef0123456789abcde",
            "+15005550006",
            "+1900555010",
            "https://example.ngrok.app/",
            "http://127.0.0.1:8080",
            "https://user@example.com",
            "https://example.com/?q#f",
            "wss://agents.assemblyai.com/v1/ws",
            "ws://[::1]:9",
            "https://[::1",
            "https://exa mple.com",
            "0",
            "65535",
            "65536",
            "-1",
            "0.0.0.0",
            "::1",
            "256.1.1.1",
            "US",
            "+1900,+44",
            "+,",
            " ",
        ];
        match rng.random_range(0..6) {
            0 => None,
            1 | 2 => Some(NEAR[rng.random_range(0..NEAR.len())].to_string()),
            3 if rng.random_bool(0.05) => Some(props::long_text(rng)),
            _ => Some(props::random_text(rng, &NEAR, 3)),
        }
    }

    /// Good settings with a few values replaced: errors are reported one at a time, in order,
    /// so with every value random only the first setting's errors would ever be seen.
    fn raw(rng: &mut rand::rngs::StdRng) -> RawSettings {
        use rand::Rng;
        let mut pick = |good: &str| {
            if rng.random_bool(0.15) {
                value(rng)
            } else {
                Some(good.to_string())
            }
        };
        RawSettings {
            twilio_account_sid: pick(SID),
            twilio_auth_token: pick("tok"),
            twilio_from_number: pick("+15005550006"),
            assemblyai_api_key: pick("key"),
            public_url: pick("https://example.ngrok.app/"),
            port: pick("8080"),
            bind_address: pick("127.0.0.1"),
            twilio_api_base_url: pick(DEFAULT_TWILIO_API),
            assemblyai_agent_url: pick(DEFAULT_AGENT_URL),
            default_region: pick("US"),
            allow_prefixes: pick("+1900"),
            recordings_dir: pick("recordings"),
            max_calls: pick("100"),
            drain: pick("60s"),
            dnc_file: pick("dnc.txt"),
            ..RawSettings::default()
        }
    }

    #[test]
    fn serve_settings_have_defaults_and_name_themselves_when_wrong() {
        let raw = RawSettings::default();
        assert_eq!(raw.max_calls().unwrap(), default_max_calls());
        assert!(raw.max_calls().unwrap() >= CALLS_PER_CORE);
        assert_eq!(raw.drain().unwrap(), DEFAULT_DRAIN);
        assert_eq!(raw.dnc_file(), PathBuf::from(DEFAULT_DNC_FILE));
        let raw = RawSettings {
            max_calls: Some("25".into()),
            drain: Some("2m".into()),
            dnc_file: Some("lists/dnc.txt".into()),
            ..RawSettings::default()
        };
        assert_eq!(raw.max_calls().unwrap(), 25);
        assert_eq!(raw.drain().unwrap(), std::time::Duration::from_secs(120));
        assert_eq!(raw.dnc_file(), PathBuf::from("lists/dnc.txt"));
        for (v, secs) in [
            ("0", Some(0)),
            ("45s", Some(45)),
            ("45", Some(45)),
            ("1m", Some(60)),
        ] {
            assert_eq!(parse_drain(v).map(|d| d.as_secs()), secs, "{v}");
        }
        for bad in ["", "s", "-1", "1.5s", "1h", "m5"] {
            assert_eq!(parse_drain(bad), None, "{bad}");
        }
        for (field, value, name) in [
            ("max_calls", "0", "MAX_CALLS"),
            ("max_calls", "lots", "MAX_CALLS"),
            ("drain", "61m", "DRAIN"),
            ("drain", "soon", "DRAIN"),
        ] {
            let mut raw = RawSettings::default();
            match field {
                "max_calls" => raw.max_calls = Some(value.into()),
                _ => raw.drain = Some(value.into()),
            }
            let e = match field {
                "max_calls" => raw.max_calls().map(|_| ()).unwrap_err(),
                _ => raw.drain().map(|_| ()).unwrap_err(),
            };
            assert!(e.to_string().starts_with(name), "{e}");
        }
    }

    /// A settings error as a person reads it: one short printable line that starts with the
    /// setting's name (or says which file or source it is about).
    fn assert_names_the_setting(e: &SettingsError) {
        let message = e.to_string();
        crate::props::assert_clear(&message, MAX_MESSAGE);
        assert!(
            NAMES.iter().any(|n| message.starts_with(n))
                || message.starts_with("cannot read ")
                || message.starts_with("settings is invalid: ")
                || message.starts_with("flag is invalid: "),
            "{message:?}"
        );
    }

    /// Whatever the values (near misses of every setting, any characters, tens of kilobytes),
    /// resolving them gives settings that keep the promises their fields document, or one short
    /// printable line naming the setting at fault.
    #[test]
    fn any_values_resolve_or_name_the_setting() {
        crate::props::check(71, crate::props::cases(), raw, |raw| {
            let _ = raw
                .allow_prefixes()
                .map_err(|e| assert_names_the_setting(&e));
            match raw.clone().resolve() {
                Err(e) => assert_names_the_setting(&e),
                Ok(s) => {
                    assert!(s.twilio_account_sid.starts_with("AC"));
                    assert!(s.twilio_from_number.as_str().starts_with('+'));
                    assert!(!s.public_url.ends_with('/'));
                    assert!(!s.public_url.contains(['?', '#']));
                    assert!(
                        s.public_url.is_empty()
                            || s.public_url.starts_with("https://")
                            || is_loopback_url(&s.public_url)
                    );
                    assert!(s.twilio_api_base_url.starts_with("http"));
                    assert!(s.assemblyai_agent_url.starts_with("ws"));
                }
            }
        });
    }

    /// The same values through the environment and the command line, and any text as
    /// `dialer.toml` or `.env`: loading ends in settings or one short printable line.
    #[test]
    fn any_sources_load_or_are_refused_clearly() {
        use crate::props;
        use rand::Rng;
        const FILE_PIECES: [&str; 14] = [
            "port",
            "PORT",
            " = ",
            "=",
            "\"",
            "'",
            "\n",
            "[",
            "]",
            "#",
            "\\",
            "export ",
            "public_url",
            "${X}",
        ];
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("dialer.toml");
        let dotenv = dir.path().join(".env");
        // Each case reads files and builds a `config`: a tenth of the usual count keeps it fast.
        props::check(
            72,
            props::cases().div_ceil(10),
            |rng| {
                let r = raw(rng);
                let env: HashMap<String, String> = [
                    ("TWILIO_ACCOUNT_SID", r.twilio_account_sid),
                    ("TWILIO_AUTH_TOKEN", r.twilio_auth_token),
                    ("TWILIO_FROM_NUMBER", r.twilio_from_number),
                    ("ASSEMBLYAI_API_KEY", r.assemblyai_api_key),
                    ("PUBLIC_URL", r.public_url),
                    ("PORT", r.port),
                    ("BIND_ADDRESS", r.bind_address),
                    ("TWILIO_API_BASE_URL", r.twilio_api_base_url),
                    ("ASSEMBLYAI_AGENT_URL", r.assemblyai_agent_url),
                    ("DEFAULT_REGION", r.default_region),
                    ("ALLOW_PREFIXES", r.allow_prefixes),
                    ("RECORDINGS_DIR", r.recordings_dir),
                ]
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| (n.to_string(), v)))
                .collect();
                let flags: Vec<(&'static str, String)> =
                    [("port", value(rng)), ("public_url", value(rng))]
                        .into_iter()
                        .filter_map(|(k, v)| v.filter(|_| rng.random_bool(0.2)).map(|v| (k, v)))
                        .collect();
                let file = |rng: &mut rand::rngs::StdRng| {
                    rng.random_bool(0.5)
                        .then(|| props::random_text(rng, &FILE_PIECES, 30))
                };
                (env, flags, file(rng), file(rng))
            },
            |(env, flags, toml_text, dotenv_text)| {
                if let Some(text) = toml_text {
                    std::fs::write(&toml, text).unwrap();
                }
                if let Some(text) = dotenv_text {
                    std::fs::write(&dotenv, text).unwrap();
                }
                let sources = Sources {
                    config_file: toml_text.as_ref().map(|_| toml.clone()),
                    config_file_required: true,
                    dotenv_file: dotenv_text.as_ref().map(|_| dotenv.clone()),
                    dotenv_required: true,
                    env: env.clone(),
                    flags: flags.clone(),
                };
                match RawSettings::load(&sources) {
                    Err(e) => assert_names_the_setting(&e),
                    Ok(raw) => {
                        if let Err(e) = raw.resolve() {
                            assert_names_the_setting(&e);
                        }
                    }
                }
            },
        );
    }
}
