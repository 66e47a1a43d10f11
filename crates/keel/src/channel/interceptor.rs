//! Client interceptors: code that runs around every call a channel sends
//! (tonic's client interceptors, Dubbo's consumer filters).
//!
//! Owns: the [`ClientInterceptor`] trait and a channel's ordered list. May
//! not touch: retries, servers, bytes; an interceptor sees the call once,
//! around all of its attempts.

use std::sync::Arc;

use crate::method::MethodDescriptor;
use crate::options::CallOptions;
use crate::status::Status;
use crate::transport::Reply;

/// What a client interceptor learns when a call ends.
#[derive(Debug)]
pub struct CallOutcome<'a> {
    /// The method called.
    pub method: &'static MethodDescriptor,
    /// The options the call went out with (interceptors' changes included).
    pub options: &'a CallOptions,
    /// The still-encoded reply, or the failure.
    pub result: &'a Result<Reply, Status>,
}

/// Runs around every call of a channel it is installed on
/// ([`ChannelBuilder::interceptor`](crate::ChannelBuilder::interceptor)).
///
/// `before` may add metadata (an auth token, a request id) or change other
/// options of this call, or refuse to send it with a [`Status`]. `after`
/// observes the outcome once, after every retry. Interceptors run in the
/// order added (`after` in reverse). A channel without interceptors pays
/// nothing for them: no copy of the options, no dynamic call.
///
/// ```
/// use keel::{CallOptions, ClientInterceptor, MethodDescriptor, Status};
///
/// struct BearerToken(String);
///
/// impl ClientInterceptor for BearerToken {
///     fn before(&self, _: &'static MethodDescriptor, options: &mut CallOptions) -> Result<(), Status> {
///         options.metadata.insert("authorization", format!("Bearer {}", self.0));
///         Ok(())
///     }
/// }
/// ```
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Before the call is sent.
    fn before(
        &self,
        method: &'static MethodDescriptor,
        options: &mut CallOptions,
    ) -> Result<(), Status>;

    /// After the call ended (success, failure, or refusal by a later
    /// interceptor's `before`); only for interceptors whose `before` passed.
    /// Default: nothing.
    fn after(&self, outcome: &CallOutcome<'_>) {
        let _ = outcome;
    }
}

/// A channel's client interceptors, in order.
#[derive(Clone, Default)]
pub(crate) struct ClientInterceptors {
    list: Vec<Arc<dyn ClientInterceptor>>,
}

impl ClientInterceptors {
    pub(crate) fn push(&mut self, interceptor: Arc<dyn ClientInterceptor>) {
        self.list.push(interceptor);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every `before`, in order, until one refuses; then the `after` of
    /// those that passed, with the refusal.
    pub(crate) fn before(
        &self,
        method: &'static MethodDescriptor,
        options: &mut CallOptions,
    ) -> Result<(), Status> {
        for (passed, interceptor) in self.list.iter().enumerate() {
            if let Err(refused) = interceptor.before(method, options) {
                let result: Result<Reply, Status> = Err(refused);
                let outcome = CallOutcome {
                    method,
                    options,
                    result: &result,
                };
                for i in self.list[..passed].iter().rev() {
                    i.after(&outcome);
                }
                return result.map(drop);
            }
        }
        Ok(())
    }

    pub(crate) fn after(
        &self,
        method: &'static MethodDescriptor,
        options: &CallOptions,
        result: &Result<Reply, Status>,
    ) {
        let outcome = CallOutcome {
            method,
            options,
            result,
        };
        for i in self.list.iter().rev() {
            i.after(&outcome);
        }
    }
}

impl std::fmt::Debug for ClientInterceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInterceptors")
            .field("len", &self.list.len())
            .finish()
    }
}
