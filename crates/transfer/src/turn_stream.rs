//! TURN over TCP and TLS (RFC 8656 §3.1): a bridge between a local UDP socket and one
//! connection to the TURN server, so the peer's run loop (which reads UDP sockets only) drives a
//! TCP/TLS relay exactly as a UDP one. Each datagram the [`crate::turn::TurnClient`] sends to the
//! bridge goes onto the connection as one frame, and each frame from the server comes back as
//! one datagram (RFC 8656 §11.5: a STUN message is delimited by its length field, ChannelData
//! by its length padded to 4 bytes). Only the way to the TURN server changes: the relayed
//! address is UDP, an ordinary relay candidate for ICE.
//!
//! The bridge costs a loopback hop per packet; it is a fallback for networks that block UDP to
//! the server, where the relayed path is the only one anyway.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::turn::TurnTransport;

/// How long the TCP connection and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest frame: a STUN header and 64 KiB, or ChannelData's.
const MAX_FRAME: usize = 20 + 0xFFFF + 3;
/// At most this many bytes of datagrams go onto the connection in one write.
const WRITE_BATCH: usize = 64 * 1024;

/// The running bridge; dropping it closes the connection (the allocation goes with it).
pub(crate) struct Bridge {
    task: JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a bridge to `server` over `transport` (TCP or TLS, with `host` as the TLS server
/// name). `client` is the local socket the TURN client's datagrams leave from (a loopback
/// address); the answer: the bridge's address, where they go. The connection is made in the
/// background: what is sent before it stands waits in the bridge's socket buffer.
pub(crate) async fn open(
    server: SocketAddr,
    transport: TurnTransport,
    host: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    client: SocketAddr,
) -> io::Result<(SocketAddr, Bridge)> {
    let name = match transport {
        TurnTransport::Tls => {
            let Some(cfg) = tls else {
                return Err(io::Error::other(
                    "TURN over TLS without a TLS configuration",
                ));
            };
            let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{host:?} is not a valid TLS server name"),
                )
            })?;
            // ALPN stun.turn (RFC 7443): a server sharing the port with HTTPS tells them apart.
            let mut cfg = (*cfg).clone();
            cfg.alpn_protocols = vec![b"stun.turn".to_vec()];
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        }
        TurnTransport::Tcp => None,
        TurnTransport::Udp => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a bridge is for TCP or TLS",
            ))
        }
    };
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    sock.connect(client).await?;
    let s = socket2::SockRef::from(&sock);
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    let local = sock.local_addr()?;
    let task = tokio::spawn(async move {
        let connect = async {
            let tcp = TcpStream::connect(server).await?;
            let _ = tcp.set_nodelay(true);
            Ok::<_, io::Error>(tcp)
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::debug!(%server, "TURN over {}: {e}", transport.as_str());
                return;
            }
            Err(_) => {
                tracing::debug!(%server, "TURN over {}: connecting timed out", transport.as_str());
                return;
            }
        };
        let r = match name {
            Some((connector, name)) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
                    Ok(Ok(t)) => pump(&sock, t).await,
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the TLS handshake timed out",
                    )),
                }
            }
            None => pump(&sock, tcp).await,
        };
        if let Err(e) = r {
            tracing::debug!(%server, "TURN over {}: {e}", transport.as_str());
        }
    });
    Ok((local, Bridge { task }))
}

/// Moves datagrams onto the connection and frames back into datagrams until either side ends.
async fn pump<S: AsyncRead + AsyncWrite>(sock: &UdpSocket, stream: S) -> io::Result<()> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let up = async {
        let mut buf = vec![0u8; MAX_FRAME];
        let mut out = Vec::with_capacity(WRITE_BATCH + MAX_FRAME);
        loop {
            let n = sock.recv(&mut buf).await?;
            frame(&buf[..n], &mut out);
            // What else is waiting goes in the same write.
            while out.len() < WRITE_BATCH {
                match sock.try_recv(&mut buf) {
                    Ok(n) => frame(&buf[..n], &mut out),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            wr.write_all(&out).await?;
            out.clear();
        }
    };
    let down = async {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            rd.read_exact(&mut buf[..4]).await?;
            let len = frame_len(&buf[..4])?;
            rd.read_exact(&mut buf[4..len]).await?;
            // The TURN client being gone (the connected socket refused) ends the bridge too.
            sock.send(&buf[..len]).await?;
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// Appends one datagram as a frame: ChannelData padded to 4 bytes, a STUN message as it is.
fn frame(d: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(d);
    if d.first().is_some_and(|b| (0x40..=0x7f).contains(b)) {
        out.resize(out.len() + (4 - d.len() % 4) % 4, 0);
    }
}

/// The length of the frame whose first 4 bytes are `head` (with ChannelData's padding).
fn frame_len(head: &[u8]) -> io::Result<usize> {
    let (Some(&first), Some(&hi), Some(&lo)) = (head.first(), head.get(2), head.get(3)) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short frame"));
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    match first >> 6 {
        // STUN: a 20-byte header, then `len` bytes of attributes.
        0 => Ok(20 + len),
        // ChannelData: a 4-byte header, then `len` bytes padded to 4.
        1 => Ok(4 + len.div_ceil(4) * 4),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("neither STUN nor ChannelData from the TURN server (first byte {first:#04x})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let mut out = Vec::new();
        frame(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5], &mut out);
        assert_eq!(out.len(), 12);
        assert_eq!(frame_len(&out[..4]).unwrap(), 12);
        out.clear();
        frame(&[0x01, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42], &mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(frame_len(&[0x01, 0x01, 0x00, 0x08]).unwrap(), 28);
        assert_eq!(frame_len(&[0x40, 0x01, 0x00, 0x00]).unwrap(), 4);
        assert!(frame_len(&[0xc0, 0, 0, 0]).is_err());
        assert!(frame_len(&[0x40]).is_err());
    }

    /// A datagram to the bridge arrives framed on the connection; a frame from the server
    /// arrives as one datagram (its padding kept, which ChannelData parsing ignores).
    #[tokio::test]
    async fn bridges_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (bridge, _b) = open(
            server,
            TurnTransport::Tcp,
            "127.0.0.1",
            None,
            client.local_addr().unwrap(),
        )
        .await
        .unwrap();
        client
            .send_to(&[0x40, 0x00, 0x00, 0x03, 7, 8, 9], bridge)
            .await
            .unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut got = [0u8; 8];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x40, 0x00, 0x00, 0x03, 7, 8, 9, 0]);
        // Two frames in one write come back as two datagrams.
        conn.write_all(&[0x40, 0x01, 0x00, 0x01, 5, 0, 0, 0, 0x40, 0x01, 0x00, 0x00])
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&[0x40, 0x01, 0x00, 0x01, 5, 0, 0, 0][..], bridge)
        );
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &[0x40, 0x01, 0x00, 0x00]);
    }
}
