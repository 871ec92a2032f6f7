//! Whether a plain `redis://` upstream is in fact a Redis Cluster node, checked at start-up.
//!
//! pkv in front of a cluster node it takes for a single Redis would send every key to that
//! node, and the keys of the other masters' slots would all get `-MOVED`. pkv does not
//! switch to cluster mode on its own: it refuses to start, with a line that names
//! `redis+cluster://`. That is what Redis users know: `redis-cli` follows a cluster only
//! with `-c`, and client libraries have a cluster client of their own (redis-py's
//! `RedisCluster`, go-redis's `ClusterClient`, Lettuce's `RedisClusterClient`), chosen on
//! purpose, because a cluster answers differently (`CROSSSLOT` for keys of two slots, no
//! database but 0, KEYS and SCAN per node). A deployment's URL says which it is, and stays
//! true when the node it names is down at start-up or is later replaced.
//!
//! The node is asked `INFO cluster` (`cluster_enabled:1` on a cluster node, `:0` on any
//! other Redis since 3.0), as the `maxmemory-policy` check is asked: once before pkv
//! listens, and, for an upstream that is down then, every second until it answers; a
//! cluster node then stops pkv with the same line. A Redis that renames or denies INFO
//! cannot be asked: pkv warns and serves.

use std::time::Duration;

use redis::Value;

use super::SCHEME;
use crate::upstream::eviction::RECHECK;

/// What asking a Redis whether it is a cluster node gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A Redis of its own (`cluster_enabled:0`).
    Single,
    /// A Redis Cluster node (`cluster_enabled:1`).
    ClusterNode,
    /// It answered, but not with the field (INFO renamed or denied).
    Hidden(String),
    /// It could not be asked (down, refused the connection, timed out).
    Unreachable(String),
}

/// Asks the Redis at `url` for `INFO cluster`, on a connection of its own.
pub async fn probe(url: &str, ca: Option<&std::path::Path>, timeout: Duration) -> Probe {
    let command = redis::cmd("INFO").arg("cluster").clone();
    let reply = match crate::upstream::ask_alone(url, ca, timeout, &command).await {
        Ok(reply) => reply,
        Err(e) => return Probe::Unreachable(e),
    };
    let text = match reply {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(Value::VerbatimString { text, .. }) => text,
        Some(Value::SimpleString(s)) => s,
        Some(Value::ServerError(e)) => {
            return Probe::Hidden(format!("{} {}", e.code(), e.details().unwrap_or("")))
        }
        other => return Probe::Hidden(format!("unexpected reply {other:?}")),
    };
    read_info(&text)
}

/// Reads `cluster_enabled` out of an `INFO cluster` text.
fn read_info(text: &str) -> Probe {
    let field = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_enabled:"));
    match field {
        Some("1") => Probe::ClusterNode,
        Some(_) => Probe::Single,
        None => Probe::Hidden("no cluster_enabled in INFO cluster".into()),
    }
}

/// The line that stops pkv in front of the cluster node at `url`.
pub fn refusal(url: &str) -> String {
    let node = node_of(url);
    format!(
        "PKV_UPSTREAM_URL: {node} is a Redis Cluster node (cluster_enabled:1); name the \
         cluster with {SCHEME}{node}[,host:port...] so that pkv routes each key to the master \
         of its slot"
    )
}

/// `host:port` of a `redis://` URL, without credentials or database.
fn node_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or(rest)
        .to_owned()
}

/// Asks once. `Ok(true)`: the upstream could not be asked, to [`watch`] later; `Err` is the
/// line that stops pkv.
pub async fn check(
    url: &str,
    ca: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<bool, String> {
    match probe(url, ca, timeout).await {
        Probe::Single => Ok(false),
        Probe::ClusterNode => Err(refusal(url)),
        Probe::Hidden(why) => {
            tracing::warn!(
                "cannot tell whether the upstream is a Redis Cluster node ({why}); if it is, \
                 name it with {SCHEME}"
            );
            Ok(false)
        }
        Probe::Unreachable(e) => {
            tracing::warn!(
                error = %e,
                "upstream unreachable at start-up; whether it is a Redis Cluster node is checked when it answers"
            );
            Ok(true)
        }
    }
}

/// Asks every [`RECHECK`] until the upstream answers; resolves with the line that stops
/// pkv if it is a cluster node, and never otherwise.
pub async fn watch(url: String, ca: Option<std::path::PathBuf>, timeout: Duration) -> String {
    loop {
        tokio::time::sleep(RECHECK).await;
        match probe(&url, ca.as_deref(), timeout).await {
            Probe::Unreachable(_) => continue,
            Probe::ClusterNode => return refusal(&url),
            Probe::Single => return std::future::pending().await,
            Probe::Hidden(why) => {
                tracing::warn!(
                    "cannot tell whether the upstream is a Redis Cluster node ({why}); if it \
                     is, name it with {SCHEME}"
                );
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_cluster_is_read() {
        assert_eq!(
            read_info("# Cluster\r\ncluster_enabled:1\r\n"),
            Probe::ClusterNode
        );
        assert_eq!(
            read_info("# Cluster\r\ncluster_enabled:0\r\n"),
            Probe::Single
        );
        assert!(matches!(read_info("# Cluster\r\n"), Probe::Hidden(_)));
    }

    #[test]
    fn the_refusal_names_the_node_without_credentials() {
        let line = refusal("redis://user:secret@10.0.0.5:7000/0");
        assert!(line.contains("redis+cluster://10.0.0.5:7000"), "{line}");
        assert!(!line.contains("secret"), "{line}");
    }
}
