//! Redis for tests: the shared one from `TEST_REDIS_URL`, or a private `redis-server` on a
//! free port that a test may stop and start.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `TEST_REDIS_URL`, or `None` after a loud SKIPPED line (a failure under `CI=true`).
pub fn require_redis(test: &str) -> Option<String> {
    if let Ok(url) = std::env::var("TEST_REDIS_URL") {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs Redis: set TEST_REDIS_URL=redis://… (CI=true)");
    }
    eprintln!("SKIPPED: {test} needs Redis; set TEST_REDIS_URL=redis://…");
    None
}

/// A private `redis-server` child process.
pub struct RedisServer {
    pub port: u16,
    /// Arguments beyond port, address and persistence (cluster mode, its directory).
    extra: Vec<String>,
    child: Option<Child>,
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl RedisServer {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        Self::start_with(free_port(), Vec::new()).await
    }

    async fn start_with(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self {
            port,
            extra,
            child: None,
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (and, in a cluster, with its node identity) and
    /// waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private Redis Cluster of three masters (no replicas) on free ports, made with
/// `redis-cli --cluster create`. A master that is killed and restarted comes back as the same
/// node, owning the same slots, with no data (nothing is persisted).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The cluster bus listens on port + 10000.
            let port = loop {
                let port = free_port();
                if port < 55_000
                    && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
                {
                    break port;
                }
            };
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--cluster-node-timeout",
                "2000",
                // The other masters keep serving their slots while one is down.
                "--cluster-require-full-coverage",
                "no",
                "--dir",
                dir.path().to_str().expect("a UTF-8 path"),
            ];
            let extra = extra.iter().map(|a| (*a).to_owned()).collect();
            nodes.push(RedisServer::start_with(port, extra).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, _dir: dir };
        cluster.until_ok().await;
        cluster
    }

    /// The seed list TaskNest takes in `REDIS_URL` (two of the three nodes: it finds the
    /// third itself).
    pub fn url(&self) -> String {
        format!("{},{}", self.nodes[0].url(), self.nodes[1].url())
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub async fn until_ok(&self) {
        for _ in 0..200 {
            let mut ok = true;
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let info: String = self
                    .query(node.port, redis::cmd("CLUSTER").arg("INFO"))
                    .await;
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Redis Cluster never became ok");
    }

    /// Runs `command` on the node at `port` alone.
    pub async fn query<T: redis::FromRedisValue>(&self, port: u16, command: &redis::Cmd) -> T {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("a URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("the node answers");
        command
            .query_async(&mut conn)
            .await
            .expect("the node answers the command")
    }

    /// The index of the master that owns `key`'s slot.
    pub async fn owner_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .query(
                self.nodes[0].port,
                redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
            )
            .await;
        let ranges: Vec<(u16, u16, u16)> = {
            let raw: Vec<Vec<redis::Value>> = self
                .query(self.nodes[0].port, redis::cmd("CLUSTER").arg("SLOTS"))
                .await;
            raw.iter()
                .filter_map(|r| {
                    let start = redis::from_redis_value_ref::<u16>(r.first()?).ok()?;
                    let end = redis::from_redis_value_ref::<u16>(r.get(1)?).ok()?;
                    let master: Vec<redis::Value> = redis::from_redis_value_ref(r.get(2)?).ok()?;
                    let port = redis::from_redis_value_ref::<u16>(master.get(1)?).ok()?;
                    Some((start, end, port))
                })
                .collect()
        };
        let (_, _, port) = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("every slot is served");
        self.nodes
            .iter()
            .position(|n| n.port == *port)
            .expect("the owner is one of ours")
    }

    /// Subscribers of shard channel `channel` on the node at index `node`.
    pub async fn shard_subscribers(&self, node: usize, channel: &str) -> i64 {
        let (_, count): (String, i64) = self
            .query(
                self.nodes[node].port,
                redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel),
            )
            .await;
        count
    }
}
