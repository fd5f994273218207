//! The command line. Each argument is validated once, here, by its value parser; settings
//! files and the environment are validated by `settings`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "dialer",
    version,
    about = "Outbound AI phone calls: Twilio Media Streams bridged to AssemblyAI's Voice Agent API",
    long_about = "Outbound AI phone calls: Twilio Media Streams bridged to AssemblyAI's Voice Agent API.\n\nSettings come from dialer.toml, .env, the environment and flags (see README.md). Add --simulate to any command to run it against the built-in Twilio and Voice Agent simulators, with no accounts."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Settings file (default: ./dialer.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Environment file (default: ./.env if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Print one JSON event per line on stdout instead of the live view.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call one number: live transcript, then the outcome; the exit code tells how it ended.
    Call(CallArgs),
    /// Work through a CSV of leads: pacing, retries, calling hours, do-not-call, resume.
    Campaign(CampaignArgs),
    /// Answer incoming calls with the agent, serve Twilio's webhooks and the call API
    /// (`/api/calls`) until Ctrl-C or SIGTERM (which drains: live calls finish, new ones are
    /// turned away).
    Serve(ServeArgs),
    /// Check every setting against Twilio and AssemblyAI, and that PUBLIC_URL reaches this
    /// machine: one line per check; the exit code is 7 when any check failed.
    Doctor(DoctorArgs),
    /// Run the Twilio and Voice Agent simulators alone until Ctrl-C, printing the settings that
    /// point dialer (or anything else) at them.
    #[cfg(feature = "simulate")]
    Simulators(SimulatorsArgs),
}

/// Flags shared by every command that talks to Twilio.
#[derive(Debug, Args, Clone, Default)]
pub struct ServerArgs {
    /// Run against the built-in Twilio and Voice Agent simulators (no accounts needed).
    #[arg(long)]
    pub simulate: bool,

    /// With --simulate: run this many times faster than real time.
    #[arg(
        long,
        value_name = "FACTOR",
        default_value_t = 1.0,
        requires = "simulate",
        value_parser = speed_factor
    )]
    pub sim_speed: f64,

    /// Public HTTPS URL Twilio uses to reach this machine (PUBLIC_URL).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// Port of the embedded server (PORT; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
}

/// Agent settings that flags may override.
#[derive(Debug, Args, Clone, Default)]
pub struct AgentArgs {
    /// Agent file (TOML with an [agent] table); campaigns/agent.example.toml shows one.
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,

    /// The agent's instructions.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,

    /// The agent's first words (should say the call is automated).
    #[arg(long, value_name = "TEXT")]
    pub greeting: Option<String>,

    /// Voice name (e.g. alba, jane, michael).
    #[arg(long)]
    pub voice: Option<String>,

    /// Speech detection sensitivity, 0.0–1.0 (lower is more sensitive).
    #[arg(long, value_name = "N")]
    pub vad_threshold: Option<f64>,

    /// Milliseconds of silence before the agent considers the callee's turn over.
    #[arg(long, value_name = "MS")]
    pub min_silence: Option<u32>,

    /// Milliseconds of silence that always end the callee's turn.
    #[arg(long, value_name = "MS")]
    pub max_silence: Option<u32>,

    /// Do not let the callee interrupt the agent.
    #[arg(long)]
    pub no_interrupt: bool,

    /// Leave this message on an answering machine, after its beep, in the agent's voice
    /// (without it a machine is hung up on at once).
    #[arg(long, value_name = "TEXT")]
    pub voicemail_message: Option<String>,

    /// Give the agent a transfer_call tool that hands the call to this number (E.164) or
    /// SIP URI (sip:desk@pbx.example.com).
    #[arg(long, value_name = "NUMBER")]
    pub transfer_to: Option<String>,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The number to call, in E.164 (+15551234567) or national format with DEFAULT_REGION.
    pub number: String,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(flatten)]
    pub agent: AgentArgs,

    /// Seconds to let it ring before giving up (15–600).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = ring_timeout)]
    pub ring_timeout: u64,

    /// Longest the call may last, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub time_limit: u64,

    /// Do not ask Twilio for answering-machine detection.
    #[arg(long)]
    pub no_amd: bool,

    /// Record the call: Twilio keeps a dual-channel recording, and a stereo WAV (callee left,
    /// agent right) is written here. The greeting must say the call is recorded.
    #[arg(long)]
    pub record: bool,

    /// Folder for --record's WAV files, one per call named by its call SID (RECORDINGS_DIR;
    /// default: recordings).
    #[arg(long, value_name = "DIR")]
    pub recordings_dir: Option<PathBuf>,

    /// Allow a number that is refused by default (premium rate, satellite, N11) when it starts
    /// with this prefix, like +1900 or +44 (repeat or separate with commas; ALLOW_PREFIXES).
    #[arg(long = "allow-prefix", value_name = "PREFIX", value_delimiter = ',')]
    pub allow_prefix: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CampaignArgs {
    /// The leads CSV (a header row with a phone column; other columns become variables).
    pub csv: PathBuf,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,

    /// Campaign file: the agent and the campaign's rules (default: the CSV's name with .toml).
    #[arg(long, visible_alias = "agent", value_name = "FILE")]
    pub campaign: Option<PathBuf>,

    /// State database (default: the CSV's name with .db; .sim.db with --simulate).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,

    /// Results folder (default: the CSV's name with -results; -sim-results with --simulate).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Only write the results files from the database, without dialing.
    #[arg(long)]
    pub export: bool,
}

#[cfg(feature = "simulate")]
#[derive(Debug, Args)]
pub struct SimulatorsArgs {
    /// Run this many times faster than real time.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0, value_parser = speed_factor)]
    pub sim_speed: f64,

    /// Instead of starting simulators, have the running fake Twilio at --twilio ring this Voice
    /// URL (a `dialer serve`'s /twilio/voice) as an inbound caller, and wait for the call to end.
    #[arg(long, value_name = "VOICE_URL", requires = "twilio")]
    pub ring: Option<String>,

    /// The running fake Twilio's base URL (what `dialer serve --simulate` or `dialer
    /// simulators` printed as TWILIO_API_BASE_URL).
    #[arg(long, value_name = "URL", requires = "ring")]
    pub twilio: Option<String>,

    /// With --ring: who calls, by persona name (agrees, opts-out, reschedules…; see README).
    #[arg(long, value_name = "NAME", requires = "ring", conflicts_with = "from")]
    pub persona: Option<String>,

    /// With --ring: the caller's number (its last two digits pick the persona).
    #[arg(long, value_name = "NUMBER", requires = "ring")]
    pub from: Option<String>,

    /// With --ring: the number's status callback (default: the Voice URL's sibling
    /// /twilio/status).
    #[arg(long, value_name = "URL", requires = "ring")]
    pub status_callback: Option<String>,
}

/// Placing calls through a `dialer serve` instead of this machine's Twilio account.
#[derive(Debug, Args, Clone, Default)]
pub struct RemoteArgs {
    /// Place the calls through the call API of a `dialer serve` at this URL
    /// (DIALER_SERVER; its key in DIALER_API_KEY).
    #[arg(long = "server", value_name = "URL")]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// The agent whose trial session checks the AssemblyAI key.
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// The inbound agent (default: the [agent] table of dialer.toml, else an assistant that
    /// answers calls). Its greeting and prompt may use {{caller}} and {{called}}.
    #[command(flatten)]
    pub agent: AgentArgs,

    /// Most live calls, both ways; incoming calls past it are told the lines are busy
    /// (MAX_CALLS; default 500 per core).
    #[arg(long, value_name = "N")]
    pub max_calls: Option<String>,

    /// How long live calls may go on after the first Ctrl-C or SIGTERM before they are hung
    /// up, e.g. 60s or 2m (DRAIN; default 60s).
    #[arg(long, value_name = "TIME")]
    pub drain: Option<String>,

    /// Do-not-call list that callers who opt out are added to (DNC_FILE; default
    /// do-not-call.txt).
    #[arg(long, value_name = "FILE")]
    pub dnc: Option<String>,

    /// Longest an incoming call may last, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub time_limit: u64,
}

/// `--sim-speed`: a positive, finite factor.
fn speed_factor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f.is_finite() => Ok(f),
        _ => Err("must be a positive number (10 runs ten times faster than real time)".into()),
    }
}

/// `--ring-timeout`: within what `call::dialer::RING_TIMEOUT_SECS` allows.
fn ring_timeout(s: &str) -> Result<u64, String> {
    let range = crate::call::dialer::RING_TIMEOUT_SECS;
    match s.parse::<u64>() {
        Ok(secs) if range.contains(&secs) => Ok(secs),
        _ => Err(format!(
            "must be {}–{} seconds (shorter than {} s hangs up on people reaching for the phone)",
            range.start(),
            range.end(),
            range.start()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sim_speed_requires_simulate() {
        assert!(
            Cli::try_parse_from(["dialer", "call", "+12025550100", "--sim-speed", "5"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "dialer",
            "call",
            "+12025550100",
            "--simulate",
            "--sim-speed",
            "5",
        ])
        .unwrap();
        let Command::Call(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.server.sim_speed, 5.0);
    }

    #[test]
    fn bad_factors_and_ring_timeouts_are_refused_at_parse_time() {
        for bad in ["0", "-1", "inf", "NaN", "fast"] {
            assert!(
                Cli::try_parse_from(["dialer", "simulators", "--sim-speed", bad]).is_err(),
                "{bad}"
            );
        }
        for (secs, ok) in [("14", false), ("15", true), ("600", true), ("601", false)] {
            let parsed =
                Cli::try_parse_from(["dialer", "call", "+12025550100", "--ring-timeout", secs]);
            assert_eq!(parsed.is_ok(), ok, "{secs}");
        }
    }
}
