//! The web role: a small read-only HTTP server (axum) in the meta server
//! process, serving the status page (HTML, CSS and JavaScript of its own, no
//! external assets), its JSON (`/api/status`, `/api/history`) and
//! `/metrics`. Only GET and HEAD exist; clients outside the allowed
//! networks get 403.

use super::metrics;
use crate::service::MetaService;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fs_proto::monitor::EventLevel;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::watch;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The page may load only what this server serves.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Who may see the page: networks parsed from the configuration.
#[derive(Debug, Clone)]
pub struct Allow(Vec<IpNet>);

impl Allow {
    /// Parse CIDR networks or single addresses.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{e}` in monitor.allow is neither a network (CIDR) nor an address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Allow)
    }

    /// Whether a client at `ip` may see the page.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Serve until `exit` turns true.
pub async fn serve(
    svc: Arc<MetaService>,
    listener: tokio::net::TcpListener,
    allow: Allow,
    mut exit: watch::Receiver<bool>,
) {
    let app = router(svc.clone(), allow).into_make_service_with_connect_info::<SocketAddr>();
    let stop = async move {
        while !*exit.borrow() {
            if exit.changed().await.is_err() {
                break;
            }
        }
    };
    // Bounded connections (see `guard`); `tap_io` (no-op) gives the
    // handlers the peer's address.
    let listener =
        axum::serve::ListenerExt::tap_io(super::guard::Guarded::new(listener, svc.monitor.web_open.clone()), |_| {});
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        svc.monitor.events().record(EventLevel::Error, None, format!("status page stopped: {e}"));
    }
}

/// The routes (public for tests that drive them without a socket).
pub fn router(svc: Arc<MetaService>, allow: Allow) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/status", get(api_status))
        .route("/api/history", get(api_history))
        .route("/metrics", get(api_metrics))
        .layer(middleware::from_fn_with_state(Arc::new(allow), guard))
        .with_state(svc)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn api_status(State(svc): State<Arc<MetaService>>) -> Response {
    Json(super::status::build(&svc)).into_response()
}

async fn api_history(State(svc): State<Arc<MetaService>>) -> Response {
    Json(svc.monitor.history()).into_response()
}

async fn api_metrics(State(svc): State<Arc<MetaService>>) -> Response {
    let e = svc.monitor.events();
    let totals = [EventLevel::Error, EventLevel::Warning, EventLevel::Info].map(|l| e.total(l));
    let body = metrics::render(&super::status::build(&svc), totals);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// Refuse clients outside the allowed networks; mark every answer
/// uncacheable and confine the page to this server.
async fn guard(
    State(allow): State<Arc<Allow>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !allow.permits(peer.ip()) {
        tracing::debug!(%peer, "status page refused");
        return (StatusCode::FORBIDDEN, "this address may not see the renkei status page\n").into_response();
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_parses_networks_and_addresses() {
        let a = Allow::parse(&["127.0.0.0/8".into(), "::1/128".into(), "10.1.2.3".into()]).expect("valid");
        assert!(a.permits("127.0.0.1".parse().expect("ip")));
        assert!(a.permits("::1".parse().expect("ip")));
        assert!(a.permits("::ffff:127.0.0.1".parse().expect("ip")), "v4-mapped loopback is loopback");
        assert!(a.permits("10.1.2.3".parse().expect("ip")));
        assert!(!a.permits("10.1.2.4".parse().expect("ip")));
        assert!(!a.permits("192.0.2.1".parse().expect("ip")));
        assert!(Allow::parse(&["everyone".into()]).is_err());
        assert!(!Allow::parse(&[]).expect("empty").permits("127.0.0.1".parse().expect("ip")));
    }
}
