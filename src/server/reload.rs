//! Reloading settings on SIGHUP.
//!
//! A reload reads the same sources as start-up (`pkv.toml`, `.env`, the environment; the
//! environment of a running process does not change, so in practice the two files) and
//! validates the whole new [`Settings`] as start-up would. If they are invalid, the current
//! settings stay and one line says why. If they are valid, what is made from them (the
//! [`Current`] settings with their authenticator, the meter's prices, the per-account
//! limits) is replaced at once, and one line names what changed.
//!
//! What a running process cannot take up (addresses it listens on, the upstream and the
//! ledger it is connected to, its threads, its log set-up, ...) is left as it was and
//! named in one line as needing a restart. A new `PKV_SECRET_SEED` refuses the whole
//! reload: every account id and session token derives from it, so every balance would
//! seem to vanish.
//!
//! Who sees what: open connections take up a reload too. A command paid after the swap
//! pays the new prices (the meter reads them at each payment); the requests a session
//! reads after it are held to the new TTL bounds and request limits (a session takes the
//! settings again at its next read, see `Session::tick`). A connection's own timeouts (auth, idle, request) are those in force when it
//! connected. Sessions opened with a quota token of an issuer a reload removed go on (the
//! token's credit is already in the account); new `AUTH`s with such tokens are refused.

use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::meter::MeterConfig;

use super::Shared;

/// The settings in force, and what is made from them; replaced whole by a reload. Reads
/// as the [`Settings`] it holds.
pub struct Current {
    pub settings: Settings,
    pub auth: Authenticator,
    /// The default TTL as a command argument, for `SET ... EX <default>`.
    pub default_ttl_arg: Bytes,
}

impl Current {
    pub fn new(settings: Settings) -> Self {
        Current {
            auth: Authenticator::new(&settings.auth()),
            default_ttl_arg: Bytes::from(settings.default_ttl.to_string()),
            settings,
        }
    }
}

impl Deref for Current {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// The meter's settings, as made from `settings`.
pub(super) fn meter_config(settings: &Settings) -> MeterConfig {
    MeterConfig {
        enabled: settings.metering,
        prices: settings.prices,
        lease: settings.lease_nanos,
        low_balance: settings.low_balance_nanos,
        hold_back: settings.upstream_timeout,
    }
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings now in force with new values.
    pub changed: Vec<&'static str>,
    /// Settings given new values that need a restart; left as they were.
    pub need_restart: Vec<&'static str>,
}

/// For each listed field that differs, pushes its setting's name to `$list`; with
/// `restore`, also puts the old value back into `$new`.
macro_rules! compare {
    ($old:ident, $new:ident, $list:ident, $($field:ident $(. $sub:ident)? => $name:literal),+ $(,)?) => {
        $(if $old.$field$(.$sub)? != $new.$field$(.$sub)? {
            $list.push($name);
        })+
    };
    (restore $old:ident, $new:ident, $list:ident, $($field:ident => $name:literal),+ $(,)?) => {
        $(if $old.$field != $new.$field {
            $list.push($name);
            $new.$field = $old.$field.clone();
        })+
    };
}

/// Compares `new` with the settings in force; puts back in `new` what needs a restart.
/// `Err` when `new` cannot be taken up at all.
fn differences(old: &Settings, new: &mut Settings) -> Result<Reloaded, String> {
    if old.secret_seed != new.secret_seed {
        return Err(
            "PKV_SECRET_SEED: account ids and session tokens derive from it; \
                    changing it needs a restart (and moves every balance to a new account id)"
                .into(),
        );
    }
    let mut need_restart = Vec::new();
    compare!(restore old, new, need_restart,
        listen => "PKV_LISTEN",
        upstream_url => "PKV_UPSTREAM_URL",
        ledger_url => "PKV_LEDGER_URL",
        ledger_replicas => "PKV_LEDGER_REPLICAS",
        data_file => "PKV_DATA_FILE",
        snapshot_interval => "PKV_SNAPSHOT_SECONDS",
        // Session tokens carry it as their issuer: a new one would end every session token.
        service_id => "PKV_SERVICE_ID",
        metrics_listen => "PKV_METRICS_LISTEN",
        // Connection slots are counted by a semaphore made at start-up.
        max_connections => "PKV_MAX_CONNECTIONS",
        upstream_pool_size => "PKV_UPSTREAM_POOL_SIZE",
        threads => "PKV_THREADS",
        upstream_timeout => "PKV_UPSTREAM_TIMEOUT_MS",
        // Commands in flight were admitted with metering on or off; their payment must match.
        metering => "PKV_METERING",
        // The notification hub and the upstream's notify-keyspace-events are set up at start-up.
        keyspace_events => "PKV_KEYSPACE_EVENTS",
        log => "PKV_LOG",
        log_format => "PKV_LOG_FORMAT",
    );
    let mut changed = Vec::new();
    let (old, new) = (old, &*new);
    compare!(old, new, changed,
        quota_issuers => "PKV_QUOTA_ISSUERS",
        issuer_seed => "PKV_ISSUER_SEED",
        default_ttl => "PKV_DEFAULT_TTL",
        max_ttl => "PKV_MAX_TTL",
        token_leeway => "PKV_TOKEN_LEEWAY",
        balance_interval => "PKV_BALANCE_INTERVAL_MS",
        max_request_bytes => "PKV_MAX_REQUEST_BYTES",
        max_buffered_per_account => "PKV_MAX_BUFFERED_PER_ACCOUNT",
        request_timeout => "PKV_REQUEST_TIMEOUT",
        max_output_bytes => "PKV_MAX_OUTPUT_BYTES",
        max_output_per_account => "PKV_MAX_OUTPUT_PER_ACCOUNT",
        max_subscriber_bytes => "PKV_MAX_SUBSCRIBER_BYTES",
        max_args => "PKV_MAX_ARGS",
        max_unauthenticated => "PKV_MAX_UNAUTHENTICATED",
        auth_timeout => "PKV_AUTH_TIMEOUT",
        max_connections_per_account => "PKV_MAX_CONNECTIONS_PER_ACCOUNT",
        max_dedicated_per_account => "PKV_MAX_DEDICATED_PER_ACCOUNT",
        idle_timeout => "PKV_IDLE_TIMEOUT",
        shutdown_grace => "PKV_SHUTDOWN_GRACE",
        prices.op => "PKV_PRICE_OP",
        prices.byte_in => "PKV_PRICE_BYTE_IN",
        prices.byte_out => "PKV_PRICE_BYTE_OUT",
        prices.byte_second => "PKV_PRICE_BYTE_SECOND",
        prices.time_ms => "PKV_PRICE_TIME_MS",
        lease_nanos => "PKV_LEASE",
        low_balance_nanos => "PKV_LOW_BALANCE",
        maxmemory => "PKV_MAXMEMORY",
        scripting => "PKV_SCRIPTING",
        script_time_limit => "PKV_SCRIPT_TIME_LIMIT",
        script_budget => "PKV_SCRIPT_BUDGET_MS",
    );
    Ok(Reloaded {
        changed,
        need_restart,
    })
}

impl Shared {
    /// Takes up `new` settings, already validated, in place of the current ones (but for
    /// those that need a restart, which keep their values). `Err` says why nothing changed.
    pub fn reload(&self, mut new: Settings) -> Result<Reloaded, String> {
        let current = self.current();
        let reloaded = differences(&current.settings, &mut new)?;
        drop(current);
        self.limits.set_limits(&new);
        self.strangers.set_max(new.max_unauthenticated);
        self.meter.reconfigure(meter_config(&new));
        self.backend.reconfigure(&new);
        self.current.store(Arc::new(Current::new(new)));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(reloaded)
    }
}

/// Logs what a reload did, one line for what changed and one for what needs a restart.
fn log_outcome(outcome: Result<Reloaded, String>) {
    match outcome {
        Ok(reloaded) => {
            if !reloaded.need_restart.is_empty() {
                tracing::warn!(
                    "settings reload: {} changed but needs a restart; left as it was",
                    reloaded.need_restart.join(", ")
                );
            }
            if reloaded.changed.is_empty() {
                tracing::info!("settings reloaded; nothing else changed");
            } else {
                tracing::info!(
                    "settings reloaded; now in force: {}",
                    reloaded.changed.join(", ")
                );
            }
        }
        Err(why) => {
            tracing::error!("settings reload refused, keeping the current settings: {why}");
        }
    }
}

/// Reloads the settings from `pkv.toml`, `.env` and the environment each time the process
/// receives SIGHUP, until the process ends. SIGHUP is watched from when this returns (until
/// then it would end the process), so call it before saying pkv is up.
pub fn reload_on_hangup(shared: Arc<Shared>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for SIGHUP; settings will not reload");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let outcome = match tokio::task::spawn_blocking(Settings::load).await {
                    Ok(Ok(new)) => shared.reload(new),
                    Ok(Err(errors)) => Err(errors.0.join("; ")),
                    Err(e) => Err(format!("reading the settings failed: {e}")),
                };
                log_outcome(outcome);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = shared;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut raw: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        raw.entry("PKV_SECRET_SEED".into())
            .or_insert_with(|| "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into());
        Settings::from_map(&raw).unwrap()
    }

    #[tokio::test]
    async fn a_reload_applies_what_it_can_and_names_the_rest() {
        let shared = Shared::new(settings(&[])).unwrap();
        let reloaded = shared
            .reload(settings(&[
                ("PKV_LISTEN", "127.0.0.1:7000"),
                ("PKV_MAX_TTL", "500"),
                ("PKV_DEFAULT_TTL", "400"),
                ("PKV_PRICE_OP", "0.5"),
                ("PKV_MAX_UNAUTHENTICATED", "3"),
            ]))
            .unwrap();
        assert_eq!(reloaded.need_restart, ["PKV_LISTEN"]);
        assert_eq!(
            reloaded.changed,
            [
                "PKV_DEFAULT_TTL",
                "PKV_MAX_TTL",
                "PKV_MAX_UNAUTHENTICATED",
                "PKV_PRICE_OP"
            ]
        );
        let now = shared.current();
        assert_eq!(now.listen.to_string(), "127.0.0.1:6380");
        assert_eq!((now.default_ttl, now.max_ttl), (400, 500));
        assert_eq!(&now.default_ttl_arg[..], b"400");
        assert_eq!(
            shared.meter.prices().op,
            crate::meter::Price::parse("0.5").unwrap()
        );
        drop(now);

        let again = shared.reload(shared.current().settings.clone()).unwrap();
        assert_eq!(again, Reloaded::default());
    }

    #[tokio::test]
    async fn a_new_secret_seed_refuses_the_whole_reload() {
        let shared = Shared::new(settings(&[])).unwrap();
        let err = shared
            .reload(settings(&[
                (
                    "PKV_SECRET_SEED",
                    "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
                ),
                ("PKV_PRICE_OP", "0.5"),
            ]))
            .unwrap_err();
        assert!(err.starts_with("PKV_SECRET_SEED:"), "{err}");
        assert_eq!(shared.meter.prices(), settings(&[]).prices);
    }
}
