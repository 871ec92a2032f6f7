//! `/metrics`: every figure written in the Prometheus text format by prometheus-client.
//!
//! One [`Collector`] reads everything when scraped: the process's counters and histograms
//! ([`super::process`]), the server's own counters ([`super::Metrics`]) and what can only
//! be counted at the moment (connections by state, leases, the pool, the store).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::process::{process, AuthResult, Family, Histogram, Outcome, QUANTITIES};
use crate::server::Shared;

/// The Prometheus text format's content type.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A registry holding the collector of `shared`'s figures; `ready` is the last readiness
/// check (1 ready, 0 not, -1 not checked yet).
pub fn registry(shared: Arc<Shared>, ready: Arc<AtomicI64>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { shared, ready }));
    registry
}

/// `registry`'s figures, as text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "metrics could not be written");
    }
    out
}

struct Scrape {
    shared: Arc<Shared>,
    ready: Arc<AtomicI64>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// Writes one unlabelled counter (the encoder adds `_total`).
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Writes a gauge or counter with one label, one sample per value.
fn labelled(
    e: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    label: &str,
    samples: impl IntoIterator<Item = (&'static str, i64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (value, n) in samples {
        let labels = [(label, value)];
        let sample = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => {
                ConstCounter::new(u64::try_from(n).unwrap_or(0)).encode(sample)?;
            }
            _ => ConstGauge::new(n).encode(sample)?,
        }
    }
    Ok(())
}

fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> std::fmt::Result {
    let (sum, count, buckets) = h.read();
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = process();
        let shared = &self.shared;
        let old = &shared.metrics;

        // Commands.
        let mut m = e.encode_descriptor(
            "pkv_commands_by_family",
            "Commands by family (the command table's section) and result (ok, error, refused).",
            None,
            MetricType::Counter,
        )?;
        for family in Family::ALL {
            for outcome in Outcome::ALL {
                let labels = [("family", family.label()), ("result", outcome.label())];
                ConstCounter::new(p.commands(family, outcome)).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "pkv_commands",
            "Requests taken, whatever became of them (unknown and refused ones too).",
            old.commands_total.load(Ordering::Relaxed),
        )?;
        histogram(
            &mut e,
            "pkv_request_duration_seconds",
            "From a read's requests taken up to their replies written to the client.",
            &p.client_latency,
        )?;
        histogram(
            &mut e,
            "pkv_upstream_duration_seconds",
            "Round trip of one pipeline to the backend (upstream Redis or embedded store).",
            &p.backend_latency,
        )?;
        counter(
            &mut e,
            "pkv_noquota_refusals",
            "Commands refused NOQUOTA: the balance could not pay for them.",
            p.noquota.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "pkv_upstream_errors",
            "Pipelines whose replies never came from the backend.",
            old.upstream_errors_total.load(Ordering::Relaxed),
        )?;

        // Authentication.
        labelled(
            &mut e,
            (
                "pkv_auth_results",
                "AUTH results by reason (ok, or why the token was refused).",
                MetricType::Counter,
            ),
            "result",
            AuthResult::ALL.map(|r| (r.label(), int(p.auth(r)))),
        )?;
        counter(
            &mut e,
            "pkv_auth_failures",
            "AUTHs refused (all reasons of pkv_auth_results_total but ok).",
            old.auth_failures_total.load(Ordering::Relaxed),
        )?;

        // Money.
        counter(
            &mut e,
            "pkv_tokens_redeemed",
            "Quota tokens credited to an account (AUTH or PKV.TOPUP).",
            p.redeemed.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "pkv_credits_redeemed_units",
            "Units of quota credited by redeemed tokens.",
            p.credited_units.load(Ordering::Relaxed),
        )?;
        labelled(
            &mut e,
            (
                "pkv_revenue_nanounits",
                "Nano-units charged, by metered quantity (each share rounded down).",
                MetricType::Counter,
            ),
            "quantity",
            QUANTITIES
                .iter()
                .enumerate()
                .map(|(i, q)| (*q, int(p.revenue(i)))),
        )?;
        counter(
            &mut e,
            "pkv_spent_nanounits",
            "Nano-units charged in all, as the accounts paid them.",
            p.spent.load(Ordering::Relaxed),
        )?;
        let (leases, leased) = shared.meter.leases();
        gauge(
            &mut e,
            "pkv_leases_outstanding",
            "Accounts this process holds a lease of credit for.",
            int(leases),
        )?;
        gauge(
            &mut e,
            "pkv_leased_nanounits",
            "Credit this process holds in leases, not yet spent, in nano-units.",
            leased,
        )?;

        // Connections.
        let open = int(old.connections.load(Ordering::Relaxed));
        let (authed, blocked) = shared.tenants.totals();
        let (authed, blocked) = (int(authed), int(blocked));
        let subscribed = p.subscribed.load(Ordering::Relaxed).max(0);
        gauge(&mut e, "pkv_connections", "Client connections open.", open)?;
        counter(
            &mut e,
            "pkv_connections",
            "Client connections accepted.",
            old.connections_total.load(Ordering::Relaxed),
        )?;
        labelled(
            &mut e,
            (
                "pkv_connections_by_state",
                "Client connections by state: pre_auth, authed (neither blocked nor subscribed), blocked, subscribed.",
                MetricType::Gauge,
            ),
            "state",
            [
                ("pre_auth", (open - authed).max(0)),
                ("authed", (authed - blocked - subscribed).max(0)),
                ("blocked", blocked),
                ("subscribed", subscribed),
            ],
        )?;

        // The backend.
        gauge(
            &mut e,
            "pkv_ready",
            "The last readiness check (as /readyz, every 5 s): 1 ready, 0 not, -1 not yet checked.",
            self.ready.load(Ordering::Relaxed),
        )?;
        let figures = shared.backend.figures();
        if let Some(pool) = figures.pool {
            labelled(
                &mut e,
                (
                    "pkv_upstream_pool_connections",
                    "Pooled upstream connections by state: open, broken (failed, to be replaced), unconnected.",
                    MetricType::Gauge,
                ),
                "state",
                [
                    ("open", int(pool.open)),
                    ("broken", int(pool.broken)),
                    ("unconnected", int(pool.unconnected)),
                ],
            )?;
        }
        counter(
            &mut e,
            "pkv_upstream_connects",
            "Pooled upstream connections made (the first ones and reconnections).",
            p.upstream_connects.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "pkv_upstream_connect_failures",
            "Attempts to connect a pooled upstream connection that failed.",
            p.upstream_connect_failures.load(Ordering::Relaxed),
        )?;
        if let Some(keys) = figures.keys {
            gauge(
                &mut e,
                "pkv_embedded_keys",
                "Keys in the embedded store (with expired ones not yet swept).",
                int(keys),
            )?;
            counter(
                &mut e,
                "pkv_embedded_expired_keys",
                "Keys the embedded store's active expiry deleted.",
                p.expired_keys.load(Ordering::Relaxed),
            )?;
        }
        if let Some((used, limit)) = figures.memory {
            gauge(
                &mut e,
                "pkv_embedded_memory_used_bytes",
                "Bytes the embedded store's data holds (keys, values, per-entry overhead, the ledger), as counted against PKV_MAXMEMORY.",
                int(used),
            )?;
            gauge(
                &mut e,
                "pkv_embedded_memory_limit_bytes",
                "PKV_MAXMEMORY in force, in bytes; 0 when there is no limit.",
                int(limit),
            )?;
        }
        if let Some(s) = figures.snapshot {
            gauge(
                &mut e,
                "pkv_snapshot_age_seconds",
                "Seconds since the embedded store's data was last known on disk (last good snapshot, or start-up).",
                int(s.age_secs),
            )?;
            gauge(
                &mut e,
                "pkv_snapshot_bytes",
                "Size of the last snapshot written, in bytes.",
                int(s.bytes),
            )?;
            counter(
                &mut e,
                "pkv_snapshot_failures",
                "Snapshots that failed.",
                s.failures,
            )?;
            gauge(
                &mut e,
                "pkv_snapshot_failing",
                "1 while the last snapshot failed.",
                i64::from(s.failing),
            )?;
        }
        Ok(())
    }
}
