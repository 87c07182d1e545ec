//! The `flowgate` command line: `serve`, `check`, `demo`. Library errors are turned
//! into messages and exit codes here, at the edge.

use crate::config::ConfigError;
use crate::gateway::Gateway;
use crate::server::{self, Listeners};
use crate::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// flowgate: a TLS gateway in front of HTTP-triggered automation flows.
#[derive(Debug, Parser)]
#[command(name = "flowgate", version, about, long_about = None)]
pub struct Cli {
    /// Log line format.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway with a policy file (reloaded on change and on SIGHUP).
    Serve {
        /// The policy file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a policy file offline: exit 0 with a summary, or 1 with every error as FILE:LINE:COL.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Run the demo: gateway on https://127.0.0.1:8443 with a built-in echo upstream and
    /// development certificates in certs/; prints ready-to-paste curl commands.
    Demo(DemoArgs),
}

/// `flowgate demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The demo policy.
    #[arg(long, default_value = "config/demo.toml")]
    pub config: PathBuf,
    /// Gateway HTTPS address (overrides the policy).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Admin address (overrides the policy).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Where development certificates are kept (generated on first run).
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve(&config).await,
            Command::Check { file } => check(&file),
            Command::Demo(args) => demo(args).await,
        }
    })
}

fn print_errors(errors: &[ConfigError]) {
    for error in errors {
        eprintln!("{error}");
    }
}

fn check(file: &Path) -> ExitCode {
    match crate::policy::load(file) {
        Ok(policy) => {
            println!("{}: ok: {} trigger(s), policy version {}", file.display(), policy.routes.len(), policy.version);
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            eprintln!("{} error(s) in {}; the policy is refused", errors.len(), file.display());
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: &Path) -> ExitCode {
    let policy = match crate::policy::load(config) {
        Ok(policy) => policy,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    run_gateway(policy, config).await
}

/// Binds, starts reload watchers, and serves until SIGTERM or SIGINT.
async fn run_gateway(policy: crate::policy::Policy, config: &Path) -> ExitCode {
    let listeners = match Listeners::bind(&policy).await {
        Ok(listeners) => listeners,
        Err(error) => {
            eprintln!("flowgate: {error}");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match Gateway::new(policy, Some(config.to_path_buf())) {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("flowgate: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = listeners.https_addr() {
        tracing::info!(%addr, "HTTPS listener");
    }
    if let Some(addr) = listeners.plain_addr() {
        tracing::warn!(%addr, "plain-HTTP listener (only for use behind a TLS-terminating load balancer)");
    }
    if let Some(addr) = listeners.admin_addr() {
        tracing::info!(%addr, "admin listener");
    }
    let _watcher = match crate::reload::watch_files(gateway.clone(), config) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the policy file; reload with SIGHUP");
            None
        }
    };
    if let Err(error) = crate::reload::reload_on_sighup(gateway.clone()) {
        tracing::warn!(%error, "cannot handle SIGHUP");
    }
    match server::run(gateway, listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flowgate: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The echo upstream's fixed demo address (named in config/demo.toml).
pub const DEMO_ECHO_ADDR: &str = "127.0.0.1:9980";

async fn demo(args: DemoArgs) -> ExitCode {
    let certs = match crate::tls::dev::ensure_dev_certs(&args.certs) {
        Ok(certs) => certs,
        Err(error) => {
            eprintln!("flowgate demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    let echo = match tokio::net::TcpListener::bind(DEMO_ECHO_ADDR).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("flowgate demo: cannot start the echo upstream on {DEMO_ECHO_ADDR}: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(crate::demo::serve_echo(echo));
    let mut policy = match crate::policy::load(&args.config) {
        Ok(policy) => policy,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    policy.server.listen = args.listen;
    policy.admin_listen = Some(args.admin);
    let base = format!("https://{}", args.listen);
    let cacert = certs.ca_cert.display();
    println!("flowgate demo: gateway {base}, admin http://{}, echo upstream http://{DEMO_ECHO_ADDR}", args.admin);
    println!("Try these from the project root:");
    for trigger in policy.routes.triggers() {
        let method = trigger.methods.first().map_or("POST", |m| m.as_str());
        let body = if method == "GET" {
            String::new()
        } else {
            " -H 'content-type: application/json' -d '{\"hello\":\"flowgate\"}'".to_owned()
        };
        println!("curl --cacert {cacert} -X {method} {base}{}{body}", trigger.path);
    }
    run_gateway(policy, &args.config).await
}
