//! Settings: one typed struct, loaded in layers and validated at start-up.
//!
//! Lowest to highest precedence: built-in defaults, `pkv.toml` in the working directory,
//! a `.env` file in the working directory, environment variables. Every setting has an
//! environment name `PKV_*` and a `pkv.toml` key (the same name, lower-case, without
//! `PKV_`). A bad setting, or an unknown one in `pkv.toml` or `.env`, stops start-up with
//! one line naming it. An unknown `PKV_*` variable in the environment is only a warning:
//! orchestrators inject variables such as `PKV_PORT` for a service named pkv.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use crate::auth::did;
use crate::meter::{Price, Prices};

/// One setting: its environment name, default, and the line `.env.example` explains it with.
pub struct SettingDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every setting pkv reads. `.env.example` is checked against this list by a test.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        name: "PKV_LISTEN",
        default: "127.0.0.1:6380",
        help: "address clients connect to",
    },
    SettingDoc {
        name: "PKV_TLS_LISTEN",
        default: "",
        help: "address of the TLS client listener; empty: none. With it set, an empty PKV_LISTEN serves TLS only",
    },
    SettingDoc {
        name: "PKV_TLS_CERT",
        default: "",
        help: "PEM certificate chain of the TLS listener (reloaded when the file changes)",
    },
    SettingDoc {
        name: "PKV_TLS_KEY",
        default: "",
        help: "PEM private key of the TLS listener (reloaded with the certificate)",
    },
    SettingDoc {
        name: "PKV_TLS_CLIENT_CA",
        default: "",
        help: "PEM CA certificates; when set, TLS clients must present a certificate it signed (mutual TLS)",
    },
    SettingDoc {
        name: "PKV_UPSTREAM_TLS_CA",
        default: "",
        help: "PEM CA certificates a rediss:// upstream (and ledger) is verified against; empty: the system's roots",
    },
    SettingDoc {
        name: "PKV_UPSTREAM_URL",
        default: "",
        help: "redis://[user:pass@]host:port of the upstream Redis; unset: the embedded store",
    },
    SettingDoc {
        name: "PKV_LEDGER_URL",
        default: "",
        help: "redis://... of a Redis for the ledger alone (balances, redeemed tokens); unset: the ledger lives in the upstream (a Redis Cluster upstream too). Needed when the upstream's maxmemory-policy is allkeys-*; its own policy must be noeviction",
    },
    SettingDoc {
        name: "PKV_LEDGER_REPLICAS",
        default: "",
        help: "replicas each ledger write (redemption, lease, settlement) waits for (WAIT, at most 1 s) before it is answered, so that a failover keeps it; unset: 1 for a ledger in a Redis Cluster while every master has a replica, else 0; 0: no WAIT",
    },
    SettingDoc {
        name: "PKV_DATA_FILE",
        default: "",
        help: "file the embedded store is saved to and loaded from at start-up; empty keeps its data in memory only",
    },
    SettingDoc {
        name: "PKV_SNAPSHOT_SECONDS",
        default: "60",
        help: "seconds between snapshots of the embedded store to PKV_DATA_FILE (one more is taken at shutdown)",
    },
    SettingDoc {
        name: "PKV_APPENDFSYNC",
        default: "everysec",
        help: "when the embedded store's append-only log (PKV_DATA_FILE.aof) is fsynced: always (before each write's reply), everysec, or no (when the OS decides); ledger steps are always fsynced",
    },
    SettingDoc {
        name: "PKV_MAXMEMORY",
        default: "0",
        help: "bytes the embedded store's data may hold (100mb, 1gb as in redis.conf); past it writes that add data get -OOM, as Redis's maxmemory with noeviction; 0 no limit",
    },
    SettingDoc {
        name: "PKV_KEYSPACE_EVENTS",
        default: "",
        help: "Redis's notify-keyspace-events flags (e.g. KEA): each tenant receives the keyspace notifications of its own keys; empty is off; on an upstream, pkv sets notify-keyspace-events there",
    },
    SettingDoc {
        name: "PKV_SERVICE_ID",
        default: "pkv",
        help: "pkv's identifier: the audience quota tokens must carry",
    },
    SettingDoc {
        name: "PKV_QUOTA_ISSUERS",
        default: "",
        help: "comma-separated did:keys of trusted Prex exchanges; empty means development mode",
    },
    SettingDoc {
        name: "PKV_SECRET_SEED",
        default: "",
        help: "base64 of 32 random bytes (pkv keygen prints one); required when issuers are set",
    },
    SettingDoc {
        name: "PKV_ISSUER_SEED",
        default: "",
        help:
            "base64 issuer seed that `pkv token mint` signs with; empty uses the development issuer",
    },
    SettingDoc {
        name: "PKV_DEFAULT_TTL",
        default: "86400",
        help: "seconds a key lives when a write gives no expiry",
    },
    SettingDoc {
        name: "PKV_MAX_TTL",
        default: "31536000",
        help: "longest expiry a write may buy, in seconds",
    },
    SettingDoc {
        name: "PKV_TOKEN_LEEWAY",
        default: "60",
        help: "seconds of clock skew tolerated on token nbf/exp",
    },
    SettingDoc {
        name: "PKV_BALANCE_INTERVAL_MS",
        default: "100",
        help: "least time between two ledger reads by PKV.BALANCE on one connection; a call sooner waits; 0 no limit",
    },
    SettingDoc {
        name: "PKV_METRICS_LISTEN",
        default: "",
        help: "address for HTTP /metrics, /healthz, /readyz and /accounts/top; empty disables it",
    },
    SettingDoc {
        name: "PKV_MAX_REQUEST_BYTES",
        default: "16777216",
        help: "largest request accepted, in bytes; also what one connection may buffer of an unfinished request",
    },
    SettingDoc {
        name: "PKV_MAX_BUFFERED_PER_ACCOUNT",
        default: "67108864",
        help: "bytes of unfinished requests all connections of one account may buffer together (at least PKV_MAX_REQUEST_BYTES); the connection that passes it is closed",
    },
    SettingDoc {
        name: "PKV_REQUEST_TIMEOUT",
        default: "60",
        help: "seconds a request may take to arrive once it has started; the connection is closed past it; 0 never",
    },
    SettingDoc {
        name: "PKV_MAX_OUTPUT_BYTES",
        default: "67108864",
        help: "reply bytes one connection may hold unsent; past it the client is disconnected (as Redis's client-output-buffer-limit)",
    },
    SettingDoc {
        name: "PKV_MAX_OUTPUT_PER_ACCOUNT",
        default: "268435456",
        help: "reply bytes all connections of one account may hold while their clients do not read (at least PKV_MAX_OUTPUT_BYTES); the connection that passes it is disconnected",
    },
    SettingDoc {
        name: "PKV_MAX_SUBSCRIBER_BYTES",
        default: "33554432",
        help: "Pub/Sub message bytes queued for one subscriber that is not reading; past it the subscriber is disconnected",
    },
    SettingDoc {
        name: "PKV_MAX_ARGS",
        default: "65536",
        help: "most arguments in one request",
    },
    SettingDoc {
        name: "PKV_MAX_CONNECTIONS",
        default: "10000",
        help: "most client connections at once",
    },
    SettingDoc {
        name: "PKV_MAX_UNAUTHENTICATED",
        default: "25%",
        help: "most connections not yet authenticated, as a number or a percentage of PKV_MAX_CONNECTIONS",
    },
    SettingDoc {
        name: "PKV_AUTH_TIMEOUT",
        default: "10",
        help: "seconds a connection has to authenticate before it is closed",
    },
    SettingDoc {
        name: "PKV_MAX_CONNECTIONS_PER_ACCOUNT",
        default: "1000",
        help: "most connections one account may have open at once; AUTH past it is refused",
    },
    SettingDoc {
        name: "PKV_MAX_DEDICATED_PER_ACCOUNT",
        default: "16",
        help: "most dedicated upstream connections (MULTI/WATCH, blocking commands, subscriptions, scripts running on an upstream) one account may hold at once",
    },
    SettingDoc {
        name: "PKV_IDLE_TIMEOUT",
        default: "0",
        help: "seconds before an idle client is disconnected; 0 never",
    },
    SettingDoc {
        name: "PKV_THREADS",
        default: "0",
        help: "worker threads; 0 is one per core, 1 runs everything on one thread",
    },
    SettingDoc {
        name: "PKV_UPSTREAM_POOL_SIZE",
        default: "4",
        help: "multiplexed upstream connections shared by plain commands",
    },
    SettingDoc {
        name: "PKV_UPSTREAM_TIMEOUT_MS",
        default: "30000",
        help: "longest wait for a non-blocking upstream reply",
    },
    SettingDoc {
        name: "PKV_SHUTDOWN_GRACE",
        default: "10",
        help: "seconds in-flight commands get to finish on SIGTERM or ctrl-c; a blocking command that would wait longer is answered -UNBLOCKED at once",
    },
    SettingDoc {
        name: "PKV_METERING",
        default: "on",
        help: "on: every command is paid from the account's balance; off: free (tokens still checked)",
    },
    SettingDoc {
        name: "PKV_SCRIPTING",
        default: "on",
        help: "on: EVAL, EVALSHA and SCRIPT run on the embedded store; off: they are refused",
    },
    SettingDoc {
        name: "PKV_SCRIPT_TIME_LIMIT",
        default: "5000",
        help: "milliseconds a script may run on the embedded store before it is stopped",
    },
    SettingDoc {
        name: "PKV_SCRIPT_BUDGET_MS",
        default: "250",
        help: "milliseconds per second an account's scripts may hold the embedded store exclusively past their first ms each, on average (its next script waits); 0: no bound",
    },
    SettingDoc {
        name: "PKV_PRICE_OP",
        default: "0.000001",
        help: "units per command executed",
    },
    SettingDoc {
        name: "PKV_PRICE_BYTE_IN",
        default: "0.000000001",
        help: "units per request byte received",
    },
    SettingDoc {
        name: "PKV_PRICE_BYTE_OUT",
        default: "0.000000001",
        help: "units per reply byte sent",
    },
    SettingDoc {
        name: "PKV_PRICE_BYTE_SECOND",
        default: "0.000000000000001",
        help: "units per byte stored per second of TTL (1 GB for a day is 86.4 units)",
    },
    SettingDoc {
        name: "PKV_PRICE_TIME_MS",
        default: "0.000001",
        help: "units per millisecond a command holds the upstream",
    },
    SettingDoc {
        name: "PKV_LEASE",
        default: "0.01",
        help: "units each pkv process reserves from an account's balance at a time; also the most a crash can lose per account",
    },
    SettingDoc {
        name: "PKV_LOW_BALANCE",
        default: "1",
        help: "below this many units left, an account's commands run one at a time per pkv process, so that replies in flight overdraw it by at most one command's after-cost",
    },
    SettingDoc {
        name: "PKV_LOG",
        default: "info",
        help: "log filter (tracing EnvFilter syntax)",
    },
    SettingDoc {
        name: "PKV_LOG_FORMAT",
        default: "text",
        help: "text: log lines for people; json: one JSON object per line, for a log collector",
    },
];

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// False when `PKV_LISTEN` is empty beside `PKV_TLS_LISTEN`: TLS only.
    pub plain_listen: bool,
    /// The TLS client listener, when `PKV_TLS_LISTEN` is set.
    pub tls: Option<crate::tls::ListenerTls>,
    /// The CA a `rediss://` upstream is verified against; `None`: the system's roots.
    pub upstream_tls_ca: Option<PathBuf>,
    pub upstream_url: Option<String>,
    /// A Redis of the ledger's own; `None` keeps the ledger in the upstream.
    pub ledger_url: Option<String>,
    /// `PKV_LEDGER_REPLICAS`; `None`: decided by where the ledger is (see
    /// [`crate::upstream::book`]).
    pub ledger_replicas: Option<usize>,
    /// Where the embedded store is saved; `None` keeps it in memory only.
    pub data_file: Option<PathBuf>,
    /// Time between snapshots of the embedded store.
    pub snapshot_interval: Duration,
    /// When the embedded store's append-only log is fsynced.
    pub append_fsync: crate::embedded::aof::Policy,
    /// `PKV_MAXMEMORY`: bytes the embedded store's data may hold; 0 for no limit.
    pub maxmemory: u64,
    /// Keyspace notifications (`PKV_KEYSPACE_EVENTS`); `None` when off.
    pub keyspace_events: Option<crate::notify::Flags>,
    pub service_id: String,
    pub quota_issuers: Vec<String>,
    pub secret_seed: [u8; 32],
    /// True when no issuer is configured: a development issuer key is trusted.
    pub dev_mode: bool,
    pub issuer_seed: Option<[u8; 32]>,
    pub default_ttl: u64,
    pub max_ttl: u64,
    pub token_leeway: u64,
    /// Least time between two ledger reads by `PKV.BALANCE` on one connection.
    pub balance_interval: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub max_request_bytes: usize,
    pub max_args: usize,
    pub max_connections: usize,
    /// Connections that have not authenticated yet, at most.
    pub max_unauthenticated: usize,
    /// Time a connection has to authenticate.
    pub auth_timeout: Duration,
    pub max_connections_per_account: usize,
    /// Dedicated and Pub/Sub upstream connections one account may hold.
    pub max_dedicated_per_account: usize,
    /// Bytes of unfinished requests one account's connections may buffer together.
    pub max_buffered_per_account: usize,
    /// Time one request may take to arrive; `None` never times out.
    pub request_timeout: Option<Duration>,
    /// Reply bytes one connection may hold unsent.
    pub max_output_bytes: usize,
    /// Reply bytes one account's connections may hold while their clients do not read.
    pub max_output_per_account: usize,
    /// Message bytes queued for one subscriber.
    pub max_subscriber_bytes: usize,
    pub idle_timeout: Option<Duration>,
    pub upstream_pool_size: usize,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log: String,
    pub log_format: LogFormat,
    /// False with `PKV_METERING=off`.
    pub metering: bool,
    /// False with `PKV_SCRIPTING=off`: scripting commands are refused.
    pub scripting: bool,
    /// How long a script may run before it is stopped (`PKV_SCRIPT_TIME_LIMIT`).
    pub script_time_limit: Duration,
    /// How long per second an account's scripts may hold the embedded store exclusively,
    /// on average (`PKV_SCRIPT_BUDGET_MS`; zero for no bound): [`crate::scripting::fair`].
    pub script_budget: Duration,
    pub prices: Prices,
    /// Lease size in nano-units.
    pub lease_nanos: i64,
    /// Lines to log once logging is set up (unknown `PKV_*` environment variables).
    pub warnings: Vec<String>,
    /// Below this balance (nano-units), an account's commands run one at a time.
    pub low_balance_nanos: i64,
}

/// How log lines are written (`PKV_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The secret seed used in development mode when none is set. It is public on purpose:
/// development tokens are free, and `pkv token mint` in another shell must derive the same
/// development issuer as the running server.
pub const DEV_SECRET_SEED: [u8; 32] = *b"pkv development seed: not secret";

/// Problems found while loading settings, one line each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl Settings {
    /// The settings that concern tokens, for [`crate::auth::Authenticator`].
    pub fn auth(&self) -> crate::auth::AuthConfig {
        crate::auth::AuthConfig {
            service_id: self.service_id.clone(),
            quota_issuers: self.quota_issuers.clone(),
            secret_seed: self.secret_seed,
            dev_mode: self.dev_mode,
            token_leeway: self.token_leeway,
        }
    }

    /// `PKV_KEYSPACE_EVENTS` as Redis's `CONFIG GET notify-keyspace-events` prints it
    /// (`AKE` for `KEA`); empty when off.
    pub fn notify_keyspace_events(&self) -> String {
        self.keyspace_events
            .map(crate::notify::Flags::redis_string)
            .unwrap_or_default()
    }
}

impl Settings {
    /// Loads settings from `pkv.toml`, `.env` and the environment of this process.
    pub fn load() -> Result<Settings, ConfigErrors> {
        let mut files = BTreeMap::new();
        let mut errors = Vec::new();
        match config::Config::builder()
            .add_source(config::File::with_name("pkv.toml").required(false))
            .build()
        {
            Ok(file) => match file.try_deserialize::<BTreeMap<String, config::Value>>() {
                Ok(map) => {
                    for (key, value) in map {
                        files.insert(
                            format!("PKV_{}", key.to_ascii_uppercase()),
                            value.to_string(),
                        );
                    }
                }
                Err(e) => errors.push(format!("pkv.toml: {e}")),
            },
            Err(e) => errors.push(format!("pkv.toml: {e}")),
        }
        // `.env` is read, not loaded into the environment, so that its names are checked
        // as strictly as `pkv.toml`'s. Other names in it belong to other tools.
        match dotenvy::from_path_iter(".env") {
            Ok(items) => {
                for item in items {
                    match item {
                        Ok((key, value)) if key.starts_with("PKV_") => {
                            files.insert(key, value);
                        }
                        Ok(_) => {}
                        Err(e) => errors.push(format!(".env: {e}")),
                    }
                }
            }
            Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!(".env: {e}")),
        }
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(key, _)| key.starts_with("PKV_"))
            .collect();
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Settings::from_sources(&files, &env)
    }

    /// Validates settings given as `PKV_*` names and raw values, as if from a file: an
    /// unknown name is an error.
    pub fn from_map(raw: &BTreeMap<String, String>) -> Result<Settings, ConfigErrors> {
        Settings::from_sources(raw, &BTreeMap::new())
    }

    /// Validates settings from files (`pkv.toml` and `.env`, merged) and from the
    /// environment, which wins. An unknown name in a file is the operator's typo and an
    /// error; in the environment it is a warning, as orchestrators set `PKV_*` variables of
    /// their own.
    pub fn from_sources(
        files: &BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
    ) -> Result<Settings, ConfigErrors> {
        let known = |key: &str| SETTINGS.iter().any(|s| s.name == key);
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut raw = BTreeMap::new();
        for (key, value) in files {
            if known(key) {
                raw.insert(key.clone(), value.clone());
            } else {
                errors.push(format!(
                    "{key}: unknown setting (see .env.example for the list)"
                ));
            }
        }
        for (key, value) in env {
            if known(key) {
                raw.insert(key.clone(), value.clone());
            } else {
                warnings.push(format!(
                    "{key}: unknown setting in the environment, ignored (see .env.example for the list)"
                ));
            }
        }
        let raw = &raw;
        let get = |name: &str| -> String {
            match raw.get(name) {
                Some(v) => v.trim().to_owned(),
                None => SETTINGS
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.default.to_owned())
                    .unwrap_or_default(),
            }
        };
        let mut check = |name: &str, result: Result<(), String>| {
            if let Err(e) = result {
                errors.push(format!("{name}: {e}"));
            }
        };

        let tls = tls_settings(&get, &mut check);
        let mut listen = None;
        let plain_listen = !(get("PKV_LISTEN").is_empty() && tls.is_some());
        if plain_listen {
            check(
                "PKV_LISTEN",
                parse_addr(&get("PKV_LISTEN")).map(|a| listen = Some(a)),
            );
        } else {
            listen = parse_addr("127.0.0.1:6380").ok();
        }
        let upstream_tls_ca = non_empty(get("PKV_UPSTREAM_TLS_CA")).map(PathBuf::from);
        if let Some(ca) = &upstream_tls_ca {
            if !ca.is_file() {
                check(
                    "PKV_UPSTREAM_TLS_CA",
                    Err(format!("{} is not a readable file", ca.display())),
                );
            }
        }
        let upstream_url = non_empty(get("PKV_UPSTREAM_URL"));
        if let Some(url) = &upstream_url {
            check("PKV_UPSTREAM_URL", crate::upstream::check_url(url));
        }
        let ledger_url = non_empty(get("PKV_LEDGER_URL"));
        if let Some(url) = &upstream_url {
            check(
                "PKV_LEDGER_URL",
                crate::upstream::cluster::check_ledger(url, ledger_url.as_deref()),
            );
        }
        if let Some(url) = &ledger_url {
            if upstream_url.is_none() {
                check(
                    "PKV_LEDGER_URL",
                    Err(
                        "the embedded store keeps its own ledger; unset it or set PKV_UPSTREAM_URL"
                            .into(),
                    ),
                );
            } else {
                check("PKV_LEDGER_URL", crate::upstream::check_url(url));
            }
        }
        let service_id = get("PKV_SERVICE_ID");
        check(
            "PKV_SERVICE_ID",
            if service_id.is_empty() {
                Err("must not be empty".into())
            } else {
                Ok(())
            },
        );

        let mut quota_issuers = Vec::new();
        for item in get("PKV_QUOTA_ISSUERS")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            check(
                "PKV_QUOTA_ISSUERS",
                did::public_key_from_did(item)
                    .map(|_| quota_issuers.push(item.to_owned()))
                    .map_err(|e| format!("{item:?}: {e}")),
            );
        }
        let dev_mode = quota_issuers.is_empty();

        let mut secret_seed = None;
        match non_empty(get("PKV_SECRET_SEED")) {
            Some(text) => check(
                "PKV_SECRET_SEED",
                parse_seed(&text).map(|s| secret_seed = Some(s)),
            ),
            None if dev_mode => secret_seed = Some(DEV_SECRET_SEED),
            None => check(
                "PKV_SECRET_SEED",
                Err("required when PKV_QUOTA_ISSUERS is set; `pkv keygen` prints one".into()),
            ),
        }
        let mut issuer_seed = None;
        if let Some(text) = non_empty(get("PKV_ISSUER_SEED")) {
            check(
                "PKV_ISSUER_SEED",
                parse_seed(&text).map(|s| issuer_seed = Some(s)),
            );
        }

        let mut num = |name: &str, min: u64| -> u64 {
            let text = get(name);
            match text.parse::<u64>() {
                Ok(n) if n >= min => n,
                Ok(_) => {
                    errors.push(format!("{name}: must be at least {min}, got {text}"));
                    0
                }
                Err(_) => {
                    errors.push(format!("{name}: expected a whole number, got {text:?}"));
                    0
                }
            }
        };
        let default_ttl = num("PKV_DEFAULT_TTL", 1);
        let script_time_limit_ms = num("PKV_SCRIPT_TIME_LIMIT", 1);
        let script_budget_ms = num("PKV_SCRIPT_BUDGET_MS", 0);
        let max_ttl = num("PKV_MAX_TTL", 1);
        let token_leeway = num("PKV_TOKEN_LEEWAY", 0);
        let balance_interval_ms = num("PKV_BALANCE_INTERVAL_MS", 0);
        let max_request_bytes = num("PKV_MAX_REQUEST_BYTES", 1024);
        let max_args = num("PKV_MAX_ARGS", 16);
        let max_connections = num("PKV_MAX_CONNECTIONS", 1);
        let idle_timeout = num("PKV_IDLE_TIMEOUT", 0);
        let auth_timeout = num("PKV_AUTH_TIMEOUT", 1);
        let max_connections_per_account = num("PKV_MAX_CONNECTIONS_PER_ACCOUNT", 1);
        let max_dedicated_per_account = num("PKV_MAX_DEDICATED_PER_ACCOUNT", 1);
        let max_buffered_per_account = num("PKV_MAX_BUFFERED_PER_ACCOUNT", 1024);
        let request_timeout = num("PKV_REQUEST_TIMEOUT", 0);
        let max_output_bytes = num("PKV_MAX_OUTPUT_BYTES", 65536);
        let max_output_per_account = num("PKV_MAX_OUTPUT_PER_ACCOUNT", 65536);
        let max_subscriber_bytes = num("PKV_MAX_SUBSCRIBER_BYTES", 65536);
        let upstream_pool_size = num("PKV_UPSTREAM_POOL_SIZE", 1);
        let threads = num("PKV_THREADS", 0);
        let ledger_replicas = match get("PKV_LEDGER_REPLICAS").as_str() {
            "" => None,
            _ => Some(num("PKV_LEDGER_REPLICAS", 0) as usize),
        };
        let upstream_timeout_ms = num("PKV_UPSTREAM_TIMEOUT_MS", 1);
        let shutdown_grace = num("PKV_SHUTDOWN_GRACE", 0);
        let snapshot_seconds = num("PKV_SNAPSHOT_SECONDS", 1);
        let data_file = non_empty(get("PKV_DATA_FILE")).map(PathBuf::from);
        let append_fsync = match non_empty(get("PKV_APPENDFSYNC")) {
            None => crate::embedded::aof::Policy::default(),
            Some(text) => crate::embedded::aof::Policy::parse(&text).unwrap_or_else(|| {
                errors.push(format!(
                    "PKV_APPENDFSYNC: expected always, everysec or no, got {text:?}"
                ));
                crate::embedded::aof::Policy::default()
            }),
        };
        let maxmemory =
            crate::embedded::memory::parse_size(&get("PKV_MAXMEMORY")).unwrap_or_else(|e| {
                errors.push(format!("PKV_MAXMEMORY: {e}"));
                0
            });
        let keyspace_events = crate::notify::Flags::parse(&get("PKV_KEYSPACE_EVENTS"))
            .unwrap_or_else(|e| {
                errors.push(format!("PKV_KEYSPACE_EVENTS: {e}"));
                None
            });
        if let Some(path) = &data_file {
            if upstream_url.is_some() {
                errors.push(
                    "PKV_DATA_FILE: only the embedded store is saved to a file; unset it or PKV_UPSTREAM_URL"
                        .to_string(),
                );
            } else if let Err(e) = check_data_file(path) {
                errors.push(format!("PKV_DATA_FILE: {e}"));
            }
        }
        let max_unauthenticated =
            match parse_share(&get("PKV_MAX_UNAUTHENTICATED"), max_connections) {
                Ok(n) => n,
                Err(e) => {
                    errors.push(format!("PKV_MAX_UNAUTHENTICATED: {e}"));
                    0
                }
            };
        if max_buffered_per_account < max_request_bytes {
            errors.push(format!(
                "PKV_MAX_BUFFERED_PER_ACCOUNT: {max_buffered_per_account} is below PKV_MAX_REQUEST_BYTES ({max_request_bytes}); one request must fit"
            ));
        }
        if max_output_per_account < max_output_bytes {
            errors.push(format!(
                "PKV_MAX_OUTPUT_PER_ACCOUNT: {max_output_per_account} is below PKV_MAX_OUTPUT_BYTES ({max_output_bytes})"
            ));
        }
        if max_ttl > 0 && default_ttl > max_ttl {
            errors.push(format!(
                "PKV_DEFAULT_TTL: {default_ttl} is above PKV_MAX_TTL ({max_ttl})"
            ));
        }
        let mut metrics_listen = None;
        if let Some(text) = non_empty(get("PKV_METRICS_LISTEN")) {
            match parse_addr(&text) {
                Ok(a) => metrics_listen = Some(a),
                Err(e) => errors.push(format!("PKV_METRICS_LISTEN: {e}")),
            }
        }

        let metering = match get("PKV_METERING").to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => true,
            "off" | "false" | "0" => false,
            other => {
                errors.push(format!("PKV_METERING: expected on or off, got {other:?}"));
                true
            }
        };
        let scripting = match get("PKV_SCRIPTING").to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => true,
            "off" | "false" | "0" => false,
            other => {
                errors.push(format!("PKV_SCRIPTING: expected on or off, got {other:?}"));
                true
            }
        };
        let log_format = match get("PKV_LOG_FORMAT").to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                errors.push(format!(
                    "PKV_LOG_FORMAT: expected text or json, got {other:?}"
                ));
                LogFormat::Text
            }
        };
        let mut price = |name: &str| -> Price {
            Price::parse(&get(name)).unwrap_or_else(|e| {
                errors.push(format!("{name}: {e}"));
                Price::default()
            })
        };
        let prices = Prices {
            op: price("PKV_PRICE_OP"),
            byte_in: price("PKV_PRICE_BYTE_IN"),
            byte_out: price("PKV_PRICE_BYTE_OUT"),
            byte_second: price("PKV_PRICE_BYTE_SECOND"),
            time_ms: price("PKV_PRICE_TIME_MS"),
        };
        let lease = price("PKV_LEASE");
        let low_balance = price("PKV_LOW_BALANCE");
        let lease_nanos = i64::try_from(lease.0 / 1_000_000_000).unwrap_or(i64::MAX);
        if lease_nanos < 1 {
            errors.push("PKV_LEASE: must be at least 0.000000001".to_string());
        }
        let low_balance_nanos = i64::try_from(low_balance.0 / 1_000_000_000).unwrap_or(i64::MAX);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Settings {
            metering,
            scripting,
            script_time_limit: Duration::from_millis(script_time_limit_ms),
            script_budget: Duration::from_millis(script_budget_ms),
            prices,
            lease_nanos,
            low_balance_nanos,
            listen: listen.expect("checked above"),
            plain_listen,
            tls,
            upstream_tls_ca,
            upstream_url,
            ledger_url,
            ledger_replicas,
            data_file,
            snapshot_interval: Duration::from_secs(snapshot_seconds),
            append_fsync,
            maxmemory,
            keyspace_events,
            service_id,
            quota_issuers,
            secret_seed: secret_seed.expect("checked above"),
            dev_mode,
            issuer_seed,
            default_ttl,
            max_ttl,
            token_leeway,
            balance_interval: Duration::from_millis(balance_interval_ms),
            metrics_listen,
            max_request_bytes: max_request_bytes as usize,
            max_args: max_args as usize,
            max_connections: max_connections as usize,
            max_unauthenticated: max_unauthenticated as usize,
            auth_timeout: Duration::from_secs(auth_timeout),
            max_connections_per_account: max_connections_per_account as usize,
            max_dedicated_per_account: max_dedicated_per_account as usize,
            max_buffered_per_account: max_buffered_per_account as usize,
            request_timeout: (request_timeout > 0).then(|| Duration::from_secs(request_timeout)),
            max_output_bytes: max_output_bytes as usize,
            max_output_per_account: max_output_per_account as usize,
            max_subscriber_bytes: max_subscriber_bytes as usize,
            idle_timeout: (idle_timeout > 0).then(|| Duration::from_secs(idle_timeout)),
            upstream_pool_size: upstream_pool_size as usize,
            threads: threads as usize,
            upstream_timeout: Duration::from_millis(upstream_timeout_ms),
            shutdown_grace: Duration::from_secs(shutdown_grace),
            log: get("PKV_LOG"),
            log_format,
            warnings,
        })
    }
}

/// A count given as a number (`250`) or as a percentage of `whole` (`25%`); at least 1.
fn parse_share(text: &str, whole: u64) -> Result<u64, String> {
    let bad = || format!("expected a whole number or a percentage such as 25%, got {text:?}");
    match text.strip_suffix('%') {
        Some(pct) => {
            let pct: u64 = pct.trim().parse().map_err(|_| bad())?;
            if !(1..=100).contains(&pct) {
                return Err(format!("a percentage must be 1% to 100%, got {text:?}"));
            }
            Ok((whole.saturating_mul(pct) / 100).max(1))
        }
        None => match text.parse::<u64>() {
            Ok(0) => Err("must be at least 1".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(bad()),
        },
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A data file must name a file, not a directory.
fn check_data_file(path: &std::path::Path) -> Result<(), String> {
    if path.file_name().is_none() {
        return Err(format!("{} does not name a file", path.display()));
    }
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    Ok(())
}

/// The TLS listener's settings: all of `PKV_TLS_LISTEN`, `PKV_TLS_CERT`, `PKV_TLS_KEY`, or
/// none. The files are read when pkv starts, which names the one that does not load.
fn tls_settings(
    get: &impl Fn(&str) -> String,
    check: &mut impl FnMut(&str, Result<(), String>),
) -> Option<crate::tls::ListenerTls> {
    let listen = non_empty(get("PKV_TLS_LISTEN"));
    let (cert, key) = (
        non_empty(get("PKV_TLS_CERT")),
        non_empty(get("PKV_TLS_KEY")),
    );
    let client_ca = non_empty(get("PKV_TLS_CLIENT_CA")).map(PathBuf::from);
    let Some(listen) = listen else {
        for (name, set) in [
            ("PKV_TLS_CERT", cert.is_some()),
            ("PKV_TLS_KEY", key.is_some()),
            ("PKV_TLS_CLIENT_CA", client_ca.is_some()),
        ] {
            if set {
                check(name, Err("set, but PKV_TLS_LISTEN is not".into()));
            }
        }
        return None;
    };
    let listen = match parse_addr(&listen) {
        Ok(a) => a,
        Err(e) => {
            check("PKV_TLS_LISTEN", Err(e));
            return None;
        }
    };
    let (Some(cert), Some(key)) = (cert, key) else {
        check(
            "PKV_TLS_LISTEN",
            Err("needs PKV_TLS_CERT and PKV_TLS_KEY".into()),
        );
        return None;
    };
    Some(crate::tls::ListenerTls {
        listen,
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
        client_ca,
    })
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("expected host:port such as 127.0.0.1:6380, got {text:?}"))
}

/// Parses a base64 (standard or URL-safe) encoding of exactly 32 bytes.
pub fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(text.trim()).ok())
        .ok_or("not valid base64")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("expected 32 bytes, got {}", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
        Settings::from_map(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_development_mode() {
        let s = load(&[]).unwrap();
        assert!(s.dev_mode);
        assert_eq!(s.listen.to_string(), "127.0.0.1:6380");
        assert_eq!((s.default_ttl, s.max_ttl), (86_400, 31_536_000));
    }

    #[test]
    fn each_bad_setting_gets_one_line() {
        let err = load(&[
            ("PKV_MAX_TTL", "ten"),
            ("PKV_LISTEN", "nowhere"),
            ("PKV_BOGUS", "1"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.0.iter().any(|l| l.starts_with("PKV_MAX_TTL:")));
        assert!(err.0.iter().any(|l| l.starts_with("PKV_LISTEN:")));
        assert!(err.0.iter().any(|l| l.starts_with("PKV_BOGUS:")));
    }

    #[test]
    fn unknown_names_in_the_environment_are_warnings_in_files_errors() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = Settings::from_sources(
            &map(&[("PKV_MAX_TTL", "1000")]),
            &map(&[
                ("PKV_PORT", "tcp://10.0.0.7:6380"),
                ("PKV_DEFAULT_TTL", "10"),
            ]),
        )
        .unwrap();
        assert_eq!((s.default_ttl, s.max_ttl), (10, 1000));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].starts_with("PKV_PORT:"), "{:?}", s.warnings);
        let err = Settings::from_sources(&map(&[("PKV_PORT", "6380")]), &map(&[])).unwrap_err();
        assert!(err.0[0].starts_with("PKV_PORT:"), "{err}");
    }

    #[test]
    fn persistence_settings() {
        let s = load(&[]).unwrap();
        assert_eq!(s.data_file, None);
        assert_eq!(s.snapshot_interval, Duration::from_secs(60));
        let s = load(&[
            ("PKV_DATA_FILE", "data/pkv.snapshot"),
            ("PKV_SNAPSHOT_SECONDS", "5"),
        ])
        .unwrap();
        assert_eq!(s.data_file, Some(PathBuf::from("data/pkv.snapshot")));
        assert_eq!(s.snapshot_interval, Duration::from_secs(5));
        let dir = std::env::temp_dir();
        let err = load(&[
            ("PKV_DATA_FILE", dir.to_str().unwrap()),
            ("PKV_SNAPSHOT_SECONDS", "0"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.0[0].starts_with("PKV_SNAPSHOT_SECONDS:"), "{err}");
        assert!(err.0[1].starts_with("PKV_DATA_FILE:"), "{err}");
        let err = load(&[("PKV_SNAPSHOT_SECONDS", "1.5")]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let err = load(&[
            ("PKV_DATA_FILE", "pkv.snapshot"),
            ("PKV_UPSTREAM_URL", "redis://127.0.0.1:6379"),
        ])
        .unwrap_err();
        assert!(err.0[0].starts_with("PKV_DATA_FILE:"), "{err}");
    }

    #[test]
    fn a_ledger_url_needs_an_upstream() {
        let err = load(&[("PKV_LEDGER_URL", "redis://127.0.0.1:6379")]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].starts_with("PKV_LEDGER_URL:"), "{err}");
        let err = load(&[
            ("PKV_UPSTREAM_URL", "redis://127.0.0.1:6379"),
            ("PKV_LEDGER_URL", "http://ledger"),
        ])
        .unwrap_err();
        assert!(err.0[0].starts_with("PKV_LEDGER_URL:"), "{err}");
        let s = load(&[
            ("PKV_UPSTREAM_URL", "redis://127.0.0.1:6379"),
            ("PKV_LEDGER_URL", "redis://127.0.0.1:6390"),
        ])
        .unwrap();
        assert_eq!(s.ledger_url.as_deref(), Some("redis://127.0.0.1:6390"));
    }

    #[test]
    fn resource_limits() {
        let s = load(&[]).unwrap();
        assert_eq!(s.max_unauthenticated, 2500);
        assert_eq!(s.auth_timeout, Duration::from_secs(10));
        assert_eq!(s.request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(s.max_request_bytes, 16 << 20);
        let s = load(&[("PKV_MAX_CONNECTIONS", "20"), ("PKV_REQUEST_TIMEOUT", "0")]).unwrap();
        assert_eq!((s.max_unauthenticated, s.request_timeout), (5, None));
        let s = load(&[("PKV_MAX_UNAUTHENTICATED", "7")]).unwrap();
        assert_eq!(s.max_unauthenticated, 7);
        for bad in ["0", "0%", "150%", "lots"] {
            let err = load(&[("PKV_MAX_UNAUTHENTICATED", bad)]).unwrap_err();
            assert!(err.0[0].starts_with("PKV_MAX_UNAUTHENTICATED:"), "{err}");
        }
        let err = load(&[
            ("PKV_MAX_REQUEST_BYTES", "2048"),
            ("PKV_MAX_BUFFERED_PER_ACCOUNT", "1024"),
        ])
        .unwrap_err();
        assert!(
            err.0[0].starts_with("PKV_MAX_BUFFERED_PER_ACCOUNT:"),
            "{err}"
        );
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(load(&[]).unwrap().log_format, LogFormat::Text);
        let s = load(&[("PKV_LOG_FORMAT", "JSON")]).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        let err = load(&[("PKV_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].starts_with("PKV_LOG_FORMAT:"), "{err}");
    }

    #[test]
    fn issuers_require_a_secret_seed() {
        let did = did::did_from_public_key(&[7; 32]);
        let err = load(&[("PKV_QUOTA_ISSUERS", &did)]).unwrap_err();
        assert!(err.0[0].starts_with("PKV_SECRET_SEED:"), "{err}");
    }
}

#[cfg(test)]
mod env_example {
    use super::SETTINGS;

    /// `.env.example` lists every setting with its default, and nothing else.
    #[test]
    fn env_example_matches_the_settings() {
        let text = include_str!("../.env.example");
        let listed: Vec<(&str, &str)> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_once('='))
            .collect();
        let expected: Vec<(&str, &str)> = SETTINGS.iter().map(|s| (s.name, s.default)).collect();
        assert_eq!(listed, expected);
    }
}

#[cfg(test)]
mod tls_settings {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
        Settings::from_map(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn says(pairs: &[(&str, &str)], line: &str) -> bool {
        load(pairs).is_err_and(|e| e.0.iter().any(|l| l.starts_with(line)))
    }

    #[test]
    fn the_tls_listener_comes_with_its_certificate_and_key() {
        let listen = ("PKV_TLS_LISTEN", "127.0.0.1:6390");
        assert!(says(&[listen], "PKV_TLS_LISTEN: needs PKV_TLS_CERT"));
        assert!(says(
            &[("PKV_TLS_CERT", "c.pem")],
            "PKV_TLS_CERT: set, but PKV_TLS_LISTEN is not"
        ));
        assert!(says(
            &[("PKV_TLS_CLIENT_CA", "ca.pem")],
            "PKV_TLS_CLIENT_CA: set, but"
        ));
        let s = load(&[listen, ("PKV_TLS_CERT", "c.pem"), ("PKV_TLS_KEY", "k.pem")]).unwrap();
        let tls = s.tls.unwrap();
        assert_eq!(tls.listen.to_string(), "127.0.0.1:6390");
        assert!(tls.client_ca.is_none());
        assert!(s.plain_listen, "the plain listener stays beside it");
    }

    #[test]
    fn an_empty_listen_turns_the_plain_listener_off_only_beside_tls() {
        let s = load(&[
            ("PKV_LISTEN", ""),
            ("PKV_TLS_LISTEN", "127.0.0.1:6390"),
            ("PKV_TLS_CERT", "c.pem"),
            ("PKV_TLS_KEY", "k.pem"),
        ])
        .unwrap();
        assert!(!s.plain_listen);
        assert!(says(&[("PKV_LISTEN", "")], "PKV_LISTEN: "));
        let s = load(&[]).unwrap();
        assert!(s.plain_listen && s.tls.is_none());
    }

    #[test]
    fn rediss_upstreams_are_taken_but_not_unverified_ones() {
        let s = load(&[("PKV_UPSTREAM_URL", "rediss://127.0.0.1:6379")]).unwrap();
        assert!(s.upstream_tls_ca.is_none());
        assert!(says(
            &[("PKV_UPSTREAM_URL", "rediss://127.0.0.1:6379/#insecure")],
            "PKV_UPSTREAM_URL: rediss:// without certificate checks"
        ));
        assert!(says(
            &[
                ("PKV_UPSTREAM_URL", "rediss://127.0.0.1:6379"),
                ("PKV_UPSTREAM_TLS_CA", "/no/such/ca.pem")
            ],
            "PKV_UPSTREAM_TLS_CA: /no/such/ca.pem is not a readable file"
        ));
    }
}
