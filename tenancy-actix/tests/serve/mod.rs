//! Serves an actix-web app for one test on 127.0.0.1, on a thread of its
//! own (actix runs its own single-threaded runtime), and stops it when the
//! test ends, so its Postgres pools close instead of piling up until the
//! test binary exits.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use actix_web::{App, HttpServer, web};

/// Starts `configure`'s routes (the SDK's 404 for anything else) and
/// resolves to the address once the server listens. The server stops when
/// the runtime of the test that awaited this future shuts down.
pub(crate) fn serve<F>(configure: F) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let (listening, address) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .configure(configure.clone())
                    .default_service(web::to(tenancy_actix::not_found))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind");
            let bound = server.addrs()[0];
            let running = server.run();
            let handle = running.handle();
            actix_web::rt::spawn(async move {
                // Resolves when the test's runtime drops the sender.
                let _ = stopped.await;
                handle.stop(false).await;
            });
            listening.send(bound).expect("send the address");
            running.await.expect("serve");
        });
    });
    Box::pin(async move {
        let bound = address.await.expect("the server thread started");
        // Held by a task of the test's runtime, which drops it on shutdown.
        tokio::spawn(async move {
            let _stop = stop;
            std::future::pending::<()>().await;
        });
        bound
    })
}
