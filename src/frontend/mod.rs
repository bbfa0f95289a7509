//! Client-facing front end: accepts PostgreSQL protocol v3 connections,
//! runs startup, and hands each client to a [`session::Session`].
//!
//! Data path: client frames → plan ([`crate::plan`]) → route
//! ([`route`]) → fast path / scatter-gather exchanges ([`exchange`],
//! [`merge`]) → backend pools ([`crate::backend`]).

pub mod client;
pub mod copy;
pub mod exchange;
pub mod extended;
pub mod merge;
pub mod route;
pub mod session;
pub mod simple;
pub mod startup;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::state::RouterState;

/// Accepts clients until the task is dropped or `shutdown` resolves.
pub async fn serve(listener: TcpListener, state: Arc<RouterState>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let st = state.clone();
                    tokio::spawn(async move {
                        tracing::debug!(%peer, "client connected");
                        startup::handle_client(sock, st).await;
                        tracing::debug!(%peer, "client disconnected");
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
