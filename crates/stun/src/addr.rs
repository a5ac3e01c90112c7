//! (XOR-)MAPPED-ADDRESS style address encoding (RFC 8489 §14.1, §14.2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::AttrError;
use crate::util::{array, be16};
use crate::{TransactionId, MAGIC_COOKIE};

/// Address family number of IPv4.
pub(crate) const FAMILY_IPV4: u8 = 0x01;
/// Address family number of IPv6.
pub(crate) const FAMILY_IPV6: u8 = 0x02;

/// The XOR mask: magic cookie followed by the transaction id.
fn mask(tid: &TransactionId) -> [u8; 16] {
    let mut m = [0u8; 16];
    let (c, t) = m.split_at_mut(4);
    c.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    t.copy_from_slice(&tid.0);
    m
}

fn xor_in_place<const N: usize>(b: &mut [u8; N], mask: &[u8; 16]) {
    for (x, m) in b.iter_mut().zip(mask.iter()) {
        *x ^= m;
    }
}

/// Decodes an address value; `xor` is the transaction id for XOR-encoded attributes.
pub(crate) fn decode(v: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, AttrError> {
    let bad = AttrError::BadLength { len: v.len() };
    let family = *v.get(1).ok_or(bad.clone())?;
    let mut port = be16(v, 2).ok_or(bad.clone())?;
    let m = xor.map(mask);
    if m.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        FAMILY_IPV4 => {
            if v.len() != 8 {
                return Err(bad);
            }
            let mut a: [u8; 4] = array(v, 4).ok_or(bad)?;
            if let Some(m) = &m {
                xor_in_place(&mut a, m);
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        FAMILY_IPV6 => {
            if v.len() != 20 {
                return Err(bad);
            }
            let mut a: [u8; 16] = array(v, 4).ok_or(bad)?;
            if let Some(m) = &m {
                xor_in_place(&mut a, m);
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        f => return Err(AttrError::BadFamily(f)),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Encoded value length of an address.
pub(crate) const fn encoded_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Encodes an address into `out` (exactly [`encoded_len`] bytes).
pub(crate) fn encode(addr: &SocketAddr, xor: Option<&TransactionId>, out: &mut [u8]) {
    let m = xor.map(mask);
    let mut port = addr.port();
    if m.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let mut head = [0u8; 4];
    head[2..].copy_from_slice(&port.to_be_bytes());
    let ok = match addr.ip() {
        IpAddr::V4(ip) => {
            head[1] = FAMILY_IPV4;
            let mut a = ip.octets();
            if let Some(m) = &m {
                xor_in_place(&mut a, m);
            }
            crate::util::put(out, 0, &head) && crate::util::put(out, 4, &a)
        }
        IpAddr::V6(ip) => {
            head[1] = FAMILY_IPV6;
            let mut a = ip.octets();
            if let Some(m) = &m {
                xor_in_place(&mut a, m);
            }
            crate::util::put(out, 0, &head) && crate::util::put(out, 4, &a)
        }
    };
    debug_assert!(ok, "caller sized the slot with encoded_len");
}
