//! The protobuf messages, descriptors and clients of the services every
//! Keel server serves besides its own: gRPC health checking
//! (`grpc.health.v1.Health`) and server reflection
//! (`grpc.reflection.v1.ServerReflection`, and the same under
//! `grpc.reflection.v1alpha`, which most tools still ask for). keel-build
//! generates them from gRPC's `.proto` files (`proto/grpc/` in this crate),
//! with gRPC's package names and field numbers, so any gRPC tool talks to
//! them.
//!
//! The servers themselves are part of [`Server`](crate::Server): see
//! [`ServerBuilder::without_builtin_services`](crate::server::ServerBuilder::without_builtin_services)
//! and [`HealthReporter`](crate::server::HealthReporter). The clients here
//! call any gRPC server's:
//!
//! ```no_run
//! use keel::builtin::health::v1::{HealthCheckRequest, HealthClient};
//! # async fn check() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = keel::Channel::new("grpc://127.0.0.1:8000")?;
//! let health = HealthClient::new(&channel);
//! let reply = health.check(&HealthCheckRequest { service: String::new() }).await?;
//! println!("{:?}", reply.status());
//! # Ok(())
//! # }
//! ```
//!
//! Messages and fields are documented in the `.proto` files and in gRPC's
//! `doc/health-checking.md` and `doc/server-reflection.md`.

/// gRPC health checking.
pub mod health {
    /// Package `grpc.health.v1`.
    #[allow(missing_docs)] // generated; see gRPC's health.proto
    pub mod v1 {
        crate::include_proto!("grpc.health.v1");
    }
}

/// gRPC server reflection.
pub mod reflection {
    /// Package `grpc.reflection.v1`.
    #[allow(missing_docs)] // generated; see gRPC's reflection.proto
    pub mod v1 {
        crate::include_proto!("grpc.reflection.v1");
    }

    /// Package `grpc.reflection.v1alpha`: the same messages as
    /// [`v1`], under the package most tools still ask for.
    #[allow(missing_docs)] // generated; see gRPC's reflection.proto
    pub mod v1alpha {
        crate::include_proto!("grpc.reflection.v1alpha");
    }
}
