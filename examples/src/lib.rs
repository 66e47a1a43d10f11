//! Shared pieces of the examples: brpc's echo service (package `example`,
//! the same names and field numbers as brpc's `example/echo_c++`, so brpc's
//! echo client and server interoperate with these), gRPC's interop test
//! service and cases ([`interop`], package `grpc.testing`), a shop's
//! services as a user would write them ([`shop`], packages `shop.v1`,
//! `shop.v2` and `shop.legacy`). The programs in `src/bin` parse their
//! command lines with clap.

#![forbid(unsafe_code)]
// The README's Rust example is compiled and run as a doctest of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExample;

pub mod example {
    //! Generated from `proto/echo.proto`.
    #![allow(missing_docs)]
    keel::include_proto!("example");
}

pub mod events {
    //! Generated from `proto/events.proto`: a service on the well-known types
    //! (`Timestamp`, `Duration`, `Empty`, `Any`), with no `prost-types`
    //! dependency in this crate.
    #![allow(missing_docs)]
    keel::include_proto!("events");
}

pub mod grpc_testing {
    //! Generated from `proto/grpc/testing/*.proto`: gRPC's interop test
    //! service and messages (package `grpc.testing`).
    #![allow(missing_docs)]
    keel::include_proto!("grpc.testing");
}

pub mod shop {
    //! Generated from `proto/shop/**/*.proto`: a shop's services as a user
    //! would write them, over several files and packages, with imports,
    //! well-known types, maps, oneofs, proto3 `optional`, every scalar kind,
    //! keyword field names, two packages with equal service and method names
    //! and a proto2 package with `required` fields and defaults.

    pub mod v1 {
        //! Package `shop.v1`: the catalog and orders.
        #![allow(missing_docs)]
        keel::include_proto!("shop.v1");
    }

    pub mod v2 {
        //! Package `shop.v2`: the next catalog, with v1's method names.
        #![allow(missing_docs)]
        keel::include_proto!("shop.v2");
    }

    pub mod legacy {
        //! Package `shop.legacy` (proto2): inventory with required fields.
        #![allow(missing_docs)]
        keel::include_proto!("shop.legacy");
    }
}

pub mod interop;

use example::{EchoRequest, EchoResponse, EchoService};

/// brpc's echo semantics: the message and the attachment come back as they
/// went. Used by `echo_server`, `keel demo` and the benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl EchoService for Echo {
    async fn echo(
        &self,
        ctx: &keel::Context,
        req: &EchoRequest,
        response: &mut EchoResponse,
    ) -> Result<(), keel::Status> {
        if !ctx.attachment().is_empty() {
            ctx.set_response_attachment(ctx.attachment().clone());
        }
        response.message.clone_from(&req.message);
        Ok(())
    }
}
