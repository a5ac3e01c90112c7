//! Write coalescing for HTTP/1 and HTTP/2 connections: what one connection writes during one
//! poll of its task leaves in one write to the socket (one TLS record run, one `writev`), not
//! one per response.
//!
//! hyper flushes after every response: with pipelined HTTP/1 requests or many HTTP/2 streams
//! answered together, that was a system call, a TLS record and a loopback/NIC packet per
//! response. [`Cork`] holds what is written inside a [`Corked`] poll and lets the first flush
//! of that poll return at once, waking the task; the bytes leave at the next call into the
//! connection's I/O in a later poll (a read, write or flush: hyper's HTTP/1 and HTTP/2
//! connections read on every poll), by then joined by whatever the other requests produced.
//! The delay is one trip through the scheduler, never a timer. Outside a `Corked` poll (an
//! upgraded WebSocket's own task) the wrapper writes through, after what it holds.
//!
//! Memory: the buffer exists only while bytes wait (an idle connection holds none), and at most
//! [`CAP`] bytes wait; a larger write goes through after them.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before they are written anyway.
pub(crate) const CAP: usize = 64 * 1024;

thread_local! {
    /// The poll of a [`Corked`] future running on this thread (0: none).
    static CURRENT: Cell<u64> = const { Cell::new(0) };
    /// The last poll number handed out on this thread.
    static LAST: Cell<u64> = const { Cell::new(0) };
}

fn current() -> u64 {
    CURRENT.with(Cell::get)
}

/// A connection's future whose polls are numbered for the [`Cork`] of its I/O.
pub(crate) struct Corked<F>(pub F);

impl<F: Future + Unpin> Future for Corked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let n = LAST.with(|l| {
            let n = l.get().wrapping_add(1).max(1);
            l.set(n);
            n
        });
        let outer = CURRENT.with(|c| c.replace(n));
        let r = Pin::new(&mut self.0).poll(cx);
        CURRENT.with(|c| c.set(outer));
        r
    }
}

/// An I/O stream whose writes inside a [`Corked`] poll are held until a later poll.
pub(crate) struct Cork<I> {
    io: I,
    /// Bytes not yet written; `sent` of them already were.
    buf: Vec<u8>,
    sent: usize,
    /// The poll whose flush was put off (0: none is).
    held_in: u64,
}

impl<I> Cork<I> {
    pub(crate) fn new(io: I) -> Self {
        Cork {
            io,
            buf: Vec::new(),
            sent: 0,
            held_in: 0,
        }
    }
}

impl<I: AsyncWrite + Unpin> Cork<I> {
    /// Writes out what is held (not flushing the inner stream).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // Released, not kept: an idle connection holds no buffer.
        self.buf = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes out and flushes what an earlier poll held back, if any.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held_in == 0 || self.held_in == current() {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.poll_drain(cx))?;
        self.held_in = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Takes `data` (whole slices, up to [`CAP`] held): how many bytes were taken.
    fn poll_take(&mut self, cx: &mut Context<'_>, data: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len: usize = data.iter().map(|s| s.len()).sum();
        if current() == 0 || len >= CAP {
            // Outside a corked poll, or too large to hold: through, after what is held.
            std::task::ready!(self.poll_drain(cx))?;
            return Pin::new(&mut self.io).poll_write_vectored(cx, data);
        }
        if self.buf.len() - self.sent + len > CAP {
            std::task::ready!(self.poll_drain(cx))?;
        }
        if self.buf.is_empty() {
            self.buf.reserve(len.max(4096));
        }
        for s in data {
            self.buf.extend_from_slice(s);
        }
        Poll::Ready(Ok(len))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Cork<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // A read is where a later poll reliably comes by: what an earlier one held goes now.
        // If the socket cannot take it yet, the read goes on (the write's readiness will wake
        // the task).
        if let Poll::Ready(Err(e)) = self.poll_release(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Cork<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_take(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_take(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let now = current();
        if self.sent < self.buf.len() && now != 0 && (self.held_in == 0 || self.held_in == now) {
            // Put off to the next poll, which the wake-up guarantees.
            self.held_in = now;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.poll_drain(cx))?;
        self.held_in = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        self.held_in = 0;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::task::Waker;

    /// A stream that records each write it is given.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        flushes: Arc<Mutex<usize>>,
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

    /// Runs `f` as one poll of a [`Corked`] future.
    fn corked_poll(f: impl FnOnce(&mut Context<'_>) + Unpin) {
        let mut f = Some(f);
        let mut fut = Corked(std::future::poll_fn(move |cx| {
            (f.take().expect("polled once"))(cx);
            Poll::Ready(())
        }));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
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
    fn writes_of_one_poll_leave_together_at_the_next() {
        let rec = Recorder::default();
        let mut cork = Cork::new(rec.clone());
        corked_poll(|cx| {
            write(&mut cork, cx, b"HTTP/1.1 200 OK\r\n\r\none");
            flush(&mut cork, cx);
            write(&mut cork, cx, b"HTTP/1.1 200 OK\r\n\r\ntwo");
            flush(&mut cork, cx);
        });
        assert!(rec.writes.lock().unwrap().is_empty(), "nothing written yet");
        corked_poll(|cx| {
            let mut byte = [0u8; 1];
            let mut rb = ReadBuf::new(&mut byte);
            assert!(Pin::new(&mut cork).poll_read(cx, &mut rb).is_pending());
        });
        let writes = rec.writes.lock().unwrap().clone();
        assert_eq!(
            writes,
            vec![b"HTTP/1.1 200 OK\r\n\r\noneHTTP/1.1 200 OK\r\n\r\ntwo".to_vec()]
        );
        assert_eq!(*rec.flushes.lock().unwrap(), 1);
        assert_eq!(cork.buf.capacity(), 0, "no buffer kept when idle");
    }

    #[test]
    fn a_flush_in_a_later_poll_writes_what_is_held() {
        let rec = Recorder::default();
        let mut cork = Cork::new(rec.clone());
        corked_poll(|cx| {
            write(&mut cork, cx, b"a");
            flush(&mut cork, cx);
        });
        corked_poll(|cx| {
            write(&mut cork, cx, b"b");
            flush(&mut cork, cx);
        });
        assert_eq!(rec.writes.lock().unwrap().clone(), vec![b"ab".to_vec()]);
    }

    #[test]
    fn outside_a_corked_poll_writes_go_through_in_order() {
        let rec = Recorder::default();
        let mut cork = Cork::new(rec.clone());
        corked_poll(|cx| {
            write(&mut cork, cx, b"101 response");
            flush(&mut cork, cx);
        });
        // An upgraded connection's own task: no corked poll.
        let mut cx = Context::from_waker(Waker::noop());
        write(&mut cork, &mut cx, b"frame");
        assert_eq!(
            rec.writes.lock().unwrap().clone(),
            vec![b"101 response".to_vec(), b"frame".to_vec()]
        );
    }

    #[test]
    fn large_writes_go_through_and_shutdown_writes_what_is_held() {
        let rec = Recorder::default();
        let mut cork = Cork::new(rec.clone());
        let big = vec![7u8; CAP];
        corked_poll(|cx| {
            write(&mut cork, cx, b"head");
            write(&mut cork, cx, &big);
            write(&mut cork, cx, b"tail");
            flush(&mut cork, cx);
            assert!(Pin::new(&mut cork).poll_shutdown(cx).is_ready());
        });
        let writes = rec.writes.lock().unwrap().clone();
        assert_eq!(writes, vec![b"head".to_vec(), big, b"tail".to_vec()]);
    }

    #[test]
    fn at_most_cap_bytes_are_held() {
        let rec = Recorder::default();
        let mut cork = Cork::new(rec.clone());
        let part = vec![1u8; CAP / 2 + 1];
        corked_poll(|cx| {
            write(&mut cork, cx, &part);
            write(&mut cork, cx, &part);
        });
        assert_eq!(rec.writes.lock().unwrap().clone(), vec![part.clone()]);
        assert_eq!(cork.buf.len() - cork.sent, part.len());
    }
}
