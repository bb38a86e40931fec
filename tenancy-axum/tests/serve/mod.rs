//! Serves an axum app for one test on 127.0.0.1, with the client address
//! (`ConnectInfo`), on the test's runtime: it stops when the test ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;

/// Starts `app` and resolves to its address once it listens.
pub(crate) fn serve(app: Router) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>> {
    Box::pin(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await });
        address
    })
}
