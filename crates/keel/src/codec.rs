//! Payload encoding and decoding shared by clients, servers and transports.
//!
//! Transports receive the request as `&dyn Encode` rather than as bytes, so
//! a socket transport can compute the frame size up front and encode the
//! message straight into its write buffer — no intermediate copy. Decoding
//! takes [`Bytes`], so `bytes` fields can borrow from the received frame.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::method::MethodDescriptor;
use crate::status::{Code, Status};

/// A request payload a transport can size and write: every prost message,
/// and [`RawPayload`] for bytes that are already encoded.
pub trait Encode {
    /// Exact number of bytes [`encode_to`](Encode::encode_to) appends.
    fn encoded_len(&self) -> usize;

    /// Appends the encoding to `buf`, growing it if needed.
    fn encode_to(&self, buf: &mut BytesMut);
}

impl<M: Message> Encode for M {
    fn encoded_len(&self) -> usize {
        Message::encoded_len(self)
    }

    fn encode_to(&self, buf: &mut BytesMut) {
        buf.reserve(Message::encoded_len(self));
        self.encode_raw(buf);
    }
}

/// Bytes sent as the payload unchanged: for proxies, tools like `keel call`,
/// and tests that need a malformed payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawPayload(pub Bytes);

impl Encode for RawPayload {
    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn encode_to(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&self.0);
    }
}

/// Encodes `payload` into a new buffer of exactly its size.
pub fn encode_to_bytes(payload: &dyn Encode) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.encoded_len());
    payload.encode_to(&mut buf);
    buf.freeze()
}

/// Decodes a request for `method`; failure is [`Code::EREQUEST`], as brpc
/// answers an unparsable request.
pub fn decode_request<M: Message + Default>(
    method: &MethodDescriptor,
    payload: Bytes,
) -> Result<M, Status> {
    let len = payload.len();
    M::decode(payload).map_err(|err| {
        Status::new(
            Code::EREQUEST,
            format!(
                "fail to parse request {} ({len} bytes) for {method}: {err}",
                method.request_type
            ),
        )
    })
}

/// Decodes a response of `method`; failure is [`Code::ERESPONSE`].
pub fn decode_response<M: Message + Default>(
    method: &MethodDescriptor,
    payload: Bytes,
) -> Result<M, Status> {
    let len = payload.len();
    M::decode(payload).map_err(|err| {
        Status::new(
            Code::ERESPONSE,
            format!(
                "fail to parse response {} ({len} bytes) of {method}: {err}",
                method.response_type
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::MethodKind;

    static M: MethodDescriptor = MethodDescriptor {
        service: "s.S",
        method: "M",
        path: "/s.S/M",
        index: 0,
        request_type: "s.Req",
        response_type: "s.Resp",
        kind: MethodKind::Unary,
    };

    #[derive(Clone, PartialEq, prost::Message)]
    struct Msg {
        #[prost(string, tag = "1")]
        text: String,
    }

    #[test]
    fn messages_encode_exactly() {
        let msg = Msg {
            text: "hello".into(),
        };
        let bytes = encode_to_bytes(&msg);
        assert_eq!(bytes.len(), Encode::encoded_len(&msg));
        assert_eq!(bytes, msg.encode_to_vec());
        let back: Msg = decode_request(&M, bytes).expect("decodes");
        assert_eq!(back, msg);
    }

    #[test]
    fn raw_payload_is_unchanged() {
        let raw = RawPayload(Bytes::from_static(&[1, 2, 3]));
        assert_eq!(encode_to_bytes(&raw), &[1u8, 2, 3][..]);
    }

    #[test]
    fn garbage_is_erequest_or_eresponse() {
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        let err = decode_request::<Msg>(&M, garbage.clone()).expect_err("garbage");
        assert_eq!(err.code(), Code::EREQUEST);
        assert!(err.message().contains("s.Req"), "{err}");
        let err = decode_response::<Msg>(&M, garbage).expect_err("garbage");
        assert_eq!(err.code(), Code::ERESPONSE);
    }
}
