//! A transport that calls services in the same process, through the same
//! [`MethodTable`] and [`Service`](crate::server::Service) path a server
//! uses — like gRPC's in-process channel.

use bytes::BytesMut;

use crate::channel::transport::{Call, Reply, Transport, TransportFuture};
use crate::codec::encode_to_bytes;
use crate::context::Context;
use crate::server::MethodTable;

/// Serves calls from a [`MethodTable`] in the caller's task: the request is
/// encoded, routed by (service, method) name, decoded by the service, and the
/// response encoded and handed back for the client to decode — every step a
/// network call takes except the socket. Options are honoured as a server
/// would see them: log id, attachment, deadline; compression is a wire
/// concern and is ignored.
#[derive(Debug)]
pub struct InProcess {
    table: MethodTable,
}

impl InProcess {
    /// A transport serving the services in `table`.
    pub fn new(table: MethodTable) -> InProcess {
        InProcess { table }
    }

    /// The services served.
    pub fn table(&self) -> &MethodTable {
        &self.table
    }
}

impl Transport for InProcess {
    fn call<'a>(&'a self, call: Call<'a>) -> TransportFuture<'a> {
        Box::pin(async move {
            let route = self.table.lookup(call.method.service, call.method.method)?;
            let request = encode_to_bytes(call.request);
            call.span.mark(crate::rpcz::Mark::Sent);
            let mut ctx = Context::new(route.method)
                .with_log_id(call.options.log_id)
                .with_attachment(call.options.attachment.clone());
            if let Some(deadline) = call.deadline {
                ctx = ctx.with_deadline(deadline);
            }
            let mut response = BytesMut::new();
            route
                .service
                .call(route.method.index, &ctx, request, &mut response)
                .await?;
            Ok(Reply {
                payload: response.freeze(),
                attachment: ctx.take_response_attachment(),
            })
        })
    }
}
