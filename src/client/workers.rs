//! Thread-per-core session workers.
//!
//! Each worker is an OS thread running its own single-threaded tokio runtime
//! (its own epoll reactor). The acceptor hands every new client socket to
//! the worker with the fewest live sessions; the session, and every backend
//! connection it checks out (from that worker's own pools, see
//! [`RouterState::pool`]), stay on that thread for the connection's life.
//! Compared with a work-stealing runtime this avoids cross-thread wake-ups
//! on the fast path (measured in `docs/benchmarks.md`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::state::RouterState;

type NewClient = (std::net::TcpStream, SocketAddr);

/// The running worker threads.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<NewClient>>,
    load: Arc<[AtomicUsize]>,
    threads: Vec<JoinHandle<()>>,
}

/// Decrements a worker's live-session count when the session ends.
struct LoadGuard {
    load: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.load[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `state.workers()` threads named `pgr-worker-<i>`.
    ///
    /// Errors: the OS refused to create a thread or a runtime.
    pub fn start(state: &Arc<RouterState>) -> std::io::Result<Workers> {
        let n = state.workers();
        let load: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for worker in 0..n {
            let (tx, rx) = mpsc::unbounded_channel::<NewClient>();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let st = state.clone();
            let ld = load.clone();
            let t = std::thread::Builder::new()
                .name(format!("pgr-worker-{worker}"))
                .spawn(move || rt.block_on(run_worker(worker, rx, st, ld)))?;
            senders.push(tx);
            threads.push(t);
        }
        Ok(Workers {
            senders,
            load,
            threads,
        })
    }

    /// Hands a freshly accepted client to the least-loaded worker.
    pub fn dispatch(&self, sock: tokio::net::TcpStream, peer: SocketAddr) {
        let sock = match sock.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "cannot hand the client socket to a worker: {e}");
                return;
            }
        };
        let worker = (0..self.senders.len())
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[worker].fetch_add(1, Ordering::Relaxed);
        if self.senders[worker].send((sock, peer)).is_err() {
            self.load[worker].fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, worker, "worker has stopped; client dropped");
        }
    }

    /// Stops every worker: their sessions are closed (client and backend
    /// sockets dropped) and the threads joined. Blocks; call from a
    /// blocking context.
    pub fn shutdown(mut self) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

async fn run_worker(
    worker: usize,
    mut rx: mpsc::UnboundedReceiver<NewClient>,
    state: Arc<RouterState>,
    load: Arc<[AtomicUsize]>,
) {
    while let Some((sock, peer)) = rx.recv().await {
        let guard = LoadGuard {
            load: load.clone(),
            worker,
        };
        let sock = match tokio::net::TcpStream::from_std(sock) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "cannot register the client socket: {e}");
                continue;
            }
        };
        let st = state.clone();
        tokio::spawn(async move {
            let _guard = guard;
            tracing::debug!(%peer, worker, "client connected");
            super::startup::handle_client(sock, st, worker).await;
            tracing::debug!(%peer, worker, "client disconnected");
        });
    }
}
