//! The `pkv` command line: `serve` (the default), `token mint`, `token inspect`, `keygen`,
//! `healthcheck`.

mod healthcheck;

use std::sync::Arc;

use base64::Engine as _;
use clap::{Parser, Subcommand};

use crate::auth::keys::{self, IssuerKey};
use crate::auth::token::{self, MintRequest};
use crate::auth::{did, now_secs};
use crate::config::{LogFormat, Settings};
use crate::server::{self, Shared};
use crate::upstream::eviction;

#[derive(Parser)]
#[command(name = "pkv", version, about = "A paid Redis-protocol proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Mint or inspect tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a new issuer (or secret) seed and its did:key.
    Keygen,
    /// Exit 0 if the pkv at PKV_LISTEN (or --addr) answers PING, else 1: a container's
    /// HEALTHCHECK.
    Healthcheck {
        /// HOST:PORT to check instead of PKV_LISTEN (a wildcard address means loopback).
        #[arg(long)]
        addr: Option<String>,
        /// Seconds the whole check may take.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Read the ledger's accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// List the accounts that spent the most, biggest first: account, spent, balance.
    Top {
        /// How many accounts to list.
        #[arg(long, default_value_t = crate::accounts::DEFAULT_LIMIT)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Sign a Prex-format quota token with a local issuer key.
    Mint {
        /// Whole units of quota the token carries.
        #[arg(long, default_value_t = 100)]
        quantity: i64,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 3600)]
        lifetime: i64,
        /// The service the token is for; defaults to PKV_SERVICE_ID.
        #[arg(long)]
        audience: Option<String>,
        /// The account the token credits; without it the account derives from the token id.
        #[arg(long)]
        sub: Option<String>,
        /// Base64 issuer seed; defaults to PKV_ISSUER_SEED, else the development issuer.
        #[arg(long)]
        issuer_seed: Option<String>,
    },
    /// Print a token's header and claims (without trusting them).
    Inspect { token: String },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Keygen => {
            let (seed, key) = IssuerKey::generate();
            println!(
                "seed: {}",
                base64::engine::general_purpose::STANDARD.encode(seed)
            );
            println!("did:  {}", key.did());
            0
        }
        Command::Token(TokenCommand::Inspect { token }) => inspect(&token),
        Command::Healthcheck { addr, timeout } => {
            healthcheck::run(addr.as_deref(), std::time::Duration::from_secs(timeout))
        }
        Command::Accounts(AccountsCommand::Top { limit }) => match load_settings() {
            Some(settings) => crate::accounts::run_top(&settings, limit),
            None => 2,
        },
        Command::Token(TokenCommand::Mint {
            quantity,
            lifetime,
            audience,
            sub,
            issuer_seed,
        }) => {
            let Some(settings) = load_settings() else {
                return 2;
            };
            for warning in &settings.warnings {
                eprintln!("pkv: warning: {warning}");
            }
            let seed = match issuer_seed {
                Some(text) => match crate::config::parse_seed(&text) {
                    Ok(seed) => seed,
                    Err(e) => {
                        eprintln!("pkv: --issuer-seed: {e}");
                        return 2;
                    }
                },
                None => settings
                    .issuer_seed
                    .unwrap_or_else(|| keys::dev_issuer_seed(&settings.secret_seed)),
            };
            if quantity <= 0 || lifetime <= 0 {
                eprintln!("pkv: --quantity and --lifetime must be above 0");
                return 2;
            }
            let request = MintRequest {
                audience: audience.unwrap_or(settings.service_id),
                quantity,
                lifetime_secs: lifetime,
                sub,
            };
            println!(
                "{}",
                token::mint_quota(&IssuerKey::from_seed(&seed), &request, now_secs())
            );
            0
        }
    }
}

fn load_settings() -> Option<Settings> {
    match Settings::load() {
        Ok(s) => Some(s),
        Err(errors) => {
            for line in errors.0 {
                eprintln!("pkv: {line}");
            }
            None
        }
    }
}

fn inspect(token: &str) -> i32 {
    match token::peek(token) {
        Ok((header, claims)) => {
            let show = |v: serde_json::Result<String>| v.unwrap_or_else(|e| e.to_string());
            println!("header: {}", show(serde_json::to_string_pretty(&header)));
            println!("claims: {}", show(serde_json::to_string_pretty(&claims)));
            if let Some(iss) = claims.iss.as_deref() {
                match did::public_key_from_did(iss) {
                    Ok(_) => println!("issuer: an Ed25519 did:key"),
                    Err(e) => println!("issuer: {e}"),
                }
            }
            0
        }
        Err(e) => {
            eprintln!("pkv: {e}");
            1
        }
    }
}

fn serve() -> i32 {
    let Some(settings) = load_settings() else {
        return 2;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match runtime(settings.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pkv: cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        if !settings.plain_listen {
            return run_with(settings, None, shutdown_signal()).await;
        }
        let listener = match tokio::net::TcpListener::bind(settings.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("pkv: PKV_LISTEN: cannot listen on {}: {e}", settings.listen);
                return 1;
            }
        };
        run(settings, listener, shutdown_signal()).await
    })
}

/// The tokio runtime pkv serves on, with `threads` worker threads (`PKV_THREADS`): 1 runs
/// everything on the calling thread, 0 starts one worker per core. The binary and the
/// tests' in-process server build it here, so both run pkv the same way.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// Serves clients from `listener`, which the caller has already bound, until `shutdown`
/// resolves; returns the process exit code. `settings` are taken as given (the binary
/// loads them from files and the environment; tests build them from a map), so several
/// servers can run in one process, each on a port it could not lose between choosing and
/// binding it. The address actually bound (`PKV_LISTEN` may name port 0) is printed as
/// `pkv listening on ADDR`, and the metrics endpoint's as `pkv metrics listening on ADDR`.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> i32 {
    run_with(settings, Some(listener), shutdown).await
}

/// Like [`run`], with the plain listener optional (`PKV_LISTEN` empty beside
/// `PKV_TLS_LISTEN`). The TLS listener, when set, is bound here and printed as
/// `pkv tls listening on ADDR`.
pub async fn run_with(
    settings: Settings,
    listener: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> i32 {
    crate::tls::install_provider();
    let tls = match &settings.tls {
        Some(tls) => match bind_tls(tls).await {
            Ok(l) => Some(l),
            Err((code, line)) => {
                eprintln!("pkv: {line}");
                return code;
            }
        },
        None => None,
    };
    // The ledger must be out of reach of eviction before a client is served.
    let timeout = settings.upstream_timeout;
    let mut targets =
        eviction::targets(settings.upstream_url.as_ref(), settings.ledger_url.as_ref());
    let (upstream_url, ledger_url) = (settings.upstream_url.clone(), settings.ledger_url.clone());
    for member in
        eviction::cluster_members(upstream_url.as_ref(), ledger_url.as_ref(), timeout).await
    {
        if !targets.iter().any(|t| t.url == member.url) {
            targets.push(member);
        }
    }
    for target in &mut targets {
        target.ca.clone_from(&settings.upstream_tls_ca);
    }
    let checked: Vec<String> = targets.iter().map(|t| t.url.clone()).collect();
    let unchecked = match eviction::check(targets, timeout).await {
        Ok(unchecked) => unchecked,
        Err(line) => {
            eprintln!("pkv: {line}");
            return 2;
        }
    };
    // A plain URL naming a Redis Cluster node is refused, not served as one Redis.
    let undetected = match settings.upstream_url.as_deref() {
        Some(url) if !crate::upstream::cluster::is_cluster_url(url) => {
            let ca = settings.upstream_tls_ca.as_deref();
            match crate::upstream::cluster::detect::check(url, ca, timeout).await {
                Ok(true) => Some((url.to_owned(), settings.upstream_tls_ca.clone())),
                Ok(false) => None,
                Err(line) => {
                    eprintln!("pkv: {line}");
                    return 2;
                }
            }
        }
        _ => None,
    };
    let listen = match (&listener, &tls) {
        (Some(l), _) => l.local_addr().unwrap_or(settings.listen),
        (None, Some(t)) => t.listener.local_addr().unwrap_or(settings.listen),
        (None, None) => settings.listen,
    };
    let shared = match Shared::new(settings) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("pkv: {e}");
            return 2;
        }
    };
    // SIGHUP reloads the settings from the same sources as start-up.
    server::reload_on_hangup(shared.clone());
    if shared.settings.dev_mode {
        print_dev_banner(&shared.settings, listen);
    }
    if let Some(addr) = shared.settings.metrics_listen {
        let metrics_listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("pkv: PKV_METRICS_LISTEN: cannot listen on {addr}: {e}");
                return 1;
            }
        };
        println!(
            "pkv metrics listening on {}",
            metrics_listener.local_addr().unwrap_or(addr)
        );
        let metrics = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::http::serve(metrics_listener, metrics).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    match shared.settings.upstream_url.as_deref() {
        Some(url) => tracing::info!(%listen, upstream = %redact(url), "pkv listening"),
        None => tracing::info!(%listen, backend = "embedded", "pkv listening"),
    }
    // The TLS line first: a reader waiting for `pkv listening on` has then seen both.
    if let Some(t) = &tls {
        let addr = t.listener.local_addr().unwrap_or(listen);
        tracing::info!(%addr, "pkv listening for TLS");
        println!("pkv tls listening on {addr}");
    }
    if listener.is_some() {
        println!("pkv listening on {listen}");
    }
    // A Redis that was down at start-up is checked when it answers; a policy that
    // would evict the ledger then stops pkv like it would have stopped start-up.
    let refused = std::sync::OnceLock::new();
    let late_check = async {
        let evicting = async {
            if unchecked.is_empty() {
                return std::future::pending().await;
            }
            eviction::watch(unchecked, timeout).await
        };
        let cluster_node = async {
            match undetected {
                Some((url, ca)) => crate::upstream::cluster::detect::watch(url, ca, timeout).await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            line = evicting => line,
            line = cluster_node => line,
            line = eviction::watch_cluster(upstream_url, ledger_url, checked, timeout) => line,
        };
        tracing::error!("{line}; stopping");
        let _ = refused.set(line);
    };
    let stop = async {
        tokio::select! {
            () = shutdown => {},
            () = late_check => {},
        }
    };
    let served = server::serve_with(shared, listener, tls, stop).await;
    if let Some(line) = refused.get() {
        eprintln!("pkv: {line}");
        return 2;
    }
    match served {
        Ok(()) => {
            tracing::info!("pkv stopped");
            0
        }
        Err(e) => {
            eprintln!("pkv: stopped, but {e}");
            1
        }
    }
}

/// Loads the TLS listener's certificate and binds it; an error is the exit code (2 for a
/// certificate that does not load, 1 for an address that cannot be bound) and its line.
async fn bind_tls(tls: &crate::tls::ListenerTls) -> Result<server::TlsListener, (i32, String)> {
    let (acceptor, certs) = crate::tls::acceptor(tls).map_err(|e| (2, e))?;
    let listener = tokio::net::TcpListener::bind(tls.listen)
        .await
        .map_err(|e| {
            (
                1,
                format!("PKV_TLS_LISTEN: cannot listen on {}: {e}", tls.listen),
            )
        })?;
    Ok(server::TlsListener {
        listener,
        acceptor,
        certs,
    })
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn print_dev_banner(settings: &Settings, listen: std::net::SocketAddr) {
    let issuer = IssuerKey::from_seed(&keys::dev_issuer_seed(&settings.secret_seed));
    let request = MintRequest {
        audience: settings.service_id.clone(),
        quantity: 1000,
        lifetime_secs: 86400,
        sub: None,
    };
    let token = token::mint_quota(&issuer, &request, now_secs());
    println!("==================================================================");
    println!(" pkv is in DEVELOPMENT MODE: no quota issuer is configured.");
    println!(" Tokens are free: the development issuer below signs them for anyone.");
    println!(" Set PKV_QUOTA_ISSUERS and PKV_SECRET_SEED to take real payments.");
    println!(" development issuer: {}", issuer.did());
    if settings.upstream_url.is_none() {
        println!(" Data: the embedded store, in this process (PKV_UPSTREAM_URL is not set).");
    }
    println!("==================================================================");
    println!("redis-cli -p {} -a {token}", listen.port());
}
