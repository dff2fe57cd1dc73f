//! The admin HTTP server: `/metrics`, `/livez`, `/readyz`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::leader::Role;
use crate::metrics::Metrics;

/// Whether the process is ready: its leader state is known and, when it leads, the caches of the
/// controllers it runs have synced. A follower that knows it follows is ready (to take over).
pub struct Readiness {
    role: Mutex<Role>,
    caches: Mutex<BTreeMap<&'static str, bool>>,
}

impl Readiness {
    /// Readiness of a process that starts in `role` (Leader when there is no election).
    pub fn new(role: Role) -> Self {
        Self { role: Mutex::new(role), caches: Mutex::default() }
    }

    /// A controller whose cache must sync before the process is ready.
    pub fn expect_cache(&self, kind: &'static str) {
        crate::lock(&self.caches).entry(kind).or_insert(false);
    }

    /// That controller's cache has synced.
    pub fn cache_synced(&self, kind: &'static str) {
        crate::lock(&self.caches).insert(kind, true);
    }

    /// Whether that controller's cache has synced.
    pub fn synced(&self, kind: &str) -> bool {
        crate::lock(&self.caches).get(kind).copied().unwrap_or(false)
    }

    /// The leader state changed.
    pub fn set_role(&self, role: Role) {
        *crate::lock(&self.role) = role;
    }

    /// `Ok` when ready, else what is missing.
    pub fn check(&self) -> Result<(), String> {
        match *crate::lock(&self.role) {
            Role::Unknown => return Err("leader state not known yet".into()),
            Role::Follower => return Ok(()),
            Role::Leader => {}
        }
        let caches = crate::lock(&self.caches);
        let waiting: Vec<&str> = caches.iter().filter(|(_, synced)| !**synced).map(|(k, _)| *k).collect();
        if caches.is_empty() {
            Err("controllers not started".into())
        } else if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("caches not synced: {}", waiting.join(", ")))
        }
    }
}

/// What the admin server reports.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub ready: Arc<Readiness>,
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                match s.ready.check() {
                    Ok(()) => (StatusCode::OK, "ok".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_following_or_leading_with_synced_caches() {
        let r = Readiness::new(Role::Unknown);
        r.expect_cache("ExternalSecret");
        assert!(r.check().is_err());
        r.set_role(Role::Follower);
        assert_eq!(r.check(), Ok(()));
        r.set_role(Role::Leader);
        assert_eq!(r.check(), Err("caches not synced: ExternalSecret".into()));
        r.cache_synced("ExternalSecret");
        assert_eq!(r.check(), Ok(()));
        assert!(Readiness::new(Role::Leader).check().is_err(), "no controllers yet");
    }
}
