//! Which HTTP a client connection speaks: HTTP/2 when TLS negotiated `h2`
//! or the first bytes are the HTTP/2 connection preface (prior knowledge),
//! HTTP/1 otherwise. The bytes read to tell are replayed to hyper by
//! [`Rewound`]. Deciding here, instead of in hyper-util's `auto` builder,
//! lets each connection hold only the state of the protocol it speaks.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

/// RFC 9113 section 3.4: every HTTP/2 client connection starts with this.
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol `first` (the bytes read so far) starts, or `None` while it
/// is still a strict beginning of the HTTP/2 preface.
pub fn classify(first: &[u8]) -> Option<Protocol> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// Reads from `stream` until the protocol is known (at most the preface's
/// 24 bytes; fewer once they differ from it) and hands back the stream
/// with those bytes to be read again. A stream that ends first is HTTP/1:
/// hyper then sees the same end.
pub async fn sniff<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(Protocol, Rewound<S>)> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let protocol = loop {
        let n = stream.read(&mut first[filled..]).await?;
        filled += n;
        if let Some(protocol) = classify(&first[..filled]) {
            break protocol;
        }
        if n == 0 {
            break Protocol::Http1;
        }
    };
    let mut rewound = Rewound::untouched(stream);
    rewound.replay(Bytes::copy_from_slice(&first[..filled]));
    Ok((protocol, rewound))
}

/// A stream some of whose bytes were already read (to tell the protocol,
/// or by a hyper connection that was parked); they come again first.
pub struct Rewound<S> {
    inner: S,
    /// Still to be read before `inner`.
    replay: Bytes,
}

impl<S> Rewound<S> {
    /// `inner` with nothing to read again.
    pub fn untouched(inner: S) -> Self {
        Rewound {
            inner,
            replay: Bytes::new(),
        }
    }

    /// Reads `bytes` before anything still to be read.
    pub fn replay(&mut self, bytes: Bytes) {
        if self.replay.is_empty() {
            self.replay = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.replay.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.replay);
            self.replay = joined.freeze();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = buf.remaining().min(self.replay.len());
            buf.put_slice(&self.replay[..n]);
            self.replay.advance(n);
            if self.replay.is_empty() {
                // Let go of the allocation the bytes came in.
                self.replay = Bytes::new();
                // And what has arrived after them, in the same read: hyper
                // sizes its read buffer for a whole head, and a first read
                // of only the replayed bytes makes it double that buffer
                // (8 to 16 KiB, kept for the connection's life) for the
                // next read. Pending or an error here surfaces on the next
                // read.
                if buf.remaining() > 0 {
                    let _ = Pin::new(&mut self.inner).poll_read(cx, buf);
                }
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classification() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b"POST / HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn sniffed_bytes_are_read_again_in_order() {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            // In pieces: the decision waits for enough bytes.
            for piece in [&b"PO"[..], b"ST /x HTTP/1.1\r\n", b"\r\n"] {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        let (protocol, mut rewound) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        writer.await.unwrap();
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"POST /x HTTP/1.1\r\n\r\n");

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        drop(client);
        let (protocol, mut rewound) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.unwrap();
        assert_eq!(&all[..24], H2_PREFACE);
        assert_eq!(&all[24..], b"frames");

        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let (protocol, _) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
    }

    #[tokio::test]
    async fn the_first_read_returns_the_replayed_bytes_and_what_followed_them() {
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: test\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(head).await.unwrap();
        let (_, mut rewound) = sniff(server).await.unwrap();
        let mut buf = [0u8; 128];
        let n = rewound.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], head, "one read, as hyper's first read of a head");

        // Nothing more yet: the replayed bytes alone, without waiting.
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(&head[..30]).await.unwrap();
        let (_, mut rewound) = sniff(server).await.unwrap();
        let n = rewound.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &head[..30]);
        client.write_all(&head[30..]).await.unwrap();
        let n = rewound.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &head[30..]);
    }

    #[tokio::test]
    async fn bytes_given_back_are_read_before_those_not_yet_read() {
        let (mut client, server) = tokio::io::duplex(256);
        client.write_all(b"rest").await.unwrap();
        drop(client);
        let mut rewound = Rewound::untouched(server);
        rewound.replay(Bytes::from_static(b"second "));
        // Given back later, read first: what hyper had read before.
        rewound.replay(Bytes::from_static(b"first "));
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"first second rest");
    }
}
