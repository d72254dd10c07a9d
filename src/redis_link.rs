//! The link to Redis that presence, rate limits, persisted queries and the bus's publisher
//! share: one standalone Redis (`REDIS_URL`) or a Redis Cluster (`REDIS_URL` naming its seed
//! nodes, with `REDIS_CLUSTER=true`). Either way it connects lazily (a Redis that is down at
//! start only fails the calls that need it, until it is back) and reconnects by itself.
//!
//! Every caller sends single-slot work only: the keys of one command, script or pipeline
//! share a hash tag (`{<project id>}`, `{<user id>}`), so the same code runs on both.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Where Redis is, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server.
    Single(String),
    /// A Redis Cluster, by its seed nodes.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Reads `REDIS_URL` (one URL, or several comma-separated seed nodes of a cluster) and
    /// `REDIS_CLUSTER`.
    pub fn from_config(url: Option<&str>, cluster: bool) -> anyhow::Result<Option<Self>> {
        let Some(url) = url else {
            anyhow::ensure!(
                !cluster,
                "REDIS_CLUSTER=true needs REDIS_URL (the cluster's nodes)"
            );
            return Ok(None);
        };
        let nodes: Vec<String> = url.split(',').map(|n| n.trim().to_owned()).collect();
        if cluster {
            return Ok(Some(Self::Cluster(nodes)));
        }
        anyhow::ensure!(
            nodes.len() == 1,
            "REDIS_URL lists {} nodes: set REDIS_CLUSTER=true for a Redis Cluster",
            nodes.len()
        );
        Ok(Some(Self::Single(url.to_owned())))
    }

    /// Whether this is a cluster (events then travel on sharded pub/sub).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A shared, lazily connecting, self-healing connection to Redis or a Redis Cluster. Cheap
/// to clone; clones share the connection.
#[derive(Clone)]
pub enum RedisLink {
    /// One server, through a connection manager.
    Single(ConnectionManager),
    /// A cluster: commands are routed to the node owning their slot.
    Cluster(LazyCluster),
}

/// A cluster connection made on first use; a failed attempt is retried by the next call.
#[derive(Clone)]
pub struct LazyCluster {
    client: Arc<ClusterClient>,
    connection: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        let connection = self
            .connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await?;
        Ok(connection.clone())
    }
}

/// Short timeouts, so that a Redis outage fails fast instead of holding anything up.
pub fn timeouts() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// A cluster client with the same short timeouts; `configure` adds to it (the bus's
/// subscriber asks for RESP3 pushes).
pub fn cluster_client(
    nodes: &[String],
    configure: impl FnOnce(ClusterClientBuilder) -> ClusterClientBuilder,
) -> redis::RedisResult<ClusterClient> {
    let builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .retries(2)
        .max_retry_wait(500);
    configure(builder).build()
}

impl RedisLink {
    /// A link to `target`; nothing is connected until first use.
    pub fn open(target: &RedisTarget) -> anyhow::Result<Self> {
        Ok(match target {
            RedisTarget::Single(url) => Self::Single(ConnectionManager::new_lazy_with_config(
                redis::Client::open(url.as_str())?,
                timeouts(),
            )?),
            RedisTarget::Cluster(nodes) => Self::Cluster(LazyCluster {
                client: Arc::new(cluster_client(nodes, |b| b)?),
                connection: Arc::new(OnceCell::new()),
            }),
        })
    }

    /// Connects now if Redis answers within a few seconds, so that the connection's own
    /// tasks run on the caller's runtime rather than on whichever runtime first needs Redis.
    /// A cluster that is down does not hold up the start.
    pub async fn warm(&self) {
        let Self::Cluster(lazy) = self else { return };
        match tokio::time::timeout(Duration::from_secs(3), lazy.get()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "Redis Cluster not reachable yet; will retry on use");
            }
            Err(_) => tracing::warn!("Redis Cluster slow to answer; will retry on use"),
        }
    }
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_nodes_need_the_cluster_switch() {
        let one = RedisTarget::from_config(Some("redis://a:1"), false).unwrap();
        assert_eq!(one, Some(RedisTarget::Single("redis://a:1".into())));
        let err = RedisTarget::from_config(Some("redis://a:1,redis://b:2"), false).unwrap_err();
        assert!(err.to_string().contains("REDIS_CLUSTER=true"), "{err}");
        let cluster = RedisTarget::from_config(Some("redis://a:1, redis://b:2"), true).unwrap();
        assert_eq!(
            cluster,
            Some(RedisTarget::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert!(RedisTarget::from_config(None, true).is_err());
        assert_eq!(RedisTarget::from_config(None, false).unwrap(), None);
    }
}
