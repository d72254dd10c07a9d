//! The kernel's share of a delivery on this machine, measured two ways with no runtime,
//! framing or JSON around it:
//!
//! - the hot loop: one 150-byte message written and read over loopback TCP by one thread
//!   (no one sleeps, so no one is woken);
//! - the fan-out burst: one 150-byte message written to each of many sockets whose reader
//!   waits in epoll on another thread, as a server's fan-out does; the writer's own CPU time
//!   per message, which includes waking the reader.
//!
//! Multiplied by the subscribers of an event and divided by the cores, the hot loop is a
//! lower bound on how long the fan-out of one event takes, whatever the server does; the
//! burst is the least CPU a server can spend per delivery while its clients sleep between
//! events.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// Sockets of the fan-out burst (one instance's share of 1,000 subscribers on two).
const BURST_SOCKETS: usize = 500;
/// Bursts measured.
const BURSTS: usize = 200;
const MESSAGE: usize = 150;

/// Measures and prints the floor.
pub fn run(subscribers: usize) -> anyhow::Result<()> {
    let per_message = per_message()?;
    let burst = burst_per_message()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let fan_out_ms = per_message * subscribers as f64 / 1000.0 / cores as f64;
    println!("loopback write + read of a 150-byte message: {per_message:.2} µs (one thread)");
    println!(
        "=> one event to {subscribers} subscribers needs at least {fan_out_ms:.2} ms of wall time on {cores} cores in syscalls alone"
    );
    println!(
        "fan-out burst: {burst:.2} µs of the writer's CPU per message to a reader waiting in epoll"
    );
    Ok(())
}

/// The kernel's cost of one loopback message (write + read) in a hot loop, in µs.
pub fn per_message() -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    server.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let message = [b'x'; MESSAGE];
    let mut buffer = [0u8; MESSAGE];
    let rounds = 500_000;
    let started = Instant::now();
    for _ in 0..rounds {
        server.write_all(&message)?;
        client.read_exact(&mut buffer)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
}

/// The writer's CPU time per message when it writes one message to each of
/// [`BURST_SOCKETS`] sockets read by a tokio runtime on another thread, which has gone back
/// to waiting before the next burst, in µs.
pub fn burst_per_message() -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let received = received.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut readers = Vec::new();
                for _ in 0..BURST_SOCKETS {
                    let mut stream = tokio::net::TcpStream::connect(address).await?;
                    let received = received.clone();
                    readers.push(tokio::spawn(async move {
                        let mut buffer = vec![0u8; 4096];
                        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }));
                }
                let _ = ready_tx.send(());
                for reader in readers {
                    let _ = reader.await;
                }
                anyhow::Ok(())
            })
        })
    };
    let mut writers = Vec::with_capacity(BURST_SOCKETS);
    for _ in 0..BURST_SOCKETS {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        writers.push(stream);
    }
    ready_rx.recv()?;
    let message = [b'x'; MESSAGE];
    let mut cpu_ns = 0;
    let mut sent = 0u64;
    for _ in 0..BURSTS {
        let before = thread_cpu_ns();
        for writer in &mut writers {
            writer.write_all(&message)?;
        }
        cpu_ns += thread_cpu_ns().saturating_sub(before);
        sent += (BURST_SOCKETS * MESSAGE) as u64;
        // The reader drains the burst and waits again, as clients do between events.
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(writers);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the burst reader panicked"))??;
    Ok(cpu_ns as f64 / 1000.0 / (BURSTS * BURST_SOCKETS) as f64)
}

/// This thread's CPU time so far, in ns (exact, unlike the scheduler's tick-rounded counts
/// in `/proc`).
fn thread_cpu_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(now.tv_sec).unwrap_or_default() * 1_000_000_000
        + u64::try_from(now.tv_nsec).unwrap_or_default()
}
