//! Several datagrams to several destinations in one system call (`sendmmsg(2)`): the STUN
//! workers gather the replies to one receive batch and send them together, instead of one
//! `sendmsg` per reply. quinn-udp batches only datagrams to one destination (GSO).

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// Replies gathered for one socket: their bytes back to back, and per reply its destination,
/// its length and the source address to send from (`IP_PKTINFO`, when the socket is bound to a
/// wildcard address and the request came to a specific one).
pub(crate) struct Batch {
    data: Vec<u8>,
    slot: usize,
    items: Vec<Item>,
}

struct Item {
    to: SockAddr,
    len: usize,
    src_ip: Option<IpAddr>,
}

/// Room for one `in6_pktinfo` control message (the larger of the two), 8-byte aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; 64]);

impl Batch {
    /// Room for `capacity` replies of at most `slot` bytes each.
    pub(crate) fn new(capacity: usize, slot: usize) -> Self {
        Batch {
            data: vec![0u8; capacity * slot],
            slot,
            items: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.items.len() == self.items.capacity()
    }

    /// The buffer the next reply is written into (`slot` bytes); [`Batch::commit`] adds it.
    pub(crate) fn next_buf(&mut self) -> &mut [u8] {
        let at = self.items.len() * self.slot;
        &mut self.data[at..at + self.slot]
    }

    /// Adds the reply written into [`Batch::next_buf`]: its first `len` bytes, for `to`.
    pub(crate) fn commit(&mut self, to: SocketAddr, len: usize, src_ip: Option<IpAddr>) {
        debug_assert!(!self.is_full() && len <= self.slot);
        self.items.push(Item {
            to: SockAddr::from(to),
            len: len.min(self.slot),
            src_ip,
        });
    }

    /// Sends the replies from the `skip`th on with as few `sendmmsg` calls as the kernel needs.
    /// Returns how many of them went out before an error: `Err` only for the reply at that
    /// position (WouldBlock: the send buffer is full; anything else concerns that one reply).
    pub(crate) fn send(&self, sock: &impl AsRawFd, skip: usize) -> (usize, io::Result<()>) {
        let items = &self.items[skip.min(self.items.len())..];
        if items.is_empty() {
            return (0, Ok(()));
        }
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(items.len());
        let mut cmsgs: Vec<Cmsg> = vec![Cmsg([0; 64]); items.len()];
        // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) header.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { mem::zeroed() }; items.len()];
        for (i, item) in items.iter().enumerate() {
            let at = (skip + i) * self.slot;
            iovs.push(libc::iovec {
                iov_base: self.data[at..].as_ptr() as *mut libc::c_void,
                iov_len: item.len,
            });
        }
        for (i, item) in items.iter().enumerate() {
            let hdr = &mut hdrs[i].msg_hdr;
            hdr.msg_name = item.to.as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = item.to.len();
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
            if let Some(ip) = item.src_ip {
                let len = encode_pktinfo(&mut cmsgs[i], ip);
                hdr.msg_control = cmsgs[i].0.as_mut_ptr() as *mut libc::c_void;
                hdr.msg_controllen = len as _;
            }
        }
        let mut sent = 0usize;
        while sent < hdrs.len() {
            let rest = &mut hdrs[sent..];
            // SAFETY: every header points at live buffers (iovs, data, the SockAddrs of
            // `items`, cmsgs) that outlive the call; the count matches the slice.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                return (sent, Err(io::Error::last_os_error()));
            }
            if n == 0 {
                return (sent, Err(io::ErrorKind::WouldBlock.into()));
            }
            sent += n as usize;
        }
        (sent, Ok(()))
    }

    /// Empties the batch for the next receive batch.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// Writes the `IP_PKTINFO` / `IPV6_PKTINFO` control message that makes the kernel send from
/// `ip`; returns its length.
fn encode_pktinfo(buf: &mut Cmsg, ip: IpAddr) -> usize {
    // SAFETY: a msghdr whose control buffer is `buf` (64 bytes, 8-byte aligned) is enough for
    // CMSG_FIRSTHDR/CMSG_DATA to address one cmsghdr plus an in6_pktinfo (20 bytes) inside it.
    unsafe {
        let mut hdr: libc::msghdr = mem::zeroed();
        hdr.msg_control = buf.0.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = buf.0.len() as _;
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        match ip {
            IpAddr::V4(v4) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let len = mem::size_of::<libc::in_pktinfo>() as u32;
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
                libc::CMSG_SPACE(len) as usize
            }
            IpAddr::V6(v6) => {
                let info = libc::in6_pktinfo {
                    ipi6_ifindex: 0,
                    ipi6_addr: libc::in6_addr {
                        s6_addr: v6.octets(),
                    },
                };
                let len = mem::size_of::<libc::in6_pktinfo>() as u32;
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
                libc::CMSG_SPACE(len) as usize
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn one_call_sends_to_several_destinations_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let mut batch = Batch::new(4, 16);
        for (i, to) in [&a, &b, &a].iter().enumerate() {
            batch.next_buf()[..3].copy_from_slice(&[i as u8; 3]);
            // The last one with an explicit source address, as for a wildcard socket.
            let src = (i == 2).then(|| "127.0.0.1".parse().unwrap());
            batch.commit(to.local_addr().unwrap(), 3, src);
        }
        assert_eq!(batch.len(), 3);
        let (sent, r) = batch.send(&tx, 0);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(sent, 3);
        let mut buf = [0u8; 16];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&[0u8; 3][..], tx.local_addr().unwrap()));
        assert_eq!(a.recv_from(&mut buf).unwrap().0, 3);
        assert_eq!(&buf[..3], &[2u8; 3]);
        assert_eq!(b.recv_from(&mut buf).unwrap().0, 3);
        assert_eq!(&buf[..3], &[1u8; 3]);
        // skip: only the rest goes.
        let (sent, r) = batch.send(&tx, 2);
        assert!(r.is_ok());
        assert_eq!(sent, 1);
        assert_eq!(a.recv_from(&mut buf).unwrap().0, 3);
        batch.clear();
        assert_eq!(batch.len(), 0);
        assert_eq!(batch.send(&tx, 0).0, 0);
    }

    #[test]
    fn ipv6_source_address_is_encoded() {
        let Ok(tx) = UdpSocket::bind("[::]:0") else {
            return; // no IPv6 on this machine
        };
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return;
        };
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut batch = Batch::new(1, 8);
        batch.next_buf()[0] = 7;
        batch.commit(rx.local_addr().unwrap(), 1, Some("::1".parse().unwrap()));
        let (sent, r) = batch.send(&tx, 0);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(sent, 1);
        let mut buf = [0u8; 8];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(
            (n, buf[0], from.ip()),
            (1, 7, "::1".parse::<IpAddr>().unwrap())
        );
    }
}
