//! Framing: each message is a big-endian `u32` length followed by that many
//! bytes of postcard. Bulk file bytes are never framed: they follow a header
//! frame raw on the same QUIC stream.

use crate::error::ProtoError;
use crate::version::MAX_FRAME;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encode a message as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising our own message types into a Vec has no failure mode
    // (no maps with unsupported keys, no I/O).
    let mut out = postcard::to_extend(msg, vec![0u8; 4]).expect("postcard encode into Vec");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Decode the body of a frame (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    Ok(postcard::from_bytes(body)?)
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
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::Oversized { len, max: MAX_FRAME });
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => ProtoError::Truncated,
        quinn::ReadExactError::ReadError(e) => ProtoError::Read(e),
    })?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaRequest;

    #[test]
    fn round_trip() {
        let msg = MetaRequest::Lookup { parent: 1, name: "a".into() };
        let frame = encode(&msg);
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let back: MetaRequest = decode(&frame[4..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn garbage_is_malformed() {
        let err = decode::<MetaRequest>(&[0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.is_protocol_violation());
    }
}
