//! A real Redis Cluster for tests: six cluster-enabled redis-servers (three masters with a
//! replica each) joined by `redis-cli --cluster create`.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{free_port, wait_until, Redis};

/// Six cluster-enabled redis-servers joined into one cluster.
pub struct TestCluster {
    pub nodes: Vec<Redis>,
}

impl TestCluster {
    pub fn start() -> TestCluster {
        TestCluster::start_with(5000, &[])
    }

    /// With `cluster-node-timeout` of `timeout_ms` (how long a master may be unreachable
    /// before its replica takes over), and `extra` options for every node.
    pub fn start_with(timeout_ms: u64, extra: &[&str]) -> TestCluster {
        let timeout = timeout_ms.to_string();
        let nodes: Vec<Redis> = (0..6)
            .map(|_| {
                // The bus port is named, not port + 10000, which may be past 65535.
                let bus = free_port().to_string();
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    &timeout,
                    // A replica syncs at once rather than 5 s later, and can take over.
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                args.extend_from_slice(extra);
                Redis::start_with(&args)
            })
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = TestCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &cluster.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.direct())
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster_state never ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Every master knows every slot's owner: the slot map has three ranges' owners.
        wait_until("three masters", || cluster.masters().len() == 3);
        // Every replica has its master's data (a replica that never synced cannot take over).
        for node in &cluster.nodes {
            wait_until("replicas in sync", || {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut node.direct())
                    .unwrap();
                info.contains("role:master") || info.contains("master_link_status:up")
            });
        }
        cluster
    }

    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    pub fn masters(&self) -> Vec<&Redis> {
        self.nodes
            .iter()
            .filter(|n| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut n.direct())
                    .unwrap();
                info.contains("role:master")
            })
            .collect()
    }

    /// The master that serves `slot`, as the first node's `CLUSTER SHARDS`... read simply
    /// with `CLUSTER NODES`: the node whose slot ranges hold it.
    pub fn owner_of(&self, slot: u16) -> &Redis {
        for node in self.masters() {
            let myself: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut node.direct())
                .unwrap();
            let line = myself.lines().find(|l| l.contains("myself")).unwrap();
            for range in line.split(' ').skip(8) {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    if (a..=b).contains(&slot) {
                        return node;
                    }
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// True when a master other than the one on `old_port` serves `slot`, as a live node
    /// sees it.
    pub fn promoted(&self, slot: u16, old_port: u16) -> bool {
        self.nodes.iter().filter(|n| n.port != old_port).any(|n| {
            let Ok(nodes) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut n.direct())
            else {
                return false;
            };
            nodes.lines().any(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                fields.len() > 8
                    && fields[2].contains("master")
                    && !fields[2].contains("fail")
                    && !fields[1].contains(&format!(":{old_port}@"))
                    && fields[8..].iter().any(|range| {
                        let (a, b) = range.split_once('-').unwrap_or((range, range));
                        matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                    })
            })
        })
    }

    pub fn node_id(node: &Redis) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut node.direct())
            .unwrap()
    }
}
