//! Counters, and the optional HTTP endpoint that serves them (`/metrics`, `/healthz`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Process-wide counters.
#[derive(Default)]
pub struct Metrics {
    /// Open client connections.
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub commands_total: AtomicU64,
    pub auth_failures_total: AtomicU64,
    pub upstream_errors_total: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, value) in [
            ("pkv_connections", "gauge", &self.connections),
            ("pkv_connections_total", "counter", &self.connections_total),
            ("pkv_commands_total", "counter", &self.commands_total),
            (
                "pkv_auth_failures_total",
                "counter",
                &self.auth_failures_total,
            ),
            (
                "pkv_upstream_errors_total",
                "counter",
                &self.upstream_errors_total,
            ),
        ] {
            let _ = writeln!(
                out,
                "# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// One account's own figures in this process, which its `INFO` shows: a tenant sees its
/// connections and commands, never the process's (other tenants' traffic).
#[derive(Debug, Default)]
pub struct TenantStats {
    /// Connections authenticated as the account now.
    pub connections: AtomicU64,
    /// Connections that authenticated as the account.
    pub connections_total: AtomicU64,
    /// Commands its connections ran.
    pub commands_total: AtomicU64,
    /// Its connections waiting in a blocking command now (`blocked_clients` in its INFO),
    /// which clients and tests watch to know that a push will find the waiter.
    pub blocked: AtomicU64,
}

/// Runs `wait`, a blocking command handed to the backend, counting the connection in
/// `tenant`'s [`TenantStats::blocked`] from the first time it is left waiting until it
/// ends or is dropped (the client left, shutdown). The backend has taken the command by
/// then: the embedded store has registered the waiter, so a write that follows wakes it.
pub async fn while_blocked<F: std::future::Future>(
    tenant: Option<Arc<TenantStats>>,
    wait: F,
) -> F::Output {
    /// Takes the connection off the count however the wait ends.
    struct Blocked(Arc<TenantStats>);
    impl Drop for Blocked {
        fn drop(&mut self) {
            self.0.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let mut tenant = tenant;
    let mut counted: Option<Blocked> = None;
    let mut wait = std::pin::pin!(wait);
    let output = std::future::poll_fn(|cx| {
        let polled = wait.as_mut().poll(cx);
        if polled.is_pending() && counted.is_none() {
            counted = tenant.take().map(|t| {
                t.blocked.fetch_add(1, Ordering::Relaxed);
                Blocked(t)
            });
        }
        polled
    })
    .await;
    drop(counted);
    output
}

/// Every account's [`TenantStats`], kept while the account has connections in this
/// process (so the map is bounded by the connections, not by every account ever seen).
#[derive(Default)]
pub struct Tenants {
    map: DashMap<Arc<str>, Arc<TenantStats>>,
}

impl Tenants {
    /// A connection authenticated as `account`.
    pub fn attach(&self, account: &Arc<str>) -> Arc<TenantStats> {
        // Counted under the map's lock, so a concurrent last detach cannot remove the
        // entry between finding it and counting on it.
        let stats = self.map.entry(account.clone()).or_default();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.clone()
    }

    /// A connection of `account` closed or moved to another account.
    pub fn detach(&self, account: &str, stats: &TenantStats) {
        if stats.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.map
                .remove_if(account, |_, s| s.connections.load(Ordering::Relaxed) == 0);
        }
    }
}

/// Serves `/metrics` and `/healthz` over plain HTTP/1.1 until the task is dropped.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    loop {
        let (mut socket, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf))
                    .await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics()),
                "/healthz" => ("200 OK", "ok\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
