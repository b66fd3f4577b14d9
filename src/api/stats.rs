//! Statistics over HTTP: `GET <mount>/stats`, `/api/stats` and `…/stats/detailed`. The figures
//! themselves are [`crate::report`]'s.

use std::rc::Rc;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Admin;
use crate::api::schema;
use crate::node::Node;
use crate::protocol::outbound;
use crate::report::figures;
use crate::session::Shard;

/// `GET <mount>/stats`: the fields the compatibility profiles' dashboards read, at the top level and
/// under `stats`.
#[utoipa::path(get, path = "/api/stats", tag = "stats", operation_id = "stats",
    responses((status = 200, description = "the node's figures", body = schema::Stats)))]
pub async fn stats(State(node): State<Arc<Node>>) -> Response {
    Json(crate::report::snapshot(&node).await).into_response()
}

/// `GET …/stats/detailed`: adds per-shard figures and the last minutes of samples.
#[utoipa::path(get, path = "/stats/detailed", tag = "stats", security(("api_key" = []), ("x_api_key" = [])),
    responses((status = 200, description = "figures, shards and recent samples", body = schema::DetailedStats)))]
pub async fn detailed(State(node): State<Arc<Node>>, _admin: Admin) -> Response {
    let shards = node
        .hub
        .ask(|shard: &Rc<Shard>| {
            let (rooms, channels) = shard.key_counts();
            json!({ "shard": shard.number(), "connections": shard.all_sessions().len(), "rooms": rooms, "channels": channels })
        })
        .await;
    Json(json!({
        "success": true,
        "stats": figures(&node, None),
        "shards": shards,
        "history": node.stats.recent(300),
        "timestamp": outbound::now(),
    }))
    .into_response()
}
