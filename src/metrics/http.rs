//! The HTTP endpoint (`PKV_METRICS_LISTEN`), served by hyper: `/metrics`, `/healthz`
//! (the process answers), `/readyz` (it can serve: the backend answers, the ledger takes
//! a write, persistence keeps up) and `/accounts/top?limit=N` (the biggest spenders, for
//! `pkv accounts top`; per-account figures, so the endpoint is for operators only).

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::exposition;
use crate::server::Shared;

/// How long `/readyz` waits for each check (a PING upstream, a write to the ledger).
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a client of the endpoint may take to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How often readiness is checked for the `pkv_ready` gauge.
const READY_EVERY: Duration = Duration::from_secs(5);

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let readiness = Arc::new(AtomicI64::new(-1));
    let registry = Arc::new(exposition::registry(shared.clone(), readiness.clone()));
    // Readiness as a gauge, for dashboards and alerts (`/readyz` checks afresh each time);
    // the checker ends with this task.
    let checker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(READY_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = i64::from(ready(&shared).await.is_ok());
                readiness.store(now, Ordering::Relaxed);
            }
        })
    };
    let _stop_checker = AbortOnDrop(checker);
    loop {
        let (socket, _) = listener.accept().await?;
        let (registry, shared) = (registry.clone(), shared.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (registry, shared) = (registry.clone(), shared.clone());
                async move { Ok::<_, Infallible>(answer(&req, &registry, &shared).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(socket), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn answer(
    req: &Request<Incoming>,
    registry: &prometheus_client::registry::Registry,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            exposition::CONTENT_TYPE,
            exposition::render(registry),
        ),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => match ready(shared).await {
            Ok(()) => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
        },
        "/accounts/top" => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or(crate::accounts::DEFAULT_LIMIT)
                .min(crate::accounts::MAX_LIMIT);
            match shared.ledger.top(limit).await {
                Ok(top) => text(StatusCode::OK, PLAIN, crate::accounts::table(&top)),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
    }
}

/// Ready when the backend answers (a PING on a pooled upstream connection; the embedded
/// store answers by being in the process, and its snapshots must be keeping up) and the
/// ledger takes a write; otherwise why not. Both are asked at once, each within
/// [`READY_TIMEOUT`].
pub async fn ready(shared: &Shared) -> Result<(), String> {
    let backend = async {
        tokio::time::timeout(READY_TIMEOUT, shared.backend.ready())
            .await
            .unwrap_or_else(|_| Err("upstream: no answer to PING in time".into()))
    };
    let ledger = async {
        tokio::time::timeout(READY_TIMEOUT, shared.ledger.check())
            .await
            .unwrap_or_else(|_| Err("ledger: no answer in time".into()))
    };
    let (backend, ledger) = tokio::join!(backend, ledger);
    let reasons: Vec<String> = [backend, ledger]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
}
