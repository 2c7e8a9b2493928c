//! Host-name look-ups on a small pool of threads that grows only past look-ups that hang.
//!
//! The system resolver blocks, and a look-up cannot be cancelled: a name whose DNS server does not answer
//! holds its thread for the resolver's whole timeout (`options timeout:5 attempts:2` is 20 s). Three rules keep
//! such names from starving the others without letting a long host list create hundreds of threads:
//! - each name has at most one look-up queued or running, and every poll that needs it waits for that one;
//! - [`MIN_THREADS`] threads serve the queue; a poll adds threads so that every name waiting has one
//!   besides those held by look-ups running longer than [`STUCK`], up to [`MAX_THREADS`]; a thread beyond
//!   the minimum ends once the queue is empty;
//! - a look-up whose polls have all given up by the time a thread takes it is skipped.
//!
//! A name that does not resolve fails its poll like a refused connection. IP addresses are never looked up.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

/// Threads that serve the queue however quiet it is (started with the first look-up).
pub const MIN_THREADS: usize = 4;

/// The most threads there are at once, whatever the names do.
pub const MAX_THREADS: usize = 64;

/// A look-up running this long is taken to hang: it no longer counts as a thread that will soon be free.
pub const STUCK: Duration = Duration::from_millis(500);

/// Names that may wait for a thread at once; beyond it a poll fails at once rather than queue without bound.
const QUEUE: usize = 4096;

/// What one name is looked up as: the name and the port its addresses get.
type Key = (String, u16);

/// One name queued or being looked up, and every poll waiting for its answer.
struct Lookup {
    /// When a thread took it; `None` while it is queued.
    started: Option<Instant>,
    waiters: Vec<oneshot::Sender<io::Result<Vec<SocketAddr>>>>,
}

/// The pool's state, under one lock.
#[derive(Default)]
struct Pool {
    lookups: HashMap<Key, Lookup>,
    queue: VecDeque<Key>,
    threads: usize,
}

/// The pool and the signal that wakes its idle threads.
fn pool() -> &'static (Mutex<Pool>, Condvar) {
    static POOL: OnceLock<(Mutex<Pool>, Condvar)> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

fn lock() -> MutexGuard<'static, Pool> {
    // A poisoned lock means a thread panicked while holding it; every change to the state is complete
    // before anything that could panic, so it is still sound.
    pool().0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One thread of the pool: looks names up until the queue is empty and the pool is above its minimum.
fn serve() {
    let mut state = lock();
    loop {
        let Some(key) = state.queue.pop_front() else {
            if state.threads > MIN_THREADS {
                state.threads -= 1;
                return;
            }
            state = pool().1.wait(state).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let Some(lookup) = state.lookups.get_mut(&key) else { continue };
        lookup.waiters.retain(|w| !w.is_canceled());
        if lookup.waiters.is_empty() {
            state.lookups.remove(&key);
            continue;
        }
        lookup.started = Some(Instant::now());
        drop(state);
        let found: io::Result<Vec<SocketAddr>> = (key.0.as_str(), key.1).to_socket_addrs().map(Iterator::collect);
        state = lock();
        for waiter in state.lookups.remove(&key).map(|l| l.waiters).unwrap_or_default() {
            // io::Error is not Clone: each waiter gets the same kind and text.
            let answer = match &found {
                Ok(addrs) => Ok(addrs.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = waiter.send(answer);
        }
    }
}

impl Pool {
    /// Queues `key` for a look-up, or joins the look-up of it already queued or running.
    fn enqueue(&mut self, key: Key, waiter: oneshot::Sender<io::Result<Vec<SocketAddr>>>) -> io::Result<()> {
        if let Some(lookup) = self.lookups.get_mut(&key) {
            // Polls that gave up no longer wait; only polls of hosts with this name join, so the list is short.
            lookup.waiters.retain(|w| !w.is_canceled());
            lookup.waiters.push(waiter);
            return Ok(());
        }
        if self.queue.len() >= QUEUE {
            let host = &key.0;
            return Err(io::Error::other(format!(
                "cannot look up {host}: {QUEUE} host-name look-ups are already waiting"
            )));
        }
        self.lookups.insert(key.clone(), Lookup { started: None, waiters: vec![waiter] });
        self.queue.push_back(key);
        Ok(())
    }

    /// How many threads the pool should have at `now`: at least the minimum, and besides the threads held by
    /// look-ups running for [`STUCK`] or longer, one for each name a poll still waits for, up to the
    /// minimum (threads of younger look-ups are counted on to be free soon, so a burst of names that resolve
    /// quickly needs no more); never more than [`MAX_THREADS`].
    fn threads_wanted(&self, now: Instant) -> usize {
        let stuck = self
            .lookups
            .values()
            .filter(|l| l.started.is_some_and(|started| now.saturating_duration_since(started) >= STUCK))
            .count();
        let awaited = |key: &Key| self.lookups.get(key).is_some_and(|l| l.waiters.iter().any(|w| !w.is_canceled()));
        let waiting = self.queue.iter().filter(|key| awaited(key)).count();
        self.threads.max(MIN_THREADS).max(stuck + waiting.min(MIN_THREADS)).min(MAX_THREADS)
    }
}

/// Starts the threads the pool wants now. Fails only when it has no thread at all and cannot start one;
/// otherwise the threads there are will get to every look-up.
fn grow(state: &mut Pool) -> io::Result<()> {
    let wanted = state.threads_wanted(Instant::now());
    while state.threads < wanted {
        match std::thread::Builder::new().name("pg-status-dns".to_owned()).spawn(serve) {
            Ok(_) => state.threads += 1,
            Err(_) if state.threads > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Queues `host:port` for a look-up (or joins the one queued or running) and starts the threads the pool
/// wants now.
fn submit(host: &str, port: u16, waiter: oneshot::Sender<io::Result<Vec<SocketAddr>>>) -> io::Result<()> {
    let key = (host.to_owned(), port);
    let mut state = lock();
    state.enqueue(key.clone(), waiter)?;
    if let Err(e) = grow(&mut state) {
        state.lookups.remove(&key);
        state.queue.retain(|k| *k != key);
        return Err(io::Error::other(format!("cannot look up {host}: no resolver thread: {e}")));
    }
    pool().1.notify_one();
    Ok(())
}

/// The addresses of `host` (a DNS name or an IP address without brackets) with `port`.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (waiter, mut answered) = oneshot::channel();
    submit(host, port, waiter)?;
    // The look-ups ahead of this one may turn out to hang only after it was queued: look at the pool again
    // every STUCK while waiting, so it grows then rather than at some later poll's look-up.
    let answer = loop {
        let reply = async { Some((&mut answered).await) };
        let recheck = async {
            async_io::Timer::after(STUCK).await;
            None
        };
        match futures_lite::future::or(reply, recheck).await {
            Some(answer) => break answer,
            None => {
                let _ = grow(&mut lock());
                pool().1.notify_one();
            }
        }
    };
    let found = answer.map_err(|_| io::Error::other(format!("the look-up of {host} was abandoned")))??;
    if found.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;

    use super::*;

    #[test]
    fn addresses_are_not_looked_up_and_names_are() {
        let ip = block_on(resolve("127.0.0.3", 5432)).expect("an address");
        assert_eq!(ip, [SocketAddr::from(([127, 0, 0, 3], 5432))]);
        let named = block_on(resolve("localhost", 6432)).expect("localhost resolves");
        assert!(named.iter().all(|a| a.port() == 6432 && a.ip().is_loopback()), "{named:?}");
        assert!(!lock().lookups.contains_key(&("localhost".to_owned(), 6432)), "a finished look-up leaves nothing");
    }

    /// A waiter whose poll still waits (`waiting`) or gave up; the bookkeeping below never sends to it.
    fn waiter(waiting: bool) -> (oneshot::Sender<io::Result<Vec<SocketAddr>>>, Option<impl Sized>) {
        let (tx, rx) = oneshot::channel();
        (tx, waiting.then_some(rx))
    }

    #[test]
    fn a_name_queued_or_running_is_looked_up_once() {
        let mut pool = Pool::default();
        let key = ("db1".to_owned(), 5432);
        // Each poll keeps its end of the channel: it still waits.
        let poll = |pool: &mut Pool, key: &Key| {
            let (tx, rx) = waiter(true);
            pool.enqueue(key.clone(), tx).map(|()| rx)
        };
        let first = poll(&mut pool, &key).expect("queued");
        let _second = poll(&mut pool, &key).expect("joined");
        assert_eq!((pool.queue.len(), pool.lookups[&key].waiters.len()), (1, 2), "one look-up, two polls");
        pool.lookups.get_mut(&key).expect("queued").started = Some(Instant::now());
        pool.queue.clear();
        let _third = poll(&mut pool, &key).expect("joined the running look-up");
        assert!(pool.queue.is_empty(), "a running look-up is not queued again");
        assert_eq!(pool.lookups[&key].waiters.len(), 3, "every poll gets the one answer");
        let _other = poll(&mut pool, &("db1".to_owned(), 6432)).expect("another port is another look-up");
        assert_eq!(pool.queue.len(), 1);
        // A poll that gave up is dropped from the look-up when the next one joins.
        drop(first);
        let _fourth = poll(&mut pool, &key).expect("joined");
        assert_eq!(pool.lookups[&key].waiters.len(), 3);
    }

    #[test]
    fn the_pool_grows_only_past_look_ups_that_hang() {
        let now = Instant::now();
        let long_ago = now.checked_sub(STUCK).expect("the clock runs longer than STUCK");
        let mut receivers = Vec::new();
        let mut pool_with = |threads: usize, running: &[Instant], waiting: usize, abandoned: usize| {
            let mut pool = Pool { threads, ..Pool::default() };
            for (i, &started) in running.iter().enumerate() {
                pool.lookups.insert((format!("running{i}"), 1), Lookup { started: Some(started), waiters: vec![] });
            }
            for i in 0..waiting + abandoned {
                let (tx, rx) = waiter(i < waiting);
                receivers.push(rx);
                pool.enqueue((format!("queued{i}"), 1), tx).expect("queued");
            }
            pool.threads_wanted(now)
        };
        assert_eq!(pool_with(0, &[], 1, 0), MIN_THREADS, "the first look-up starts the pool");
        assert_eq!(pool_with(4, &[long_ago; 4], 3, 0), 7, "every thread hangs: one for each name waiting");
        assert_eq!(pool_with(4, &[long_ago; 4], 30, 0), 8, "at most the minimum more at a time");
        assert_eq!(pool_with(4, &[], 300, 0), 4, "a burst of names, none hanging: no more threads");
        assert_eq!(pool_with(4, &[long_ago; 4], 1, 2), 5, "names no poll waits for any more need no thread");
        assert_eq!(pool_with(4, &[long_ago, long_ago, long_ago, now], 1, 0), 4, "a young look-up ends soon");
        assert_eq!(pool_with(4, &[long_ago; 3], 1, 0), 4, "a thread is free");
        assert_eq!(pool_with(4, &[long_ago; 4], 0, 0), 4, "nothing waits");
        assert_eq!(pool_with(MAX_THREADS, &[long_ago; MAX_THREADS], 1, 0), MAX_THREADS, "never more than the most");
    }
}
