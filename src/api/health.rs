//! `GET /health` and `GET <mount>/health`.

use crate::api::schema;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::node::Node;

/// Health of the node: `healthy`, `degraded` (a dependency is down but local traffic flows) or
/// `unhealthy` (shutting down). 200 unless unhealthy.
#[utoipa::path(get, path = "/health", tag = "health", operation_id = "health",
    responses((status = 200, description = "healthy or degraded", body = schema::Health),
              (status = 503, description = "unhealthy: shutting down", body = schema::Health)))]
pub async fn health(State(node): State<Arc<Node>>) -> Response {
    let broker = node.broker.status();
    let totals = node.stats.totals();
    let database_ok = node.writer.is_healthy();
    let (status, score) = if node.shutdown.is_cancelled() {
        ("unhealthy", 0)
    } else if !broker.connected || !database_ok {
        ("degraded", if broker.connected || database_ok { 50 } else { 25 })
    } else {
        ("healthy", 100)
    };
    let (_, rooms, users) = node.hub.interest_counts();
    let body = json!({
        "status": "success",
        "health_status": status,
        "node": &*node.id,
        "data": {
            "health_status": status,
            "health_score": score,
            "redis_connected": broker.kind != "local" && broker.connected,
            "broker": broker,
            "database": {
                "kind": node.store.kind(),
                "connected": database_ok,
                "queue_depth": node.writer.queue_depth(),
            },
            "connection_stats": {
                "total_connections": totals.connections,
                "unique_users": users,
                "total_rooms": rooms,
            },
            "uptime_seconds": node.stats.uptime_seconds(),
        },
        "timestamp": crate::protocol::outbound::now(),
    });
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}

/// `GET /livez`: the process answers HTTP. 200 as long as it does, draining included, so that an
/// orchestrator never kills a node that is finishing its work.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "the process answers", body = schema::Live)))]
pub async fn livez() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

/// `GET /readyz`: whether this node should receive new traffic. 503, with the reasons, while it
/// drains for shutdown, before its broker is connected, or while a required dependency (Redis
/// when configured, the database) is down.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready", body = schema::Ready),
              (status = 503, description = "not ready, with the reasons", body = schema::Ready)))]
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let mut reasons = Vec::new();
    if node.shutdown.is_cancelled() {
        reasons.push("draining: the node is shutting down");
    }
    if !node.broker.status().connected {
        reasons.push("broker: Redis is not connected");
    }
    if !node.writer.is_healthy() {
        reasons.push("database: writes are failing");
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "reasons": reasons}))).into_response()
    }
}
