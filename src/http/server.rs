//! Serving: a bound listener, the background work beside it (outbox relay or in-process
//! worker, WebSocket fan-out), and the graceful shutdown of both.

use std::{net::SocketAddr, time::Duration};

use poem::{
    Server,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use tokio_util::sync::CancellationToken;

use poem_openapi::OpenApi;

use super::{routes_with, state::AppState};

/// A server bound to its port, not yet serving: lets callers learn the port before it starts.
pub struct BoundServer {
    acceptor: TcpAcceptor,
    state: AppState,
}

impl BoundServer {
    pub async fn bind(state: AppState, addr: SocketAddr) -> std::io::Result<Self> {
        let acceptor = TcpListener::bind(addr).into_acceptor().await?;
        Ok(Self { acceptor, state })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests and jobs finish within
    /// `grace`.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
        grace: Duration,
    ) -> std::io::Result<()> {
        self.run_with((), shutdown, grace).await
    }

    /// `run`, serving `extra` route groups after Keel's (`http::routes_with`).
    pub async fn run_with<T: OpenApi + 'static>(
        self,
        extra: T,
        shutdown: impl std::future::Future<Output = ()> + Send,
        grace: Duration,
    ) -> std::io::Result<()> {
        let stop_background = CancellationToken::new();
        let background = self.state.spawn_background(stop_background.clone());
        let hub = self.state.hub.clone();
        if let Some(hub) = &hub {
            hub.start(stop_background.clone());
        }
        // Open WebSockets would hold the graceful shutdown to its timeout: they are told to go
        // away (close code 1001) as soon as the shutdown begins.
        let shutdown = async move {
            shutdown.await;
            if let Some(hub) = hub {
                hub.close_all();
            }
        };
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes_with(self.state, extra), shutdown, Some(grace))
            .await;
        stop_background.cancel();
        if tokio::time::timeout(grace + Duration::from_secs(1), background)
            .await
            .is_err()
        {
            tracing::warn!("background jobs did not stop within the shutdown timeout");
        }
        served
    }
}
