//! What a direction's stack is to the hyper server: a [`Stage`] (plain
//! async code from a request to its answer) made a tower service, boxed
//! once per request at this boundary, inside the per-request middleware of
//! [`super::record`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Layer as _, Service};

use super::ResponseBody;
use super::record::{Record, RecordLayer};
use super::shared::Shared;
use crate::metrics::Direction;

/// A direction's per-request stage: every failure is already the proxy's
/// own answer (`respond`), so it never errs. Cloned per request.
pub trait Stage: Clone + Send + 'static {
    fn serve(self, req: Request<Incoming>) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// A [`Stage`] as a tower service.
#[derive(Clone, Debug)]
pub struct Stack<S>(pub S);

impl<S: Stage> Service<Request<Incoming>> for Stack<S> {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let stage = self.0.clone();
        Box::pin(async move { Ok(stage.serve(req).await) })
    }
}

/// `stage` inside the per-request middleware, ready for [`super::server::serve`].
pub fn stack<S: Stage>(http: &Shared, direction: Direction, stage: S) -> Record<Stack<S>> {
    RecordLayer::new(http.metrics.clone(), direction, http.trace.clone()).layer(Stack(stage))
}
