//! Framing: each message is a big-endian `u32` length followed by that many
//! bytes of postcard. Bulk file bytes are never framed: they follow a header
//! frame raw on the same QUIC stream.
//!
//! A message whose postcard body is larger than [`COMPRESS_OVER`] goes
//! zstd-compressed when that makes it smaller: the top bit of the length
//! ([`COMPRESSED`]) says so, the rest is the compressed length. Large frames
//! are directory pages and metadata batches, whose names and attributes
//! repeat; a 10,000-entry readdir-plus page shrinks about five times, and on a
//! fresh WAN connection every byte saved is a slice of a slow-start round
//! trip. Both lengths, compressed and decompressed, are bounded by
//! [`MAX_FRAME`].

use crate::error::ProtoError;
use crate::version::MAX_FRAME;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bodies larger than this are offered to zstd.
pub const COMPRESS_OVER: usize = 16 << 10;
/// Length bit marking a zstd-compressed body.
pub const COMPRESSED: u32 = 1 << 31;
/// zstd level: the fastest of the normal levels; these frames are built on
/// the request path.
const LEVEL: i32 = 1;

/// Encode a message as one frame (length prefix included), compressed when
/// it is large and compresses.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising our own message types into a Vec has no failure mode
    // (no maps with unsupported keys, no I/O).
    let mut out = postcard::to_extend(msg, vec![0u8; 4]).expect("postcard encode into Vec");
    let len = out.len() - 4;
    if len > COMPRESS_OVER {
        if let Ok(z) = zstd::bulk::compress(&out[4..], LEVEL) {
            if z.len() < len {
                let mut framed = Vec::with_capacity(4 + z.len());
                framed.extend_from_slice(&(z.len() as u32 | COMPRESSED).to_be_bytes());
                framed.extend_from_slice(&z);
                return framed;
            }
        }
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    out
}

/// Decode the body of a plain frame (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    crate::bounded::take_refusal();
    postcard::from_bytes(body).map_err(|e| match crate::bounded::take_refusal() {
        Some(why) => ProtoError::OverBound(why),
        None => ProtoError::Malformed(e),
    })
}

/// Decode the body of a frame whose length prefix was `prefix`.
pub fn decode_framed<T: DeserializeOwned>(prefix: u32, body: &[u8]) -> Result<T, ProtoError> {
    if prefix & COMPRESSED == 0 {
        return decode(body);
    }
    // Inflate as a stream with a cap, so memory follows the real size, not
    // the bound (the one-shot API allocates the whole bound first).
    use std::io::Read;
    let mut plain = Vec::with_capacity((body.len() * 4).min(MAX_FRAME));
    zstd::stream::read::Decoder::new(body)
        .and_then(|d| d.take(MAX_FRAME as u64 + 1).read_to_end(&mut plain))
        .map_err(|e| ProtoError::Compression(e.to_string()))?;
    if plain.len() > MAX_FRAME {
        return Err(ProtoError::Compression(format!("body inflates past the {MAX_FRAME}-byte frame limit")));
    }
    decode(&plain)
}

/// Write one message as a frame.
pub async fn write_msg<T: Serialize>(send: &mut quinn::SendStream, msg: &T) -> Result<(), ProtoError> {
    send.write_all(&encode(msg)).await?;
    Ok(())
}

/// Read one frame; `Err(ProtoError::Eof)` when the stream ended cleanly first.
pub async fn read_msg<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<T, ProtoError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut len[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Err(ProtoError::Eof),
            None => return Err(ProtoError::Truncated),
        }
    }
    let prefix = u32::from_be_bytes(len);
    let len = (prefix & !COMPRESSED) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::Oversized { len, max: MAX_FRAME });
    }
    // The buffer grows with the bytes that arrive, never ahead of them: a
    // peer that declares 16 MiB and sends nothing holds no 16 MiB here.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await? {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => return Err(ProtoError::Truncated),
        }
    }
    decode_framed(prefix, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{MetaRequest, MetaResponse};
    use crate::{Attr, DirEntry, FileKind, Timestamp};

    fn split(frame: &[u8]) -> (u32, &[u8]) {
        (u32::from_be_bytes(frame[..4].try_into().unwrap()), &frame[4..])
    }

    fn listing(n: u64) -> MetaResponse {
        let entries = (0..n)
            .map(|i| {
                let t = Timestamp { secs: 1_764_860_000, nanos: (i * 7_919 % 1_000_000_000) as u32 };
                let attr = Attr {
                    uid: 1000,
                    gid: 1000,
                    atime: t,
                    mtime: t,
                    ctime: t,
                    crtime: t,
                    gen: 1,
                    ..Attr::new(100 + i, FileKind::Regular, 0o644)
                };
                DirEntry {
                    name: format!("entry-{i:05}"),
                    ino: 100 + i,
                    kind: FileKind::Regular,
                    attr: Some(attr),
                    xattrs: Some(Vec::new()),
                }
            })
            .collect();
        MetaResponse::Entries { entries, more: false }
    }

    #[test]
    fn round_trip() {
        let msg = MetaRequest::Lookup { parent: 1, name: "a".into() };
        let frame = encode(&msg);
        let (prefix, body) = split(&frame);
        assert_eq!(prefix as usize, body.len(), "a small frame is plain");
        let back: MetaRequest = decode(body).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn a_large_listing_goes_compressed_and_round_trips() {
        let msg = listing(10_000);
        let plain = postcard::to_stdvec(&msg).unwrap().len();
        let frame = encode(&msg);
        let (prefix, body) = split(&frame);
        assert!(prefix & COMPRESSED != 0, "compressed flag");
        assert_eq!((prefix & !COMPRESSED) as usize, body.len());
        assert!(body.len() * 3 < plain, "{} bytes compressed from {plain}", body.len());
        let back: MetaResponse = decode_framed(prefix, body).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn incompressible_large_bodies_stay_plain() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..64 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let msg = MetaRequest::SetXattr {
            ino: 1,
            name: "user.blob".into(),
            value: noise,
            flags: crate::meta::XattrFlags::default(),
        };
        let frame = encode(&msg);
        let (prefix, body) = split(&frame);
        assert_eq!(prefix as usize, body.len(), "noise is sent as it is");
        assert_eq!(decode_framed::<MetaRequest>(prefix, body).unwrap(), msg);
    }

    #[test]
    fn garbage_is_malformed() {
        let err = decode::<MetaRequest>(&[0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.is_protocol_violation());
        let err = decode_framed::<MetaRequest>(COMPRESSED | 5, &[1, 2, 3, 4, 5]).unwrap_err();
        assert!(matches!(err, ProtoError::Compression(_)), "{err}");
        assert!(err.is_protocol_violation());
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        // 64 MiB of zeros compress to a few KiB; decompressed it would be
        // four times the frame limit.
        let bomb = zstd::bulk::compress(&vec![0u8; 4 * MAX_FRAME], 3).unwrap();
        assert!(bomb.len() < MAX_FRAME);
        let err = decode_framed::<MetaRequest>(COMPRESSED | bomb.len() as u32, &bomb).unwrap_err();
        assert!(matches!(err, ProtoError::Compression(_)), "{err}");
    }
}
