//! The fan-out's own runtime. WebSocket connections, with the shared executions and rooms
//! they start, run here; queries and mutations stay on the main runtime. When delivering an
//! event to thousands of sockets saturates the CPU, a mutation then waits for the operating
//! system to give its thread a turn (soon: that thread was idle), not behind thousands of
//! ready deliveries in one run queue. The cost is more threads than cores, which only
//! matters when both sides are busy.

use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Starts the runtime on `threads` threads of its own (unset: one per core). It runs until
/// `shutdown` is cancelled and `drain` has passed (so that connections can send their
/// Close), then stops with whatever is left on it.
pub fn start(
    threads: Option<usize>,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<Handle> {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, NonZeroUsize::get));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("tasknest-fanout")
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("tasknest-fanout-owner".into())
        .spawn(move || {
            runtime.block_on(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(drain).await;
            });
            // Dropped here, on a thread of its own: a runtime may not be dropped inside
            // another one.
            drop(runtime);
        })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn tasks_run_on_the_fan_out_threads_until_shutdown_and_drain_then_stop() {
        let shutdown = CancellationToken::new();
        let handle = start(Some(1), shutdown.clone(), Duration::from_millis(100)).expect("runtime");
        let (name_tx, name_rx) = oneshot::channel();
        handle.spawn(async move {
            let _ = name_tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = name_rx.await.expect("ran");
        assert_eq!(name.as_deref(), Some("tasknest-fanout"));

        let (alive_tx, alive_rx) = oneshot::channel::<()>();
        handle.spawn(async move {
            let _alive = alive_tx;
            std::future::pending::<()>().await;
        });
        shutdown.cancel();
        // The runtime stops after the drain, dropping the task (and its sender).
        let stopped = tokio::time::timeout(Duration::from_secs(5), alive_rx).await;
        assert!(matches!(stopped, Ok(Err(_))), "the task was stopped");
    }
}
