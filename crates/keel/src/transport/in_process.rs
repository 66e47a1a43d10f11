//! A transport that calls services in the same process, through the same
//! dispatch path a server uses — like gRPC's in-process channel.
//!
//! Owns: turning a [`Call`] into a dispatch request and the answer into a
//! [`Reply`]. May not touch: limits, panics, deadlines on the server side,
//! statistics — the dispatcher applies them exactly as for a TCP call.

use std::sync::Arc;

use bytes::BytesMut;

use crate::codec::encode_to_bytes;
use crate::server::MethodTable;
use crate::server::dispatch::{Dispatcher, Request};
use crate::status::Status;
use crate::transport::{Call, Reply};

/// Serves calls from a [`MethodTable`] in the caller's task: the request is
/// encoded, dispatched as a server dispatches it (routing, interceptors,
/// limits, deadline, span, panic answered `EINTERNAL`, statistics), decoded
/// by the service, and the response encoded and handed back for the client
/// to decode — every step a network call takes except the socket. Options
/// are honoured as a server would see them: log id, attachment, metadata,
/// deadline; compression is a wire concern and is ignored.
#[derive(Debug, Clone)]
pub struct InProcess {
    dispatcher: Arc<Dispatcher>,
}

impl InProcess {
    /// A transport serving the services in `table`, with no limits and no
    /// interceptors (see [`ServerBuilder::in_process`](crate::server::ServerBuilder::in_process)
    /// for those).
    pub fn new(table: MethodTable) -> InProcess {
        InProcess {
            dispatcher: Dispatcher::unlimited(table),
        }
    }

    pub(crate) fn from_dispatcher(dispatcher: Arc<Dispatcher>) -> InProcess {
        InProcess { dispatcher }
    }

    /// The services served.
    pub fn table(&self) -> &MethodTable {
        self.dispatcher.table()
    }

    /// Sends one call to the service.
    pub async fn try_call(&self, call: &Call<'_>) -> Result<Reply, Status> {
        let options = call.options;
        let request = Request {
            service: call.method.service,
            method: call.method.method,
            payload: encode_to_bytes(call.request),
            stream: None,
            attachment: options.attachment.clone(),
            metadata: options.metadata.clone(),
            compression: crate::compression::Compression::None,
            peer: None,
            log_id: options.log_id,
            deadline: call.deadline,
            trace: call.span.context(),
            protocol: "in-process",
        };
        call.span.mark(crate::rpcz::Mark::Sent);
        let running = self.dispatcher.start(request, BytesMut::new())?;
        let mut answer = running.await;
        answer.finish_span();
        answer.result?;
        let mut metadata = answer.metadata;
        metadata.extend_from(&answer.trailers);
        Ok(Reply {
            payload: answer.body.freeze(),
            attachment: answer.attachment,
            metadata,
        })
    }
}
