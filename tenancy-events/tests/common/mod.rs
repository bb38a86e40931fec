//! What the broker tests share.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

/// A TCP proxy in front of a broker that can freeze or cut every
/// connection passing through it, as a network failure, a hung broker or
/// a broker restart would.
pub(crate) struct Proxy {
    /// Where the proxy listens.
    pub(crate) address: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u32>,
    freeze: tokio::sync::watch::Sender<u32>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy to `target` (`host:port`) on a free local port.
    pub(crate) async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(0);
        let (freeze, _) = tokio::sync::watch::channel(0);
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cuts, freezes, tasks) = (cut.clone(), freeze.clone(), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (mut cut, mut freeze) = (cuts.subscribe(), freezes.subscribe());
                let target = target.clone();
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                        // Stop forwarding, the sockets kept open, until cut.
                        _ = freeze.changed() => { let _ = cut.changed().await; }
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        Self {
            address,
            cut,
            freeze,
            connections,
        }
    }

    /// Stops forwarding on every connection open through the proxy,
    /// leaving them open: a broker that no longer answers.
    pub(crate) fn freeze(&self) {
        self.freeze.send_modify(|freezes| *freezes += 1);
    }

    /// Closes every connection open through the proxy, returning once
    /// both ends of each are closed.
    pub(crate) async fn cut(&self) {
        self.cut.send_modify(|cuts| *cuts += 1);
        let open: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for connection in open {
            connection.await.unwrap();
        }
    }
}

/// A tenant created in `backend` (its `tenant.created` event is number 1
/// of its stream), then `n` more events appended.
pub(crate) async fn tenant_with_events(
    backend: &Arc<dyn tenancy_core::Backend>,
    n: usize,
) -> tenancy_core::TenantId {
    use tenancy_core::{
        AuditContext, Directory, Email, EventType, NewEvent, NewTenant, NewUser, Outbox, Owner,
        Slug, TenantName,
    };
    let slug = format!(
        "brokers-{}",
        &tenancy_core::TenantId::new().to_string()[24..]
    );
    let tenant_id = Directory::new(Arc::clone(backend))
        .create_tenant(
            NewTenant::new(Slug::new(&slug).unwrap(), TenantName::new(&slug).unwrap()),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap()
        .tenant
        .id;
    for i in 0..n {
        let event = NewEvent::new(
            EventType::new("member.joined").unwrap(),
            serde_json::json!({ "i": i }),
        );
        backend.append_event(tenant_id, event).await.unwrap();
    }
    tenant_id
}
