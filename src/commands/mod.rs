//! The commands: each turns parsed arguments into settings, starts what it needs (the webhook
//! server, the simulators), runs, and returns the exit status. `main` only maps the result.

pub mod call;
pub mod campaign;
pub mod serve;
#[cfg(feature = "simulate")]
pub mod simulators;

use crate::call::registry::Registry;
use crate::call::service::{CallService, Endpoints};
use crate::cli::{Cli, Command, ServerArgs};
use crate::error::{AppError, Exit};
use crate::server::{self, ServerState};
use crate::settings::{RawSettings, Settings, Sources};
#[cfg(feature = "simulate")]
use crate::sim::{SimEndpoints, Simulation, TimeScale};
use crate::twilio::TwilioClient;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Stands in for the simulators in a build without them: it has no values, so a stack's
/// `simulation` is always `None` and code that asks for it needs no feature gates of its own.
#[cfg(not(feature = "simulate"))]
pub enum Simulation {}

/// What `--simulate` gets from a build without the simulators.
#[cfg(not(feature = "simulate"))]
fn no_simulators() -> AppError {
    AppError::Input(
        "this build has no simulators: rebuild with the default `simulate` feature".into(),
    )
}

/// Settings that point the client at running simulators: their credentials and endpoints,
/// with only the default region from the user's settings. The public URL is left empty, so
/// the server is its own (the simulators reach it directly).
#[cfg(feature = "simulate")]
pub fn simulated_settings(endpoints: &SimEndpoints, default_region: Option<String>) -> Settings {
    Settings {
        twilio_account_sid: endpoints.account_sid.clone(),
        twilio_auth_token: crate::secret::Secret::new(endpoints.auth_token.clone()),
        twilio_from_number: crate::phone::E164::parse(&endpoints.from_number)
            .expect("the simulator's own number is valid"),
        assemblyai_api_key: crate::secret::Secret::new(endpoints.api_key.clone()),
        public_url: String::new(),
        port: 0,
        bind_address: [127, 0, 0, 1].into(),
        twilio_api_base_url: endpoints.twilio_api_base_url.clone(),
        assemblyai_agent_url: endpoints.agent_url.clone(),
        default_region: default_region.filter(|r| !r.trim().is_empty()),
    }
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<Exit, AppError> {
    // Refused before any file is read, so the one line says what is wrong.
    #[cfg(not(feature = "simulate"))]
    {
        let server = match &cli.command {
            Command::Call(args) => &args.server,
            Command::Campaign(args) => &args.server,
            Command::Serve(args) => &args.server,
        };
        if server.simulate {
            return Err(no_simulators());
        }
    }
    let sources = |server: &ServerArgs| {
        let mut s = Sources::standard(cli.config.clone(), cli.env_file.clone());
        if let Some(url) = &server.public_url {
            s.flags.push(("public_url", url.clone()));
        }
        if let Some(port) = server.port {
            s.flags.push(("port", port.to_string()));
        }
        s
    };
    match cli.command {
        Command::Call(ref args) => {
            call::run(&args.server.clone(), args, sources(&args.server), cli.json).await
        }
        Command::Campaign(ref args) => {
            campaign::run(&args.server.clone(), args, sources(&args.server), cli.json).await
        }
        Command::Serve(ref args) => serve::run(&args.server, sources(&args.server)).await,
        #[cfg(feature = "simulate")]
        Command::Simulators(ref args) => simulators::run(args).await,
    }
}

/// Everything a command needs to place calls: the call service, the running webhook server,
/// and the simulators when simulating. Dropping it does not stop the server; `shutdown` does.
pub struct Stack {
    pub service: Arc<CallService>,
    pub registry: Arc<Registry>,
    pub server_addr: SocketAddr,
    pub public_url: String,
    pub default_region: Option<String>,
    pub shutdown: CancellationToken,
    server: JoinHandle<()>,
    /// Kept alive while the stack runs.
    pub simulation: Option<Simulation>,
}

impl Stack {
    /// Start the server (and the simulators), with settings from `sources`.
    pub async fn start(args: &ServerArgs, sources: Sources) -> Result<Stack, AppError> {
        let shutdown = CancellationToken::new();
        let raw = RawSettings::load(&sources)?;
        let default_region = raw.default_region.clone();
        let (settings, simulation) = if args.simulate {
            #[cfg(not(feature = "simulate"))]
            return Err(no_simulators());
            #[cfg(feature = "simulate")]
            {
                if !(args.sim_speed > 0.0 && args.sim_speed.is_finite()) {
                    return Err(AppError::Input(
                        "--sim-speed must be a positive number".into(),
                    ));
                }
                let sim =
                    Simulation::start(TimeScale(1.0 / args.sim_speed), shutdown.child_token())
                        .await
                        .map_err(|e| {
                            AppError::Other(format!("cannot start the simulators: {e}"))
                        })?;
                let settings = simulated_settings(&sim.endpoints(), raw.default_region.clone());
                (settings, Some(sim))
            }
        } else {
            (raw.resolve()?, None)
        };
        Self::start_with(settings, simulation, shutdown, default_region).await
    }

    /// Start with settings already made (tests point them at simulators they control). With an
    /// empty public URL the server is its own public URL (simulators reach it directly).
    pub async fn start_with(
        settings: Settings,
        simulation: Option<Simulation>,
        shutdown: CancellationToken,
        default_region: Option<String>,
    ) -> Result<Stack, AppError> {
        let addr = SocketAddr::new(settings.bind_address, settings.port);
        let listener = server::bind(addr).await.map_err(|e| {
            AppError::Other(format!(
                "cannot listen on {addr}: {e} (set PORT to a free port)"
            ))
        })?;
        let server_addr = listener.local_addr()?;
        // Simulators reach the server directly; with no public URL it is its own.
        let public_url = if settings.public_url.is_empty() {
            format!("http://{server_addr}")
        } else {
            settings.public_url.clone()
        };
        let registry = Arc::new(Registry::new());
        let state = ServerState {
            registry: registry.clone(),
            auth_token: settings.twilio_auth_token.clone(),
            public_url: public_url.clone(),
        };
        let server = tokio::spawn(server::serve(listener, state, shutdown.child_token()));
        let twilio = TwilioClient::new(
            &settings.twilio_api_base_url,
            &settings.twilio_account_sid,
            settings.twilio_auth_token.clone(),
        );
        let service = CallService::new(
            twilio,
            Endpoints {
                from: settings.twilio_from_number.clone(),
                public_url: public_url.clone(),
                agent_url: settings.assemblyai_agent_url.clone(),
                agent_key: settings.assemblyai_api_key.clone(),
            },
            registry.clone(),
        );
        tracing::info!(%server_addr, %public_url, simulate = simulation.is_some(), "webhook server listening");
        Ok(Stack {
            service: Arc::new(service),
            registry,
            server_addr,
            public_url,
            default_region,
            shutdown,
            server,
            simulation,
        })
    }

    /// Stop the server and the simulators.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.server).await;
    }
}

/// Resolves on the first Ctrl-C (or SIGTERM), then again on the second.
pub struct Interrupts {
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Interrupts {
    pub fn listen() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                #[cfg(unix)]
                let got = tokio::select! {
                    r = tokio::signal::ctrl_c() => r.is_ok(),
                    Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => true,
                };
                #[cfg(not(unix))]
                let got = tokio::signal::ctrl_c().await.is_ok();
                if !got || tx.send(()).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    pub async fn next(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(all(test, not(feature = "simulate")))]
mod tests {
    use super::*;
    use clap::Parser;

    #[tokio::test]
    async fn simulate_in_a_build_without_simulators_is_one_line_and_exit_2() {
        for args in [
            &["dialer", "call", "+12025550100", "--simulate"][..],
            &["dialer", "campaign", "no-such.csv", "--simulate"],
            &["dialer", "serve", "--simulate"],
        ] {
            let err = run(Cli::try_parse_from(args).unwrap()).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                "this build has no simulators: rebuild with the default `simulate` feature"
            );
            assert_eq!(err.exit(), Exit::Config);
        }
    }
}
