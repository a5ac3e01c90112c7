//! The HTTP access log: one structured line per request (target `switchboard::access`, info
//! level), written when the response body has been sent (or dropped), so streamed answers (SSE,
//! long-poll) report their real duration and size. The query string is left out: tokens may
//! travel in it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, Version};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::Frame;

/// The tracing target of access lines (`--log-level info,switchboard::access=off` silences
/// them too).
pub(crate) const TARGET: &str = "switchboard::access";

/// Middleware: passes the request on and logs it once its response is done.
pub(crate) async fn log(request: Request<Body>, next: axum::middleware::Next) -> Response {
    let line = Line {
        start: Instant::now(),
        method: request.method().clone(),
        path: request.uri().path().into(),
        version: request.version(),
        peer: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        status: StatusCode::OK,
        bytes: 0,
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let line = Line {
        status: parts.status,
        ..line
    };
    Response::from_parts(
        parts,
        Body::new(Counted {
            inner: body,
            line: Some(line),
        }),
    )
}

/// What one access line says.
struct Line {
    start: Instant,
    method: Method,
    path: Box<str>,
    version: Version,
    peer: Option<SocketAddr>,
    status: StatusCode,
    bytes: u64,
}

impl Line {
    fn write(&self) {
        let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = %self.path,
            version = ?self.version,
            status = self.status.as_u16(),
            duration_ms = (self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            bytes = self.bytes,
            peer = %peer,
            "http request"
        );
    }
}

/// A response body that counts what it yields and writes the line when it ends or is dropped.
struct Counted {
    inner: Body,
    line: Option<Line>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(line)) = (frame.data_ref(), this.line.as_mut()) {
                    line.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(line) = this.line.take() {
                    line.write();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // A body never polled to its end (client gone, HEAD, an empty body hyper skipped).
        if let Some(line) = self.line.take() {
            line.write();
        }
    }
}
