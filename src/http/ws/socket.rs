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

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error, Message};

/// Beyond this, the output buffer's memory is given back once it is written: a connection
/// that once caught up on many events should not keep that space while idle.
const KEEP_CAPACITY: usize = 4 * 1024;

/// A server-side WebSocket over a connection upgraded after our 101 answer.
pub struct Socket<S = TokioIo<Upgraded>> {
    context: WebSocketContext,
    io: Io<S>,
}

/// The TCP side: the upgraded connection, and what is waiting to be written to it.
struct Io<S> {
    stream: S,
    out: Vec<u8>,
    /// How much of `out` is written already.
    written: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// Wraps an upgraded connection.
    pub fn new(stream: S, config: WebSocketConfig) -> Self {
        Self {
            context: WebSocketContext::new(Role::Server, Some(config)),
            io: Io {
                stream,
                out: Vec::new(),
                written: 0,
            },
        }
    }

    /// Adds a text frame made of `parts` to what the next [`flush`](Self::flush) writes.
    /// The caller guarantees the parts are UTF-8 together.
    pub fn queue_text(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let out = &mut self.io.out;
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

    /// Sends one text message now.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.queue_text(&[text.as_bytes()]);
        self.flush().await
    }

    /// Writes everything queued; waits while the socket cannot take more.
    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.io.poll_write_out(cx)).await
    }

    /// Starts the closing handshake with `frame` (or answers the client's) and writes it.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        let closed = std::future::poll_fn(|cx| {
            Poll::Ready(self.context.close(&mut self.io.with(cx), frame.clone()))
        })
        .await;
        self.flush().await?;
        closed
    }

    /// The next message from the client; `None` once the connection is closed. Also writes
    /// what tungstenite queued while reading (a pong, the answer to a close) and what is
    /// still queued from before, so that a client's ping is answered while the server has
    /// nothing else to send.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        let read = self.context.read(&mut self.io.with(cx));
        if self.io.pending() {
            // A write error shows up on the next read; a full socket wakes this task.
            let _ = self.io.poll_write_out(cx);
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

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn pending(&self) -> bool {
        self.written < self.out.len()
    }

    /// The blocking-style view tungstenite reads and writes through, for one poll.
    fn with<'a, 'b>(&'a mut self, cx: &'a mut Context<'b>) -> Polled<'a, 'b, S> {
        Polled { io: self, cx }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
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
        let (client, server) = tokio::io::duplex(1 << 20);
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
        assert!(!socket.io.pending());
        assert!(
            socket.io.out.capacity() <= KEEP_CAPACITY,
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
}
