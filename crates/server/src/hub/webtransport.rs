//! WebTransport over HTTP/3, `/v1/wt`: every bidirectional stream the client opens on its
//! WebTransport session is one hub connection. The session itself (extended CONNECT with
//! `:protocol = webtransport`, streams, requests sharing the connection) is handled in
//! `crate::h3`; this module only frames one stream.
//!
//! Framing, both directions: a `u32` big-endian length, then that many bytes of protobuf: a
//! `Command` from the client, a `ServerFrame` from the server. A length over the frame limit
//! (`2 × max_message_size + 16 KiB`) or bytes that do not decode end the connection with
//! disconnect 3501; the end of the client's stream (FIN) closes it. Every server-side end writes
//! the final `Disconnect` push, then finishes the stream (FIN).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use switchboard_hub::proto;
use switchboard_proto::prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stream::{drive, FrameConn, Inbound, Out};
use super::Ctx;

/// The path of the WebTransport endpoint (extended CONNECT over HTTP/3).
pub(crate) const PATH: &str = "/v1/wt";

/// Bytes of the length prefix.
const PREFIX: usize = 4;

/// Serves one client-opened bidirectional stream as a hub connection until either side ends it.
pub(crate) async fn serve<S>(ctx: Ctx, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    metrics::counter!("switchboard_webtransport_streams_total").increment(1);
    let conn = WtConn {
        io,
        read: BytesMut::with_capacity(4096),
        write: BytesMut::new(),
        max_frame: ctx.max_frame,
        write_timeout: ctx.idle,
    };
    drive(ctx, conn, "webtransport", Some(peer), None).await;
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
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WtConn<S> {
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
        let frame = match out {
            Out::Reply(r) => proto::ServerFrame {
                frame: Some(proto::server_frame::Frame::Reply(r.clone())),
            },
            Out::Push(p) => proto::ServerFrame {
                frame: Some(proto::server_frame::Frame::Push(p.clone())),
            },
        };
        let len = frame.encoded_len();
        self.write.reserve(PREFIX + len);
        self.write.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        frame.encode_raw(&mut self.write);
    }

    async fn write_out(&mut self) -> bool {
        let io = &mut self.io;
        let buf = &mut self.write;
        let write = async move {
            io.write_all_buf(buf).await?;
            io.flush().await
        };
        matches!(
            tokio::time::timeout(self.write_timeout, write).await,
            Ok(Ok(()))
        )
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> FrameConn for WtConn<S> {
    async fn recv(&mut self) -> Inbound {
        loop {
            if let Some(inbound) = self.frame() {
                return inbound;
            }
            // `read_buf` is cancel-safe: what it read stays in the buffer.
            match self.io.read_buf(&mut self.read).await {
                Ok(0) => return Inbound::Closed,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "WebTransport stream read error");
                    return Inbound::Closed;
                }
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
    use std::time::Duration;

    use bytes::BufMut;
    use switchboard_hub::{proto, Hub, ServerPublish};
    use switchboard_proto::prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::watch;

    use crate::config::Settings;
    use crate::hub::HubCtx;

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

    fn start() -> (Hub, DuplexStream, watch::Sender<bool>) {
        let settings = Settings::default();
        let hub = Hub::with_memory_broker(settings.hub.clone()).expect("valid hub config");
        let (stop, rx) = watch::channel(false);
        let ctx = HubCtx::new(hub.clone(), &settings, rx, None);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        tokio::spawn(super::serve(ctx, server, peer));
        (hub, client, stop)
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
        let (hub, mut io, _stop) = start();
        // Two frames in one write, the second split across writes.
        let mut bytes = frame(&connect(1));
        let subscribe = frame(&proto::Command {
            id: 2,
            method: Some(proto::command::Method::Subscribe(proto::SubscribeRequest {
                channel: "news".into(),
                ..Default::default()
            })),
        });
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
        let (_hub, mut io, _stop) = start();
        io.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let last = read_frame(&mut io).await.expect("disconnect push");
        assert_eq!(disconnect_code(&last), Some(3501), "{last:?}");
    }
}
