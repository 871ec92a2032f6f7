//! Whether a Redis may evict the ledger: its `maxmemory-policy`, checked at start-up.
//!
//! Under memory pressure Redis evicts keys by its policy. The ledger's account records
//! (balances) have no TTL, so an `allkeys-*` policy on the upstream that holds them can
//! evict a balance: pkv refuses it unless the ledger has its own Redis (`PKV_LEDGER_URL`).
//! Tenant keys all carry a TTL, so a `volatile-*` policy evicts no balance; it can evict a
//! redeemed token's record (those carry the token's expiry), which would let that token be
//! credited once more, so pkv warns about it. The ledger's own Redis holds nothing but
//! ledger records: any policy but `noeviction` there is refused.
//!
//! pkv asks `CONFIG GET maxmemory-policy` on a connection of its own, before it listens.
//! An upstream that is down then does not stop start-up (pkv must start while it is down):
//! it is asked again every [`RECHECK`] until it answers, and a policy that must be refused
//! then stops pkv with the same line. A Redis that renames or denies `CONFIG` (managed
//! services do) cannot be checked: pkv warns and goes on.
//!
//! A Redis Cluster holding the ledger is checked node by node: the seeds, and every master
//! and replica `CLUSTER SLOTS` names ([`cluster_members`]), at start-up and, for nodes it
//! names later (a node added, a replica that came up), every [`CLUSTER_RECHECK`]
//! ([`watch_cluster`]). A replica is checked too: a failover makes it the master.

use std::time::Duration;

use redis::Value;

/// How often a Redis that was down at start-up is asked again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// How often a cluster holding the ledger is asked for nodes not checked yet.
pub const CLUSTER_RECHECK: Duration = Duration::from_secs(10);

/// What a Redis holds, which decides the policies it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The upstream, holding the data and the ledger.
    Shared,
    /// The ledger's own Redis (`PKV_LEDGER_URL`).
    LedgerOnly,
}

/// A Redis whose policy is checked, and the rule it is held to.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub role: Role,
    /// `PKV_UPSTREAM_TLS_CA`, for a `rediss://` URL.
    pub ca: Option<std::path::PathBuf>,
}

/// What pkv makes of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Safe,
    /// Served, with this line logged as a warning.
    Warn(String),
    /// Not served: this line (naming the setting) stops pkv.
    Refuse(String),
}

/// The Redis servers whose eviction could lose ledger records: the upstream when it holds
/// the ledger, else the ledger's own Redis. The embedded store evicts nothing.
/// `upstream_url` and `ledger_url` are `PKV_UPSTREAM_URL` and `PKV_LEDGER_URL`.
pub fn targets(upstream_url: Option<&String>, ledger_url: Option<&String>) -> Vec<Target> {
    match (upstream_url, ledger_url) {
        (Some(_), Some(ledger)) => vec![Target {
            url: ledger.clone(),
            role: Role::LedgerOnly,
            ca: None,
        }],
        // The ledger in a cluster upstream: its seed nodes are asked, and every node the
        // cluster names ([`cluster_members`]).
        (Some(upstream), None) if super::cluster::is_cluster_url(upstream) => {
            super::cluster::parse_url(upstream)
                .map(|url| {
                    url.seeds
                        .iter()
                        .map(|seed| Target {
                            url: format!("redis://{}{seed}", url.userinfo),
                            role: Role::Shared,
                            ca: None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        (Some(upstream), None) => vec![Target {
            url: upstream.clone(),
            role: Role::Shared,
            ca: None,
        }],
        (None, _) => Vec::new(),
    }
}

/// The rule: see the module documentation.
pub fn judge(role: Role, policy: &str) -> Verdict {
    let policy = policy.to_ascii_lowercase();
    match role {
        Role::Shared if policy.starts_with("allkeys-") => Verdict::Refuse(format!(
            "PKV_UPSTREAM_URL: the upstream's maxmemory-policy is {policy}, which can evict the \
             ledger's balances (they have no TTL); set it to noeviction or a volatile-* policy, \
             or give the ledger its own Redis with PKV_LEDGER_URL"
        )),
        Role::Shared if policy.starts_with("volatile-") => Verdict::Warn(format!(
            "the upstream's maxmemory-policy is {policy}: under memory pressure it evicts tenant \
             keys, and may evict redeemed-token records (they expire with their token), letting \
             such a token be credited again; noeviction or PKV_LEDGER_URL avoids it"
        )),
        Role::Shared => Verdict::Safe,
        Role::LedgerOnly if policy == "noeviction" => Verdict::Safe,
        Role::LedgerOnly => Verdict::Refuse(format!(
            "PKV_LEDGER_URL: the ledger Redis's maxmemory-policy is {policy}, which can evict \
             ledger records (balances under allkeys-*, redeemed tokens under volatile-*); set it \
             to noeviction"
        )),
    }
}

/// What asking a Redis for its policy gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    Policy(String),
    /// It answered, but not with the policy (CONFIG renamed or denied).
    Hidden(String),
    /// It could not be asked (down, refused the connection, timed out).
    Unreachable(String),
}

/// Asks the Redis at `url` for its `maxmemory-policy`, on a connection of its own.
pub async fn read_policy(url: &str, ca: Option<&std::path::Path>, timeout: Duration) -> Reading {
    let command = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .clone();
    let reply = match super::ask_alone(url, ca, timeout, &command).await {
        Ok(reply) => reply,
        Err(e) => return Reading::Unreachable(e),
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match reply {
        Some(Value::Array(items)) => match items.get(1).and_then(text) {
            Some(policy) => Reading::Policy(policy),
            None => Reading::Hidden("no maxmemory-policy in the reply".into()),
        },
        // A URL asking for RESP3 gets a map.
        Some(Value::Map(pairs)) => match pairs.first().and_then(|(_, v)| text(v)) {
            Some(policy) => Reading::Policy(policy),
            None => Reading::Hidden("no maxmemory-policy in the reply".into()),
        },
        Some(Value::ServerError(e)) => {
            Reading::Hidden(format!("{} {}", e.code(), e.details().unwrap_or("")))
        }
        other => Reading::Hidden(format!("unexpected reply {other:?}")),
    }
}

/// Checks each target once. `Ok` holds the targets that could not be reached (to check
/// later with [`watch`]); `Err` is the line that stops pkv.
pub async fn check(targets: Vec<Target>, timeout: Duration) -> Result<Vec<Target>, String> {
    let mut pending = Vec::new();
    for target in targets {
        match read_policy(&target.url, target.ca.as_deref(), timeout).await {
            Reading::Unreachable(e) => {
                tracing::warn!(
                    error = %e,
                    "{} unreachable at start-up; its maxmemory-policy is checked when it answers",
                    name(target.role)
                );
                pending.push(target);
            }
            reading => apply(&target, reading)?,
        }
    }
    Ok(pending)
}

/// Asks each pending target every [`RECHECK`] until it answers; resolves with the line that
/// stops pkv as soon as one must be refused, and never if all turn out to be served.
pub async fn watch(mut pending: Vec<Target>, timeout: Duration) -> String {
    while !pending.is_empty() {
        tokio::time::sleep(RECHECK).await;
        let mut still = Vec::new();
        for target in pending {
            match read_policy(&target.url, target.ca.as_deref(), timeout).await {
                Reading::Unreachable(_) => still.push(target),
                reading => {
                    if let Err(line) = apply(&target, reading) {
                        return line;
                    }
                }
            }
        }
        pending = still;
    }
    std::future::pending().await
}

/// Logs what a reading calls for; `Err` is the line that stops pkv.
fn apply(target: &Target, reading: Reading) -> Result<(), String> {
    match reading {
        Reading::Policy(policy) => match judge(target.role, &policy) {
            Verdict::Safe => {
                tracing::debug!(%policy, "{} maxmemory-policy", name(target.role));
                Ok(())
            }
            Verdict::Warn(line) => {
                tracing::warn!("{line}");
                Ok(())
            }
            Verdict::Refuse(line) => Err(line),
        },
        Reading::Hidden(why) => {
            tracing::warn!(
                "cannot read the {}'s maxmemory-policy ({why}); make sure it {}",
                name(target.role),
                match target.role {
                    Role::Shared =>
                        "is noeviction or volatile-*, or give the ledger its own Redis with PKV_LEDGER_URL",
                    Role::LedgerOnly => "is noeviction",
                }
            );
            Ok(())
        }
        Reading::Unreachable(_) => Ok(()),
    }
}

fn name(role: Role) -> &'static str {
    match role {
        Role::Shared => "upstream",
        Role::LedgerOnly => "ledger Redis",
    }
}

/// The cluster upstream's URL when the ledger is in it (no `PKV_LEDGER_URL`).
fn ledger_cluster(upstream_url: Option<&String>, ledger_url: Option<&String>) -> Option<String> {
    match (upstream_url, ledger_url) {
        (Some(url), None) if super::cluster::is_cluster_url(url) => Some(url.clone()),
        _ => None,
    }
}

/// Every node (master or replica) the first seed that answers names in `CLUSTER SLOTS`,
/// as targets, when the ledger is in a cluster upstream; none otherwise, or when no seed
/// answers (the seeds are then checked as [`targets`] says, and later).
pub async fn cluster_members(
    upstream_url: Option<&String>,
    ledger_url: Option<&String>,
    timeout: Duration,
) -> Vec<Target> {
    let Some(url) = ledger_cluster(upstream_url, ledger_url) else {
        return Vec::new();
    };
    let Ok(url) = super::cluster::parse_url(&url) else {
        return Vec::new();
    };
    for seed in &url.seeds {
        if let Some(nodes) = slot_nodes(&url.userinfo, seed, timeout).await {
            return nodes
                .into_iter()
                .map(|addr| Target {
                    url: format!("redis://{}{addr}", url.userinfo),
                    role: Role::Shared,
                    ca: None,
                })
                .collect();
        }
    }
    Vec::new()
}

/// The addresses of every master and replica in the `CLUSTER SLOTS` of the node at `addr`.
async fn slot_nodes(userinfo: &str, addr: &str, timeout: Duration) -> Option<Vec<String>> {
    let url = format!("redis://{userinfo}{addr}");
    let command = redis::cmd("CLUSTER").arg("SLOTS").clone();
    let reply = super::ask_alone(&url, None, timeout, &command)
        .await
        .ok()??;
    let asked_host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    Some(nodes_of(&reply, asked_host))
}

/// The node addresses of a `CLUSTER SLOTS` reply (each entry: start, end, then the master
/// and its replicas as host, port, ...), each once; an empty host is `asked_host`'s.
fn nodes_of(reply: &Value, asked_host: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Value::Array(entries) = reply else {
        return found;
    };
    for entry in entries {
        let Value::Array(parts) = entry else {
            continue;
        };
        for node in parts.iter().skip(2) {
            let Value::Array(fields) = node else {
                continue;
            };
            let host = match fields.first() {
                Some(Value::BulkString(h)) if !h.is_empty() && &h[..] != b"?" => {
                    String::from_utf8_lossy(h).into_owned()
                }
                _ => asked_host.to_owned(),
            };
            let Some(Value::Int(port)) = fields.get(1) else {
                continue;
            };
            let addr = format!("{host}:{port}");
            if !found.contains(&addr) {
                found.push(addr);
            }
        }
    }
    found
}

/// Every [`CLUSTER_RECHECK`], checks the nodes of the ledger's cluster that were not
/// checked yet (`checked` holds the URLs checked at start-up); resolves with the line that
/// stops pkv as soon as one must be refused, never when the ledger is not in a cluster.
pub async fn watch_cluster(
    upstream_url: Option<String>,
    ledger_url: Option<String>,
    mut checked: Vec<String>,
    timeout: Duration,
) -> String {
    if ledger_cluster(upstream_url.as_ref(), ledger_url.as_ref()).is_none() {
        return std::future::pending().await;
    }
    let mut pending: Vec<Target> = Vec::new();
    loop {
        tokio::time::sleep(CLUSTER_RECHECK).await;
        for target in cluster_members(upstream_url.as_ref(), ledger_url.as_ref(), timeout).await {
            if !checked.contains(&target.url) && !pending.iter().any(|p| p.url == target.url) {
                pending.push(target);
            }
        }
        let mut still = Vec::new();
        for target in pending {
            match read_policy(&target.url, target.ca.as_deref(), timeout).await {
                Reading::Unreachable(_) => still.push(target),
                reading => {
                    if let Err(line) = apply(&target, reading) {
                        return line;
                    }
                    checked.push(target.url);
                }
            }
        }
        pending = still;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policies_that_cannot_evict_balances_are_served() {
        let refused = |role, policy| matches!(judge(role, policy), Verdict::Refuse(_));
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "ALLKEYS-LRU",
        ] {
            assert!(refused(Role::Shared, policy), "{policy}");
            assert!(refused(Role::LedgerOnly, policy), "{policy}");
        }
        for policy in [
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert!(matches!(judge(Role::Shared, policy), Verdict::Warn(_)));
            assert!(refused(Role::LedgerOnly, policy), "{policy}");
        }
        assert_eq!(judge(Role::Shared, "noeviction"), Verdict::Safe);
        assert_eq!(judge(Role::LedgerOnly, "noeviction"), Verdict::Safe);
        let Verdict::Refuse(line) = judge(Role::Shared, "allkeys-lru") else {
            unreachable!()
        };
        assert!(line.starts_with("PKV_UPSTREAM_URL: "), "{line}");
        let Verdict::Refuse(line) = judge(Role::LedgerOnly, "volatile-ttl") else {
            unreachable!()
        };
        assert!(line.starts_with("PKV_LEDGER_URL: "), "{line}");
    }

    /// Every master and replica of a `CLUSTER SLOTS` reply, once each; an empty host is
    /// the host of the node asked.
    #[test]
    fn a_cluster_slot_map_names_its_masters_and_replicas() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString("id".into()),
            ])
        };
        let range = |start: i64, nodes: Vec<Value>| {
            let mut parts = vec![Value::Int(start), Value::Int(start + 9)];
            parts.extend(nodes);
            Value::Array(parts)
        };
        let reply = Value::Array(vec![
            range(0, vec![node("10.0.0.1", 7000), node("10.0.0.4", 7003)]),
            range(10, vec![node("", 7001)]),
            range(20, vec![node("10.0.0.1", 7000)]),
        ]);
        assert_eq!(
            nodes_of(&reply, "10.0.0.9"),
            ["10.0.0.1:7000", "10.0.0.4:7003", "10.0.0.9:7001"]
        );
        assert!(nodes_of(&Value::Nil, "h").is_empty());
    }

    /// A cluster upstream holding the ledger: its seed nodes are asked, as plain nodes
    /// (a `redis+cluster://` URL is not one Redis to ask).
    #[test]
    fn a_cluster_holding_the_ledger_is_checked_on_its_seeds() {
        let url = "redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001".to_owned();
        let found = targets(Some(&url), None);
        let urls: Vec<&str> = found.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            ["redis://u:p@10.0.0.1:7000", "redis://u:p@10.0.0.2:7001"]
        );
        assert!(found.iter().all(|t| t.role == Role::Shared));
        let ledger = "redis://10.0.0.9:6379".to_owned();
        let found = targets(Some(&url), Some(&ledger));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].role, Role::LedgerOnly);
    }
}
