//! A private Redis Cluster for `--redis-cluster`: three masters on free loopback ports, made
//! with `redis-cli --cluster create`, stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// Three `redis-server --cluster-enabled yes` children forming one cluster.
pub struct Cluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            _dir: dir,
        };
        for _ in 0..3 {
            let port = free_port_with_bus()?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                ])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(cluster._dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("redis-server is not installed")?;
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for port in &cluster.ports {
            let mut tries = 0;
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                tries += 1;
                anyhow::ensure!(tries < 100, "redis-server did not start on {port}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("redis-cli is not installed")?;
        anyhow::ensure!(created.success(), "redis-cli --cluster create failed");
        for port in &cluster.ports {
            let mut tries = 0;
            while !cli(*port, &["CLUSTER", "INFO"])?.contains("cluster_state:ok") {
                tries += 1;
                anyhow::ensure!(tries < 200, "the cluster never became ok");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(cluster)
    }

    /// The seed list for `REDIS_URL`.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Per node: how many `SPUBLISH` and `PUBLISH` it served.
    pub fn publishes(&self) -> anyhow::Result<Vec<(u64, u64)>> {
        self.ports
            .iter()
            .map(|port| {
                let stats = cli(*port, &["INFO", "commandstats"])?;
                Ok((calls(&stats, "spublish"), calls(&stats, "publish")))
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free port whose cluster-bus port (+10000) is free too.
fn free_port_with_bus() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair for a cluster node")
}

fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .context("redis-cli is not installed")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `calls=` of `cmdstat_<command>` in `INFO commandstats`.
fn calls(stats: &str, command: &str) -> u64 {
    stats
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
