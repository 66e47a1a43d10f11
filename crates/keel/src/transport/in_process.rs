//! A transport that calls services in the same process, through the same
//! dispatch path a server uses — like gRPC's in-process channel.
//!
//! Owns: turning a [`Call`] into a dispatch request and the answer into a
//! [`Reply`]. May not touch: limits, panics, deadlines on the server side,
//! statistics — the dispatcher applies them exactly as for a TCP call.

use std::cell::Cell;
use std::sync::Arc;

use bytes::BytesMut;

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
        let mut buffers = CallBuffers::take();
        let request_len = call.request.encoded_len();
        buffers.request.reserve(request_len);
        call.request.encode_to(&mut buffers.request);
        let request = Request {
            service: call.method.service,
            method: call.method.method,
            payload: buffers.request.split().freeze(),
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
        let running = match self
            .dispatcher
            .start(request, std::mem::take(&mut buffers.response))
        {
            Ok(running) => running,
            Err(refused) => {
                buffers.give_back(request_len);
                return Err(refused.into());
            }
        };
        let mut answer = running.await;
        answer.finish_span();
        let payload = answer.body.split().freeze();
        buffers.response = answer.body;
        buffers.give_back(request_len.max(payload.len()));
        answer.result?;
        let mut metadata = answer.metadata;
        metadata.extend_from(&answer.trailers);
        Ok(Reply {
            payload,
            attachment: answer.attachment,
            metadata,
        })
    }
}

/// The request and response buffers of in-process calls, reused by the
/// calling thread. The encoded request and the response are split off
/// them and handed over as `Bytes`; once those are dropped (decoded), the
/// next call writes into the same allocation again, so a call allocates no
/// buffer in steady state. Buffers that held a message larger than
/// [`KEPT`] are not kept (rule R7); smaller ones stay under twice that. A call made while the thread's buffers are in use (an
/// in-process call from a handler of one) gets fresh ones.
#[derive(Default)]
struct CallBuffers {
    request: BytesMut,
    response: BytesMut,
}

/// Largest buffer a thread keeps for in-process calls.
const KEPT: usize = 64 * 1024;

thread_local! {
    static BUFFERS: Cell<Option<CallBuffers>> = const { Cell::new(None) };
}

impl CallBuffers {
    fn take() -> CallBuffers {
        BUFFERS.with(Cell::take).unwrap_or_default()
    }

    /// Returns the buffers to this thread, unless the largest message they
    /// held (`largest` bytes) makes them too big to keep. Their capacity
    /// cannot tell: after a split it counts only the room left.
    fn give_back(self, largest: usize) {
        if largest > KEPT {
            return;
        }
        // A thread being torn down has no cell: the buffers just drop.
        let _ = BUFFERS.try_with(|cell| cell.set(Some(self)));
    }
}
