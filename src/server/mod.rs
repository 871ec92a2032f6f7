//! The listener, shared state, and graceful shutdown.
//!
//! [`serve`] accepts clients until the shutdown future resolves, then stops accepting,
//! tells every connection to finish what it is doing ([`Shared::stopping`]), and waits up
//! to the grace period for them to close. Each connection runs [`connection::serve`]; a
//! client waiting in a blocking command is answered and let go at once rather than held
//! until the grace ends.

mod client_io;
mod connection;
mod limits;

pub use limits::LimitError;
mod local;
mod reload;
mod session;
mod stream;
mod tls_listener;

pub use tls_listener::TlsListener;

pub use reload::{reload_on_hangup, Current, Reloaded};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::backend::Backend;
use crate::config::Settings;
use crate::embedded::Store;
use crate::meter::ledger::{Book, Ledger};
use crate::meter::Meter;
use crate::metrics::{Metrics, Tenants};
use crate::upstream::book::RedisBook;
use crate::upstream::Upstream;

/// State every connection shares.
pub struct Shared {
    /// The settings as loaded at start-up: what a reload cannot change is read here, the
    /// rest from [`Shared::current`].
    pub settings: Settings,
    /// The settings in force, with what is made from them; a reload replaces them whole.
    current: arc_swap::ArcSwap<Current>,
    /// Counts reloads, so that a session takes the settings again only after one.
    generation: AtomicU64,
    /// Where commands run: the upstream Redis, or the embedded store.
    pub backend: Arc<dyn Backend>,
    pub ledger: Arc<Ledger>,
    pub meter: Arc<Meter>,
    pub metrics: Metrics,
    /// Each account's own figures, for its `INFO`.
    pub tenants: Tenants,
    /// Connections, dedicated connections and buffered bytes per account.
    pub limits: limits::AccountLimits,
    /// Connections that have not authenticated yet (`PKV_MAX_UNAUTHENTICATED`), so
    /// strangers cannot hold every connection slot.
    pub strangers: Arc<limits::Strangers>,
    /// The upstream's `redis_version`, read from it once (HELLO and INFO report it).
    pub upstream_version: tokio::sync::OnceCell<String>,
    /// Each account's Lua scripts (`SCRIPT LOAD`, `EVALSHA`).
    pub scripts: crate::scripting::Registry,
    /// Each account's ACL user and script connections on an upstream.
    pub upstream_scripts: crate::scripting::upstream::Accounts,
    next_client_id: AtomicU64,
    /// Set once when shutdown begins; every connection watches it.
    stop: watch::Sender<bool>,
    /// Keyspace notifications, handed to each tenant's subscribers.
    pub notify: Arc<crate::notify::Hub>,
}

impl Shared {
    pub fn new(settings: Settings) -> Result<Self, String> {
        let (backend, book): (Arc<dyn Backend>, Arc<dyn Book>) = match &settings.upstream_url {
            Some(url) if crate::upstream::cluster::is_cluster_url(url) => {
                crate::upstream::cluster::backend(&settings)?
            }
            Some(url) => {
                let ca = settings.upstream_tls_ca.as_deref();
                let upstream = Upstream::with_tls(
                    url,
                    ca,
                    settings.upstream_pool_size,
                    settings.upstream_timeout,
                )
                .map_err(|e| format!("PKV_UPSTREAM_URL: {e}"))?;
                let upstream = Arc::new(upstream);
                // The ledger in a Redis of its own, out of reach of the data's eviction.
                let ledger = match &settings.ledger_url {
                    Some(url) => Arc::new(
                        Upstream::with_tls(
                            url,
                            ca,
                            settings.upstream_pool_size,
                            settings.upstream_timeout,
                        )
                        .map_err(|e| format!("PKV_LEDGER_URL: {e}"))?,
                    ),
                    None => upstream.clone(),
                };
                let replicas = settings.ledger_replicas.unwrap_or(0);
                let book = RedisBook::new(ledger).waiting_for(Arc::new(replicas.into()));
                (upstream, Arc::new(book))
            }
            None => {
                let store = Arc::new(Store::open(&settings)?);
                (store.clone(), store)
            }
        };
        let ledger = Arc::new(Ledger::new(book));
        let meter = reload::meter_config(&settings);
        Ok(Shared {
            current: arc_swap::ArcSwap::from_pointee(Current::new(settings.clone())),
            generation: AtomicU64::new(0),
            meter: Arc::new(Meter::new(meter, ledger.clone())),
            ledger,
            backend,
            metrics: Metrics::default(),
            tenants: Tenants::default(),
            limits: limits::AccountLimits::new(&settings),
            strangers: Arc::new(limits::Strangers::new(settings.max_unauthenticated)),
            upstream_version: tokio::sync::OnceCell::new(),
            scripts: crate::scripting::Registry::default(),
            upstream_scripts: Default::default(),
            next_client_id: AtomicU64::new(1),
            stop: watch::Sender::new(false),
            notify: Arc::new(crate::notify::Hub::new(settings.keyspace_events)),
            settings,
        })
    }

    /// The settings in force now, for one command or one decision: read them once and let
    /// go (a reload waits for no one, but the old settings live while this is held).
    pub fn current(&self) -> arc_swap::Guard<Arc<Current>> {
        self.current.load()
    }

    /// The settings in force now, to keep for as long as a connection lasts.
    pub fn current_full(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// How many reloads have been taken up.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            // The sender lives as long as `Shared`; an error means it is gone, so stop too.
            let _ = stop.wait_for(|stopping| *stopping).await;
        }
    }
}

/// Serves clients from `listener` until `shutdown` resolves. An error means the backend
/// could not finish its shutdown (the embedded store's last snapshot failed).
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    serve_with(shared, Some(listener), None, shutdown).await
}

/// Like [`serve`], from a plain listener, a TLS listener, or both; their clients share the
/// connection limits.
pub async fn serve_with(
    shared: Arc<Shared>,
    listener: Option<TcpListener>,
    tls: Option<TlsListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    // Every connection holds a clone of `done_tx`; `done_rx` yields `None` once all are gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections));
    let settler = tokio::spawn(shared.meter.clone().settle_forever());
    let housekeeping = tokio::spawn(shared.backend.clone().housekeeping());
    let notifications = tokio::spawn(notifications(shared.clone()));
    // The upstream's version is read now, so that the first HELLO does not wait for it.
    tokio::spawn(Shared::redis_version(shared.clone()));
    tokio::spawn(local::check_upstream_scripting(shared.clone()));
    let certs = tls.as_ref().map(|t| tokio::spawn(t.certs.clone().watch()));
    tokio::pin!(shutdown);
    loop {
        let (accepted, acceptor) = tokio::select! {
            () = &mut shutdown => break,
            accepted = tls_listener::accept(listener.as_ref()) => (accepted, None),
            accepted = tls_listener::accept(tls.as_ref().map(|t| &t.listener)) => {
                (accepted, tls.as_ref().map(|t| t.acceptor.clone()))
            }
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Refusals are written without waiting: a fresh socket takes a short line at once,
        // and the accept loop never waits on a client.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // A TLS client could not read the line.
            if acceptor.is_none() {
                let _ = socket.try_write(b"-ERR max number of clients reached\r\n");
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let arrived = Instant::now();
            let stream = match acceptor {
                None => Some(stream::ClientStream::Tcp(socket)),
                Some(acceptor) => tls_listener::handshake(&shared, &acceptor, socket, peer).await,
            };
            if let Some(stream) = stream {
                connection::serve(shared, stream, peer, arrived).await;
            }
            drop(permit);
            drop(done);
        });
    }
    drop((listener, tls));
    if let Some(certs) = certs {
        certs.abort();
    }
    let open = shared.metrics.connections.load(Ordering::Relaxed);
    tracing::info!(
        open,
        "shutting down: no longer accepting; letting connections finish"
    );
    shared.stop.send_replace(true);
    drop(done_tx);
    let grace = shared.current().shutdown_grace;
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
    }
    settler.abort();
    // Everything spent is recorded and every unspent lease goes back to its account.
    shared.meter.settle_all(true).await;
    housekeeping.abort();
    notifications.abort();
    shared.backend.shutdown().await
}

/// pkv's own subscription to the backend's keyspace events ([`crate::notify::run`]); on an
/// upstream, `notify-keyspace-events` is set there first.
async fn notifications(shared: Arc<Shared>) {
    let settings = &shared.settings;
    let before = || async {
        if let (Some(url), Some(flags)) = (&settings.upstream_url, settings.keyspace_events) {
            let (ca, timeout) = (
                settings.upstream_tls_ca.as_deref(),
                settings.upstream_timeout,
            );
            crate::upstream::notify::enable_or_warn(url, ca, flags.backend(), timeout).await;
        }
    };
    crate::notify::run(shared.notify.clone(), shared.backend.clone(), before).await
}
