//! TURN ChannelData messages (RFC 8656 §12.4).

use crate::error::{BuildError, ParseError};
use crate::util::{be16, padded, put};
use crate::CHANNEL_DATA_HEADER_LEN;

/// A ChannelData message: a 4-byte header (channel number, length) followed by application data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ChannelData<'a> {
    /// Channel number, 0x4000..=0x7FFF.
    pub channel: u16,
    /// The application data (without padding).
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Whether `channel` is a valid channel number. RFC 8656 §12 allows 0x4000..=0x4FFF; RFC 5766
    /// allowed up to 0x7FFE and RFC 5766 clients (coturn's `turnutils_uclient` among them) still
    /// pick numbers there, so the codec accepts 0x4000..=0x7FFF as coturn does.
    pub const fn is_valid_channel(channel: u16) -> bool {
        channel >= 0x4000 && channel <= 0x7FFF
    }

    /// Parses a ChannelData message. The channel must be in 0x4000..=0x7FFF and the length at
    /// most `buf.len() - 4`; bytes after the data (padding) are allowed and ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let (Some(channel), Some(len)) = (be16(buf, 0), be16(buf, 2)) else {
            return Err(ParseError::TooShort { len: buf.len() });
        };
        if !Self::is_valid_channel(channel) {
            return Err(ParseError::BadChannel { channel });
        }
        let declared = usize::from(len);
        let rest = buf.get(CHANNEL_DATA_HEADER_LEN..).unwrap_or(&[]);
        let data = rest
            .get(..declared)
            .ok_or(ParseError::ChannelDataTruncated {
                declared,
                available: rest.len(),
            })?;
        Ok(ChannelData { channel, data })
    }

    /// Length of the encoded message: `4 + data.len()`, rounded up to a multiple of 4 if `pad`.
    pub const fn encoded_len(data_len: usize, pad: bool) -> usize {
        let n = CHANNEL_DATA_HEADER_LEN.saturating_add(data_len);
        if pad {
            padded(n)
        } else {
            n
        }
    }

    /// Encodes a ChannelData message into `out`; returns its length. With `pad` (mandatory over
    /// TCP/TLS, RFC 8656 §12.5) zero bytes are appended up to a multiple of 4.
    pub fn encode(
        channel: u16,
        data: &[u8],
        out: &mut [u8],
        pad: bool,
    ) -> Result<usize, BuildError> {
        if !Self::is_valid_channel(channel) {
            return Err(BuildError::InvalidChannel(channel));
        }
        let len = u16::try_from(data.len()).map_err(|_| BuildError::ValueTooLong {
            len: data.len(),
            max: 0xFFFF,
        })?;
        let n = Self::encoded_len(data.len(), pad);
        let available = out.len();
        let dst = out.get_mut(..n).ok_or(BuildError::BufferTooSmall {
            needed: n,
            available,
        })?;
        let [c0, c1] = channel.to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        let end = CHANNEL_DATA_HEADER_LEN + data.len();
        let ok = put(dst, 0, &[c0, c1, l0, l1]) && put(dst, CHANNEL_DATA_HEADER_LEN, data);
        if let Some(p) = dst.get_mut(end..) {
            p.fill(0);
        }
        debug_assert!(ok);
        Ok(n)
    }

    /// Encodes `self` (see [`ChannelData::encode`]).
    pub fn encode_into(&self, out: &mut [u8], pad: bool) -> Result<usize, BuildError> {
        Self::encode(self.channel, self.data, out, pad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        let mut out = [0xAAu8; 16];
        let n = ChannelData::encode(0x4001, b"hello", &mut out, true).unwrap();
        assert_eq!(n, 12);
        assert_eq!(&out[..12], b"\x40\x01\x00\x05hello\0\0\0");
        assert_eq!(out[12], 0xAA);
        let cd = ChannelData::parse(&out[..n]).unwrap();
        assert_eq!(
            cd,
            ChannelData {
                channel: 0x4001,
                data: b"hello"
            }
        );
        // Unpadded, as over UDP.
        let n = ChannelData::encode(0x4FFF, b"hello", &mut out, false).unwrap();
        assert_eq!(n, 9);
        assert_eq!(ChannelData::parse(&out[..n]).unwrap().data, b"hello");
        // Empty data.
        let n = ChannelData::encode(0x4000, b"", &mut out, true).unwrap();
        assert_eq!(n, 4);
        assert_eq!(ChannelData::parse(&out[..4]).unwrap().data, b"");
        assert_eq!(
            ChannelData {
                channel: 0x4000,
                data: b"abcd"
            }
            .encode_into(&mut out, true),
            Ok(8)
        );
    }

    #[test]
    fn encode_errors() {
        let mut out = [0u8; 8];
        assert_eq!(
            ChannelData::encode(0x3FFF, b"", &mut out, true),
            Err(BuildError::InvalidChannel(0x3FFF))
        );
        assert_eq!(
            ChannelData::encode(0x8000, b"", &mut out, true),
            Err(BuildError::InvalidChannel(0x8000))
        );
        assert_eq!(
            ChannelData::encode(0x4000, b"hello", &mut out, true),
            Err(BuildError::BufferTooSmall {
                needed: 12,
                available: 8
            })
        );
        assert_eq!(ChannelData::encode(0x4000, b"hell", &mut out, true), Ok(8));
        let big = vec![0u8; 0x10000];
        let mut o = vec![0u8; 0x10010];
        assert!(matches!(
            ChannelData::encode(0x4000, &big, &mut o, false),
            Err(BuildError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0x00]),
            Err(ParseError::TooShort { len: 3 })
        );
        assert_eq!(
            ChannelData::parse(&[0x00, 0x01, 0x00, 0x00]),
            Err(ParseError::BadChannel { channel: 1 })
        );
        assert_eq!(
            ChannelData::parse(&[0x3F, 0xFF, 0x00, 0x00]),
            Err(ParseError::BadChannel { channel: 0x3FFF })
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4]),
            Err(ParseError::ChannelDataTruncated {
                declared: 5,
                available: 4
            })
        );
        // Padding (or anything) after the data is ignored.
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0x00, 0x01, 7, 0, 0, 0])
                .unwrap()
                .data,
            &[7]
        );
    }
}
