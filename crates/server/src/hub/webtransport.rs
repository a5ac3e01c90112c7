//! WebTransport over HTTP/3, `/v1/wt`: every bidirectional stream the client opens on its
//! WebTransport session is one hub connection. The session itself (extended CONNECT with
//! `:protocol = webtransport`, streams, requests sharing the connection) is handled in
//! `crate::http::h3`; this module only frames one stream.
//!
//! Framing, both directions: a `u32` big-endian length, then that many bytes of protobuf: a
//! `Command` from the client, a `ServerFrame` from the server. A length over the frame limit
//! (`2 × max_message_size + 16 KiB`) or bytes that do not decode end the connection with
//! disconnect 3501; the end of the client's stream (FIN) closes it. Every server-side end writes
//! the final `Disconnect` push, then finishes the stream (FIN).
//!
//! When the session itself ends (the client closed it, `crate::http::h3` watches the CONNECT stream),
//! every stream of the session learns it at once through `gone`: its hub connection ends (the
//! hub session leaves presence and its subscriptions), and the stream is reset with
//! WT_SESSION_GONE (draft-ietf-webtrans-http3) and its receiving side stopped, without a
//! `Disconnect` push: nobody is left to read it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchboard_hub::proto;
use switchboard_proto::prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::frame;
use super::stream::{drive, FrameConn, Inbound, Out};
use super::Ctx;

/// The path of the WebTransport endpoint (extended CONNECT over HTTP/3).
pub(crate) const PATH: &str = "/v1/wt";

/// Bytes of the length prefix.
const PREFIX: usize = 4;

/// WT_SESSION_GONE (draft-ietf-webtrans-http3): the stream's session is gone (or was never
/// ours); streams are reset with it.
pub(crate) const WT_SESSION_GONE: u64 = 0x170d_7b68;

/// A WebTransport stream, past its WEBTRANSPORT_STREAM header (what h3 read beyond it stays in
/// the buffer and is read first).
pub(crate) type Stream = h3::stream::BufRecvStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// A stream whose sending side can be reset.
pub(crate) trait Abort {
    /// RESET_STREAM with `code`. The receiving side is stopped when the stream is dropped
    /// (STOP_SENDING, code 0): h3-quinn keeps the receiving half inside its pending read, where
    /// its `stop_sending` cannot reach it (it panics), and a hub stream always has a read
    /// pending.
    fn abort(&mut self, code: u64);
}

impl Abort for Stream {
    fn abort(&mut self, code: u64) {
        h3::quic::SendStream::<Bytes>::reset(self, code);
    }
}

/// Serves one client-opened bidirectional stream as a hub connection until either side ends it
/// or `gone` turns true (or its sender is dropped): the session ended.
pub(crate) async fn serve<S>(ctx: Ctx, io: S, peer: SocketAddr, gone: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Abort + Unpin + Send,
{
    metrics::counter!("switchboard_webtransport_streams_total").increment(1);
    let conn = WtConn {
        io,
        read: BytesMut::with_capacity(4096),
        write: BytesMut::new(),
        max_frame: ctx.max_frame,
        write_timeout: ctx.idle,
        gone,
    };
    drive(ctx, conn, "webtransport", Some(peer), None).await;
}

/// Resolves once the session is gone. Cancel-safe.
async fn session_gone(gone: &mut watch::Receiver<bool>) {
    let _ = gone.wait_for(|g| *g).await;
}

struct WtConn<S> {
    io: S,
    /// Bytes read and not yet decoded (kept across cancelled reads).
    read: BytesMut,
    /// Frames queued by `feed`, written by `flush`.
    write: BytesMut,
    max_frame: usize,
    /// A write blocked longer than this (the client stopped reading) ends the connection.
    write_timeout: Duration,
    /// Turns true when the session ends.
    gone: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Abort + Unpin + Send> WtConn<S> {
    /// A complete frame at the front of the read buffer, if there is one.
    fn frame(&mut self) -> Option<Inbound> {
        if self.read.len() < PREFIX {
            return None;
        }
        let mut len = [0u8; PREFIX];
        len.copy_from_slice(&self.read[..PREFIX]);
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_frame {
            return Some(Inbound::Bad(format!(
                "frame of {len} bytes over the limit of {}",
                self.max_frame
            )));
        }
        if self.read.len() < PREFIX + len {
            self.read.reserve(PREFIX + len - self.read.len());
            return None;
        }
        self.read.advance(PREFIX);
        let body = self.read.split_to(len).freeze();
        Some(match proto::Command::decode(body) {
            Ok(command) => Inbound::Command(command),
            Err(e) => Inbound::Bad(format!("invalid protobuf: {e}")),
        })
    }

    fn encode(&mut self, out: Out<'_>) {
        match out {
            Out::Reply(r) => {
                let frame = proto::ServerFrame {
                    frame: Some(proto::server_frame::Frame::Reply(r.clone())),
                };
                let len = frame.encoded_len();
                self.write.reserve(PREFIX + len);
                self.write.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
                frame.encode_raw(&mut self.write);
            }
            // The same protobuf `ServerFrame { push }` bytes as every other subscriber's.
            Out::Push(p) => {
                let body = frame::shared_proto(p);
                self.write.reserve(PREFIX + body.len());
                self.write
                    .put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
                self.write.extend_from_slice(&body);
            }
        }
    }

    async fn write_out(&mut self) -> bool {
        let io = &mut self.io;
        let buf = &mut self.write;
        let write = async move {
            io.write_all_buf(buf).await?;
            io.flush().await
        };
        let written = tokio::select! {
            biased;
            () = session_gone(&mut self.gone) => None,
            r = tokio::time::timeout(self.write_timeout, write) => Some(matches!(r, Ok(Ok(())))),
        };
        written.unwrap_or_else(|| {
            self.io.abort(WT_SESSION_GONE);
            false
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Abort + Unpin + Send> FrameConn for WtConn<S> {
    async fn recv(&mut self) -> Inbound {
        loop {
            if let Some(inbound) = self.frame() {
                return inbound;
            }
            // Both are cancel-safe: what `read_buf` read stays in the buffer.
            tokio::select! {
                biased;
                () = session_gone(&mut self.gone) => {
                    self.io.abort(WT_SESSION_GONE);
                    return Inbound::Closed;
                }
                r = self.io.read_buf(&mut self.read) => match r {
                    Ok(0) => return Inbound::Closed,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "WebTransport stream read error");
                        return Inbound::Closed;
                    }
                },
            }
        }
    }

    async fn send(&mut self, out: Out<'_>) -> bool {
        self.encode(out);
        self.write_out().await
    }

    async fn feed(&mut self, out: Out<'_>) -> bool {
        self.encode(out);
        true
    }

    async fn flush(&mut self) -> bool {
        self.write_out().await
    }

    fn pings(&self) -> bool {
        // Liveness is the QUIC connection's: keep-alive PINGs and the idle timeout.
        false
    }

    async fn ping(&mut self) -> bool {
        true
    }

    async fn close(mut self, _code: u16, _reason: &str) {
        // The code and reason went out in the `Disconnect` push; a stream has no close frame.
        if self.write_out().await {
            let _ = tokio::time::timeout(self.write_timeout, self.io.shutdown()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::BufMut;
    use switchboard_hub::{proto, Hub, ServerPublish};
    use switchboard_proto::prost::Message as _;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
    use tokio::sync::watch;

    use crate::config::Settings;
    use crate::hub::HubCtx;

    /// The server's end of an in-memory stream, recording the code it was aborted with.
    struct Io {
        inner: DuplexStream,
        aborted: Arc<AtomicU64>,
    }

    impl super::Abort for Io {
        fn abort(&mut self, code: u64) {
            self.aborted.store(code, Ordering::SeqCst);
        }
    }

    impl AsyncRead for Io {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Io {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn frame(command: &proto::Command) -> Vec<u8> {
        let body = command.encode_to_vec();
        let mut out = Vec::with_capacity(body.len() + 4);
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        out
    }

    async fn read_frame(io: &mut DuplexStream) -> Option<proto::ServerFrame> {
        let len = tokio::time::timeout(Duration::from_secs(5), io.read_u32())
            .await
            .expect("frame in time")
            .ok()?;
        let mut body = vec![0; len as usize];
        io.read_exact(&mut body).await.ok()?;
        Some(proto::ServerFrame::decode(body.as_slice()).expect("valid ServerFrame"))
    }

    fn connect(id: u32) -> proto::Command {
        proto::Command {
            id,
            method: Some(proto::command::Method::Connect(
                proto::ConnectRequest::default(),
            )),
        }
    }

    struct Started {
        hub: Hub,
        io: DuplexStream,
        _stop: watch::Sender<bool>,
        gone: watch::Sender<bool>,
        aborted: Arc<AtomicU64>,
        served: tokio::task::JoinHandle<()>,
    }

    fn start() -> Started {
        let settings = Settings::default();
        let hub = Hub::with_memory_broker(settings.hub.clone()).expect("valid hub config");
        let (stop, rx) = watch::channel(false);
        let ctx = HubCtx::new(hub.clone(), &settings, rx);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        let (gone, gone_rx) = watch::channel(false);
        let aborted = Arc::new(AtomicU64::new(0));
        let io = Io {
            inner: server,
            aborted: aborted.clone(),
        };
        let served = tokio::spawn(super::serve(ctx, io, peer, gone_rx));
        Started {
            hub,
            io: client,
            _stop: stop,
            gone,
            aborted,
            served,
        }
    }

    fn subscribe(id: u32, channel: &str) -> proto::Command {
        proto::Command {
            id,
            method: Some(proto::command::Method::Subscribe(proto::SubscribeRequest {
                channel: channel.into(),
                ..Default::default()
            })),
        }
    }

    fn disconnect_code(frame: &proto::ServerFrame) -> Option<u32> {
        match &frame.frame {
            Some(proto::server_frame::Frame::Push(proto::Push {
                push: Some(proto::push::Push::Disconnect(d)),
            })) => Some(d.code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn connect_subscribe_publish_then_bad_frame() {
        let s = start();
        let (hub, mut io) = (s.hub.clone(), s.io);
        // Two frames in one write, the second split across writes.
        let mut bytes = frame(&connect(1));
        let subscribe = frame(&subscribe(2, "news"));
        bytes.extend_from_slice(&subscribe[..3]);
        io.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        io.write_all(&subscribe[3..]).await.unwrap();
        let reply = read_frame(&mut io).await.expect("connect reply");
        assert!(
            matches!(&reply.frame, Some(proto::server_frame::Frame::Reply(r)) if r.id == 1),
            "{reply:?}"
        );
        let reply = read_frame(&mut io).await.expect("subscribe reply");
        assert!(
            matches!(&reply.frame, Some(proto::server_frame::Frame::Reply(r)) if r.id == 2),
            "{reply:?}"
        );
        hub.publish("news", b"hello".to_vec(), ServerPublish::default())
            .await
            .expect("published");
        let push = read_frame(&mut io).await.expect("publication");
        assert!(
            format!("{push:?}").contains("104, 101, 108, 108, 111"),
            "{push:?}"
        );
        // Not protobuf: disconnect 3501, then the stream ends.
        io.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        let last = read_frame(&mut io).await.expect("disconnect push");
        assert_eq!(disconnect_code(&last), Some(3501), "{last:?}");
        assert!(read_frame(&mut io).await.is_none(), "stream finished");
    }

    #[tokio::test]
    async fn oversized_length_is_a_bad_request() {
        let s = start();
        let mut io = s.io;
        io.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let last = read_frame(&mut io).await.expect("disconnect push");
        assert_eq!(disconnect_code(&last), Some(3501), "{last:?}");
    }

    async fn presence(hub: &Hub, channel: &str) -> usize {
        let r = hub
            .api_presence(proto::PresenceRequest {
                channel: channel.into(),
            })
            .await;
        r.result.map(|r| r.presence.len()).unwrap_or(0)
    }

    #[tokio::test]
    async fn session_gone_ends_the_hub_connection_and_aborts_the_stream() {
        let s = start();
        let mut io = s.io;
        let mut bytes = frame(&connect(1));
        bytes.extend_from_slice(&frame(&subscribe(2, "room")));
        io.write_all(&bytes).await.unwrap();
        read_frame(&mut io).await.expect("connect reply");
        read_frame(&mut io).await.expect("subscribe reply");
        assert_eq!(presence(&s.hub, "room").await, 1);
        s.gone.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), s.served)
            .await
            .expect("the connection ended")
            .unwrap();
        assert_eq!(s.aborted.load(Ordering::SeqCst), super::WT_SESSION_GONE);
        assert_eq!(presence(&s.hub, "room").await, 0, "left presence");
        // No Disconnect push: the stream just ends.
        assert!(read_frame(&mut io).await.is_none());
    }

    #[tokio::test]
    async fn session_gone_before_connect_aborts_the_stream() {
        let s = start();
        s.gone.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), s.served)
            .await
            .expect("the connection ended")
            .unwrap();
        assert_eq!(s.aborted.load(Ordering::SeqCst), super::WT_SESSION_GONE);
    }
}
