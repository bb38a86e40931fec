//! [`Listener`]: one `LISTEN` connection shared by every module that hears
//! of changes other processes commit (tenant and membership changes,
//! policy epochs, session revocations, and whatever later modules add).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

/// What a module does with the notices of its channels.
///
/// Called on the listener's task: keep both methods short and never block
/// (forget cache entries, bump an epoch, wake a task).
pub trait Subscriber: Send + Sync + 'static {
    /// A notice arrived on one of the channels this subscriber registered.
    fn notify(&self, channel: &str, payload: &str);

    /// The connection was lost and is listening again: notices sent in
    /// between are gone, so forget whatever they could have changed.
    /// Called only once the new connection listens, so anything read after
    /// this call is covered by later notices.
    fn resync(&self);
}

/// A [`Subscriber`] made of two closures.
pub struct FnSubscriber<N, R> {
    on_notify: N,
    on_resync: R,
}

impl<N, R> FnSubscriber<N, R>
where
    N: Fn(&str, &str) + Send + Sync + 'static,
    R: Fn() + Send + Sync + 'static,
{
    /// `on_notify(channel, payload)` for each notice, `on_resync()` after a
    /// reconnection.
    pub fn new(on_notify: N, on_resync: R) -> Arc<Self> {
        Arc::new(Self {
            on_notify,
            on_resync,
        })
    }
}

impl<N, R> Subscriber for FnSubscriber<N, R>
where
    N: Fn(&str, &str) + Send + Sync + 'static,
    R: Fn() + Send + Sync + 'static,
{
    fn notify(&self, channel: &str, payload: &str) {
        (self.on_notify)(channel, payload);
    }

    fn resync(&self) {
        (self.on_resync)();
    }
}

/// One `LISTEN` connection for many channels and subscribers: each module
/// registers its channels with [`Listener::subscribe`], then
/// [`Listener::start`] connects once and relays every notice to the
/// subscribers of its channel.
///
/// A lost connection is re-established (with growing pauses, up to 5 s);
/// once the new connection listens on every channel, each subscriber's
/// [`Subscriber::resync`] runs: notices sent meanwhile are gone.
///
/// It holds one connection of the pool for as long as it runs.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
/// use tenancy_core::postgres::{FnSubscriber, Listener};
///
/// let mut listener = Listener::new(pool);
/// listener.subscribe(
///     ["app_projects_changed"],
///     FnSubscriber::new(|_channel, payload| println!("changed: {payload}"), || println!("resync")),
/// );
/// let running = listener.start().await?; // stops when dropped
/// # drop(running); Ok(()) }
/// ```
pub struct Listener {
    pool: PgPool,
    routes: BTreeMap<String, Vec<Arc<dyn Subscriber>>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("channels", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener that will take its connection from `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            routes: BTreeMap::new(),
        }
    }

    /// Relays the notices of `channels` to `subscriber` (which may register
    /// for several channels, and share a channel with others).
    pub fn subscribe<I, S>(&mut self, channels: I, subscriber: Arc<dyn Subscriber>) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for channel in channels {
            self.routes
                .entry(channel.into())
                .or_default()
                .push(subscriber.clone());
        }
        self
    }

    /// The channels registered so far.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// Connects, listens on every registered channel, and relays notices
    /// from a background task until the returned handle is dropped or
    /// stopped.
    ///
    /// Errors: the first connection or `LISTEN` failed.
    pub async fn start(self) -> Result<RunningListener, sqlx::Error> {
        let connection = subscribe(&self.pool, &self.routes).await?;
        let task = tokio::spawn(relay(self.pool, self.routes, connection));
        Ok(RunningListener { task })
    }
}

/// A started [`Listener`]; stops it when dropped.
#[derive(Debug)]
pub struct RunningListener {
    task: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    /// Stops relaying notices and frees the connection.
    pub fn stop(self) {}

    /// Whether the relay still runs (it ends only when the pool closes).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for RunningListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Routes = BTreeMap<String, Vec<Arc<dyn Subscriber>>>;

async fn subscribe(pool: &PgPool, routes: &Routes) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is re-established, and listens again, before
    // `try_recv` reports the loss.
    listener.eager_reconnect(true);
    listener
        .listen_all(routes.keys().map(String::as_str))
        .await?;
    Ok(listener)
}

async fn relay(pool: PgPool, routes: Routes, mut listener: PgListener) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notice)) => match routes.get(notice.channel()) {
                Some(subscribers) => {
                    for subscriber in subscribers {
                        subscriber.notify(notice.channel(), notice.payload());
                    }
                }
                None => tracing::debug!(channel = notice.channel(), "notice on no channel of ours"),
            },
            // Lost, and already listening again on a new connection.
            Ok(None) => {
                tracing::warn!("change listener reconnected; notices may have been missed");
                resync(&routes);
            }
            Err(sqlx::Error::PoolClosed) => return,
            // Reconnecting failed: subscribe afresh, and only then resync.
            Err(error) => {
                tracing::warn!(%error, "change listener lost its connection; reconnecting");
                let mut pause = Duration::from_millis(100);
                listener = loop {
                    tokio::time::sleep(pause).await;
                    match subscribe(&pool, &routes).await {
                        Ok(listener) => break listener,
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(error) => {
                            tracing::warn!(%error, "change listener cannot reconnect yet");
                            pause = (pause * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                tracing::info!("change listener listening again");
                resync(&routes);
            }
        }
    }
}

/// Tells each subscriber once, however many channels it registered.
fn resync(routes: &Routes) {
    let mut told: Vec<&Arc<dyn Subscriber>> = Vec::new();
    for subscriber in routes.values().flatten() {
        if !told.iter().any(|held| Arc::ptr_eq(held, subscriber)) {
            subscriber.resync();
            told.push(subscriber);
        }
    }
}
