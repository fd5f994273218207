//! The composition root: turns settings (and, with `--simulate`, the simulators) into the
//! running application — the webhook server, the registry of live calls, the call service —
//! for every command and for the tests. Settings are loaded once, here; commands only parse,
//! build, run and report.

use crate::call::registry::Registry;
use crate::call::service::{CallService, Endpoints};
use crate::cli::ServerArgs;
use crate::error::AppError;
use crate::inbound::Reception;
use crate::metrics::Metrics;
use crate::server::desk::{Desk, DeskConfig};
use crate::server::{self, Api, ApiSlot, ServerState};
use crate::settings::{ApiSettings, RawSettings, Settings, Sources};
use crate::shutdown::Shutdown;
use crate::twilio::TwilioClient;
use crate::webhooks::PublicUrls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "simulate")]
pub use crate::sim::Simulation;

/// Stands in for the simulators in a build without them, so the code that holds one still
/// compiles and no value of it can exist.
#[cfg(not(feature = "simulate"))]
#[derive(Debug)]
pub enum Simulation {}

/// `dialer serve`'s own settings.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub max_calls: usize,
    pub drain: std::time::Duration,
    pub dnc_file: std::path::PathBuf,
}

/// A command's settings, loaded once, and whether it runs against the simulators.
#[derive(Debug)]
pub struct Startup {
    raw: RawSettings,
    /// Simulated seconds per real second, when simulating.
    sim_speed: Option<f64>,
}

impl Startup {
    /// Load the settings from `sources`, with the server flags on top.
    pub fn load(mut sources: Sources, args: &ServerArgs) -> Result<Self, AppError> {
        if args.simulate && !cfg!(feature = "simulate") {
            return Err(AppError::Input(NO_SIMULATORS.into()));
        }
        if let Some(url) = &args.public_url {
            sources.flags.push(("public_url", url.clone()));
        }
        if let Some(port) = args.port {
            sources.flags.push(("port", port.to_string()));
        }
        Ok(Self {
            raw: RawSettings::load(&sources)?,
            sim_speed: args.simulate.then_some(args.sim_speed),
        })
    }

    /// `DEFAULT_REGION`, for reading national numbers before anything starts.
    pub fn default_region(&self) -> Option<&str> {
        self.raw.default_region()
    }

    /// The numbers refused by default that may be dialed: `ALLOW_PREFIXES` and `extra`.
    pub fn allow_list(&self, extra: &[String]) -> Result<crate::phone::AllowList, AppError> {
        let mut prefixes = self.raw.allow_prefixes()?;
        prefixes.extend(extra.iter().cloned());
        crate::phone::AllowList::new(&prefixes).map_err(AppError::Input)
    }

    /// Where `dialer call --record` writes: `flag` (`--recordings-dir`), else `RECORDINGS_DIR`,
    /// else `recordings`.
    pub fn recordings_dir(&self, flag: Option<&std::path::Path>) -> std::path::PathBuf {
        flag.map_or_else(|| self.raw.recordings_dir(), std::path::Path::to_path_buf)
    }

    /// The call API's settings (`serve`).
    pub fn api_settings(&self) -> Result<ApiSettings, AppError> {
        Ok(self.raw.api()?)
    }

    /// The `dialer serve` to place calls through (`--server`, `DIALER_SERVER`), and the key
    /// to send it.
    pub fn remote(&self) -> Result<Option<(url::Url, Option<crate::secret::Secret>)>, AppError> {
        Ok(self.raw.server()?.map(|url| (url, self.raw.api_key())))
    }

    /// What `dialer serve` needs beyond the server: `MAX_CALLS`, `DRAIN`, `DNC_FILE`.
    pub fn serve_settings(&self) -> Result<ServeSettings, AppError> {
        Ok(ServeSettings {
            max_calls: self.raw.max_calls()?,
            drain: self.raw.drain()?,
            dnc_file: self.raw.dnc_file(),
        })
    }

    /// Simulated seconds per real second, when running against the simulators.
    pub fn sim_speed(&self) -> Option<f64> {
        self.sim_speed
    }

    /// Validate the settings (or start the simulators) and start the application.
    pub async fn start(self, shutdown: &Shutdown) -> Result<App, AppError> {
        match self.sim_speed {
            None => App::start(self.raw.resolve()?, None, shutdown).await,
            Some(speed) => {
                let region = self.raw.default_region().map(str::to_string);
                let (settings, sim) = simulate(speed, region, shutdown).await?;
                App::start(settings, Some(sim), shutdown).await
            }
        }
    }
}

/// Start the simulators, and settings that point the real client code at them. The public URL
/// is left empty: the server, once bound, is its own public URL.
#[cfg(feature = "simulate")]
pub async fn simulate(
    speed: f64,
    default_region: Option<String>,
    shutdown: &Shutdown,
) -> Result<(Settings, Simulation), AppError> {
    let sim = Simulation::start(crate::sim::TimeScale(1.0 / speed), shutdown.child())
        .await
        .map_err(|e| AppError::Other(format!("cannot start the simulators: {e}")))?;
    let settings = simulated_settings(&sim.endpoints(), default_region)?;
    Ok((settings, sim))
}

/// Settings that point the real client code at running simulators. The simulators hand out
/// plain strings; they are checked here like any other settings, so a simulator that gave a
/// malformed number would be caught, not trusted. Public so tests that start the simulators
/// with their own configuration ([`Simulation::start_with`]) get the same settings.
#[cfg(feature = "simulate")]
pub fn simulated_settings(
    endpoints: &crate::sim::SimEndpoints,
    default_region: Option<String>,
) -> Result<Settings, AppError> {
    let from = crate::phone::E164::parse(&endpoints.from_number)
        .map_err(|e| AppError::Other(format!("the simulators' own number is invalid: {e}")))?;
    Ok(Settings {
        twilio_account_sid: endpoints.account_sid.clone(),
        twilio_auth_token: crate::secret::Secret::new(endpoints.auth_token.clone()),
        twilio_from_number: from,
        assemblyai_api_key: crate::secret::Secret::new(endpoints.api_key.clone()),
        public_url: String::new(),
        port: 0,
        bind_address: [127, 0, 0, 1].into(),
        twilio_api_base_url: endpoints.twilio_api_base_url.clone(),
        assemblyai_agent_url: endpoints.agent_url.clone(),
        default_region,
    })
}

#[cfg(not(feature = "simulate"))]
async fn simulate(
    _speed: f64,
    _default_region: Option<String>,
    _shutdown: &Shutdown,
) -> Result<(Settings, Simulation), AppError> {
    Err(AppError::Input(NO_SIMULATORS.into()))
}

/// What `--simulate` says in a build without the simulators.
pub const NO_SIMULATORS: &str =
    "this build has no simulators: rebuild with the default `simulate` feature";

/// The running application. Dropping it does not stop the server; [`App::stop`] does, and the
/// root [`Shutdown`] stops whatever is left at exit.
pub struct App {
    pub service: Arc<CallService>,
    pub registry: Arc<Registry>,
    pub settings: Settings,
    pub urls: PublicUrls,
    pub server_addr: SocketAddr,
    /// This process's id, as the server's `/health` answers it.
    pub instance: String,
    pub simulation: Option<Simulation>,
    /// The process's counters, shown at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Answers incoming calls; refuses them until `dialer serve` opens it.
    pub reception: Arc<Reception>,
    server_token: CancellationToken,
    server: JoinHandle<()>,
    api: ApiSlot,
}

impl App {
    /// Bind the server and build the call service. With an empty public URL the server is its
    /// own public URL (the simulators reach it directly).
    pub async fn start(
        settings: Settings,
        simulation: Option<Simulation>,
        shutdown: &Shutdown,
    ) -> Result<App, AppError> {
        let addr = SocketAddr::new(settings.bind_address, settings.port);
        let listener = server::bind(addr).await.map_err(|e| {
            AppError::Other(format!(
                "cannot listen on {addr}: {e} (set PORT to a free port)"
            ))
        })?;
        let server_addr = listener.local_addr()?;
        let urls = PublicUrls::new(&if settings.public_url.is_empty() {
            format!("http://{server_addr}")
        } else {
            settings.public_url.clone()
        });
        let registry = Arc::new(Registry::new());
        let api = ApiSlot::default();
        // Random, so that two processes (a restart, another machine behind the same tunnel)
        // never answer alike; 64 bits is plenty to tell a handful apart.
        let instance = format!("{:016x}", rand::random::<u64>());
        let metrics = Arc::new(Metrics::new());
        let reception = Arc::new(Reception::new(
            registry.clone(),
            metrics.clone(),
            urls.clone(),
            shutdown.child(),
        ));
        let state = ServerState {
            registry: registry.clone(),
            auth_token: settings.twilio_auth_token.clone(),
            urls: urls.clone(),
            api: api.clone(),
            instance: instance.clone(),
            metrics: metrics.clone(),
            reception: reception.clone(),
        };
        // Every call the server accepts runs on these: ready before the first.
        crate::shards::warm();
        let server_token = shutdown.child();
        let server = shutdown.spawn(server::serve(
            listener,
            state,
            server::Limits::default(),
            server_token.clone(),
        ));
        let twilio = TwilioClient::new(
            &settings.twilio_api_base_url,
            &settings.twilio_account_sid,
            settings.twilio_auth_token.clone(),
        );
        let service = CallService::new(
            twilio,
            Endpoints {
                from: settings.twilio_from_number.clone(),
                urls: urls.clone(),
                agent_url: settings.assemblyai_agent_url.clone(),
                agent_key: settings.assemblyai_api_key.clone(),
            },
            registry.clone(),
        )
        .with_metrics(metrics.clone());
        tracing::info!(%server_addr, public_url = urls.base(), simulate = simulation.is_some(), "webhook server listening");
        Ok(App {
            service: Arc::new(service),
            registry,
            settings,
            urls,
            server_addr,
            instance,
            simulation,
            metrics,
            reception,
            server_token,
            server,
            api,
        })
    }

    /// Answer the call API (`/api/`) from now on, with the server's own checks: its
    /// do-not-call file, calling window, allowed prefixes and live-call limit. Calls it places
    /// are followed in tasks of `shutdown`, and hung up when it is cancelled.
    pub fn enable_api(
        &self,
        settings: &ApiSettings,
        allow: crate::phone::AllowList,
        shutdown: &Shutdown,
    ) -> Result<(), AppError> {
        let region = self.settings.default_region.clone();
        let files: Vec<_> = settings.dnc_file.iter().cloned().collect();
        // National lines are read as North American numbers too, as a campaign calling +1
        // numbers reads them: a list that blocks more fails closed.
        let dnc = crate::campaign::dnc::DncList::load_in(&files, region.as_deref(), true)
            .map_err(|e| AppError::Input(format!("DNC_FILE: {e}")))?;
        let desk = Desk::new(
            self.service.clone(),
            DeskConfig {
                max_calls: settings.max_calls,
                registry: self.registry.clone(),
                dnc,
                window: settings.window,
                allow,
                region,
                view: self.reception.events(),
                recordings_dir: settings.recordings_dir.clone(),
            },
            shutdown,
        );
        let api = Api::new(
            desk,
            self.metrics.clone(),
            settings.key.clone(),
            settings.rate_per_minute,
        );
        self.api
            .set(Arc::new(api))
            .map_err(|_| AppError::Other("the call API is already enabled".into()))
    }

    /// Refuse new API calls (503) while live ones go on; `None` when the API is not enabled.
    pub fn close_api(&self) {
        if let Some(api) = self.api.get() {
            api.desk().close();
        }
    }

    /// Hang up every live API call (their ends still need the server: Twilio confirms them
    /// through it).
    pub fn hang_up_api_calls(&self) {
        if let Some(api) = self.api.get() {
            api.desk().hang_up_all();
        }
    }

    /// Live calls placed through the API.
    pub fn api_live_calls(&self) -> usize {
        self.api
            .get()
            .map_or(0, |a| a.desk().journal().live_count())
    }

    /// Stop the server, letting requests in flight finish.
    pub async fn stop(self) {
        self.server_token.cancel();
        let _ = self.server.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "simulate"))]
    #[test]
    fn without_the_simulators_simulate_is_refused_before_anything_is_read() {
        let args = ServerArgs {
            simulate: true,
            ..ServerArgs::default()
        };
        let e = Startup::load(Sources::default(), &args).unwrap_err();
        assert_eq!(e.to_string(), NO_SIMULATORS);
        assert_eq!(e.exit(), crate::error::Exit::Config);
    }

    #[cfg(feature = "simulate")]
    #[tokio::test]
    async fn simulated_settings_point_at_the_simulators_and_keep_the_region() {
        let shutdown = Shutdown::new();
        let (settings, sim) = simulate(50.0, Some("GB".into()), &shutdown).await.unwrap();
        let endpoints = sim.endpoints();
        assert_eq!(settings.twilio_api_base_url, endpoints.twilio_api_base_url);
        assert_eq!(settings.assemblyai_agent_url, endpoints.agent_url);
        assert_eq!(settings.twilio_from_number.as_str(), endpoints.from_number);
        assert_eq!(settings.default_region.as_deref(), Some("GB"));
        assert_eq!(settings.public_url, "", "the server is its own public URL");
        shutdown.finish().await;
    }
}
