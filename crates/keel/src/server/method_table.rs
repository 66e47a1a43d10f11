//! Routing: (service full name, method name) -> (service, method index).
//!
//! Built once from the added services, then only read: lookups take `&str`
//! straight from the decoded request meta and allocate nothing. The
//! "unknown service" and "unknown method" answers are produced here, so every
//! protocol (baidu_std, gRPC, HTTP, in-process) reports them the same way.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::method::{MethodDescriptor, ServiceDescriptor};
use crate::server::service::Service;
use crate::status::{Code, Status};

/// Why a service could not be added to a [`MethodTable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MethodTableError {
    /// A service with the same full name was added before.
    #[error("service {0} is already in the method table")]
    DuplicateService(&'static str),
    /// The service's descriptor contradicts itself (a hand-written service
    /// with a typo, usually).
    #[error("descriptor of {service} is inconsistent at method {method}: {problem}")]
    InconsistentDescriptor {
        /// The service's full name.
        service: &'static str,
        /// The offending method's name.
        method: &'static str,
        /// What does not match.
        problem: &'static str,
    },
}

/// Where a call goes: the service to dispatch into and the method's
/// descriptor (its `index` is the argument of [`Service::call`]).
#[derive(Clone, Copy)]
pub struct Route<'a> {
    /// The service; clone the `Arc` to move it into a spawned task.
    pub service: &'a Arc<dyn Service>,
    /// The method called.
    pub method: &'static MethodDescriptor,
    /// The method's position in the whole table, `0..method_count()`:
    /// servers index per-method state (limits, statistics) by it.
    pub table_index: usize,
}

impl fmt::Debug for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("method", &format_args!("{}", self.method))
            .finish_non_exhaustive()
    }
}

struct ServiceRoutes {
    service: Arc<dyn Service>,
    methods: HashMap<&'static str, (&'static MethodDescriptor, usize)>,
}

/// The services a server (or in-process channel) serves, indexed by name.
///
/// ```
/// # use keel::server::{MethodTable, Service, ServiceFuture};
/// # use keel::{Code, Context, ServiceDescriptor};
/// # use keel::bytes::{Bytes, BytesMut};
/// # struct Empty;
/// # static EMPTY: ServiceDescriptor = ServiceDescriptor { name: "demo.Empty", methods: &[], files: &[] };
/// # impl Service for Empty {
/// #     fn descriptor(&self) -> &'static ServiceDescriptor { &EMPTY }
/// #     fn call<'a>(&'a self, m: usize, _: &'a Context, _: Bytes, _: &'a mut BytesMut)
/// #         -> ServiceFuture<'a> { keel::server::unknown_method(&EMPTY, m) }
/// # }
/// let mut table = MethodTable::new();
/// table.add(Empty)?;
/// let err = table.lookup("demo.Nope", "Get").unwrap_err();
/// assert_eq!(err.code(), Code::ENOSERVICE);
/// let err = table.lookup("demo.Empty", "Get").unwrap_err();
/// assert_eq!(err.code(), Code::ENOMETHOD);
/// # Ok::<(), keel::server::MethodTableError>(())
/// ```
#[derive(Default)]
pub struct MethodTable {
    services: HashMap<&'static str, ServiceRoutes>,
}

impl MethodTable {
    /// An empty table.
    pub fn new() -> MethodTable {
        MethodTable::default()
    }

    /// Adds `service` (e.g. a generated `FooServer::new(impl)`).
    pub fn add(&mut self, service: impl Service) -> Result<&mut MethodTable, MethodTableError> {
        self.add_shared(Arc::new(service))
    }

    /// Adds a service that is shared with other tables.
    pub fn add_shared(
        &mut self,
        service: Arc<dyn Service>,
    ) -> Result<&mut MethodTable, MethodTableError> {
        let descriptor = service.descriptor();
        if self.services.contains_key(descriptor.name) {
            return Err(MethodTableError::DuplicateService(descriptor.name));
        }
        let first_table_index = self.method_count();
        let methods = routes(descriptor, first_table_index)?;
        self.services
            .insert(descriptor.name, ServiceRoutes { service, methods });
        Ok(self)
    }

    /// Builder form of [`add`](Self::add).
    pub fn with(mut self, service: impl Service) -> Result<MethodTable, MethodTableError> {
        self.add(service)?;
        Ok(self)
    }

    /// Routes a call of `method` on `service` (full name, e.g.
    /// `example.EchoService`). Unknown names give [`Code::ENOSERVICE`] or
    /// [`Code::ENOMETHOD`], ready to send back.
    pub fn lookup(&self, service: &str, method: &str) -> Result<Route<'_>, Status> {
        let Some(routes) = self.services.get(service) else {
            return Err(Status::new(
                Code::ENOSERVICE,
                format!("fail to find service={service}"),
            ));
        };
        let Some(&(descriptor, table_index)) = routes.methods.get(method) else {
            return Err(Status::new(
                Code::ENOMETHOD,
                format!("fail to find method={method} in service={service}"),
            ));
        };
        Ok(Route {
            service: &routes.service,
            method: descriptor,
            table_index,
        })
    }

    /// The descriptors of the services in the table (in no particular order).
    pub fn services(&self) -> impl Iterator<Item = &'static ServiceDescriptor> + '_ {
        self.services.values().map(|r| r.service.descriptor())
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no service was added.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Number of methods over all services.
    pub fn method_count(&self) -> usize {
        self.services.values().map(|r| r.methods.len()).sum()
    }
}

impl fmt::Debug for MethodTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.services.keys()).finish()
    }
}

/// Checks `descriptor` and indexes its methods by name.
fn routes(
    descriptor: &'static ServiceDescriptor,
    first_table_index: usize,
) -> Result<HashMap<&'static str, (&'static MethodDescriptor, usize)>, MethodTableError> {
    let mut methods = HashMap::with_capacity(descriptor.methods.len());
    for (index, &method) in descriptor.methods.iter().enumerate() {
        let problem = if method.service != descriptor.name {
            Some("its service name differs from the service's")
        } else if method.index != index {
            Some("its index differs from its position")
        } else if !path_matches(method) {
            Some("its path is not /{service}/{method}")
        } else if methods
            .insert(method.method, (method, first_table_index + index))
            .is_some()
        {
            Some("the name appears twice")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(MethodTableError::InconsistentDescriptor {
                service: descriptor.name,
                method: method.method,
                problem,
            });
        }
    }
    Ok(methods)
}

fn path_matches(m: &MethodDescriptor) -> bool {
    m.path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(m.service))
        .and_then(|rest| rest.strip_prefix('/'))
        == Some(m.method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::method::MethodKind;
    use crate::server::service::{ServiceFuture, unknown_method};
    use bytes::{Bytes, BytesMut};

    macro_rules! method {
        ($name:ident, $svc:literal, $m:literal, $path:literal, $index:literal) => {
            static $name: MethodDescriptor = MethodDescriptor {
                service: $svc,
                method: $m,
                path: $path,
                index: $index,
                request_type: "t.Req",
                response_type: "t.Resp",
                kind: MethodKind::Unary,
                files: &[],
            };
        };
    }

    method!(GET, "t.Store", "Get", "/t.Store/Get", 0);
    method!(PUT, "t.Store", "Put", "/t.Store/Put", 1);
    method!(BAD_PATH, "t.Store", "Put", "/t.Store/Set", 1);
    method!(BAD_INDEX, "t.Store", "Put", "/t.Store/Put", 5);

    static STORE: ServiceDescriptor = ServiceDescriptor {
        name: "t.Store",
        methods: &[&GET, &PUT],
        files: &[],
    };
    static STORE_BAD_PATH: ServiceDescriptor = ServiceDescriptor {
        name: "t.Store",
        methods: &[&GET, &BAD_PATH],
        files: &[],
    };
    static STORE_BAD_INDEX: ServiceDescriptor = ServiceDescriptor {
        name: "t.Store",
        methods: &[&GET, &BAD_INDEX],
        files: &[],
    };

    struct Fake(&'static ServiceDescriptor);

    impl Service for Fake {
        fn descriptor(&self) -> &'static ServiceDescriptor {
            self.0
        }

        fn call<'a>(
            &'a self,
            method: usize,
            _: &'a Context,
            _: Bytes,
            _: &'a mut BytesMut,
        ) -> ServiceFuture<'a> {
            unknown_method(self.0, method)
        }
    }

    #[test]
    fn routes_by_names() {
        let table = MethodTable::new().with(Fake(&STORE)).expect("adds");
        let route = table.lookup("t.Store", "Put").expect("routes");
        assert!(route.method.is(&PUT));
        assert_eq!(route.method.index, 1);
        assert!(route.service.descriptor().name == "t.Store");
        assert_eq!(table.len(), 1);
        assert_eq!(table.method_count(), 2);
        assert_eq!(
            table
                .lookup("t.Nope", "Put")
                .expect_err("no service")
                .code(),
            Code::ENOSERVICE
        );
        let err = table.lookup("t.Store", "Del").expect_err("no method");
        assert_eq!(err.code(), Code::ENOMETHOD);
        assert!(err.message().contains("Del"), "{err}");
    }

    #[test]
    fn rejects_duplicates_and_inconsistent_descriptors() {
        let mut table = MethodTable::new();
        table.add(Fake(&STORE)).expect("first add");
        assert_eq!(
            table.add(Fake(&STORE)).err(),
            Some(MethodTableError::DuplicateService("t.Store"))
        );
        for bad in [&STORE_BAD_PATH, &STORE_BAD_INDEX] {
            let err = MethodTable::new().with(Fake(bad)).expect_err("rejected");
            assert!(
                matches!(
                    err,
                    MethodTableError::InconsistentDescriptor { method: "Put", .. }
                ),
                "{err}"
            );
        }
    }
}
