//! Write coalescing for HTTP/1 and HTTP/2 connections: what one connection writes during one
//! poll of its task leaves in one write to the socket (one TLS record run, one `writev`), not
//! one per response.
//!
//! hyper flushes after every response: with pipelined HTTP/1 requests, or many HTTP/2 streams
//! answered together, that was a system call, a TLS record and a packet per response. A
//! connection's I/O is a [`Cork`], shared with the [`Corked`] future that drives the connection:
//! inside a poll of that future, writes are held and flushes return at once; when the poll
//! returns, what was held leaves in one write and is flushed.
//!
//! - HTTP/1 ([`Hold::Poll`]): the bytes leave at the end of the poll that wrote them, so a
//!   response is never later than before, and the responses to the pipelined requests a poll
//!   answered leave together.
//! - HTTP/2 ([`Hold::NextPoll`]): hyper answers each stream in a task of its own, which wakes the
//!   connection's task once per response; so the bytes of one poll wait for the next (the task
//!   wakes itself, and the scheduler runs the streams' tasks that are ready first), and the
//!   responses finished meanwhile join them. The delay is one trip through the scheduler, never
//!   a timer.
//!
//! Anywhere else (an upgraded WebSocket's own task) the I/O writes through, after anything a
//! poll left held because the socket was full. At most [`CAP`] bytes are held; a larger write
//! goes through after them; an idle connection holds no buffer.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before they are written anyway.
pub(crate) const CAP: usize = 64 * 1024;

thread_local! {
    /// The [`Cork`] whose [`Corked`] future this thread is polling (its address; 0: none).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// How long a [`Corked`] connection holds what it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// To the end of the poll that wrote it (HTTP/1).
    Poll,
    /// To the end of the next poll (HTTP/2).
    NextPoll,
}

struct State<I> {
    io: I,
    /// Bytes not yet written; `sent` of them already were.
    buf: Vec<u8>,
    sent: usize,
    /// A poll ended with bytes held for the next ([`Hold::NextPoll`]).
    carried: bool,
}

impl<I: AsyncWrite + Unpin> State<I> {
    fn held(&self) -> bool {
        self.sent < self.buf.len()
    }

    /// Writes out what is held (not flushing the inner stream).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.held() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // Released, not kept: an idle connection holds no buffer.
        self.buf = Vec::new();
        self.sent = 0;
        self.carried = false;
        Poll::Ready(Ok(()))
    }

    /// Writes out and flushes what is held, if anything is.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.held() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

type Shared<I> = Arc<Mutex<State<I>>>;

fn lock<I>(state: &Mutex<State<I>>) -> MutexGuard<'_, State<I>> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The side of a [`Cork`] its [`Corked`] future sees.
trait Release: Send + Sync {
    /// Writes out and flushes what is held, at the end of a poll: with [`Hold::NextPoll`], the
    /// first time only wakes the task and keeps it.
    fn end_of_poll(&self, hold: Hold, cx: &mut Context<'_>);
}

impl<I: AsyncWrite + Unpin + Send> Release for Mutex<State<I>> {
    fn end_of_poll(&self, hold: Hold, cx: &mut Context<'_>) {
        let mut state = lock(self);
        if !state.held() {
            return;
        }
        if hold == Hold::NextPoll && !state.carried {
            state.carried = true;
            cx.waker().wake_by_ref();
            return;
        }
        // An error shows at the connection's next write; Pending means the socket's readiness
        // will wake the task, and the next poll ends here again.
        let _ = state.poll_release(cx);
    }
}

/// An I/O stream whose writes inside a poll of its [`Corked`] future are held to the poll's end.
pub(crate) struct Cork<I> {
    shared: Shared<I>,
}

impl<I: AsyncWrite + Unpin + Send + 'static> Cork<I> {
    /// The stream and the handle its [`Corked`] future takes.
    pub(crate) fn new(io: I) -> (Self, CorkHandle) {
        let shared = Arc::new(Mutex::new(State {
            io,
            buf: Vec::new(),
            sent: 0,
            carried: false,
        }));
        let handle = CorkHandle(shared.clone());
        (Cork { shared }, handle)
    }
}

impl<I> Cork<I> {
    /// Whether this thread is polling this stream's [`Corked`] future.
    fn corked(&self) -> bool {
        CURRENT.with(Cell::get) == Arc::as_ptr(&self.shared) as *const () as usize
    }
}

/// What a [`Corked`] future holds of its connection's [`Cork`].
#[derive(Clone)]
pub(crate) struct CorkHandle(Arc<dyn Release>);

impl CorkHandle {
    fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const () as usize
    }
}

/// A connection's future, driving its [`Cork`]: writes during a poll are held to its end.
pub(crate) struct Corked<F> {
    fut: F,
    cork: CorkHandle,
    hold: Hold,
}

impl<F> Corked<F> {
    pub(crate) fn new(fut: F, cork: CorkHandle, hold: Hold) -> Self {
        Corked { fut, cork, hold }
    }
}

impl<F: Future + Unpin> Future for Corked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let outer = CURRENT.with(|c| c.replace(self.cork.id()));
        let r = Pin::new(&mut self.fut).poll(cx);
        CURRENT.with(|c| c.set(outer));
        let hold = if r.is_ready() { Hold::Poll } else { self.hold };
        self.cork.0.end_of_poll(hold, cx);
        r
    }
}

impl<I: AsyncWrite + Unpin> Cork<I> {
    /// Takes `data` (whole slices, up to [`CAP`] held): how many bytes were taken.
    fn poll_take(&self, cx: &mut Context<'_>, data: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len: usize = data.iter().map(|s| s.len()).sum();
        let corked = self.corked();
        let mut state = lock(&self.shared);
        if !corked || len >= CAP {
            // Outside a corked poll, or too large to hold: through, after what is held.
            ready!(state.poll_drain(cx))?;
            return Pin::new(&mut state.io).poll_write_vectored(cx, data);
        }
        if state.buf.len() - state.sent + len > CAP {
            ready!(state.poll_drain(cx))?;
        }
        if state.buf.is_empty() {
            state.buf.reserve(len.max(4096));
        }
        for s in data {
            state.buf.extend_from_slice(s);
        }
        Poll::Ready(Ok(len))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Cork<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let corked = self.corked();
        let mut state = lock(&self.shared);
        if !corked {
            // Left held by a poll whose socket was full: it goes first. If the socket cannot
            // take it yet, the read goes on (the write's readiness wakes the task).
            if let Poll::Ready(Err(e)) = state.poll_release(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut state.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Cork<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_take(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_take(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let corked = self.corked();
        let mut state = lock(&self.shared);
        if corked && state.held() {
            // At the end of the poll (see `Corked`).
            return Poll::Ready(Ok(()));
        }
        ready!(state.poll_drain(cx))?;
        Pin::new(&mut state.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared);
        ready!(state.poll_drain(cx))?;
        Pin::new(&mut state.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Waker;

    /// A stream that records each write it is given; while `full`, it takes none.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        flushes: Arc<Mutex<usize>>,
        full: Arc<AtomicBool>,
    }

    impl Recorder {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.writes.lock().unwrap().clone()
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.full.load(Ordering::Relaxed) {
                return Poll::Pending;
            }
            self.writes.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.flushes.lock().unwrap() += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Runs `f` as one poll of a [`Corked`] future (which stays pending).
    fn corked_poll(handle: &CorkHandle, hold: Hold, f: impl FnOnce(&mut Context<'_>) + Unpin) {
        let mut f = Some(f);
        let inner = std::future::poll_fn(move |cx| {
            if let Some(f) = f.take() {
                f(cx);
            }
            Poll::<()>::Pending
        });
        let mut fut = Corked::new(inner, handle.clone(), hold);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
    }

    fn write(cork: &mut Cork<Recorder>, cx: &mut Context<'_>, data: &[u8]) {
        match Pin::new(cork).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => assert_eq!(n, data.len()),
            other => panic!("write: {other:?}"),
        }
    }

    fn flush(cork: &mut Cork<Recorder>, cx: &mut Context<'_>) {
        assert!(matches!(Pin::new(cork).poll_flush(cx), Poll::Ready(Ok(()))));
    }

    #[test]
    fn http1_writes_of_one_poll_leave_together_at_its_end() {
        let rec = Recorder::default();
        let (mut cork, handle) = Cork::new(rec.clone());
        let seen = rec.clone();
        corked_poll(&handle, Hold::Poll, |cx| {
            write(&mut cork, cx, b"HTTP/1.1 200 OK\r\n\r\none");
            flush(&mut cork, cx);
            write(&mut cork, cx, b"HTTP/1.1 200 OK\r\n\r\ntwo");
            flush(&mut cork, cx);
            assert!(seen.writes().is_empty(), "nothing written during the poll");
        });
        assert_eq!(
            rec.writes(),
            vec![b"HTTP/1.1 200 OK\r\n\r\noneHTTP/1.1 200 OK\r\n\r\ntwo".to_vec()]
        );
        assert_eq!(*rec.flushes.lock().unwrap(), 1);
        assert_eq!(
            lock(&cork.shared).buf.capacity(),
            0,
            "no buffer kept when idle"
        );
    }

    #[test]
    fn http2_writes_wait_one_more_poll() {
        let rec = Recorder::default();
        let (mut cork, handle) = Cork::new(rec.clone());
        corked_poll(&handle, Hold::NextPoll, |cx| {
            write(&mut cork, cx, b"a");
            flush(&mut cork, cx);
        });
        assert!(rec.writes().is_empty(), "held for the next poll");
        corked_poll(&handle, Hold::NextPoll, |cx| {
            write(&mut cork, cx, b"b");
            flush(&mut cork, cx);
        });
        assert_eq!(rec.writes(), vec![b"ab".to_vec()]);
        // A poll that writes nothing releases what the previous one kept.
        corked_poll(&handle, Hold::NextPoll, |cx| write(&mut cork, cx, b"c"));
        corked_poll(&handle, Hold::NextPoll, |_| {});
        assert_eq!(rec.writes(), vec![b"ab".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn outside_its_corked_poll_a_stream_writes_through() {
        let rec = Recorder::default();
        let (mut cork, handle) = Cork::new(rec.clone());
        // Another connection's corked poll does not hold this one's writes.
        let (_other, other_handle) = Cork::new(Recorder::default());
        corked_poll(&other_handle, Hold::Poll, |cx| write(&mut cork, cx, b"one"));
        assert_eq!(rec.writes(), vec![b"one".to_vec()]);
        let mut cx = Context::from_waker(Waker::noop());
        write(&mut cork, &mut cx, b"two");
        assert_eq!(rec.writes(), vec![b"one".to_vec(), b"two".to_vec()]);
        drop(handle);
    }

    #[test]
    fn what_a_full_socket_left_held_goes_before_later_writes() {
        let rec = Recorder::default();
        let (mut cork, handle) = Cork::new(rec.clone());
        rec.full.store(true, Ordering::Relaxed);
        corked_poll(&handle, Hold::Poll, |cx| {
            write(&mut cork, cx, b"101 Switching Protocols");
            flush(&mut cork, cx);
        });
        assert!(rec.writes().is_empty());
        rec.full.store(false, Ordering::Relaxed);
        // The upgraded connection's own task reads first, then writes.
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        assert!(Pin::new(&mut cork).poll_read(&mut cx, &mut rb).is_pending());
        write(&mut cork, &mut cx, b"frame");
        assert_eq!(
            rec.writes(),
            vec![b"101 Switching Protocols".to_vec(), b"frame".to_vec()]
        );
    }

    #[test]
    fn large_writes_go_through_after_what_is_held() {
        let rec = Recorder::default();
        let (mut cork, handle) = Cork::new(rec.clone());
        let big = vec![7u8; CAP];
        corked_poll(&handle, Hold::Poll, |cx| {
            write(&mut cork, cx, b"head");
            write(&mut cork, cx, &big);
            write(&mut cork, cx, b"tail");
            flush(&mut cork, cx);
        });
        assert_eq!(rec.writes(), vec![b"head".to_vec(), big, b"tail".to_vec()]);
    }

    #[test]
    fn at_most_cap_bytes_are_held_and_shutdown_writes_them() {
        let rec = Recorder::default();
        let (mut cork, handle) = Cork::new(rec.clone());
        let part = vec![1u8; CAP / 2 + 1];
        let seen = rec.clone();
        corked_poll(&handle, Hold::NextPoll, |cx| {
            write(&mut cork, cx, &part);
            write(&mut cork, cx, &part);
            assert_eq!(seen.writes(), vec![part.clone()]);
        });
        assert_eq!(rec.writes().len(), 1, "the second part is held");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut cork).poll_shutdown(&mut cx).is_ready());
        assert_eq!(rec.writes(), vec![part.clone(), part]);
    }
}
