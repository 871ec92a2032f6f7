//! A Redis Cluster upstream (`PKV_UPSTREAM_URL=redis+cluster://host:port[,host:port...]`).
//!
//! The slot map (`CLUSTER SLOTS`) is read from any node that answers, at start-up (the
//! backend's housekeeping) and again whenever a node says a slot moved, and every
//! [`REFRESH_EVERY`] besides. Each master gets pooled connections of its own (the same
//! [`Pool`] and [`Conn`] a single upstream uses). A batch is split by the slot of each
//! command's keys ([`slot::key_slot`]), the parts go to their masters at once, and the
//! replies are put back in the batch's order. `-MOVED` refreshes the map and sends the
//! command again to the node named; `-ASK` sends `ASKING` and the command to the node named,
//! leaving the map as it is; at most [`MAX_REDIRECTS`] hops per command.
//!
//! A command whose keys span slots gets Redis's `CROSSSLOT`. KEYS asks every master, and
//! SCAN walks them one after the other with one cursor ([`scan_cursor`]), so DBSIZE,
//! RANDOMKEY and FLUSHDB, which pkv emulates with SCAN, cover them all. A dedicated connection
//! (MULTI/WATCH, blocking commands) is made to the master of the slot its first keyed
//! command names, and a transaction stays in that slot. Pub/Sub runs on any live node
//! (Redis Cluster carries `PUBLISH` to every node) and moves when that node dies
//! (`pubsub.rs`).

pub mod detect;
mod pubsub;
pub mod slot;
mod wait;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::ConnectionInfo;

use super::conn::Conn;
use super::pool::Pool;
use super::{Upstream, CONNECT_TIMEOUT};
use crate::backend::{self, Backend, BackendError, BoxFuture, Subscription};
use crate::commands::{self, ArgRole, Call};
use crate::error::ClientError;
use crate::protocol::frame::Frame;
use crate::protocol::Proto;

/// The scheme of a cluster upstream's URL.
pub const SCHEME: &str = "redis+cluster://";

/// How many times one command may be redirected (`MOVED`, `ASK`) before pkv gives up.
pub const MAX_REDIRECTS: usize = 5;

/// How often the slot map is read again even when no node said it changed.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Refreshes closer together than this are one refresh: a burst of `MOVED` replies for the
/// same change reads the map once.
const REFRESH_GAP: Duration = Duration::from_millis(100);

/// True when `url` names a Redis Cluster.
pub fn is_cluster_url(url: &str) -> bool {
    url.get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

/// A cluster URL read: the credentials part (`user:pass@` or empty) and the seeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub userinfo: String,
    pub seeds: Vec<String>,
}

impl ClusterUrl {
    /// The plain `redis://` URL of one node, with the cluster URL's credentials.
    fn node_url(&self, addr: &str) -> String {
        format!("redis://{}{addr}", self.userinfo)
    }
}

/// Reads `redis+cluster://[user:pass@]host:port[,host:port...]`.
pub fn parse_url(url: &str) -> Result<ClusterUrl, String> {
    if !is_cluster_url(url) {
        return Err(format!("a cluster URL starts with {SCHEME}"));
    }
    let rest = &url[SCHEME.len()..];
    let (userinfo, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains(['/', '?', '#']) {
        return Err("a cluster URL names nodes only (no database, path or options)".into());
    }
    let mut seeds = Vec::new();
    for seed in hosts.split(',') {
        let (host, port) = seed
            .rsplit_once(':')
            .ok_or_else(|| format!("{seed:?} is not host:port"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{seed:?} is not host:port"));
        }
        redis::Client::open(format!("redis://{userinfo}{seed}"))
            .map_err(|e| format!("{seed:?}: {e}"))?;
        seeds.push(seed.to_owned());
    }
    Ok(ClusterUrl {
        userinfo: userinfo.to_owned(),
        seeds,
    })
}

/// Where one command goes.
#[derive(Debug, Clone)]
enum Route {
    /// The master of this slot.
    Slot(u16),
    /// Any master: the command names no key.
    Any,
    /// Every master, replies concatenated (KEYS).
    Every,
    /// One master after another, as the cursor says (SCAN).
    Scan,
    /// Not sent: answered with this error.
    Refuse(ClientError),
}

/// The route of `call`, from the slots of its keys.
fn route(call: &Call) -> Route {
    let Some(spec) = call.spec() else {
        return Route::Any;
    };
    match spec.name {
        "SCAN" => return Route::Scan,
        "KEYS" => return Route::Every,
        // Redis Cluster carries a PUBLISH to every node: any master takes it, whichever
        // slot its channel name falls in (SPUBLISH, sharded, keeps its slot).
        "PUBLISH" => return Route::Any,
        _ => {}
    }
    // A request whose keys cannot be located was refused before it got here; pkv's own
    // commands always locate.
    let Ok(located) = commands::locate(spec, call.args()) else {
        return Route::Any;
    };
    let mut found = None;
    for (at, role) in located.keys {
        if role != ArgRole::Key {
            continue;
        }
        let Some(key) = call.args().get(at) else {
            continue;
        };
        let slot = slot::key_slot(key);
        match found {
            None => found = Some(slot),
            Some(first) if first != slot => return Route::Refuse(ClientError::CrossSlot),
            Some(_) => {}
        }
    }
    found.map_or(Route::Any, Route::Slot)
}

/// A redirection a node answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Redirect {
    ask: bool,
    addr: String,
}

/// Reads `MOVED <slot> <host:port>` or `ASK <slot> <host:port>`; an empty host is the host
/// of the node that answered (`from`).
fn redirect(frame: &Frame, from: &str) -> Option<Redirect> {
    let Frame::Error(line) = frame else {
        return None;
    };
    let ask = if line.starts_with(b"MOVED ") {
        false
    } else if line.starts_with(b"ASK ") {
        true
    } else {
        return None;
    };
    let text = std::str::from_utf8(line).ok()?;
    let addr = text.split(' ').nth(2)?;
    let addr = match addr.strip_prefix(':') {
        Some(port) => format!("{}:{port}", host_of(from)),
        None => addr.to_owned(),
    };
    Some(Redirect { ask, addr })
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// One master (or a node a redirection named), with its pools.
struct Node {
    addr: String,
    info: ConnectionInfo,
    pools: [Pool; 2],
}

impl Node {
    async fn send(
        &self,
        proto: Proto,
        calls: &[Call],
        response_timeout: Duration,
    ) -> Result<Vec<Frame>, BackendError> {
        let pool = &self.pools[proto as usize];
        let (slot, conn) = pool
            .get(|| {
                Conn::connect_with(
                    &self.info,
                    None,
                    proto,
                    CONNECT_TIMEOUT,
                    Some(response_timeout),
                )
            })
            .await?;
        let result = conn.send(calls).await;
        if conn.is_broken() {
            pool.invalidate(slot);
        }
        result
    }
}

/// Which master serves each slot.
#[derive(Default)]
struct SlotMap {
    owners: Vec<Option<Arc<Node>>>,
    masters: Vec<Arc<Node>>,
}

impl SlotMap {
    fn owner(&self, slot: u16) -> Option<&Arc<Node>> {
        self.owners.get(usize::from(slot)).and_then(Option::as_ref)
    }

    fn any(&self) -> Option<&Arc<Node>> {
        self.masters.first()
    }
}

struct Inner {
    url: ClusterUrl,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    map: arc_swap::ArcSwap<SlotMap>,
    /// Held while the map is read; when it was last read.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    pool_size: usize,
    response_timeout: Duration,
    /// 1 while every master has a replica, else 0 ([`wait`]).
    replicated: Arc<std::sync::atomic::AtomicUsize>,
}

impl Inner {
    /// The node at `addr`, made on first use.
    fn node(&self, addr: &str) -> Result<Arc<Node>, BackendError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = nodes.get(addr) {
            return Ok(node.clone());
        }
        let info = redis::Client::open(self.url.node_url(addr))
            .map_err(|e| BackendError::Unavailable(format!("cluster node {addr}: {e}")))?
            .get_connection_info()
            .clone();
        let node = Arc::new(Node {
            addr: addr.to_owned(),
            info,
            pools: [Pool::new(self.pool_size), Pool::new(self.pool_size)],
        });
        nodes.insert(addr.to_owned(), node.clone());
        Ok(node)
    }

    fn map(&self) -> Arc<SlotMap> {
        self.map.load_full()
    }

    /// Reads the slot map from the first node that gives one: the known masters, then the
    /// seeds.
    async fn refresh(&self) -> Result<(), String> {
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFRESH_GAP) {
            return Ok(());
        }
        let mut candidates: Vec<String> =
            self.map().masters.iter().map(|n| n.addr.clone()).collect();
        for seed in &self.url.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut why = String::from("no node to ask");
        for addr in candidates {
            let node = match self.node(&addr) {
                Ok(node) => node,
                Err(e) => {
                    why = crate::error::ClientError::Backend(e).line().into_owned();
                    continue;
                }
            };
            let ask = [Call::named("CLUSTER").arg("SLOTS")];
            let reply = node.send(Proto::Resp2, &ask, self.response_timeout).await;
            let mut replicas = 0;
            let ranges = match reply.map(|mut r| r.pop()) {
                Ok(Some(frame)) => {
                    replicas = wait::fewest_replicas(&frame).min(1);
                    parse_slots(frame, host_of(&addr))
                }
                Ok(None) => Err("no reply".into()),
                Err(e) => Err(ClientError::Backend(e).line().into_owned()),
            };
            match ranges {
                Ok(ranges) => {
                    let map = self
                        .build(&ranges)
                        .map_err(|e| ClientError::Backend(e).line())?;
                    tracing::info!(from = %addr, masters = map.masters.len(), "cluster slot map read");
                    self.map.store(Arc::new(map));
                    self.replicated
                        .store(replicas, std::sync::atomic::Ordering::Relaxed);
                    *last = Some(Instant::now());
                    return Ok(());
                }
                Err(e) => why = format!("{addr}: {e}"),
            }
        }
        tracing::warn!(why = %why, "cluster slot map not read");
        Err(why)
    }

    fn build(&self, ranges: &[(u16, u16, String)]) -> Result<SlotMap, BackendError> {
        let mut map = SlotMap {
            owners: vec![None; slot::SLOTS],
            masters: Vec::new(),
        };
        for (start, end, addr) in ranges {
            let node = self.node(addr)?;
            if !map.masters.iter().any(|m| m.addr == node.addr) {
                map.masters.push(node.clone());
            }
            for slot in *start..=*end {
                if let Some(owner) = map.owners.get_mut(usize::from(slot)) {
                    *owner = Some(node.clone());
                }
            }
        }
        // In address order, so that a SCAN cursor names the same master across map reads.
        map.masters.sort_by(|a, b| a.addr.cmp(&b.addr));
        Ok(map)
    }

    /// The master of `slot`, reading the map first when it has none.
    async fn owner(&self, route: &Route) -> Option<Arc<Node>> {
        for attempt in 0..2 {
            let map = self.map();
            let node = match route {
                Route::Slot(slot) => map.owner(*slot),
                _ => map.any(),
            };
            if let Some(node) = node {
                return Some(node.clone());
            }
            if attempt == 0 && self.refresh().await.is_err() {
                return None;
            }
        }
        None
    }

    /// Follows `reply`'s redirections for `call`, as `from` answered it.
    async fn follow(&self, proto: Proto, call: &Call, mut reply: Frame, from: &str) -> Frame {
        let mut from = from.to_owned();
        for _ in 0..MAX_REDIRECTS {
            let Some(to) = redirect(&reply, &from) else {
                return reply;
            };
            if !to.ask {
                // The map is out of date; the node named is right either way.
                let _ = self.refresh().await;
            }
            let node = match self.node(&to.addr) {
                Ok(node) => node,
                Err(e) => return Frame::error(ClientError::Backend(e).line()),
            };
            let sent = if to.ask {
                let calls = [Call::named("ASKING"), call.clone()];
                node.send(proto, &calls, self.response_timeout)
                    .await
                    .map(|mut r| r.pop())
            } else {
                node.send(proto, std::slice::from_ref(call), self.response_timeout)
                    .await
                    .map(|mut r| r.pop())
            };
            reply = match sent {
                Ok(Some(frame)) => frame,
                Ok(None) => Frame::Null,
                Err(e) => return Frame::error(ClientError::Backend(e).line()),
            };
            from = to.addr;
        }
        match redirect(&reply, &from) {
            Some(_) => Frame::error(ClientError::TooManyRedirects.line()),
            None => reply,
        }
    }

    /// Runs `calls`, each on the master of its slot; replies in the batch's order.
    async fn send(&self, proto: Proto, calls: &[Call]) -> Result<Vec<Frame>, BackendError> {
        let routes: Vec<Route> = calls.iter().map(route).collect();
        let mut replies: Vec<Option<Frame>> = vec![None; calls.len()];
        // Calls by master, in batch order within each.
        let mut groups: Vec<(Arc<Node>, Vec<usize>)> = Vec::new();
        let mut every = Vec::new();
        let mut map = self.map();
        if map.masters.is_empty() {
            // Not read yet (the cluster was down at start-up).
            let _ = self.refresh().await;
            map = self.map();
        }
        // The master of the last call sent, which a `WAIT` after it goes to ([`wait`]).
        let mut last: Option<Arc<Node>> = None;
        for (i, route) in routes.iter().enumerate() {
            let owner = match route {
                Route::Any if wait::is_wait(&calls[i]) && last.is_some() => last.clone(),
                Route::Slot(slot) => map.owner(*slot).cloned(),
                _ => map.any().cloned(),
            };
            match route {
                Route::Refuse(err) => replies[i] = Some(Frame::error(err.line())),
                Route::Every | Route::Scan => every.push(i),
                Route::Slot(_) | Route::Any => {
                    let Some(node) = owner else {
                        replies[i] = Some(Frame::error(ClientError::ClusterDown.line()));
                        continue;
                    };
                    last = Some(node.clone());
                    match groups.iter_mut().find(|(n, _)| Arc::ptr_eq(n, &node)) {
                        Some((_, at)) => at.push(i),
                        None => groups.push((node, vec![i])),
                    }
                }
            }
        }
        let whole = groups.len() == 1 && groups[0].1.len() == calls.len();
        let batches: Vec<Vec<Call>> = if whole {
            Vec::new()
        } else {
            groups
                .iter()
                .map(|(_, at)| at.iter().map(|&i| calls[i].clone()).collect())
                .collect()
        };
        let sends = groups.iter().enumerate().map(|(g, (node, _))| {
            let batch: &[Call] = if whole { calls } else { &batches[g] };
            node.send(proto, batch, self.response_timeout)
        });
        let mut results = futures_util::future::join_all(sends).await;
        // Commands that name no key (PING, PUBLISH) may run on any master: those a master
        // could not be reached for go to another, so a dead master costs them nothing.
        for ((node, at), result) in groups.iter().zip(results.iter_mut()) {
            if !matches!(result, Err(BackendError::Unavailable(_)))
                || !at.iter().all(|&i| matches!(routes[i], Route::Any))
            {
                continue;
            }
            let batch: Vec<Call> = at.iter().map(|&i| calls[i].clone()).collect();
            for other in map.masters.iter().filter(|m| !Arc::ptr_eq(m, node)) {
                let retried = other.send(proto, &batch, self.response_timeout).await;
                if !matches!(retried, Err(BackendError::Unavailable(_))) {
                    *result = retried;
                    break;
                }
            }
        }
        let mut failure: Option<BackendError> = None;
        // Whether any part was handed to a master (answered or lost): it may have run.
        let mut sent = false;
        for ((node, at), result) in groups.iter().zip(results) {
            sent |= !matches!(result, Err(BackendError::Unavailable(_)));
            match result {
                Ok(frames) => {
                    // The reply of a `WAIT` that went with the redirected call before it.
                    let mut waited = None;
                    for (k, (&i, frame)) in at.iter().zip(frames).enumerate() {
                        if let Some(reply) = waited.take() {
                            replies[i] = Some(reply);
                            continue;
                        }
                        let frame = if redirect(&frame, &node.addr).is_none() {
                            frame
                        } else if let Some(j) = at.get(k + 1).filter(|&&j| wait::is_wait(&calls[j]))
                        {
                            let (reply, wait) = self
                                .follow_waiting(proto, [&calls[i], &calls[*j]], frame, &node.addr)
                                .await;
                            waited = Some(wait);
                            reply
                        } else {
                            self.follow(proto, &calls[i], frame, &node.addr).await
                        };
                        replies[i] = Some(frame);
                    }
                }
                Err(err) => {
                    if failure.as_ref().is_none_or(|f| !f.may_have_run()) {
                        failure = Some(err);
                    }
                }
            }
        }
        if let Some(err) = failure {
            // The batch fails whole; it is reported as possibly run (and paid for what it
            // is known to cost) when any part of it reached a master, as "nothing ran" only
            // when no part did.
            let err = match err {
                BackendError::Unavailable(why) if sent => BackendError::Lost(why),
                err => err,
            };
            let _ = self.refresh().await;
            return Err(err);
        }
        for i in every {
            replies[i] = Some(match routes[i] {
                Route::Scan => self.scan(proto, &calls[i]).await?,
                _ => self.every(proto, &calls[i]).await?,
            });
        }
        Ok(replies.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// One step of a SCAN across the masters: the cursor says which master and where in
    /// it (see [`scan_cursor`]); a master's last page moves the cursor to the next one.
    async fn scan(&self, proto: Proto, call: &Call) -> Result<Frame, BackendError> {
        if self.map().masters.is_empty() {
            let _ = self.refresh().await;
        }
        let map = self.map();
        let masters = map.masters.len();
        if masters == 0 {
            return Ok(Frame::error(ClientError::ClusterDown.line()));
        }
        let cursor = call
            .args()
            .get(1)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u64>().ok());
        let Some((node, inner)) = cursor.and_then(|c| scan_cursor::split(c, masters)) else {
            return Ok(Frame::error(ClientError::InvalidCursor.line()));
        };
        let mut args = call.args().to_vec();
        if let Some(at) = args.get_mut(1) {
            *at = Bytes::from(inner.to_string());
        }
        let step = match call.spec() {
            Some(spec) => Call::new(spec, args),
            None => return Ok(Frame::error(ClientError::InvalidCursor.line())),
        };
        let reply = map.masters[node]
            .send(proto, std::slice::from_ref(&step), self.response_timeout)
            .await?
            .pop()
            .unwrap_or_default();
        let Frame::Array(mut parts) = reply else {
            return Ok(reply);
        };
        let next = match parts.first() {
            Some(Frame::Bulk(c)) => std::str::from_utf8(c).ok().and_then(|c| c.parse().ok()),
            _ => None,
        };
        let Some(next) = next else {
            return Ok(Frame::Array(parts));
        };
        let cursor = if next == 0 {
            if node + 1 < masters {
                scan_cursor::join(node + 1, 0)
            } else {
                Some(0)
            }
        } else {
            scan_cursor::join(node, next)
        };
        let Some(cursor) = cursor else {
            return Ok(Frame::error(ClientError::InvalidCursor.line()));
        };
        if let Some(first) = parts.first_mut() {
            *first = Frame::Bulk(Bytes::from(cursor.to_string()));
        }
        Ok(Frame::Array(parts))
    }

    /// Runs `call` on every master; their arrays concatenated, or the first error.
    async fn every(&self, proto: Proto, call: &Call) -> Result<Frame, BackendError> {
        if self.map().masters.is_empty() {
            let _ = self.refresh().await;
        }
        let map = self.map();
        if map.masters.is_empty() {
            return Ok(Frame::error(ClientError::ClusterDown.line()));
        }
        let sends = map
            .masters
            .iter()
            .map(|node| node.send(proto, std::slice::from_ref(call), self.response_timeout));
        let mut all = Vec::new();
        for result in futures_util::future::join_all(sends).await {
            match result?.pop() {
                Some(Frame::Array(items) | Frame::Set(items)) => all.extend(items),
                Some(error @ Frame::Error(_)) => return Ok(error),
                _ => {}
            }
        }
        Ok(Frame::Array(all))
    }
}

/// A SCAN cursor across the masters: the master's place in the map (masters in address
/// order) in the low bits, that master's own cursor above them. Redis's cursors index its
/// hash table, far below 2^54, so the pair fits a cursor clients read as a 64-bit number.
pub mod scan_cursor {
    /// Masters a cursor can name; Redis Cluster's own limit is about 1000 nodes.
    const NODES: u64 = 1024;

    /// The cursor for `inner` on the master at `node`; `None` if it does not fit.
    pub fn join(node: usize, inner: u64) -> Option<u64> {
        let node = u64::try_from(node).ok().filter(|&n| n < NODES)?;
        inner.checked_mul(NODES)?.checked_add(node)
    }

    /// The master and its cursor a cursor names, if it names one of `masters`.
    pub fn split(cursor: u64, masters: usize) -> Option<(usize, u64)> {
        let node = usize::try_from(cursor % NODES).ok()?;
        (node < masters).then_some((node, cursor / NODES))
    }
}

/// Reads a `CLUSTER SLOTS` reply into `(start, end, master address)` ranges.
fn parse_slots(frame: Frame, asked_host: &str) -> Result<Vec<(u16, u16, String)>, String> {
    let Frame::Array(entries) = frame else {
        return match frame {
            Frame::Error(line) => Err(String::from_utf8_lossy(&line).into_owned()),
            _ => Err("CLUSTER SLOTS answered something else than an array".into()),
        };
    };
    let mut ranges = Vec::new();
    for entry in entries {
        let Frame::Array(parts) = entry else {
            return Err("a CLUSTER SLOTS entry is not an array".into());
        };
        let number = |f: Option<&Frame>| match f {
            Some(Frame::Integer(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(start), Some(end)) = (number(parts.first()), number(parts.get(1))) else {
            return Err("a CLUSTER SLOTS entry has no slot range".into());
        };
        let Some(Frame::Array(master)) = parts.get(2) else {
            return Err("a CLUSTER SLOTS entry has no master".into());
        };
        let host = match master.first() {
            Some(Frame::Bulk(h)) if !h.is_empty() && &h[..] != b"?" => {
                String::from_utf8_lossy(h).into_owned()
            }
            _ => asked_host.to_owned(),
        };
        let Some(Frame::Integer(port)) = master.get(1) else {
            return Err("a CLUSTER SLOTS master has no port".into());
        };
        if usize::from(end) >= slot::SLOTS || start > end {
            return Err("a CLUSTER SLOTS range is out of bounds".into());
        }
        ranges.push((start, end, format!("{host}:{port}")));
    }
    Ok(ranges)
}

/// A Redis Cluster as pkv's backend.
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    /// Prepares connections to the cluster `url` names; nothing connects until the
    /// housekeeping task reads the slot map or a command is sent.
    pub fn new(url: &str, pool_size: usize, response_timeout: Duration) -> Result<Self, String> {
        let url = parse_url(url)?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                url,
                nodes: Mutex::new(HashMap::new()),
                map: arc_swap::ArcSwap::from_pointee(SlotMap::default()),
                refreshed: tokio::sync::Mutex::new(None),
                pool_size,
                response_timeout,
                replicated: Default::default(),
            }),
        })
    }

    /// Reads the slot map now (start-up, tests).
    pub async fn refresh(&self) -> Result<(), String> {
        self.inner.refresh().await
    }

    /// The masters' addresses, as the slot map last read names them.
    pub fn masters(&self) -> Vec<String> {
        self.inner
            .map()
            .masters
            .iter()
            .map(|n| n.addr.clone())
            .collect()
    }
}

impl Backend for Cluster {
    fn pipeline<'a>(
        &'a self,
        proto: Proto,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>> {
        Box::pin(self.inner.send(proto, calls))
    }

    fn dedicated(
        &self,
        proto: Proto,
    ) -> BoxFuture<'_, Result<Box<dyn backend::Dedicated>, BackendError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            Ok(Box::new(Dedicated {
                inner,
                proto,
                conn: None,
                slot: None,
                held: Vec::new(),
                open: false,
            }) as Box<dyn backend::Dedicated>)
        })
    }

    fn subscription(&self, max_queued: usize) -> BoxFuture<'_, Result<Subscription, BackendError>> {
        Box::pin(pubsub::subscription(self.inner.clone(), max_queued))
    }

    fn housekeeping(self: Arc<Self>) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            loop {
                let _ = inner.refresh().await;
                tokio::time::sleep(REFRESH_EVERY).await;
            }
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            super::ping_outcome(self.inner.send(Proto::Resp2, &[Call::named("PING")]).await)
        })
    }

    fn figures(&self) -> crate::metrics::BackendFigures {
        let mut pool = crate::metrics::PoolFigures::default();
        for node in &self.inner.map().masters {
            for p in &node.pools {
                pool.add(p.figures());
            }
        }
        crate::metrics::BackendFigures {
            pool: Some(pool),
            ..Default::default()
        }
    }
}

/// A connection for one client, made to the master of the slot its first keyed command
/// names. While a transaction (MULTI or WATCH) is open on it, its commands must stay in
/// that slot, as Redis Cluster requires; between transactions a command of another slot
/// moves it to that slot's master.
struct Dedicated {
    inner: Arc<Inner>,
    proto: Proto,
    conn: Option<(Arc<Node>, Conn)>,
    slot: Option<u16>,
    /// `MULTI`s answered `OK` before any keyed command said which master the transaction
    /// runs on; sent first on that master.
    held: Vec<Call>,
    /// MULTI or WATCH in force on the connection.
    open: bool,
}

impl Dedicated {
    async fn connect(&mut self, node: Arc<Node>) -> Result<(), BackendError> {
        let conn = Conn::connect_with(&node.info, None, self.proto, CONNECT_TIMEOUT, None).await?;
        self.conn = Some((node, conn));
        Ok(())
    }

    async fn run(&mut self, calls: &[Call]) -> Result<Vec<Frame>, BackendError> {
        let mut slot = None;
        for call in calls {
            match route(call) {
                Route::Refuse(err) => return Ok(refused(calls.len(), &err)),
                Route::Every | Route::Scan => {
                    return Ok(refused(calls.len(), &ClientError::ClusterKeyspaceWalk))
                }
                Route::Slot(s) if slot.is_some_and(|t| t != s) => {
                    return Ok(refused(calls.len(), &ClientError::CrossSlot))
                }
                Route::Slot(s) => slot = Some(s),
                Route::Any => {}
            }
        }
        match (slot, &self.conn) {
            (Some(s), Some(_)) if self.slot == Some(s) => {}
            (Some(_), Some(_)) if self.open => {
                return Ok(refused(calls.len(), &ClientError::CrossSlot));
            }
            (Some(s), _) => {
                let node = self
                    .inner
                    .owner(&Route::Slot(s))
                    .await
                    .ok_or_else(|| BackendError::Unavailable("no cluster slot map".into()))?;
                self.connect(node).await?;
                self.slot = Some(s);
            }
            (None, Some(_)) => {}
            (None, None) => {
                if calls.iter().all(|c| is(c, "MULTI")) {
                    self.held.extend(calls.iter().cloned());
                    return Ok(vec![Frame::OK; calls.len()]);
                }
                let node = self
                    .inner
                    .owner(&Route::Any)
                    .await
                    .ok_or_else(|| BackendError::Unavailable("no cluster slot map".into()))?;
                self.connect(node).await?;
            }
        }
        let Some((node, conn)) = &self.conn else {
            return Err(BackendError::Unavailable("no connection".into()));
        };
        let (node, conn) = (node.clone(), conn.clone());
        let held = std::mem::take(&mut self.held);
        let mut replies = if held.is_empty() {
            conn.send(calls).await?
        } else {
            let mut all = held.clone();
            all.extend(calls.iter().cloned());
            let mut replies = conn.send(&all).await?;
            replies.drain(..held.len().min(replies.len()));
            self.open = true;
            replies
        };
        for call in calls {
            if is(call, "MULTI") || is(call, "WATCH") {
                self.open = true;
            } else if is(call, "EXEC") || is(call, "DISCARD") || is(call, "UNWATCH") {
                self.open = false;
            }
        }
        if !self.open {
            // A blocking command (no transaction to keep): follow the slot where it went.
            for (i, call) in calls.iter().enumerate() {
                if let Some(to) = replies.get(i).and_then(|r| redirect(r, &node.addr)) {
                    let frame = self.resend(call, to).await?;
                    replies[i] = frame;
                }
            }
        }
        Ok(replies)
    }

    /// Sends `call` again on a connection to the node a redirection named, which the
    /// connection then stays on.
    async fn resend(&mut self, call: &Call, mut to: Redirect) -> Result<Frame, BackendError> {
        for _ in 0..MAX_REDIRECTS {
            if !to.ask {
                let _ = self.inner.refresh().await;
            }
            let node = self.inner.node(&to.addr)?;
            self.connect(node.clone()).await?;
            let Some((_, conn)) = &self.conn else {
                return Err(BackendError::Unavailable("no connection".into()));
            };
            let mut calls = Vec::new();
            if to.ask {
                calls.push(Call::named("ASKING"));
            }
            calls.push(call.clone());
            let reply = conn.send(&calls).await?.pop().unwrap_or_default();
            match redirect(&reply, &node.addr) {
                Some(next) => to = next,
                None => return Ok(reply),
            }
        }
        Ok(Frame::error(ClientError::TooManyRedirects.line()))
    }
}

fn is(call: &Call, name: &str) -> bool {
    call.args()
        .first()
        .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

fn refused(n: usize, err: &ClientError) -> Vec<Frame> {
    vec![Frame::error(err.line()); n]
}

impl backend::Dedicated for Dedicated {
    fn pipeline<'a>(
        &'a mut self,
        calls: &'a [Call],
    ) -> BoxFuture<'a, Result<Vec<Frame>, BackendError>> {
        Box::pin(self.run(calls))
    }
}

/// Where the ledger goes with a cluster upstream: in the cluster itself (no
/// `PKV_LEDGER_URL`, see [`super::book::Layout::Cluster`]), or on a plain Redis of its own.
/// A `PKV_LEDGER_URL` naming a cluster is refused: a cluster used for the ledger alone
/// gains nothing over keeping it in the upstream.
pub fn check_ledger(_upstream_url: &str, ledger_url: Option<&str>) -> Result<(), String> {
    match ledger_url {
        Some(url) if is_cluster_url(url) => Err(
            "the ledger cannot be on a Redis Cluster of its own; name a plain Redis (redis://) \
             for it, or leave PKV_LEDGER_URL unset to keep it in the cluster upstream"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Where commands run, and where the ledger is kept.
pub type BackendAndBook = (Arc<dyn Backend>, Arc<dyn crate::meter::ledger::Book>);

/// The backend and the ledger's book for a cluster upstream (`settings.upstream_url` is a
/// cluster URL): the ledger in the cluster, or on `settings.ledger_url` (see
/// [`check_ledger`]).
pub fn backend(settings: &crate::config::Settings) -> Result<BackendAndBook, String> {
    let url = settings.upstream_url.as_deref().unwrap_or_default();
    let cluster = Arc::new(
        Cluster::new(url, settings.upstream_pool_size, settings.upstream_timeout)
            .map_err(|e| format!("PKV_UPSTREAM_URL: {e}"))?,
    );
    let Some(ledger_url) = settings.ledger_url.as_deref() else {
        let replicas = match settings.ledger_replicas {
            Some(n) => Arc::new(std::sync::atomic::AtomicUsize::new(n)),
            None => cluster.replicated(),
        };
        let book = super::book::RedisBook::in_cluster(cluster.clone()).waiting_for(replicas);
        return Ok((cluster, Arc::new(book)));
    };
    check_ledger(url, Some(ledger_url)).map_err(|e| format!("PKV_LEDGER_URL: {e}"))?;
    let ledger = Upstream::with_tls(
        ledger_url,
        settings.upstream_tls_ca.as_deref(),
        settings.upstream_pool_size,
        settings.upstream_timeout,
    )
    .map_err(|e| format!("PKV_LEDGER_URL: {e}"))?;
    let replicas = Arc::new(std::sync::atomic::AtomicUsize::new(
        settings.ledger_replicas.unwrap_or(0),
    ));
    Ok((
        cluster,
        Arc::new(super::book::RedisBook::new(Arc::new(ledger)).waiting_for(replicas)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_are_read_and_checked() {
        let url = parse_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(url.seeds, vec!["127.0.0.1:7000", "127.0.0.1:7001"]);
        assert_eq!(url.userinfo, "");
        let url = parse_url("redis+cluster://u:p@h:1/").unwrap();
        assert_eq!(url.userinfo, "u:p@");
        assert_eq!(url.seeds, vec!["h:1"]);
        for bad in [
            "redis+cluster://",
            "redis+cluster://h",
            "redis+cluster://h:0",
            "redis+cluster://h:1,",
            "redis+cluster://h:1/2",
            "redis://h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scan_cursors_name_a_master_and_its_cursor() {
        assert_eq!(scan_cursor::split(0, 3), Some((0, 0)));
        let c = scan_cursor::join(2, 12345).unwrap();
        assert_eq!(scan_cursor::split(c, 3), Some((2, 12345)));
        assert_eq!(
            scan_cursor::split(c, 2),
            None,
            "a master the map does not have"
        );
        assert_eq!(scan_cursor::join(1, u64::MAX / 2), None);
        assert_eq!(scan_cursor::join(1, 0), Some(1));
    }

    /// A node that owns every slot and yet answers every command with `MOVED` to itself:
    /// pkv gives up after [`MAX_REDIRECTS`] hops with an error, rather than looping.
    #[tokio::test]
    async fn redirections_are_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let moved = Arc::new(AtomicUsize::new(0));
        let counted = moved.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    // pkv sends one command and waits for its reply each time here.
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let reply = if buf[..n].windows(7).any(|w| w == b"CLUSTER") {
                            format!(
                                "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{port}\r\n"
                            )
                        } else {
                            counted.fetch_add(1, Ordering::SeqCst);
                            format!("-MOVED 1 127.0.0.1:{port}\r\n")
                        };
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let url = format!("redis+cluster://127.0.0.1:{port}");
        let cluster = Cluster::new(&url, 1, Duration::from_secs(2)).unwrap();
        cluster.refresh().await.unwrap();
        assert_eq!(cluster.masters(), vec![format!("127.0.0.1:{port}")]);
        let get = Call::new(
            commands::row("GET").unwrap(),
            vec!["GET".into(), "k".into()],
        );
        let replies = tokio::time::timeout(
            Duration::from_secs(10),
            cluster.pipeline(Proto::Resp2, std::slice::from_ref(&get)),
        )
        .await
        .expect("no endless redirections")
        .unwrap();
        assert_eq!(
            replies,
            vec![Frame::error(ClientError::TooManyRedirects.line())]
        );
        assert_eq!(moved.load(Ordering::SeqCst), 1 + MAX_REDIRECTS);
    }

    #[test]
    fn redirections_are_read() {
        let moved = Frame::error("MOVED 3999 127.0.0.1:7002");
        assert_eq!(
            redirect(&moved, "x:1"),
            Some(Redirect {
                ask: false,
                addr: "127.0.0.1:7002".into()
            })
        );
        let ask = Frame::error("ASK 3999 :7003");
        assert_eq!(
            redirect(&ask, "10.0.0.1:7000"),
            Some(Redirect {
                ask: true,
                addr: "10.0.0.1:7003".into()
            })
        );
        assert_eq!(redirect(&Frame::error("ERR MOVED"), "x:1"), None);
    }

    #[test]
    fn keys_of_one_command_in_two_slots_are_refused() {
        let mset = commands::row("MSET").unwrap();
        let call = Call::new(
            mset,
            vec![
                "MSET".into(),
                "a".into(),
                "1".into(),
                "b".into(),
                "2".into(),
            ],
        );
        assert!(matches!(
            route(&call),
            Route::Refuse(ClientError::CrossSlot)
        ));
        let call = Call::new(
            mset,
            vec![
                "MSET".into(),
                "{u}a".into(),
                "1".into(),
                "{u}b".into(),
                "2".into(),
            ],
        );
        assert!(matches!(route(&call), Route::Slot(s) if s == slot::key_slot(b"u")));
        assert!(matches!(route(&Call::named("PING")), Route::Any));
        let publish = Call::new(
            commands::row("PUBLISH").unwrap(),
            vec!["PUBLISH".into(), "news".into(), "hi".into()],
        );
        assert!(matches!(route(&publish), Route::Any));
    }
}
