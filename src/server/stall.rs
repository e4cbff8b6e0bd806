//! Answers the caller stops taking. A caller that reads nothing of an
//! answer holds what the answer holds: its `max_in_flight` slot and an
//! upstream connection, whose answer kmproxy reads only as fast as the
//! caller takes it. hyper stops polling an answer body while the caller
//! takes nothing (an HTTP/1 socket that accepts no byte, an HTTP/2 stream
//! whose flow-control window stays shut), so the body cannot notice; the
//! task that drives the call can, and ends the call:
//!
//! - a connection (HTTP/1, or HTTP/2 as a whole): [`Tracked`] wraps its
//!   socket and notes a write that waits on the caller and a write that
//!   goes through; [`Writes::stalled`] tells the connection's driver when
//!   writes have waited a whole period with none going through, and the
//!   driver drops the connection.
//! - an HTTP/2 stream: hyper runs each stream as a task of its own through
//!   the connection's executor, [`Streams`], which runs it under a
//!   task-local [`Watch`]; the stream's answer body, [`Marked`], notes each
//!   time hyper asks it for more and whether it handed a piece over. A
//!   stream that handed a piece over and was not asked for the next for a
//!   whole period is dropped: hyper's stream with it (`RST_STREAM(CANCEL)`
//!   to the caller) and the answer body (its upstream connection closes,
//!   its slot is free).
//!
//! A call waiting on the upstream, on a login or on its own request body
//! waits on the caller for nothing here: their own deadlines bound them.
//! The period is the [`SendTimeout`] (`upstream.timeout`, read when a call
//! first waits on its caller, so that a reload applies), and a stall is
//! caught between one and two periods after the last byte went. Per piece
//! of an answer this costs a flag or two; a timer is made only for a call
//! that has waited on its caller, once, and then serves it throughout.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a caller may take nothing of an answer before its call ends.
#[derive(Clone)]
pub struct SendTimeout(Arc<dyn Fn() -> Duration + Send + Sync>);

impl SendTimeout {
    /// A bound read from `current` each time a call first waits on its
    /// caller (the data port reads `upstream.timeout` of the live config).
    pub fn new(current: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        Self(Arc::new(current))
    }

    /// The same bound always.
    pub fn fixed(period: Duration) -> Self {
        Self::new(move || period)
    }

    fn get(&self) -> Duration {
        (self.0)()
    }
}

impl std::fmt::Debug for SendTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendTimeout({:?})", self.get())
    }
}

/// Tells a stall: started the first time the call waits on its caller,
/// then it looks once a period.
struct Clock {
    timeout: SendTimeout,
    /// `None` until the call first waits on its caller.
    timer: Option<(Pin<Box<Sleep>>, Duration)>,
    /// The call waited on its caller when last asked.
    was_waiting: bool,
    /// It began to wait since the timer last looked: a fresh wait counts as
    /// progress, so a stall is always a whole period of waiting.
    began: bool,
}

impl Clock {
    fn new(timeout: SendTimeout) -> Self {
        Self {
            timeout,
            timer: None,
            was_waiting: false,
            began: false,
        }
    }

    /// True once the call has waited on its caller with no progress for a
    /// whole period. `waiting`: it waits on its caller now; `progressed`
    /// says (and forgets) whether it made progress since it was last asked.
    fn stalled(&mut self, cx: &mut Context<'_>, waiting: bool, mut progressed: impl FnMut() -> bool) -> bool {
        self.began |= waiting && !self.was_waiting;
        self.was_waiting = waiting;
        if !waiting {
            return false;
        }
        let (sleep, period) = match &mut self.timer {
            Some(timer) => timer,
            // The first wait: the timer runs from now.
            None => {
                progressed();
                self.began = false;
                let period = self.timeout.get();
                self.timer.insert((Box::pin(tokio::time::sleep(period)), period))
            }
        };
        while sleep.as_mut().poll(cx).is_ready() {
            let moved = progressed() | std::mem::take(&mut self.began);
            if !moved {
                return true;
            }
            sleep.as_mut().reset(Instant::now() + *period);
        }
        false
    }
}

/// What a connection's writes have done, noted by [`Tracked`].
#[derive(Default)]
pub struct Writes {
    /// The last write waited: the socket takes nothing until the caller reads.
    waiting: AtomicBool,
    /// A write went through since the watch last looked.
    went: AtomicBool,
}

impl Writes {
    fn note<T>(&self, result: &Poll<io::Result<T>>) {
        match result {
            Poll::Pending => self.waiting.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {
                self.waiting.store(false, Ordering::Relaxed);
                self.went.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Resolves once the connection's writes have waited on the caller a
    /// whole period with none going through. Poll it after the connection
    /// itself (a `biased` select), so that it sees the write that just waited.
    pub async fn stalled(&self, timeout: SendTimeout) {
        let mut clock = Clock::new(timeout);
        std::future::poll_fn(|cx| {
            let waiting = self.waiting.load(Ordering::Relaxed);
            match clock.stalled(cx, waiting, || self.went.swap(false, Ordering::Relaxed)) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await
    }
}

/// A connection's socket, its writes noted in [`Writes`].
pub struct Tracked<S> {
    io: S,
    writes: Arc<Writes>,
}

impl<S> Tracked<S> {
    pub fn new(io: S) -> (Self, Arc<Writes>) {
        let writes = Arc::new(Writes::default());
        let tracked = Self {
            io,
            writes: Arc::clone(&writes),
        };
        (tracked, writes)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.writes.note(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.writes.note(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.writes.note(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How an HTTP/2 stream's answer stands, noted by its [`Marked`] body.
/// A task-local: the body and the task that runs the stream share it
/// without a pointer to each other.
#[derive(Default)]
struct Watch {
    /// The last time hyper asked, the body handed a piece over: the next
    /// ask waits for the caller to take it.
    waiting: Cell<bool>,
    /// hyper asked the body for more since the watch last looked.
    asked: Cell<bool>,
}

tokio::task_local! {
    static WATCH: Watch;
}

/// The executor of HTTP/2 connections: runs each stream hyper hands it as
/// a task, watched for a caller that stops taking its answer.
#[derive(Clone, Debug)]
pub struct Streams {
    timeout: SendTimeout,
}

impl Streams {
    pub fn new(timeout: SendTimeout) -> Self {
        Self { timeout }
    }
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(WATCH.scope(Watch::default(), watched(stream, self.timeout.clone())));
    }
}

/// Runs `stream` (inside its [`WATCH`] scope) until it ends, or until its
/// answer has waited on the caller a whole period without being asked for more.
async fn watched<F: Future<Output = ()>>(stream: F, timeout: SendTimeout) {
    let mut stream = std::pin::pin!(stream);
    let mut clock = Clock::new(timeout);
    std::future::poll_fn(|cx| {
        if stream.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let waiting = WATCH.try_with(|w| w.waiting.get()).unwrap_or(false);
        let asked = || WATCH.try_with(|w| w.asked.replace(false)).unwrap_or(true);
        if clock.stalled(cx, waiting, asked) {
            tracing::debug!("the caller took nothing of the answer for a send timeout; the call is ended");
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await
}

/// An HTTP/2 answer body that tells its stream's [`Watch`] each time hyper
/// asks it for more. Outside a watched stream it is the body alone.
pub struct Marked<B>(B);

impl<B> Marked<B> {
    pub fn new(body: B) -> Self {
        Self(body)
    }
}

impl<B: Body + Unpin> Body for Marked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = Pin::new(&mut self.0).poll_frame(cx);
        let handed = matches!(frame, Poll::Ready(Some(Ok(_))));
        let _ = WATCH.try_with(|w| {
            w.asked.set(true);
            w.waiting.set(handed);
        });
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> SendTimeout {
        SendTimeout::fixed(Duration::from_secs(10))
    }

    /// Polls `clock` once with `waiting` and `progress` (what the call did
    /// since the last look).
    fn look(clock: &mut Clock, waiting: bool, progress: &Cell<bool>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        clock.stalled(&mut cx, waiting, || progress.replace(false))
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_with_no_progress_is_a_stall_within_two_periods() {
        let mut clock = Clock::new(timeout());
        let progress = Cell::new(true);
        assert!(!look(&mut clock, true, &progress), "not at once");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!look(&mut clock, true, &progress));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(look(&mut clock, true, &progress), "a whole period with nothing taken");
    }

    #[tokio::test(start_paused = true)]
    async fn progress_holds_the_stall_off_and_a_call_not_waiting_never_stalls() {
        let mut clock = Clock::new(timeout());
        let progress = Cell::new(false);
        assert!(!look(&mut clock, true, &progress));
        for _ in 0..5 {
            progress.set(true);
            tokio::time::advance(Duration::from_secs(11)).await;
            assert!(!look(&mut clock, true, &progress), "it took something this period");
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            !look(&mut clock, false, &progress),
            "waiting on the upstream is not a stall"
        );
        assert!(!look(&mut clock, true, &progress), "a new wait is given a whole period");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            look(&mut clock, true, &progress),
            "waiting on the caller a period, nothing taken"
        );
    }
}
