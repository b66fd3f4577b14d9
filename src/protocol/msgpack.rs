//! The MessagePack encoding (`herald.msgpack` subprotocol): the same messages as the JSON
//! protocol, as MessagePack maps in binary frames. Conversion goes through `serde_json::Value`
//! (order preserved) with rmp-serde, so every message type works without a second definition.

use serde_json::Value;

/// Why a MessagePack frame could not be read.
#[derive(Debug, thiserror::Error)]
#[error("message is not valid MessagePack: {0}")]
pub struct MsgpackError(String);

/// Converts a JSON document (Herald's internal form of every message) to MessagePack.
pub fn from_json(json: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(json).ok()?;
    rmp_serde::to_vec_named(&value).ok()
}

/// Converts a client's MessagePack message to JSON text for the ordinary handlers.
pub fn to_json(msgpack: &[u8]) -> Result<Vec<u8>, MsgpackError> {
    let value: Value = rmp_serde::from_slice(msgpack).map_err(|e| MsgpackError(e.to_string()))?;
    serde_json::to_vec(&value).map_err(|e| MsgpackError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_message() {
        let json = br#"{"type":"job_update","n":3,"ok":true,"data":{"x":[1,2.5,"s",null]}}"#;
        let packed = from_json(json).unwrap();
        assert_ne!(&packed[..], &json[..]);
        assert_eq!(to_json(&packed).unwrap(), json.to_vec());
        assert!(to_json(&[0xc1]).is_err());
    }
}
