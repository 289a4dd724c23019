//! Parked keep-alive connections: a plain-HTTP connection idle for a while
//! is kept as its socket and a few plain fields, without its task, its
//! Pingora stream or its timers, until its next request arrives or its
//! keep-alive time is up.
//!
//! An edge holds tens of thousands of idle keep-alive connections. As a
//! tokio task each costs about 3 KiB (the task, the loop's future, Pingora's
//! stream and socket digest, tokio's IO registration); nginx keeps one in
//! about 0.5 KiB. Parked, a connection is a descriptor in one epoll set per
//! worker thread (mio) and an entry in a slab, in place (no allocation of
//! its own), with its deadline in a heap. A readable socket (a request, or
//! the client closing) is handed back to a new task on the same thread; a
//! deadline passed or a shutdown closes it.
//!
//! Only connections idle for `PARK_AFTER` (1 s, seen on the lot's 1 s
//! ticks) are parked: a busy keep-alive connection never pays the handover
//! (two `epoll_ctl` each way).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use pingora_core::server::ShutdownWatch;
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use crate::locked;
use crate::metrics::METRICS;

/// How long a keep-alive connection waits as a task before it is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// How often the lot asks its waiting connections how long they have been
/// idle. A connection does not arm a timer of its own for that: tokio
/// wakes its driver (an eventfd write) for a timer due sooner than its next
/// wake-up, which a short timer armed per request often is (0.24 `write`
/// and 0.2 `epoll_wait` more per proxied request, `benches/syscalls.sh
/// proxy`). One ticking interval per thread costs one wake-up a second.
const TICK: Duration = Duration::from_secs(1);

/// Events taken from the epoll set per wake-up.
const EVENTS: usize = 256;

/// What a parked connection keeps besides its socket, and how it is taken
/// back: called with its socket, on the parking thread, when the socket
/// turns readable.
pub trait Resume: Send + 'static {
    fn resume(self, socket: TcpStream, shutdown: &ShutdownWatch);
}

struct Parked<T> {
    socket: TcpStream,
    deadline: Instant,
    kept: T,
}

struct Parking<T> {
    connections: Slab<Parked<T>>,
    /// Deadlines, soonest first, each with its slab key. An entry whose
    /// connection left already (or whose key now holds another) is skipped
    /// when reached.
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
}

/// One worker thread's parked connections.
pub struct Lot<T> {
    registry: Registry,
    parking: Mutex<Parking<T>>,
    /// A connection was parked with the soonest deadline.
    sooner: Notify,
    /// Every `TICK`: waiting connections check how long they have idled.
    tick: Notify,
}

impl<T: Resume> Lot<T> {
    /// A lot on this thread's runtime, with its task. None (logged): no
    /// descriptor left for its epoll set.
    pub fn start(shutdown: ShutdownWatch) -> Option<Arc<Lot<T>>> {
        let made = Poll::new().and_then(|poll| {
            let registry = poll.registry().try_clone()?;
            // SAFETY: the epoll descriptor is owned by `poll`, which the
            // AsyncFd owns: it stays open while registered.
            let poll =
                unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }?;
            Ok((poll, registry))
        });
        let (poll, registry) = match made {
            Ok(made) => made,
            Err(e) => {
                warn!("no lot for idle connections on this thread: {e}");
                return None;
            }
        };
        let lot = Arc::new(Lot {
            registry,
            parking: Mutex::new(Parking {
                connections: Slab::new(),
                deadlines: BinaryHeap::new(),
            }),
            sooner: Notify::new(),
            tick: Notify::new(),
        });
        tokio::spawn(lot.clone().run(poll, shutdown));
        Some(lot)
    }

    /// Returns once `since` is at least `PARK_AFTER` ago, looked at on the
    /// lot's ticks (so within a tick after).
    pub async fn idle_since(&self, since: Instant) {
        loop {
            let tick = self.tick.notified();
            if since.elapsed() >= PARK_AFTER {
                return;
            }
            tick.await;
        }
    }

    /// Parks `socket` until it turns readable (then `kept` takes it back)
    /// or `deadline` passes (then it is closed with what `kept` holds).
    pub fn park(&self, socket: TcpStream, deadline: Instant, kept: T) -> std::io::Result<()> {
        let mut parking = locked(&self.parking);
        let fd = socket.as_raw_fd();
        let key = parking.connections.insert(Parked {
            socket,
            deadline,
            kept,
        });
        let registered = self
            .registry
            .register(&mut SourceFd(&fd), Token(key), Interest::READABLE);
        if let Err(e) = registered {
            parking.connections.remove(key);
            return Err(e);
        }
        let soonest = parking
            .deadlines
            .peek()
            .is_none_or(|Reverse((next, _))| deadline < *next);
        parking.deadlines.push(Reverse((deadline, key)));
        METRICS.connections_parked.inc();
        drop(parking);
        if soonest {
            self.sooner.notify_one();
        }
        Ok(())
    }

    /// Takes a connection out of the lot and the epoll set.
    fn take(&self, parking: &mut Parking<T>, key: usize) -> Option<Parked<T>> {
        let parked = parking.connections.try_remove(key)?;
        METRICS.connections_parked.dec();
        // Deregistered before the socket moves on: another runtime's driver
        // registers it next.
        let fd = parked.socket.as_raw_fd();
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        Some(parked)
    }

    /// Closes the connections whose deadline has passed.
    fn expire(&self, now: Instant) {
        let mut parking = locked(&self.parking);
        while let Some(&Reverse((deadline, key))) = parking.deadlines.peek() {
            if deadline > now {
                break;
            }
            parking.deadlines.pop();
            let current = parking.connections.get(key).map(|p| p.deadline);
            if current == Some(deadline) {
                drop(self.take(&mut parking, key));
            }
        }
        if parking.connections.is_empty() {
            parking.deadlines.clear();
        }
        let room = parking.connections.len() * 2;
        parking.deadlines.shrink_to(room);
    }

    fn close_all(&self) {
        let mut parking = locked(&self.parking);
        let keys: Vec<usize> = parking.connections.iter().map(|(k, _)| k).collect();
        for key in keys {
            drop(self.take(&mut parking, key));
        }
        parking.deadlines.clear();
    }

    async fn run(self: Arc<Self>, mut poll: AsyncFd<Poll>, mut shutdown: ShutdownWatch) {
        let mut events = Events::with_capacity(EVENTS);
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = locked(&self.parking)
                .deadlines
                .peek()
                .map(|Reverse((d, _))| *d);
            let next = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ready = poll.readable_mut() => {
                    let Ok(mut ready) = ready else { return };
                    if let Err(e) = ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                        warn!("parked connections: epoll failed: {e}");
                        continue;
                    }
                    // A full batch may leave more ready: ask again before waiting.
                    if events.iter().count() < EVENTS {
                        ready.clear_ready();
                    }
                    let woken: Vec<Parked<T>> = {
                        let mut parking = locked(&self.parking);
                        events.iter().filter_map(|e| self.take(&mut parking, e.token().0)).collect()
                    };
                    for parked in woken {
                        parked.kept.resume(parked.socket, &shutdown);
                    }
                }
                _ = tokio::time::sleep_until(next) => self.expire(Instant::now()),
                _ = self.sooner.notified() => {}
                _ = ticks.tick() => self.tick.notify_waiters(),
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.close_all();
                    }
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::sync::mpsc;

    /// Sends the socket it is taken back with, and what it carried.
    struct Back(mpsc::UnboundedSender<(TcpStream, u32)>, u32);

    impl Resume for Back {
        fn resume(self, socket: TcpStream, _: &ShutdownWatch) {
            let _ = self.0.send((socket, self.1));
        }
    }

    /// A connected pair: the client's end, and the server's (non-blocking,
    /// as a parked socket is).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    // Multi-threaded: the blocking reads of the client ends leave the
    // lot's task a thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parked_socket_comes_back_when_readable_and_closes_at_its_deadline() {
        let (_watch, shutdown) = tokio::sync::watch::channel(false);
        let lot = Lot::<Back>::start(shutdown).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mut woken, server) = pair();
        let (mut idle, quiet) = pair();
        let far = Instant::now() + Duration::from_secs(60);
        lot.park(server, far, Back(tx.clone(), 7)).unwrap();
        lot.park(
            quiet,
            Instant::now() + Duration::from_millis(200),
            Back(tx, 8),
        )
        .unwrap();

        // The next request's bytes: the socket comes back, unread.
        woken.write_all(b"GET /").unwrap();
        let (mut back, carried) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(carried, 7);
        back.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 5];
        back.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"GET /");

        // The quiet one is closed at its deadline, never taken back.
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let n = idle.read(&mut [0u8; 1]).unwrap();
        assert_eq!(n, 0, "the client sees the close");
        assert!(rx.try_recv().is_err());
        assert!(locked(&lot.parking).connections.is_empty());
    }

    // Multi-threaded: the blocking reads of the client ends leave the
    // lot's task a thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_closes_every_parked_socket() {
        let (watch, shutdown) = tokio::sync::watch::channel(false);
        let lot = Lot::<Back>::start(shutdown).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let far = Instant::now() + Duration::from_secs(60);
        let mut clients = Vec::new();
        for i in 0..3 {
            let (client, server) = pair();
            lot.park(server, far, Back(tx.clone(), i)).unwrap();
            clients.push(client);
        }
        watch.send(true).unwrap();
        for mut client in clients {
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
        }
    }
}
