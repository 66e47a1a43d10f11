//! Method and service descriptors: what a call is addressed to.
//!
//! Generated code holds descriptors as `static` items, so each is built once
//! per process and lives forever. A method's identity is the address of its
//! descriptor: channels key per-method state by it, which bounds that state by
//! the number of methods in the program — never by the number of clients
//! (the MagicOnion lesson, `DESIGN.md` §1.3). That is also why descriptors are
//! neither `Clone` nor `PartialEq`: a copy would be a different method.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ptr;

/// Which messages flow in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response. The only kind Keel serves so far.
    Unary,
    /// A stream of requests, one response.
    ClientStreaming,
    /// One request, a stream of responses.
    ServerStreaming,
    /// Streams both ways.
    BidiStreaming,
}

/// One RPC method: names, wire path and message types.
///
/// Build it as a `static` (generated code does); never build one per call or
/// per client.
#[derive(Debug)]
pub struct MethodDescriptor {
    /// Full protobuf name of the service, e.g. `example.EchoService`
    /// (baidu_std's `service_name`).
    pub service: &'static str,
    /// The method's name in the `.proto`, e.g. `Echo` (baidu_std's `method_name`).
    pub method: &'static str,
    /// `/{service}/{method}`, e.g. `/example.EchoService/Echo` (the gRPC and
    /// HTTP path).
    pub path: &'static str,
    /// Position in [`ServiceDescriptor::methods`]; services dispatch on it.
    pub index: usize,
    /// Full protobuf name of the request message, e.g. `example.EchoRequest`.
    pub request_type: &'static str,
    /// Full protobuf name of the response message.
    pub response_type: &'static str,
    /// Unary or one of the streaming kinds.
    pub kind: MethodKind,
    /// The `.proto` files behind the method's messages (its service's
    /// [`ServiceDescriptor::files`]): what a client needs to speak the
    /// method as JSON (`http://` channels). Empty for a method written by
    /// hand.
    pub files: &'static [&'static [u8]],
}

impl MethodDescriptor {
    /// Whether `self` and `other` are the same method: the same descriptor,
    /// by address.
    pub fn is(&self, other: &MethodDescriptor) -> bool {
        ptr::eq(self, other)
    }
}

#[cfg(test)]
impl MethodDescriptor {
    /// A unary method `s.S/M` written by hand, for tests: each static made
    /// from it is a method of its own (methods are told apart by address).
    pub(crate) const fn for_tests() -> MethodDescriptor {
        MethodDescriptor {
            service: "s.S",
            method: "M",
            path: "/s.S/M",
            index: 0,
            request_type: "s.A",
            response_type: "s.B",
            kind: MethodKind::Unary,
            files: &[],
        }
    }
}

/// `service.method`, e.g. `example.EchoService.Echo`.
impl fmt::Display for MethodDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.method)
    }
}

/// A service: its full name and its methods in declaration order.
#[derive(Debug)]
pub struct ServiceDescriptor {
    /// Full protobuf name, e.g. `example.EchoService`.
    pub name: &'static str,
    /// The methods; `methods[i].index == i`.
    pub methods: &'static [&'static MethodDescriptor],
    /// The `.proto` files behind the service, as serialized
    /// `google.protobuf.FileDescriptorProto`s: the file declaring the
    /// service first, then every file it imports, transitively, each once.
    /// keel-build embeds them (without source info); the server's builtin
    /// reflection service answers from them. Empty for a service written by
    /// hand, which reflection then lists but cannot describe.
    pub files: &'static [&'static [u8]],
}

impl ServiceDescriptor {
    /// The method called `name` (as in the `.proto`), if any.
    pub fn method(&self, name: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().copied().find(|m| m.method == name)
    }

    /// The protobuf package (`example`), empty when there is none.
    pub fn package(&self) -> &'static str {
        self.name
            .rsplit_once('.')
            .map_or("", |(package, _)| package)
    }
}

/// A `&'static MethodDescriptor` hashed and compared by address: the key of
/// per-method state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MethodKey(pub(crate) &'static MethodDescriptor);

impl PartialEq for MethodKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.is(other.0)
    }
}

impl Eq for MethodKey {}

impl Hash for MethodKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        ptr::hash(self.0, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    static A: MethodDescriptor = MethodDescriptor {
        service: "pkg.Svc",
        method: "A",
        path: "/pkg.Svc/A",
        index: 0,
        request_type: "pkg.Req",
        response_type: "pkg.Resp",
        kind: MethodKind::Unary,
        files: &[],
    };
    // Same names as A, different identity.
    static A_TWIN: MethodDescriptor = MethodDescriptor {
        service: "pkg.Svc",
        method: "A",
        path: "/pkg.Svc/A",
        index: 0,
        request_type: "pkg.Req",
        response_type: "pkg.Resp",
        kind: MethodKind::Unary,
        files: &[],
    };
    static SVC: ServiceDescriptor = ServiceDescriptor {
        name: "pkg.Svc",
        methods: &[&A],
        files: &[],
    };

    #[test]
    fn identity_is_the_address() {
        assert!(A.is(&A));
        assert!(!A.is(&A_TWIN));
        let keys: HashSet<MethodKey> = [MethodKey(&A), MethodKey(&A), MethodKey(&A_TWIN)].into();
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn lookup_and_names() {
        assert!(SVC.method("A").is_some_and(|m| m.is(&A)));
        assert!(SVC.method("B").is_none());
        assert_eq!(SVC.package(), "pkg");
        assert_eq!(A.to_string(), "pkg.Svc.A");
    }
}
