//! The client connection: the accept loop ([`serve`]), thread-per-core
//! session workers ([`workers`]), startup with SSLRequest/TLS, cancel
//! requests, the client limit and ParameterStatus ([`startup`]), and the
//! authentication exchange on the wire ([`auth`]). An authenticated client
//! is handed to a [`crate::session::Session`] (or to the admin console).

pub mod auth;
pub mod startup;
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
