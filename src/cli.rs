//! The `flowgate` command line: `serve`, `check`, `demo`. Library errors are turned
//! into messages and exit codes here, at the edge.

mod sign_webhook;

use crate::config::ConfigError;
use crate::gateway::Gateway;
use crate::server::{self, Listeners};
use crate::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// flowgate: a TLS gateway in front of HTTP-triggered automation flows.
#[derive(Debug, Parser)]
#[command(name = "flowgate", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log line format.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Threads running calls. Default: one per core this process may use. With 1 (for
    /// example a process pinned to one core) a single-threaded runtime runs everything,
    /// which skips the work-stealing scheduler's cross-thread bookkeeping.
    #[arg(long, global = true, env = "FLOWGATE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// How more than one thread runs calls: `thread-per-core` (the default) gives each
    /// thread its own single-threaded runtime and its own `SO_REUSEPORT` listener, with
    /// the admin API and reloads on the main thread; `work-stealing` runs everything on
    /// one tokio multi-threaded runtime. Ignored with one thread.
    #[arg(long, global = true, env = "FLOWGATE_RUNTIME", value_enum)]
    pub runtime: Option<RuntimeKind>,
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
    /// Validate a policy file offline: exit 0 with a summary, or 1 with every error as <FILE:LINE:COL>.
    /// With --diff OLD, also show what changes from OLD to FILE (loosened / tightened rules).
    /// Prints each trigger's effective rules on one line: who may call, IP rules, rate
    /// limit with its source (trigger, global or built-in default) and secret references.
    Check {
        /// The policy file.
        file: PathBuf,
        /// An older policy to compare FILE with. Secret values are never resolved or printed.
        #[arg(long, value_name = "OLD")]
        diff: Option<PathBuf>,
    },
    /// Print the JSON Schema of the policy file (for editors: Taplo, Even Better TOML).
    Schema,
    /// Show the run history from a running gateway's admin API.
    Runs(RunsArgs),
    /// Mint a development token from the demo issuer (the token alone on the last line).
    Token(TokenArgs),
    /// Print a signed URL for a `who = "anyone"` trigger, signed with the policy's primary key.
    SignUrl(SignUrlArgs),
    /// Print a ready-to-paste signed curl for a `who = "webhook"` trigger, signed with its
    /// current secret as its sender would (the timestamp is good for the trigger's tolerance).
    SignWebhook(sign_webhook::SignWebhookArgs),
    /// List which triggers use which secret references and vaults (never values).
    Secrets {
        /// The policy file.
        #[arg(long, short, default_value = "config/demo.toml")]
        config: PathBuf,
    },
    /// Exit 0 when URL answers 2xx within two seconds, else 1: a health check for images
    /// without a shell or curl (Docker `HEALTHCHECK`).
    Probe {
        /// The URL to GET.
        #[arg(default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
    /// Run the demo: gateway on <https://127.0.0.1:8443> with a built-in echo upstream and
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

/// `flowgate runs` options.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The admin API.
    #[arg(long, default_value = "http://127.0.0.1:9901")]
    pub admin: String,
    /// Only this trigger.
    #[arg(long)]
    pub trigger: Option<String>,
    /// Only this decision (`allowed`, `unauthenticated`, `rate_limited`, ...).
    #[arg(long)]
    pub decision: Option<String>,
    /// Only this principal.
    #[arg(long)]
    pub principal: Option<String>,
    /// Only runs of this W3C trace id (the caller's `traceparent` trace).
    #[arg(long)]
    pub trace_id: Option<String>,
    /// Since (RFC 3339, or an age such as `15m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Until (RFC 3339, or an age).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One run by id, in full.
    #[arg(long)]
    pub id: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Bearer token for an admin API that requires one.
    #[arg(long, env = "FLOWGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `flowgate token` options.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Where the demo issuer's key is kept (created on first use).
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
    /// The demo issuer's URL (`iss`).
    #[arg(long, default_value = DEMO_ISSUER_URL)]
    pub issuer: String,
    /// Claims of the token.
    #[command(flatten)]
    pub mint: crate::auth::dev_issuer::MintOptions,
}

/// `flowgate sign-url` options.
#[derive(Debug, clap::Args)]
pub struct SignUrlArgs {
    /// The policy whose `[signed_urls]` primary key signs.
    #[arg(long, short, default_value = "config/demo.toml")]
    pub config: PathBuf,
    /// The method the URL is good for.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Seconds until the URL expires.
    #[arg(long, default_value_t = 3600)]
    pub expires_in: u64,
    /// The `who = "anyone"` trigger the URL opens (the signature covers its name). Default:
    /// the trigger the URL's host, path and method route to.
    #[arg(long)]
    pub trigger: Option<String>,
    /// The URL to sign, for example <https://127.0.0.1:8443/demo/signed>.
    pub url: String,
}

/// The demo issuer's fixed address (named in config/demo.toml).
pub(crate) const DEMO_ISSUER_ADDR: &str = "127.0.0.1:9981";
/// The demo issuer's URL.
pub(crate) const DEMO_ISSUER_URL: &str = "http://127.0.0.1:9981";

/// How calls are run on more than one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// One single-threaded runtime and one `SO_REUSEPORT` listener per thread.
    ThreadPerCore,
    /// One tokio multi-threaded (work-stealing) runtime for everything.
    WorkStealing,
}

/// Where calls run, from `--threads` and `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    /// One single-threaded runtime runs everything.
    OneThread,
    /// A work-stealing runtime with this many threads runs everything.
    WorkStealing(usize),
    /// This many worker threads serve calls; the main thread's single-threaded runtime
    /// keeps the control plane.
    ThreadPerCore(usize),
}

impl Serving {
    fn of(threads: Option<u16>, runtime: Option<RuntimeKind>) -> Self {
        let threads = threads
            .map_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get), usize::from);
        match (threads, runtime) {
            (1, _) => Self::OneThread,
            (n, Some(RuntimeKind::WorkStealing)) => Self::WorkStealing(n),
            (n, Some(RuntimeKind::ThreadPerCore) | None) => Self::ThreadPerCore(n),
        }
    }

    /// The main thread's runtime: the worker threads of thread-per-core make their own.
    fn runtime(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Self::OneThread | Self::ThreadPerCore(_) => {
                tokio::runtime::Builder::new_current_thread().enable_all().build()
            }
            Self::WorkStealing(threads) => {
                tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
            }
        }
    }

    async fn bind(self, policy: &crate::policy::Policy) -> std::io::Result<Listeners> {
        match self {
            Self::ThreadPerCore(workers) => Listeners::bind_workers(policy, workers).await,
            Self::OneThread | Self::WorkStealing(_) => Listeners::bind(policy).await,
        }
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of `main`: dropping it writes out the queued log lines.
    let _log_lines = telemetry::init_logging(cli.log_format);
    let serving = Serving::of(cli.threads, cli.runtime);
    let runtime = match serving.runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve(&config, serving).await,
            Command::Check { file, diff } => match diff {
                None => check(&file),
                Some(old) => check_diff(&old, &file),
            },
            Command::Schema => {
                print!("{}", crate::policy::diff::policy_schema_text());
                ExitCode::SUCCESS
            }
            Command::Runs(args) => runs(args).await,
            Command::Token(args) => token(&args),
            Command::SignUrl(args) => sign_url(&args),
            Command::SignWebhook(args) => match load_policy(&args.config) {
                Ok(policy) => sign_webhook::sign_webhook(&args, &policy, unix_now()).await,
                Err(code) => code,
            },
            Command::Secrets { config } => secrets_report(&config),
            Command::Probe { url } => probe(&url).await,
            Command::Demo(args) => demo(args, serving).await,
        }
    })
}

fn print_errors(errors: &[ConfigError]) {
    for error in errors {
        eprintln!("{error}");
    }
}

/// Loads a policy for a command, printing every error (<FILE:LINE:COL>) when it is refused.
fn load_policy(path: &Path) -> Result<crate::policy::Policy, ExitCode> {
    crate::policy::load(path).map_err(|errors| {
        print_errors(&errors);
        ExitCode::FAILURE
    })
}

/// Seconds since the Unix epoch (signed-URL expiries).
#[expect(clippy::disallowed_methods, reason = "a signed URL made at the command line expires in real time")]
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn check(file: &Path) -> ExitCode {
    match crate::policy::load(file) {
        Ok(policy) => {
            println!("{}: ok: {} trigger(s), policy version {}", file.display(), policy.routes.len(), policy.version);
            if let Some(warning) =
                policy.admin_listen.and_then(|listen| crate::admin::exposure_warning(&policy, listen))
            {
                eprintln!("{}: warning: {warning}", file.display());
            }
            if let (Some(sign_in), Some(identity)) = (&policy.admin.sign_in, &policy.admin.identity) {
                println!("{}", sign_in.line(identity));
            }
            // What the gateway will do, defaults included: one line per trigger.
            let triggers = policy.routes.triggers();
            for trigger in triggers {
                println!("{}", trigger.summary.line());
                if let Some(contract) = &trigger.contract {
                    println!("    contract: {}", contract.describe());
                }
            }
            let unlimited: Vec<&str> =
                triggers.iter().filter(|t| t.rate_limit.is_none()).map(|t| t.name.as_str()).collect();
            if !unlimited.is_empty() {
                println!("note: rate limiting is OFF (rate_limit = \"off\") for: {}", unlimited.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            eprintln!("{} error(s) in {}; the policy is refused", errors.len(), file.display());
            ExitCode::FAILURE
        }
    }
}

fn token(args: &TokenArgs) -> ExitCode {
    let minted = crate::auth::dev_issuer::DevIssuer::load_or_create(&args.certs, &args.issuer)
        .and_then(|issuer| issuer.mint(&args.mint));
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flowgate token: {error}");
            ExitCode::FAILURE
        }
    }
}

fn sign_url(args: &SignUrlArgs) -> ExitCode {
    let policy = match load_policy(&args.config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let Some(keys) = &policy.signed_urls else {
        eprintln!("{}: has no [signed_urls] section to sign with", args.config.display());
        return ExitCode::FAILURE;
    };
    let method = args.method.to_ascii_uppercase();
    let trigger = match signed_trigger(&policy, args.trigger.as_deref(), &method, &args.url) {
        Ok(trigger) => trigger,
        Err(message) => {
            eprintln!("flowgate sign-url: {message}");
            return ExitCode::FAILURE;
        }
    };
    match keys.sign(&trigger.name, &method, &args.url, unix_now() + args.expires_in) {
        Ok(url) => {
            println!("{url}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flowgate sign-url: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why `sign-url` found no trigger to sign for.
#[derive(Debug, thiserror::Error)]
enum SignTargetError {
    #[error("no trigger named {0:?}")]
    NoTriggerNamed(String),
    #[error("{0:?} is not a method")]
    NotAMethod(String),
    #[error("{url}: path refused: {refusal}")]
    PathRefused { url: String, refusal: crate::policy::PathRefusal },
    #[error("{method} {url} routes to no trigger; name it with --trigger NAME")]
    NoRoute { method: http::Method, url: String },
    #[error("trigger {0:?} does not take signed URLs (it is not who = \"anyone\")")]
    NotSigned(String),
}

/// The `who = "anyone"` trigger a URL is signed for: the one named, or the one the URL's
/// host, path and method route to.
fn signed_trigger(
    policy: &crate::policy::Policy,
    named: Option<&str>,
    method: &str,
    url: &str,
) -> Result<std::sync::Arc<crate::policy::Trigger>, SignTargetError> {
    let trigger = if let Some(name) = named {
        policy
            .routes
            .triggers()
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| SignTargetError::NoTriggerNamed(name.to_owned()))?
    } else {
        let before_query = url.split_once('?').map_or(url, |(before, _)| before);
        let (host, path) = match before_query.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..])),
            None => ("", before_query),
        };
        let host = (!host.is_empty()).then_some(host);
        let method =
            http::Method::from_bytes(method.as_bytes()).map_err(|_| SignTargetError::NotAMethod(method.to_owned()))?;
        let path = crate::policy::normalize_path(path)
            .map_err(|refusal| SignTargetError::PathRefused { url: url.to_owned(), refusal })?;
        policy
            .routes
            .find(host, &path, &method)
            .map(|found| found.trigger.clone())
            .map_err(|_| SignTargetError::NoRoute { method, url: url.to_owned() })?
    };
    if trigger.access.who() == crate::auth::Who::Anyone {
        Ok(trigger)
    } else {
        Err(SignTargetError::NotSigned(trigger.name.clone()))
    }
}

fn secrets_report(config: &Path) -> ExitCode {
    match load_policy(config) {
        Ok(policy) => {
            let triggers = policy.routes.triggers().iter().map(|t| (t.name.as_str(), &t.injection));
            print!("{}", crate::secrets::usage_report(triggers, &policy.vaults));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn check_diff(old: &Path, new: &Path) -> ExitCode {
    let validity = check(new);
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()));
    let texts = read(old).and_then(|o| read(new).map(|n| (o, n)));
    let (old_text, new_text) = match texts {
        Ok(texts) => texts,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    match crate::policy::diff::diff_texts(&old_text, &new_text) {
        Ok(changes) => {
            print!("{}", crate::policy::diff::render(&changes));
            validity
        }
        Err(error) => {
            eprintln!("cannot compare the policies: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn runs(args: RunsArgs) -> ExitCode {
    let base = args.admin.trim_end_matches('/');
    let url = if let Some(id) = &args.id {
        format!("{base}/runs/{}", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>())
    } else {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let filters = [
            ("trigger", &args.trigger),
            ("decision", &args.decision),
            ("principal", &args.principal),
            ("trace_id", &args.trace_id),
            ("since", &args.since),
            ("until", &args.until),
        ];
        for (name, value) in filters {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.append_pair("limit", &args.limit.to_string());
        format!("{base}/runs?{}", query.finish())
    };
    let client = reqwest::Client::new();
    let mut request = client.get(&url);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            eprintln!("flowgate runs: cannot reach the admin API at {base}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        eprintln!("flowgate runs: {status}: {}", body["error"].as_str().unwrap_or("request refused"));
        return ExitCode::FAILURE;
    }
    if args.json || args.id.is_some() {
        println!("{body:#}");
        return ExitCode::SUCCESS;
    }
    let runs: Vec<crate::audit::RunRecord> = serde_json::from_value(body).unwrap_or_default();
    println!(
        "{:<24}  {:<18}  {:<20}  {:>6}  {:<22}  {:>9}  {:<34}",
        "TIME", "TRIGGER", "DECISION", "STATUS", "PRINCIPAL", "MS", "ID"
    );
    for run in runs {
        println!(
            "{:<24}  {:<18}  {:<20}  {:>6}  {:<22}  {:>9.1}  {:<34}",
            run.time,
            run.trigger.as_deref().unwrap_or("-"),
            run.decision,
            run.status,
            run.principal.as_deref().unwrap_or("-"),
            run.latency_ms,
            run.id
        );
    }
    ExitCode::SUCCESS
}

async fn probe(url: &str) -> ExitCode {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).no_proxy().build();
    let answered = match client {
        Ok(client) => client.get(url).send().await,
        Err(error) => {
            eprintln!("flowgate probe: {error}");
            return ExitCode::FAILURE;
        }
    };
    match answered {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("flowgate probe: {url}: {}", response.status());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("flowgate probe: {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: &Path, serving: Serving) -> ExitCode {
    match load_policy(config) {
        Ok(policy) => run_gateway(policy, config, Vec::new(), serving).await,
        Err(code) => code,
    }
}

/// Binds, starts reload watchers, and serves until SIGTERM or SIGINT. `ready_lines` are
/// printed once the listeners accept connections (the demo's ready-to-paste commands).
async fn run_gateway(
    policy: crate::policy::Policy,
    config: &Path,
    ready_lines: Vec<String>,
    serving: Serving,
) -> ExitCode {
    let listeners = match serving.bind(&policy).await {
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
    match serving {
        Serving::OneThread => tracing::info!("serving on one thread"),
        Serving::WorkStealing(threads) => tracing::info!(threads, "serving on a work-stealing runtime"),
        Serving::ThreadPerCore(workers) => tracing::info!(workers, "serving thread-per-core"),
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
    if !ready_lines.is_empty() {
        tokio::spawn(print_when_ready(gateway.clone(), listeners.https_addr(), ready_lines));
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
pub(crate) async fn shutdown_signal() {
    let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Prints `lines` once the gateway is ready (its accept loops run) and its HTTPS listener
/// answers a connection, so a line pasted at once never meets a refused connection.
async fn print_when_ready(gateway: Arc<Gateway>, https: Option<SocketAddr>, lines: Vec<String>) {
    while !gateway.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if let Some(addr) = https {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// The echo upstream's fixed demo address (named in config/demo.toml).
pub(crate) const DEMO_ECHO_ADDR: &str = "127.0.0.1:9980";

async fn demo(args: DemoArgs, serving: Serving) -> ExitCode {
    match prepare_demo(&args).await {
        Ok((policy, lines)) => run_gateway(policy, &args.config, lines, serving).await,
        Err(message) => {
            eprintln!("flowgate demo: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error(transparent)]
    DevCert(#[from] crate::tls::dev::DevCertError),
    #[error(transparent)]
    Issuer(#[from] crate::auth::dev_issuer::DevIssuerError),
    #[error("cannot set mode 0600 on {}: {source}", path.display())]
    SecretsMode { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot start the {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: &'static str, source: std::io::Error },
    /// The demo policy's errors, one located line each.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<crate::config::ConfigError>),
}

/// Generates the demo's development material on first run, starts the echo upstream and
/// the token issuer, loads the demo policy and writes the ready-to-paste curl commands
/// (printed once the gateway accepts connections).
async fn prepare_demo(args: &DemoArgs) -> Result<(crate::policy::Policy, Vec<String>), DemoError> {
    use crate::auth::dev_issuer::{DevIssuer, MintOptions};
    let certs = crate::tls::dev::ensure_dev_certs(&args.certs)?;
    let url_key = args.certs.join("demo-url.key");
    if !url_key.exists() {
        let key: [u8; 48] = rand::random();
        let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        crate::tls::dev::write_file(&args.certs, &url_key, text.as_bytes(), 0o600)?;
    }
    // Git does not keep file modes: the file vault refuses a readable secrets file.
    if let Some(dir) = args.config.parent() {
        let secrets = dir.join("demo-secrets.toml");
        if secrets.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| DemoError::SecretsMode { path: secrets.clone(), source })?;
        }
    }
    let bind = |addr: &'static str, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|source| DemoError::Bind { what, addr, source })
    };
    let echo = bind(DEMO_ECHO_ADDR, "echo upstream").await?;
    let issuer_listener = bind(DEMO_ISSUER_ADDR, "token issuer").await?;
    let issuer = Arc::new(DevIssuer::load_or_create(&args.certs, DEMO_ISSUER_URL)?);
    tokio::spawn(crate::demo::serve_echo(echo));
    tokio::spawn(issuer.clone().serve(issuer_listener, std::future::pending::<()>()));

    let mut policy = crate::policy::load(&args.config).map_err(DemoError::Policy)?;
    policy.server.listen = args.listen;
    policy.admin_listen = Some(args.admin);

    let base = format!("https://{}", args.listen);
    let cacert = certs.ca_cert.display();
    let token = issuer.mint(&MintOptions::default())?;
    let mut lines = vec![
        format!("flowgate demo: gateway {base}, admin http://{}", args.admin),
        format!("  echo upstream http://{DEMO_ECHO_ADDR}, token issuer {DEMO_ISSUER_URL}"),
        "Try these from the project root (tokens last an hour; `flowgate token` mints more):".to_owned(),
    ];
    let json = "-H 'content-type: application/json' -d '{\"hello\":\"flowgate\",\"password\":\"hidden-in-runs\"}'";
    for trigger in policy.routes.triggers() {
        let method = trigger.methods.first().map_or("POST", |m| m.as_str());
        let url = format!("{base}{}", trigger.path);
        let line = if trigger.access.who() == crate::auth::Who::Webhook {
            let scheme = trigger.webhook.as_ref().map_or("standard", |rule| rule.scheme.name());
            format!(
                "eval \"$(cargo run -q -- sign-webhook --scheme {scheme} {url})\"   # a fresh signed delivery each time"
            )
        } else if trigger.access.who() == crate::auth::Who::Anyone {
            let signed = policy
                .signed_urls
                .as_ref()
                .and_then(|keys| keys.sign(&trigger.name, method, &url, unix_now() + 3600).ok());
            let Some(signed) = signed else { continue };
            format!("curl --cacert {cacert} -X {method} '{signed}' {json}")
        } else {
            let interface = if trigger.name == "demo-allowlisted" { " --interface 127.0.0.2" } else { "" };
            format!("curl --cacert {cacert}{interface} -X {method} {url} -H 'authorization: Bearer {token}' {json}")
        };
        lines.push(line);
    }
    lines.push(format!("Run history: curl http://{}/runs   Metrics: curl http://{}/metrics", args.admin, args.admin));
    Ok((policy, lines))
}
