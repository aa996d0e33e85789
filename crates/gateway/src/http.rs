//! The HTTP listener: `/metrics` (Prometheus text format) and `/healthz`
//! (200 while taking calls, 503 while draining, for load balancers).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{Shared, api, outbound};

/// The process-wide Prometheus recorder (the `metrics` facade allows one).
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if an embedder installed its own recorder; then our
        // /metrics shows nothing and theirs gets the values.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let handle = prometheus().clone();
    let v1 = Router::new()
        .route(
            "/v1/calls",
            get(api::list_calls).post(outbound::create_call),
        )
        .route(
            "/v1/calls/{id}",
            get(api::get_call).delete(api::hang_up_call),
        )
        .route("/v1/trunks", get(api::list_trunks))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            api::require_token,
        ));
    let app = Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(v1)
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// Ready to take calls: not draining and below the call limit.
async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let active = shared.active.load(Ordering::SeqCst);
    if shared.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    } else if active >= shared.config.limits.max_calls {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("full; {active} calls\n"),
        )
    } else {
        (StatusCode::OK, format!("ready; {active} calls\n"))
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let active = shared.active.load(Ordering::SeqCst);
    if shared.draining.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("draining; {active} calls\n"),
        )
    } else {
        (StatusCode::OK, format!("ok; {active} calls\n"))
    }
}
