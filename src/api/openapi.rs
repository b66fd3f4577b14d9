//! The OpenAPI document of a node's HTTP surface, generated from the routes it serves.
//!
//! Every route of [`super::router`] goes through [`Routes::serve`], which registers the handler with
//! axum and its operation (from the handler's `#[utoipa::path]`, or built here for WebSocket
//! endpoints and pages) in the document, so a route cannot be served without being described.
//! Paths that depend on the configuration (mounts, endpoints, the dashboard, Pusher apps) appear as
//! this node serves them. `GET /api/openapi.json` answers the document of the node it asks.

use std::sync::Arc;

use axum::routing::MethodRouter;
use utoipa::openapi::Required;
use utoipa::openapi::path::{HttpMethod, Operation, Parameter, ParameterIn, PathItem, Paths};
use utoipa::openapi::response::Response as OaResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::schema;
use crate::node::Node;

/// Security scheme: the API key as `Authorization: Bearer <key>`.
pub const API_KEY: &str = "api_key";
/// Security scheme: the API key as `X-API-Key: <key>`.
pub const X_API_KEY: &str = "x_api_key";
/// Security scheme: a user's JWT, where reads accept one.
pub const USER_TOKEN: &str = "user_token";
/// Security scheme: the Pusher HTTP API's request signature.
pub const PUSHER_SIGNATURE: &str = "pusher_signature";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Herald HTTP API",
        description = "Publishing for backends, operator routes, statistics, health and metrics of one \
                       Herald node. Paths under a WebSocket mount (`server.mounts`), the WebSocket \
                       endpoints and the Pusher Channels HTTP API appear as this node's configuration \
                       serves them. Every refusal of Herald's own routes is JSON: \
                       `{\"success\":false,\"error\":…,\"code\":…}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(schema::ApiErrorBody)),
    tags(
        (name = "health", description = "Liveness, readiness, health and metrics"),
        (name = "publish", description = "Events for connections, from backends"),
        (name = "admin", description = "Operator routes"),
        (name = "stats", description = "Statistics"),
        (name = "history", description = "Stored messages and stream history"),
        (name = "presence", description = "Who is where; notifications"),
        (name = "websocket", description = "WebSocket endpoints (GET with an upgrade)"),
        (name = "pusher", description = "The Pusher Channels HTTP API (protocol 7)"),
        (name = "web", description = "The dashboard and console pages"),
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |text: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(text.into());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(API_KEY, bearer("`api.key`, as `Authorization: Bearer <key>`"));
        components.add_security_scheme(
            X_API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description("X-API-Key", "`api.key`"))),
        );
        components.add_security_scheme(
            USER_TOKEN,
            bearer("a user's JWT (`Authorization: Bearer <jwt>`), where a route reads on a user's behalf"),
        );
        components.add_security_scheme(
            PUSHER_SIGNATURE,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "auth_signature",
                "Pusher request signing: `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` \
                 (with a body) and `auth_signature`, the HMAC-SHA256 of `METHOD\\nPATH\\nsorted query` \
                 with the app's secret",
            ))),
        );
    }
}

/// The routes of a node and their description, built together.
pub struct Routes(OpenApiRouter<Arc<Node>>);

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    /// No routes yet; the document's header, schemes and tags.
    pub fn new() -> Self {
        Self(OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi()))
    }

    /// Serves `route` (from `utoipa_axum::routes!`, [`at`], [`websocket`] or [`page`]) and
    /// describes it.
    pub fn serve(self, route: UtoipaMethodRouter<Arc<Node>>) -> Self {
        Self(self.0.routes(route))
    }

    /// The axum router and the finished document.
    pub fn finish(self) -> (axum::Router<Arc<Node>>, OpenApi) {
        let (router, mut doc) = self.0.split_for_parts();
        finish_document(&mut doc);
        (router, doc)
    }
}

/// `route`, whose handler's `#[utoipa::path]` names one path, served and described at `path`
/// instead (the copies under each WebSocket mount). Operation ids get the mount as a suffix so
/// that they stay unique.
pub fn at(path: &str, (schemas, paths, method_router): UtoipaMethodRouter<Arc<Node>>) -> UtoipaMethodRouter<Arc<Node>> {
    let suffix = ident(path);
    let mut moved = Paths::new();
    for (_, mut item) in paths.paths {
        for operation in operations(&mut item) {
            operation.operation_id = operation.operation_id.take().map(|id| format!("{id}__{suffix}"));
        }
        moved.paths.insert(path.to_string(), item);
    }
    (schemas, moved, method_router)
}

/// `route`, whose handler's `#[utoipa::path]` names a path relative to a prefix (the operator
/// routes, served under `/api` and under each mount), served and described under `prefix`.
pub fn mounted(prefix: &str, route: UtoipaMethodRouter<Arc<Node>>) -> UtoipaMethodRouter<Arc<Node>> {
    let Some(relative) = route.1.paths.keys().next().cloned() else { return route };
    let path = format!("{prefix}{relative}");
    if prefix == "/api" {
        let (schemas, paths, method_router) = route;
        let mut moved = Paths::new();
        if let Some(item) = paths.paths.into_values().next() {
            moved.paths.insert(path, item);
        }
        return (schemas, moved, method_router);
    }
    at(&path, route)
}

/// A WebSocket endpoint: `GET` with the upgrade headers answers 101.
pub fn websocket(path: &str, about: &str, method_router: MethodRouter<Arc<Node>>) -> UtoipaMethodRouter<Arc<Node>> {
    let mut operation = Operation::new();
    operation.tags = Some(vec!["websocket".into()]);
    operation.summary = Some(about.into());
    operation.description = Some(
        "Opens a WebSocket (RFC 6455; permessage-deflate when offered and enabled). The messages are \
         described by the AsyncAPI document (`docs/asyncapi.yaml`). Without upgrade headers, \
         `Accept: text/event-stream` or `?transport=sse` opens the same session as Server-Sent \
         Events and `Accept: application/x-ndjson` or `?transport=stream` as NDJSON streaming \
         (docs/fallback-transports.md); anything else is refused with 426 (a stats mount answers \
         the statistics as JSON instead)."
            .into(),
    );
    operation.operation_id = Some(format!("websocket__{}", ident(path)));
    let responses = &mut operation.responses.responses;
    responses.insert("101".into(), RefOr::T(OaResponse::new("Switching Protocols: the WebSocket is open")));
    for (code, why) in [
        ("200", "an SSE or NDJSON session, or (a stats mount) the statistics"),
        ("400", "a malformed handshake"),
        ("401", "authentication required or failed"),
        ("403", "origin or address not allowed"),
        ("405", "not a GET"),
        ("426", "no WebSocket upgrade headers"),
        ("429", "connection limit or rate reached"),
        ("500", "the node could not take the socket"),
        ("503", "shutting down or at capacity"),
    ] {
        responses.insert(code.into(), error_response(why));
    }
    operation.parameters = path_parameters(path);
    let item = PathItem::new(HttpMethod::Get, operation);
    (Vec::new(), Paths::builder().path(path, item).build(), method_router)
}

/// `POST <endpoint>/tickets`: a one-time ticket for a fallback session (docs/fallback-transports.md).
pub fn fallback_tickets(path: &str, method_router: MethodRouter<Arc<Node>>) -> UtoipaMethodRouter<Arc<Node>> {
    let mut operation = Operation::new();
    operation.tags = Some(vec!["websocket".into()]);
    operation.summary = Some("A one-time ticket for an SSE / NDJSON session (`?ticket=` on the GET)".into());
    operation.description = Some(
        "Send the user's token as `Authorization: Bearer <token>`. The ticket works once, for 30 s or          until the token expires. See docs/fallback-transports.md."
            .into(),
    );
    operation.operation_id = Some(format!("tickets__{}", ident(path)));
    let body = OaResponse::builder()
        .description("`{\"ticket\": \"…\", \"expires_in\": 30}`")
        .content("application/json", Content::new(Some(utoipa::openapi::schema::Object::new())))
        .build();
    let responses = &mut operation.responses.responses;
    responses.insert("200".into(), RefOr::T(body));
    responses.insert("401".into(), error_response("no token, or a token that does not verify"));
    responses.insert("503".into(), error_response("too many tickets outstanding"));
    let item = PathItem::new(HttpMethod::Post, operation);
    (Vec::new(), Paths::builder().path(path, item).build(), method_router)
}

/// `POST <endpoint>/sessions/{id}`: commands for a fallback session (docs/fallback-transports.md).
pub fn fallback_commands(path: &str, method_router: MethodRouter<Arc<Node>>) -> UtoipaMethodRouter<Arc<Node>> {
    let mut operation = Operation::new();
    operation.tags = Some(vec!["websocket".into()]);
    operation.summary = Some("Commands for an SSE / NDJSON session; replies arrive on its stream".into());
    operation.description = Some(
        "One JSON command, as a WebSocket client sends it, or several as NDJSON, with the session's          `X-Herald-Session-Key`. See docs/fallback-transports.md."
            .into(),
    );
    operation.operation_id = Some(format!("commands__{}", ident(path)));
    operation.parameters = path_parameters(path);
    let protocol_error = |description: &str| {
        RefOr::T(
            OaResponse::builder()
                .description(description)
                .content("application/json", Content::new(Some(utoipa::openapi::schema::Object::new())))
                .build(),
        )
    };
    let responses = &mut operation.responses.responses;
    responses.insert("202".into(), protocol_error("accepted (or forwarded to the session's node)"));
    responses.insert("400".into(), protocol_error("not a JSON command: the protocol's error JSON"));
    responses.insert("403".into(), error_response("wrong or missing X-Herald-Session-Key"));
    responses.insert("404".into(), error_response("no such session"));
    responses.insert("413".into(), protocol_error("a command over the endpoint's message size, or too many"));
    responses.insert("429".into(), protocol_error("refused by the rate limits"));
    let item = PathItem::new(HttpMethod::Post, operation);
    (Vec::new(), Paths::builder().path(path, item).build(), method_router)
}

/// The `{name}` segments of a path, as required path parameters.
fn path_parameters(path: &str) -> Option<Vec<Parameter>> {
    let names: Vec<&str> =
        path.split('/').filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
    (!names.is_empty()).then(|| {
        names
            .into_iter()
            .map(|name| {
                Parameter::builder()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(utoipa::openapi::schema::Object::with_type(utoipa::openapi::schema::Type::String)))
                    .build()
            })
            .collect()
    })
}

/// A page (HTML).
pub fn page(path: &str, about: &str, method_router: MethodRouter<Arc<Node>>) -> UtoipaMethodRouter<Arc<Node>> {
    let mut operation = Operation::new();
    operation.tags = Some(vec!["web".into()]);
    operation.summary = Some(about.into());
    operation.operation_id = Some(format!("page__{}", ident(path)));
    let html = OaResponse::builder()
        .description("the page")
        .content("text/html", Content::new(Some(utoipa::openapi::schema::Object::new())))
        .build();
    operation.responses.responses.insert("200".into(), RefOr::T(html));
    let item = PathItem::new(HttpMethod::Get, operation);
    (Vec::new(), Paths::builder().path(path, item).build(), method_router)
}

/// The operation of `GET /api/openapi.json`, added by [`super::router`] once the document is
/// otherwise complete.
pub fn describe_self(doc: &mut OpenApi) {
    let mut operation = Operation::new();
    operation.tags = Some(vec!["health".into()]);
    operation.summary = Some("This document".into());
    operation.operation_id = Some("openapi".into());
    let body = OaResponse::builder()
        .description("the OpenAPI 3.1 document of this node")
        .content("application/json", Content::new(Some(utoipa::openapi::schema::Object::new())))
        .build();
    operation.responses.responses.insert("200".into(), RefOr::T(body));
    add_transport_errors(&mut operation);
    doc.paths.paths.insert("/api/openapi.json".into(), PathItem::new(HttpMethod::Get, operation));
}

fn ident(path: &str) -> String {
    let id: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    id.trim_matches('_').to_string()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.post, &mut item.delete, &mut item.put, &mut item.patch, &mut item.head]
        .into_iter()
        .filter_map(Option::as_mut)
}

fn error_response(description: &str) -> RefOr<OaResponse> {
    let content = Content::new(Some(Ref::from_schema_name("ApiErrorBody")));
    RefOr::T(OaResponse::builder().description(description).content("application/json", content).build())
}

/// Answers any route can give before its handler runs (`src/transport/http.rs`).
fn add_transport_errors(operation: &mut Operation) {
    for (code, why) in [
        ("408", "the request was not received within server.request_timeout"),
        ("413", "the body is larger than api.max_body_size"),
        ("503", "server.max_requests_in_flight reached, or a dependency is unavailable"),
    ] {
        operation.responses.responses.entry(code.into()).or_insert_with(|| error_response(why));
    }
}

/// Adds the refusals every route shares (the transport's; and, where a route needs credentials,
/// validation and authorization), so that each handler's attribute lists only its own.
fn finish_document(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            let guarded = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            if guarded {
                for (code, why) in [
                    ("400", "invalid input: a name, a body, a query parameter"),
                    ("401", "no or wrong credentials"),
                    ("403", "not allowed (api.allowed_ips, access rules, no api.key configured)"),
                    ("404", "no such thing"),
                ] {
                    operation.responses.responses.entry(code.into()).or_insert_with(|| error_response(why));
                }
            }
            add_transport_errors(operation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The other half of "every route is described": nothing in `src/` adds a route to an axum
    /// router except through [`Routes::serve`], save the document's own route, which
    /// [`describe_self`] describes. (The e2e suite checks that every described route is served.)
    #[test]
    fn no_route_bypasses_the_document() {
        fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("read source");
                    out.push((path.display().to_string(), text));
                }
            }
        }
        let mut files = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut direct = Vec::new();
        for (path, text) in &files {
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
                for call in [".route(", ".route_service(", ".nest(", ".nest_service(", "Router::new()"] {
                    if line.contains(call) {
                        direct.push(format!("{path}: {line}"));
                    }
                }
            }
        }
        assert_eq!(direct.len(), 1, "routes added outside Routes::serve: {direct:#?}");
        assert!(direct[0].contains("api/mod.rs") && direct[0].contains("router.route("), "{direct:#?}");
    }

    #[test]
    fn copies_at_another_path_get_unique_operation_ids() {
        let route: UtoipaMethodRouter<Arc<Node>> = utoipa_axum::routes!(crate::api::health::livez);
        let (_, paths, _) = at("/ws/livez", route);
        let item = &paths.paths["/ws/livez"];
        assert_eq!(item.get.as_ref().and_then(|o| o.operation_id.as_deref()), Some("livez__ws_livez"));
    }
}
