//! One client connection: hyper's HTTP/1 state machine over the socket, watched by a lazy idle timer.
//!
//! hyper's own header-read timer is armed per request; instead each connection has one timer that wakes
//! every half request timeout and looks at two flags the socket wrapper sets. A request that has been
//! started but not answered across two wake-ups (a client sending half a request, or not reading its answers)
//! closes the connection, and so does a keep-alive connection that stays silent for the idle timeout.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{future, AsyncRead, AsyncWrite};
use http_body_util::Full;
use hyper::service::service_fn;

use super::client::Client;
use super::respond::Plan;
use super::OpenGuard;
use crate::clock::{Clock, TokioClock};

/// What the socket saw since the watchdog last looked, and what the accept loop may ask of the connection.
#[derive(Default)]
pub(super) struct Activity {
    /// Bytes arrived that have not been answered yet (a request is under way).
    pending: Cell<bool>,
    /// Bytes were written (an answer went out) since the last look.
    wrote: Cell<bool>,
    /// An answer went out at least once: the first request arrived.
    answered: Cell<bool>,
    /// The last write found the client's receive window full: it is not reading its answers.
    write_blocked: Cell<bool>,
    /// Requests the server holds on purpose (`wait_ms`): not the client's stall.
    waiting: Cell<u32>,
    /// Watchdog ticks without any request, as the watchdog last counted them.
    idle_ticks: Cell<u32>,
    /// Set by the accept loop to make room at the connection cap; the connection closes at once.
    evicted: Cell<bool>,
    /// Wakes the connection's task when it is evicted.
    waker: RefCell<Option<Waker>>,
}

impl Activity {
    /// How long the connection has been idle, in watchdog ticks, when it may be closed to make room for a new
    /// one: no request under way, none held, no answer stuck on the way out. `None` when it is busy.
    pub(super) fn evictable_idle(&self) -> Option<u32> {
        let busy = self.pending.get() || self.write_blocked.get() || self.waiting.get() > 0 || self.evicted.get();
        (!busy).then(|| self.idle_ticks.get())
    }

    /// Closes the connection at its task's next turn.
    pub(super) fn evict(&self) {
        self.evicted.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Completes once the connection was evicted.
    async fn evicted(&self) {
        future::poll_fn(|cx| {
            if self.evicted.get() {
                return Poll::Ready(());
            }
            let mut waker = self.waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Marks a request the server holds, for as long as it lives.
struct Holding(Rc<Activity>);

impl Holding {
    fn new(activity: &Rc<Activity>) -> Holding {
        activity.waiting.set(activity.waiting.get() + 1);
        Holding(activity.clone())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.waiting.set(self.0.waiting.get().saturating_sub(1));
    }
}

/// The client socket, noting reads and writes for the watchdog.
struct Watched {
    /// Shared with the connection task, which closes the socket itself after hyper is done with it.
    socket: Rc<Client>,
    activity: Rc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let poll = self.socket.poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            if n > 0 {
                self.activity.pending.set(true);
            }
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = self.socket.poll_write(cx, buf);
        match poll {
            Poll::Ready(Ok(n)) if n > 0 => {
                // hyper writes an answer only after it has read the whole request.
                self.activity.pending.set(false);
                self.activity.wrote.set(true);
                self.activity.answered.set(true);
                self.activity.write_blocked.set(false);
            }
            Poll::Pending => self.activity.write_blocked.set(true),
            _ => {}
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket: there is nothing to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task closes the socket right after hyper is done with it, and closing sends the
        // same FIN a shutdown would: a separate `shutdown` would be one more system call per connection.
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    /// One read buffer for every connection of the HTTP thread. Reading into hyper's own buffer through a
    /// safe API means zeroing its unfilled 8 KiB before every read (most of which end in `EAGAIN`): that
    /// memset was two thirds of the instructions per request. Here the kernel writes into this buffer, zeroed
    /// once, and only the bytes read are copied over.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 16 * 1024]);
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let room = buf.remaining().min(scratch.len());
            match AsyncRead::poll_read(Pin::new(&mut *this), cx, &mut scratch[..room]) {
                Poll::Ready(Ok(n)) => {
                    buf.put_slice(&scratch[..n]);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(self, cx)
    }
}

/// Completes when the connection should be dropped: a request stalled, the client stopped reading its
/// answers, the first request did not come within the request timeout, or the connection idled too long.
async fn watchdog<C: Clock>(activity: &Activity, clock: &C, request_timeout: Duration, idle_timeout: Duration) {
    let tick = (request_timeout / 2).max(Duration::from_millis(1));
    let mut stalled_ticks = 0u32;
    let mut idle = Duration::ZERO;
    loop {
        clock.sleep(tick).await;
        let stuck = activity.pending.get() || activity.write_blocked.get();
        if activity.waiting.get() > 0 || (activity.wrote.replace(false) && !activity.write_blocked.get()) {
            stalled_ticks = 0;
            idle = Duration::ZERO;
        } else if stuck {
            // Seen stuck at two wake-ups in a row with no answer going out: stalled for at least one tick.
            idle = Duration::ZERO;
            stalled_ticks += 1;
            if stalled_ticks >= 2 {
                return;
            }
        } else {
            stalled_ticks = 0;
            idle += tick;
            // A connection that never sent a request is held to the request timeout, not the idle timeout: a
            // flood of silent connections must not fill the connection cap for a minute.
            let limit = if activity.answered.get() { idle_timeout } else { request_timeout };
            if idle >= limit {
                return;
            }
        }
        activity.idle_ticks.set(u32::try_from(idle.as_nanos() / tick.as_nanos().max(1)).unwrap_or(u32::MAX));
    }
}

/// The answer to one request: ready at once (nearly always) or after a wait, without boxing the common case.
enum Answer {
    Now(Option<hyper::Response<Full<Bytes>>>),
    Later(Pin<Box<dyn Future<Output = hyper::Response<Full<Bytes>>>>>),
}

impl Future for Answer {
    type Output = Result<hyper::Response<Full<Bytes>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // hyper polls a service future only until it is ready, once.
            Answer::Now(response) => Poll::Ready(Ok(response.take().unwrap_or_default())),
            Answer::Later(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// How long, and how many bytes, a connection closed after an error answer is read and discarded.
///
/// Closing a socket with unread input makes the kernel reset the connection, and the client then loses the
/// answer it was sent (a 431 for a huge header, a 400 for garbage). Reading the rest for a moment first lets
/// the answer arrive.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Shuts the sending side and discards what the client still sends, within [`LINGER_TIME`] and
/// [`LINGER_BYTES`].
async fn linger(socket: &Client) {
    socket.shutdown_write();
    let drain = async {
        // On the heap: an array here would live in every connection's future, idle or not (4 KiB each).
        let mut buffer = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match future::poll_fn(|cx| socket.poll_read(cx, &mut buffer)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    future::or(drain, TokioClock.sleep(LINGER_TIME)).await;
}

/// How a connection's first phase ended.
enum Step {
    /// hyper finished; with an error it may have answered a request it could not read to the end.
    Finished(bool),
    Stalled,
    ShuttingDown,
}

/// Serves one client until it leaves, stalls, idles out, or the server shuts down.
pub(super) async fn serve(socket: Client, guard: OpenGuard) {
    let shared = guard.shared().clone();
    let limits = shared.limits;
    let stop = shared.shutdown.listen();
    if shared.closing.get() {
        return;
    }
    let socket = Rc::new(socket);
    let activity = guard.activity().clone();
    let io = Watched { socket: socket.clone(), activity: activity.clone() };
    let handler = shared.clone();
    let held = activity.clone();
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        if let Some(refused) = handler.answers.bad_host(&request) {
            return Answer::Now(Some(refused));
        }
        match handler.answers.plan(&request) {
            Plan::Now(response) => Answer::Now(Some(response)),
            Plan::Wait(selection) => {
                let holding = Holding::new(&held);
                let shared = handler.clone();
                Answer::Later(Box::pin(async move {
                    let response = shared.answers.wait(selection).await;
                    drop(holding);
                    response
                }))
            }
        }
    });
    let mut connection = pin!(shared.http.serve_connection(io, service));
    // One watchdog for the whole life of the connection, so a request stalled before shutdown is not given
    // a fresh allowance by it.
    let mut watchdog = pin!(watchdog(&activity, &TokioClock, limits.request_timeout, limits.idle_timeout));
    let step = future::or(
        async {
            // An error here is the client's (bad request, reset): hyper has answered what can be answered.
            Step::Finished(connection.as_mut().await.is_err())
        },
        future::or(
            async {
                watchdog.as_mut().await;
                Step::Stalled
            },
            future::or(
                async {
                    stop.await;
                    Step::ShuttingDown
                },
                async {
                    activity.evicted().await;
                    Step::Stalled
                },
            ),
        ),
    )
    .await;
    match step {
        Step::Finished(true) => linger(&socket).await,
        Step::Finished(false) | Step::Stalled => {}
        Step::ShuttingDown => {
            // Finish the request in progress, if any, then close; idle connections close at once.
            connection.as_mut().graceful_shutdown();
            future::or(
                async {
                    let _ = connection.as_mut().await;
                },
                watchdog,
            )
            .await;
        }
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;

    use futures_lite::future;

    use super::*;
    use crate::clock::LocalBoxFuture;

    const REQUEST: Duration = Duration::from_secs(6);
    const IDLE: Duration = Duration::from_secs(60);

    /// Simulated time: every sleep ends at once by moving the clock to its deadline, so the watchdog runs
    /// through minutes in microseconds. Sleeps past `horizon` never end, and `on_tick` sees every wake-up.
    #[derive(Clone)]
    struct SimClock {
        start: Instant,
        now: Rc<Cell<Instant>>,
        horizon: Duration,
        on_tick: Rc<dyn Fn(Duration)>,
    }

    impl SimClock {
        fn new(horizon: Duration, on_tick: impl Fn(Duration) + 'static) -> SimClock {
            let start = Instant::now();
            SimClock { start, now: Rc::new(Cell::new(start)), horizon, on_tick: Rc::new(on_tick) }
        }

        fn elapsed(&self) -> Duration {
            self.now.get() - self.start
        }
    }

    impl Clock for SimClock {
        fn now(&self) -> Instant {
            self.now.get()
        }

        fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()> {
            if deadline - self.start > self.horizon {
                return Box::pin(future::pending());
            }
            self.now.set(self.now.get().max(deadline));
            (self.on_tick)(self.elapsed());
            Box::pin(future::ready(()))
        }
    }

    /// How long the watchdog let the connection live, or `None` when it was still open at the horizon.
    fn lifetime(activity: &Activity, clock: &SimClock) -> Option<Duration> {
        future::block_on(future::poll_once(watchdog(activity, clock, REQUEST, IDLE))).map(|()| clock.elapsed())
    }

    #[test]
    fn a_connection_that_never_sends_a_request_is_held_to_the_request_timeout() {
        let clock = SimClock::new(Duration::from_secs(600), |_| {});
        assert_eq!(lifetime(&Activity::default(), &clock), Some(REQUEST));
    }

    #[test]
    fn an_idle_keep_alive_connection_lives_for_the_idle_timeout() {
        let activity = Activity::default();
        activity.answered.set(true);
        let clock = SimClock::new(Duration::from_secs(600), |_| {});
        assert_eq!(lifetime(&activity, &clock), Some(IDLE));
    }

    #[test]
    fn a_stalled_request_is_dropped_within_the_request_timeout() {
        let activity = Activity::default();
        activity.pending.set(true);
        let clock = SimClock::new(Duration::from_secs(600), |_| {});
        let lived = lifetime(&activity, &clock).expect("dropped");
        assert!(lived >= REQUEST / 2 && lived <= REQUEST, "dropped after {lived:?}");
    }

    #[test]
    fn answers_going_out_and_held_requests_keep_a_connection_open() {
        // An answer goes out between every two looks of the watchdog, for ten minutes.
        let activity = Rc::new(Activity::default());
        activity.answered.set(true);
        let writer = activity.clone();
        let clock = SimClock::new(Duration::from_secs(600), move |_| {
            writer.pending.set(true);
            writer.wrote.set(true);
        });
        assert_eq!(lifetime(&activity, &clock), None);

        // A request the server holds on purpose is not the client's stall, however long it lasts.
        let held = Activity::default();
        held.pending.set(true);
        held.waiting.set(1);
        let clock = SimClock::new(Duration::from_secs(600), |_| {});
        assert_eq!(lifetime(&held, &clock), None);
    }

    #[test]
    fn a_client_that_stops_reading_its_answers_is_dropped() {
        let activity = Activity::default();
        activity.answered.set(true);
        activity.write_blocked.set(true);
        let clock = SimClock::new(Duration::from_secs(600), |_| {});
        let lived = lifetime(&activity, &clock).expect("dropped");
        assert!(lived <= REQUEST, "dropped after {lived:?}");
    }
}
