//! The kernel's share of a delivery on this machine: one 150-byte message written and read
//! over loopback TCP, with no runtime, framing or JSON around it. Multiplied by the
//! subscribers of an event and divided by the cores, it is a lower bound on how long the
//! fan-out of one event takes, whatever the server does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// Measures and prints the floor.
pub fn run(subscribers: usize) -> anyhow::Result<()> {
    let per_message = per_message()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let fan_out_ms = per_message * subscribers as f64 / 1000.0 / cores as f64;
    println!("loopback write + read of a 150-byte message: {per_message:.2} µs (one thread)");
    println!(
        "=> one event to {subscribers} subscribers needs at least {fan_out_ms:.2} ms of wall time on {cores} cores in syscalls alone"
    );
    Ok(())
}

/// The kernel's cost of one loopback message (write + read), in µs.
pub fn per_message() -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    server.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let message = [b'x'; 150];
    let mut buffer = [0u8; 150];
    let rounds = 500_000;
    let started = Instant::now();
    for _ in 0..rounds {
        server.write_all(&message)?;
        client.read_exact(&mut buffer)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
}
