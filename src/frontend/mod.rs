//! Client-facing front end: accepts PostgreSQL protocol v3 connections,
//! runs startup, and hands each client to a [`session::Session`].
//!
//! Data path: client frames → plan ([`crate::plan`]) → route
//! ([`route`]) → fast path / scatter-gather exchanges ([`exchange`],
//! [`merge`]) → backend pools ([`crate::backend`]).

pub mod admin;
pub mod auth;
pub mod cancel;
pub mod client;
pub mod commit;
pub mod copy;
pub mod exchange;
pub mod explain;
pub mod extended;
pub mod gather;
pub mod gather_merge;
pub mod inject;
pub mod lookup;
pub mod merge;
pub mod owned;
pub mod owned_ext;
pub mod route;
pub mod session;
pub mod settings;
pub mod simple;
pub mod startup;
pub mod tls;
pub mod workers;

use std::sync::Arc;

use tokio::net::TcpListener;

use workers::Workers;

/// Accepts clients until the task is dropped or `shutdown` resolves, handing
/// each to a session worker.
pub async fn serve(
    listener: TcpListener,
    workers: Arc<Workers>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    workers.dispatch(sock, peer);
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
