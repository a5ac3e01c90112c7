//! Channel positions of a multi-channel stream (SSE event ids, long-poll cursors): one
//! `OFFSET.EPOCH` per channel, in the order of the `channel` parameters, joined with `,`.
//! `0.` (offset 0, empty epoch) stands for a channel without history or position.
use switchboard_hub::proto::StreamPosition;

pub(crate) fn encode(positions: &[Option<StreamPosition>]) -> String {
    let mut out = String::new();
    for (i, p) in positions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match p {
            Some(p) => {
                out.push_str(&p.offset.to_string());
                out.push('.');
                out.push_str(&p.epoch);
            }
            None => out.push_str("0."),
        }
    }
    out
}

/// Parses a cursor for `channels` channels.
pub(crate) fn decode(text: &str, channels: usize) -> Result<Vec<Option<StreamPosition>>, String> {
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() != channels {
        return Err(format!(
            "position {text:?} has {} entries for {channels} channels",
            parts.len()
        ));
    }
    parts
        .into_iter()
        .map(|part| {
            let (offset, epoch) = part
                .split_once('.')
                .ok_or_else(|| format!("bad position {part:?}: expected OFFSET.EPOCH"))?;
            let offset: u64 = offset
                .parse()
                .map_err(|_| format!("bad position {part:?}: offset is not a number"))?;
            let valid = epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid || epoch.len() > 64 {
                return Err(format!("bad position {part:?}: bad epoch"));
            }
            Ok((offset > 0 || !epoch.is_empty()).then(|| StreamPosition {
                offset,
                epoch: epoch.to_owned(),
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ps = vec![
            Some(StreamPosition {
                offset: 7,
                epoch: "ab12".into(),
            }),
            None,
        ];
        let text = encode(&ps);
        assert_eq!(text, "7.ab12,0.");
        assert_eq!(decode(&text, 2).unwrap(), ps);
        assert!(decode(&text, 1).is_err());
        assert!(decode("x.ab", 1).is_err());
        assert!(decode("7", 1).is_err());
        assert!(decode("7.a\"b", 1).is_err());
    }
}
