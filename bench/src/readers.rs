//! The subscribers' reading side of the fan-out bench: a few threads, each waiting in epoll
//! on its share of the sockets and reading them directly.
//!
//! The bench shares the machine's cores with the servers it measures, so every microsecond
//! it spends per delivery is taken from them and shows up in the fan-out's spread. Through
//! tokio, a delivery cost the bench a task wake-up, a poll, the reactor's bookkeeping and a
//! shared counter bounced between threads; here it is one `read` (level-triggered epoll,
//! so no second read to see `EAGAIN`), a frame header and a substring scan, and the
//! timing is kept per thread until the run ends.

use std::io::Read;
use std::net::TcpStream;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use rustix::event::epoll;
use rustix::time::Timespec;

/// How a subscriber's messages are framed on its connection.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// WebSocket frames (graphql-ws).
    Ws,
    /// HTTP/1.1 chunks of an event stream, one event per chunk.
    Sse,
}

/// One subscriber's connection after its handshake, with what was read past it.
pub struct Subscriber {
    pub stream: TcpStream,
    pub unread: Vec<u8>,
    pub framing: Framing,
}

/// One delivery: the event's number and when it was read (ns on the run's clock).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub event: u32,
    pub at: u64,
}

/// The reading threads of a run.
pub struct Readers {
    threads: Vec<JoinHandle<anyhow::Result<Vec<Sample>>>>,
    shared: Arc<Shared>,
}

struct Shared {
    clock: Instant,
    /// Events numbered above this are not timed (warm-up events are not numbered).
    expected: usize,
    stop: AtomicBool,
    /// Subscribers that have seen a warm-up event.
    warmed: AtomicUsize,
    /// Deliveries timed so far, per thread (each thread writes only its own).
    delivered: Vec<AtomicUsize>,
}

impl Readers {
    /// Starts `threads` threads reading `subscribers`, dealt round-robin.
    pub fn start(
        subscribers: Vec<Subscriber>,
        threads: usize,
        clock: Instant,
        expected: usize,
    ) -> anyhow::Result<Self> {
        let threads = threads.clamp(1, subscribers.len().max(1));
        let shared = Arc::new(Shared {
            clock,
            expected,
            stop: AtomicBool::new(false),
            warmed: AtomicUsize::new(0),
            delivered: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
        });
        let mut shares: Vec<Vec<Subscriber>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, subscriber) in subscribers.into_iter().enumerate() {
            shares[i % threads].push(subscriber);
        }
        let threads = shares
            .into_iter()
            .enumerate()
            .map(|(index, share)| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("reader-{index}"))
                    .spawn(move || read(share, &shared, index))
                    .context("reader thread")
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { threads, shared })
    }

    /// Subscribers that have seen a warm-up event.
    pub fn warmed(&self) -> usize {
        self.shared.warmed.load(Ordering::Relaxed)
    }

    /// Deliveries of numbered events so far.
    pub fn delivered(&self) -> usize {
        let counts = &self.shared.delivered;
        counts.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Stops the threads and returns every delivery they timed.
    pub fn finish(self) -> anyhow::Result<Vec<Sample>> {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for thread in self.threads {
            let timed = thread
                .join()
                .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
            samples.extend(timed);
        }
        Ok(samples)
    }
}

/// A subscriber as its thread keeps it.
struct Reading {
    stream: TcpStream,
    buffer: Vec<u8>,
    framing: Framing,
    warm: bool,
}

fn read(share: Vec<Subscriber>, shared: &Shared, index: usize) -> anyhow::Result<Vec<Sample>> {
    let poll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let mut subscribers = Vec::with_capacity(share.len());
    for (i, subscriber) in share.into_iter().enumerate() {
        subscriber.stream.set_nonblocking(true)?;
        epoll::add(
            &poll,
            &subscriber.stream,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )?;
        subscribers.push(Reading {
            stream: subscriber.stream,
            buffer: subscriber.unread,
            framing: subscriber.framing,
            warm: false,
        });
    }
    let mut samples = Vec::with_capacity(shared.expected * subscribers.len());
    let mut events = Vec::with_capacity(256);
    let mut chunk = vec![0u8; 16 * 1024];
    // Wakes now and then to see whether the run is over.
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    while !shared.stop.load(Ordering::Relaxed) {
        events.clear();
        match epoll::wait(
            &poll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
        for event in &events {
            let subscriber = &mut subscribers[event.data.u64() as usize];
            let n = match (&subscriber.stream).read(&mut chunk) {
                Ok(0) | Err(_) => {
                    // Closed (or reset): the deliveries it missed show as missing.
                    epoll::delete(&poll, &subscriber.stream)?;
                    continue;
                }
                Ok(n) => n,
            };
            let at = shared.clock.elapsed().as_nanos() as u64;
            subscriber.buffer.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some((text, used)) = subscriber.framing.next(&subscriber.buffer[start..]) {
                if let Some(text) = text {
                    let text = &subscriber.buffer[start..][text];
                    match mark(text) {
                        Some(Mark::WarmUp) if !subscriber.warm => {
                            subscriber.warm = true;
                            shared.warmed.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Mark::Event(event)) if event <= shared.expected => {
                            samples.push(Sample {
                                event: event as u32,
                                at,
                            });
                        }
                        _ => {}
                    }
                }
                start += used;
            }
            subscriber.buffer.drain(..start);
        }
        shared.delivered[index].store(samples.len(), Ordering::Relaxed);
    }
    Ok(samples)
}

impl Framing {
    /// The next complete message at the start of `data`: the range of its text (none for a
    /// control frame or heartbeat) and how many bytes it takes.
    fn next(self, data: &[u8]) -> Option<(Option<Range<usize>>, usize)> {
        match self {
            Self::Ws => ws_frame(data),
            Self::Sse => sse_chunk(data),
        }
    }
}

/// A server's (unmasked) WebSocket frame; only text frames carry events.
fn ws_frame(data: &[u8]) -> Option<(Option<Range<usize>>, usize)> {
    if data.len() < 2 {
        return None;
    }
    let (len, offset) = match data[1] & 0x7f {
        126 => (
            u16::from_be_bytes(data.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(data.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if data.len() < offset + len {
        return None;
    }
    let text = (data[0] & 0x0f == 0x1).then_some(offset..offset + len);
    Some((text, offset + len))
}

/// One chunk of a chunked body (`size\r\n data \r\n`).
fn sse_chunk(data: &[u8]) -> Option<(Option<Range<usize>>, usize)> {
    let line_end = data.windows(2).position(|w| w == b"\r\n")?;
    let size = std::str::from_utf8(&data[..line_end])
        .ok()
        .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())?;
    let body = line_end + 2;
    if data.len() < body + size + 2 {
        return None;
    }
    Some((Some(body..body + size), body + size + 2))
}

/// What a message says about the bench's events.
#[derive(Debug, PartialEq)]
enum Mark {
    /// A warm-up event (`clientMutationId` `w…`).
    WarmUp,
    /// Timed event number `n` (`clientMutationId` `m<n>`).
    Event(usize),
}

/// A substring scan instead of a JSON parse: the bench shares the CPU with the servers.
fn mark(text: &[u8]) -> Option<Mark> {
    const KEY: &[u8] = b"\"clientMutationId\":\"";
    let at = memchr::memmem::find(text, KEY)? + KEY.len();
    let rest = &text[at..];
    match rest.first()? {
        b'w' => Some(Mark::WarmUp),
        b'm' => {
            let digits = &rest[1..];
            let end = digits.iter().position(|b| !b.is_ascii_digit())?;
            std::str::from_utf8(&digits[..end])
                .ok()?
                .parse()
                .ok()
                .map(Mark::Event)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_from_warm_ups_and_other_messages() {
        let event = br#"{"type":"next","id":"1","payload":{"data":{"projectEvents":{"seq":"9","clientMutationId":"m42"}}}}"#;
        assert_eq!(mark(event), Some(Mark::Event(42)));
        assert_eq!(mark(br#"{"clientMutationId":"w3"}"#), Some(Mark::WarmUp));
        assert_eq!(mark(br#"{"type":"ping"}"#), None);
    }

    #[test]
    fn frames_are_split_at_their_lengths_and_partial_ones_wait() {
        let mut data = vec![0x81, 3];
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&[0x89, 0]); // a ping
        data.extend_from_slice(&[0x81, 126, 0, 200]);
        assert_eq!(ws_frame(&data), Some((Some(2..5), 5)));
        assert_eq!(ws_frame(&data[5..]), Some((None, 2)));
        assert_eq!(ws_frame(&data[7..]), None, "200 bytes announced, none here");
        assert_eq!(sse_chunk(b"3\r\nabc\r\n4\r\n"), Some((Some(3..6), 8)));
        assert_eq!(sse_chunk(b"4\r\nab"), None);
    }
}
