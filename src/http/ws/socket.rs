//! An upgraded WebSocket connection: tungstenite parses what the client sends (and answers
//! its pings and close), while everything the server sends goes through one output buffer
//! that this module writes to the TCP socket itself.
//!
//! Why not tokio-tungstenite's `Sink`, which axum's socket is: every flush registers the
//! task's waker in two `AtomicWaker`s, the top user-space cost in a profile of the fan-out
//! (each a cold cache line per delivery), and a text frame is built twice. Here a text frame
//! is written straight into the buffer, and writing it costs one `send` and nothing else when
//! the socket takes it. Tungstenite writes only into the same buffer, whole frames and in
//! order, so its control frames and ours never interleave mid-frame.
//!
//! The buffer is shared: a shared execution writes its subscribers' frames into it from its
//! own task (an [`Outbox`]), so that a delivery wakes no connection. Whoever finds the buffer
//! empty writes; a write the socket cannot take now is left to the connection's task, which
//! the writer wakes through the reading side (see [`Socket::poll_next`]).

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use futures_util::task::AtomicWaker;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error, Message};

use crate::http::multiplex::{Outbox, Pushed};

/// Beyond this, the output buffer's memory is given back once it is written: a connection
/// that once caught up on many events should not keep that space while idle.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Most output a connection holds beyond what its socket took: past it, a shared execution
/// stops writing to the connection, whose subscription then catches up from the log at the
/// client's own pace (rather than the server buffering without bound for a slow reader).
/// The kernel's send buffer comes first, so this only has to ride out a short stall of a
/// client that was already behind; it is what a slow client can cost beyond its idle share,
/// so it stays small (10,000 stalled clients: 625 MiB at most).
pub const BACKLOG: usize = 64 * 1024;

/// A server-side WebSocket over a connection upgraded after our 101 answer.
pub struct Socket<S = TokioIo<Upgraded>> {
    context: WebSocketContext,
    io: Arc<Shared<S>>,
}

/// The connection's side that writers share.
struct Shared<S> {
    io: Mutex<Io<S>>,
    /// The connection's task, to finish a write that another task started.
    flusher: AtomicWaker,
}

/// The TCP side: the upgraded connection, and what is waiting to be written to it.
struct Io<S> {
    stream: S,
    out: Vec<u8>,
    /// How much of `out` is written already.
    written: usize,
    /// A write failed: the connection is over.
    broken: bool,
}

impl<S> Shared<S> {
    fn io(&self) -> MutexGuard<'_, Io<S>> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Socket<S> {
    /// Wraps an upgraded connection.
    pub fn new(stream: S, config: WebSocketConfig) -> Self {
        Self {
            context: WebSocketContext::new(Role::Server, Some(config)),
            io: Arc::new(Shared {
                io: Mutex::new(Io {
                    stream,
                    out: Vec::new(),
                    written: 0,
                    broken: false,
                }),
                flusher: AtomicWaker::new(),
            }),
        }
    }

    /// The connection's output, for a shared execution to write its frames into.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        self.io.clone()
    }

    /// Adds a text frame made of `parts` to what the next [`flush`](Self::flush) writes.
    /// The caller guarantees the parts are UTF-8 together.
    pub fn queue_text(&mut self, parts: &[&[u8]]) {
        self.io.io().queue_text(parts);
    }

    /// Sends one text message now.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.queue_text(&[text.as_bytes()]);
        self.flush().await
    }

    /// Writes everything queued; waits while the socket cannot take more.
    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.io.io().poll_write_out(cx)).await
    }

    /// Starts the closing handshake with `frame` (or answers the client's) and writes it.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        let closed = std::future::poll_fn(|cx| {
            let mut io = self.io.io();
            Poll::Ready(self.context.close(&mut io.with(cx), frame.clone()))
        })
        .await;
        self.flush().await?;
        closed
    }

    /// The next message from the client; `None` once the connection is closed. Also writes
    /// what tungstenite queued while reading (a pong, the answer to a close) and what is
    /// still queued from before, so that a client's ping is answered while the server has
    /// nothing else to send; and registers the task to be woken when a shared execution
    /// leaves it a write to finish.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        self.io.flusher.register(cx.waker());
        let mut io = self.io.io();
        let read = self.context.read(&mut io.with(cx));
        // A full socket wakes this task when it can take more.
        if io.pending()
            && let Poll::Ready(Err(err)) = io.poll_write_out(cx)
        {
            return Poll::Ready(Some(Err(Error::Io(err))));
        }
        match read {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(Error::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }

    /// [`poll_next`](Self::poll_next) as a future (`Unpin`, so a `select!` can poll it).
    pub fn next(&mut self) -> impl Future<Output = Option<Result<Message, Error>>> + Unpin + '_ {
        std::future::poll_fn(move |cx| self.poll_next(cx))
    }
}

impl<S: AsyncWrite + Unpin + Send> Outbox for Shared<S> {
    fn push_text(&self, parts: &[&[u8]]) -> Pushed {
        let mut io = self.io();
        if io.broken {
            return Pushed::Closed;
        }
        let queued = io.out.len() - io.written;
        if queued > BACKLOG {
            return Pushed::Full;
        }
        io.queue_text(parts);
        if queued > 0 {
            // Whoever queued that is writing it (and will write this too).
            return Pushed::Queued;
        }
        // Tried without a waker: if the socket cannot take it all, the connection's task
        // finishes the write and registers itself for the socket's readiness.
        match io.poll_write_out(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => Pushed::Sent,
            Poll::Ready(Err(_)) => {
                drop(io);
                self.flusher.wake();
                Pushed::Closed
            }
            Poll::Pending => {
                drop(io);
                self.flusher.wake();
                Pushed::Queued
            }
        }
    }
}

impl<S> Io<S> {
    fn pending(&self) -> bool {
        self.written < self.out.len()
    }

    fn queue_text(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let out = &mut self.out;
        out.reserve(len + 10);
        // FIN + text; a server's frames are not masked (RFC 6455 §5.1).
        out.push(0x81);
        match len {
            0..=125 => out.push(len as u8),
            126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        for part in parts {
            out.extend_from_slice(part);
        }
    }

    /// The blocking-style view tungstenite reads and writes through, for one poll.
    fn with<'a, 'b>(&'a mut self, cx: &'a mut Context<'b>) -> Polled<'a, 'b, S> {
        Polled { io: self, cx }
    }
}

impl<S: AsyncWrite + Unpin> Io<S> {
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.broken {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        while self.pending() {
            let written = Pin::new(&mut self.stream).poll_write(cx, &self.out[self.written..]);
            let n = match ready!(written) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                other => other,
            };
            match n {
                Ok(n) => self.written += n,
                Err(err) => {
                    self.broken = true;
                    return Poll::Ready(Err(err));
                }
            }
        }
        self.out.clear();
        self.written = 0;
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}
/// [`Io`] with the context of the current poll: reads that would wait register this task
/// and report `WouldBlock`; writes only append to the output buffer, so they never wait and
/// never stop mid-frame.
struct Polled<'a, 'b, S> {
    io: &'a mut Io<S>,
    cx: &'a mut Context<'b>,
}

impl<S: AsyncRead + Unpin> Read for Polled<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut self.io.stream).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(err)) => Err(err),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S> Write for Polled<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.io.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The settings every connection's tungstenite gets: small buffers (tungstenite would
/// zero-fill 128 KiB per socket, which thousands of idle sockets cannot afford), and frames
/// written through to our buffer at once.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message as ClientMessage;

    use super::*;

    /// A server socket and a tungstenite client at the other end of an in-memory pipe.
    async fn pair() -> (Socket<DuplexStream>, WebSocketStream<DuplexStream>) {
        pair_with_pipe(1 << 20).await
    }

    /// A pair whose pipe holds `capacity` bytes in each direction.
    async fn pair_with_pipe(
        capacity: usize,
    ) -> (Socket<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(capacity);
        let client = WebSocketStream::from_raw_socket(
            client,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        (Socket::new(server, config(1 << 20)), client)
    }

    #[tokio::test]
    async fn text_frames_of_every_length_form_reach_a_client_whole_and_in_order() {
        let (mut socket, mut client) = pair().await;
        // 125 and 126 bytes sit either side of the 2-byte length, 65,536 needs 8 bytes.
        let lengths = [0, 7, 125, 126, 65_535, 65_536];
        for len in lengths {
            let text = "x".repeat(len);
            let (head, tail) = text.as_bytes().split_at(len / 2);
            socket.queue_text(&[head, tail]);
        }
        socket.flush().await.expect("flush");
        for len in lengths {
            let message = client.next().await.expect("open").expect("frame");
            let ClientMessage::Text(text) = message else {
                panic!("not text: {message:?}")
            };
            assert_eq!(text.len(), len);
        }
        assert!(!socket.io.io().pending());
        assert!(
            socket.io.io().out.capacity() <= KEEP_CAPACITY,
            "the big buffer is given back"
        );
    }

    #[tokio::test]
    async fn a_clients_ping_is_answered_by_reading_and_its_close_ends_the_stream() {
        let (mut socket, mut client) = pair().await;
        client
            .send(ClientMessage::Ping(b"hi"[..].into()))
            .await
            .expect("ping");
        let ping = socket.next().await.expect("open").expect("message");
        assert!(matches!(ping, Message::Ping(_)), "{ping:?}");
        // The pong is queued by tungstenite and written by the next read.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), socket.next());
        assert!(pending.await.is_err(), "nothing more to read");
        let pong = client.next().await.expect("open").expect("pong");
        assert_eq!(pong, ClientMessage::Pong(b"hi"[..].into()));

        client.close(None).await.expect("close");
        let close = socket.next().await.expect("open").expect("close");
        assert!(matches!(close, Message::Close(_)), "{close:?}");
        // Tungstenite reports the handshake as over (an error) once its answer is written.
        let _ = socket.close(None).await;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), client.next()).await;
        assert!(
            matches!(answer, Ok(Some(Ok(ClientMessage::Close(_))))),
            "the client gets the close answer: {answer:?}"
        );
        assert!(socket.next().await.is_none(), "closed");
    }

    async fn text(client: &mut WebSocketStream<DuplexStream>) -> String {
        let message = client.next().await.expect("open").expect("frame");
        let ClientMessage::Text(text) = message else {
            panic!("not text: {message:?}")
        };
        text.as_str().to_owned()
    }

    #[tokio::test]
    async fn another_task_writes_a_frame_at_once_when_nothing_is_queued() {
        let (socket, mut client) = pair().await;
        let outbox = socket.outbox();
        let written = tokio::spawn(async move { outbox.push_text(&[b"{\"a\":", b"1", b"}"]) });
        assert_eq!(written.await.expect("ran"), Pushed::Sent);
        assert_eq!(text(&mut client).await, r#"{"a":1}"#);
        assert!(!socket.io.io().pending());
    }

    #[tokio::test]
    async fn what_the_socket_cannot_take_now_is_finished_by_the_connections_task() {
        // The pipe takes 64 bytes: the rest of a 1,000-byte frame must wait for the client.
        let (mut socket, mut client) = pair_with_pipe(64).await;
        let outbox = socket.outbox();
        let big = "y".repeat(1000);
        assert_eq!(outbox.push_text(&[big.as_bytes()]), Pushed::Queued);
        assert_eq!(
            outbox.push_text(&[b"after"]),
            Pushed::Queued,
            "behind the first"
        );
        // The connection's task, as its loop does: reading also finishes queued writes.
        let connection = tokio::spawn(async move {
            let closed = socket.next().await;
            (socket, closed.is_none())
        });
        assert_eq!(text(&mut client).await, big);
        assert_eq!(text(&mut client).await, "after");
        client.close(None).await.expect("close");
        let (socket, _) = connection.await.expect("ran");
        assert!(!socket.io.io().pending(), "everything was written");
    }

    #[tokio::test]
    async fn past_its_backlog_a_connection_refuses_frames_and_keeps_the_ones_it_took_whole() {
        let (mut socket, mut client) = pair_with_pipe(1024).await;
        let outbox = socket.outbox();
        let frame = "z".repeat(10_000);
        let mut taken = 0;
        loop {
            match outbox.push_text(&[frame.as_bytes()]) {
                Pushed::Sent | Pushed::Queued => taken += 1,
                Pushed::Full => break,
                Pushed::Closed => panic!("not closed"),
            }
            assert!(taken < 100, "a backlog of {BACKLOG} bytes ends");
        }
        assert!(taken * frame.len() > BACKLOG, "took {taken} frames");
        let connection = tokio::spawn(async move { while socket.next().await.is_some() {} });
        for _ in 0..taken {
            assert_eq!(text(&mut client).await.len(), frame.len());
        }
        client.close(None).await.expect("close");
        connection.await.expect("ran");
    }

    #[tokio::test]
    async fn a_connection_whose_client_is_gone_refuses_frames() {
        let (socket, client) = pair().await;
        drop(client);
        let outbox = socket.outbox();
        assert_eq!(outbox.push_text(&[b"lost"]), Pushed::Closed);
        assert_eq!(outbox.push_text(&[b"lost"]), Pushed::Closed);
    }
}
