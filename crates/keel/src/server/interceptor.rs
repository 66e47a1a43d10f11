//! Server interceptors: code that runs around every handler, whatever the
//! protocol (brpc's `Interceptor`, tonic's interceptors, Dubbo's filters).
//!
//! Owns: the [`Interceptor`] and [`Authenticator`] traits and the ordered
//! list a server runs. May not touch: frames, sockets, limits; the dispatch
//! path (`dispatch.rs`) calls them at fixed points.
//!
//! ```text
//!   dispatch: lookup ─► interceptors[0].before ─► [1].before ─► ... ─► limits ─► handler
//!                           (a Status here answers the call; the handler never runs)
//!   handler done ─► interceptors[..].after, in reverse order ─► answer written
//! ```
//!
//! With none installed the list is empty and the dispatch path makes no
//! dynamic call and no allocation for it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::context::Context;
use crate::status::Status;

/// Runs before (and after) every call a server dispatches, on every
/// protocol and in process.
///
/// `before` sees the method, the peer and the request metadata in the
/// [`Context`]; it may refuse the call with a [`Status`] (authentication,
/// quotas) or attach values for the handler ([`Context::extensions_mut`]).
/// Interceptors run in the order they were added; the first refusal ends
/// the call. `after` runs, in reverse order, for every interceptor whose
/// `before` passed, once per call: with the handler's result, a limit's
/// refusal, a later interceptor's refusal, or
/// [`ECANCELED`](crate::Code::ECANCELED) when the call was dropped (its
/// caller went away). So an interceptor can pair the two (a gauge, a
/// quota) without leaking on any path.
///
/// ```
/// use keel::server::Interceptor;
/// use keel::{Code, Context, Status};
///
/// struct RequireToken;
///
/// impl Interceptor for RequireToken {
///     fn before(&self, ctx: &mut Context) -> Result<(), Status> {
///         match ctx.metadata().get("authorization") {
///             Some("Bearer let-me-in") => Ok(()),
///             _ => Err(Status::new(Code::ERPCAUTH, "a valid token is required")),
///         }
///     }
/// }
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Before the handler: refuse the call, or let it through (possibly
    /// with values attached to `ctx`).
    fn before(&self, ctx: &mut Context) -> Result<(), Status>;

    /// After the handler (or a limit) produced `result`. Default: nothing.
    fn after(&self, ctx: &Context, result: &Result<(), Status>) {
        let _ = (ctx, result);
    }
}

impl<F> Interceptor for F
where
    F: Fn(&mut Context) -> Result<(), Status> + Send + Sync + 'static,
{
    fn before(&self, ctx: &mut Context) -> Result<(), Status> {
        self(ctx)
    }
}

/// Checks a connection's credential once, on its first request (brpc's
/// `Authenticator`). A connection that fails is answered
/// [`ERPCAUTH`](crate::Code::ERPCAUTH) (gRPC: `UNAUTHENTICATED`) and
/// closed; one that passes is not checked again.
///
/// Where the credential comes from, per protocol:
///
/// | protocol  | credential                                                       |
/// |-----------|------------------------------------------------------------------|
/// | baidu_std | `RpcMeta.authentication_data` (field 7) of the first request     |
/// | gRPC      | the `authorization` header of the HTTP/2 connection's first stream |
///
/// No credential reads as an empty one. A Keel channel sends its
/// [`credential`](crate::ChannelBuilder::credential) both ways.
pub trait Authenticator: Send + Sync + 'static {
    /// Accepts or refuses `credential` from `peer`.
    fn verify(&self, credential: &[u8], peer: Option<SocketAddr>) -> Result<(), Status>;
}

impl<F> Authenticator for F
where
    F: Fn(&[u8], Option<SocketAddr>) -> Result<(), Status> + Send + Sync + 'static,
{
    fn verify(&self, credential: &[u8], peer: Option<SocketAddr>) -> Result<(), Status> {
        self(credential, peer)
    }
}

/// The verdict on a connection's `credential`, the same on every protocol:
/// `Ok` when it passes (or the server has no authenticator), else the
/// [`ERPCAUTH`](crate::Code::ERPCAUTH) answer sent before the connection
/// is closed.
pub(crate) fn authenticate(
    authenticator: Option<&dyn Authenticator>,
    credential: &[u8],
    peer: SocketAddr,
) -> Result<(), Status> {
    match authenticator {
        None => Ok(()),
        Some(auth) => auth.verify(credential, Some(peer)).map_err(|refused| {
            Status::new(
                crate::status::Code::ERPCAUTH,
                format!("authentication failed: {}", refused.message()),
            )
        }),
    }
}

/// A server's interceptors, in order.
#[derive(Clone, Default)]
pub(crate) struct Interceptors {
    list: Vec<Arc<dyn Interceptor>>,
}

impl Interceptors {
    pub(crate) fn push(&mut self, interceptor: Arc<dyn Interceptor>) {
        self.list.push(interceptor);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every `before`, in order, until one refuses; then the `after` of
    /// those that passed, with the refusal.
    pub(crate) fn before(&self, ctx: &mut Context) -> Result<(), Status> {
        for (passed, interceptor) in self.list.iter().enumerate() {
            if let Err(refused) = interceptor.before(ctx) {
                let result = Err(refused);
                for i in self.list[..passed].iter().rev() {
                    i.after(ctx, &result);
                }
                return result;
            }
        }
        Ok(())
    }

    /// Every `after`, in reverse order.
    pub(crate) fn after(&self, ctx: &Context, result: &Result<(), Status>) {
        for i in self.list.iter().rev() {
            i.after(ctx, result);
        }
    }
}

impl std::fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptors")
            .field("len", &self.list.len())
            .finish()
    }
}
