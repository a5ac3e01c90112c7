//! Batched UDP for the STUN load: a window's requests leave with one `sendmmsg`, and the replies
//! that have arrived come back with one `recvmmsg` (waiting for the first only), so the load
//! client spends a few system calls per window instead of two per request and leaves more of
//! the shared cores to the server under test.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Bytes per receive slot (a Binding success response is well under this).
pub const SLOT: usize = 256;

/// One message header per buffer: no address (the socket is connected), no control data.
fn headers(iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero msghdr is valid (no name, no control data).
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect()
}

/// Sends `lens.len()` datagrams, the i-th being `bufs[i][..lens[i]]`, on a connected socket:
/// how many the kernel took.
pub fn send_batch(sock: &UdpSocket, bufs: &mut [[u8; 64]], lens: &[usize]) -> io::Result<usize> {
    let n = lens.len().min(bufs.len());
    if n == 0 {
        return Ok(0);
    }
    let mut iovs: Vec<libc::iovec> = bufs[..n]
        .iter_mut()
        .zip(lens)
        .map(|(b, &len)| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: len.min(b.len()),
        })
        .collect();
    let mut msgs = headers(&mut iovs);
    // SAFETY: `msgs` points at `n` headers whose buffers live until the call returns.
    let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Receives up to `lens.len()` datagrams into `slots` (SLOT bytes each), waiting (up to the
/// socket's read timeout) for the first only: how many came; `lens[i]` is the i-th's length.
pub fn recv_batch(sock: &UdpSocket, slots: &mut [u8], lens: &mut [usize]) -> io::Result<usize> {
    let n = lens.len().min(slots.len() / SLOT);
    if n == 0 {
        return Ok(0);
    }
    let mut iovs: Vec<libc::iovec> = slots
        .chunks_mut(SLOT)
        .take(n)
        .map(|s| libc::iovec {
            iov_base: s.as_mut_ptr().cast(),
            iov_len: s.len(),
        })
        .collect();
    let mut msgs = headers(&mut iovs);
    // SAFETY: `msgs` points at `n` headers whose buffers live until the call returns; no
    // timeout argument (the socket's SO_RCVTIMEO bounds the wait for the first datagram).
    let r = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = r as usize;
    for (len, m) in lens.iter_mut().zip(&msgs).take(got) {
        *len = m.msg_len as usize;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_and_comes_back_whole() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut bufs = [[0u8; 64]; 3];
        for (i, b) in bufs.iter_mut().enumerate() {
            b[..5].copy_from_slice(&[i as u8; 5]);
        }
        assert_eq!(send_batch(&a, &mut bufs, &[5, 3, 1]).unwrap(), 3);
        let mut slots = vec![0u8; SLOT * 8];
        let mut lens = [0usize; 8];
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = recv_batch(&b, &mut slots, &mut lens).unwrap();
            for (i, len) in lens.iter().enumerate().take(n) {
                got.push(slots[i * SLOT..i * SLOT + len].to_vec());
            }
        }
        assert_eq!(got, vec![vec![0u8; 5], vec![1u8; 3], vec![2u8; 1]]);
    }
}
