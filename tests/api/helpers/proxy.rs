//! A TCP proxy a test can cut and restore, to take a service away from the app without
//! touching the machine's shared server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:port` to `target` while up.
pub struct TcpProxy {
    pub port: u16,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    linked: Arc<AtomicUsize>,
}

impl TcpProxy {
    /// Starts forwarding to `target` on a free port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let proxy = Self {
            port,
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
            linked: Arc::new(AtomicUsize::new(0)),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let (tasks, linked) = (self.tasks.clone(), self.linked.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let linked = linked.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        linked.fetch_add(1, Ordering::SeqCst);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("proxy tasks").push(link);
            }
        });
        self.tasks.lock().expect("proxy tasks").push(accept);
    }

    /// Waits (up to 30 s) until a client's connection has been linked to the target, so
    /// that a cut is felt by a client that is connected, not one still starting.
    pub async fn wait_for_a_link(&self) {
        for _ in 0..3000 {
            if self.linked.load(Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no client connected through the proxy within 30 s");
    }

    /// Drops every open link and refuses new ones (as a server that went down).
    pub fn cut(&self) {
        for task in self.tasks.lock().expect("proxy tasks").drain(..) {
            task.abort();
        }
    }

    /// Accepts and forwards again on the same port.
    pub async fn restore(&self) {
        // The cut listener is dropped when its aborted task next runs: retry for a moment.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(err) => panic!("rebind proxy port: {err}"),
            }
        };
        self.serve(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
