//! The OpenAPI description of the HTTP API (`utoipa`), served at `GET /api/v4/openapi.json` (and
//! `/api/v4/swagger.json`, Ditto's name), and the interactive documentation at `GET /docs`.
//!
//! The committed `openapi/openapi.json` is this spec; `bigpeer openapi` prints it, and a test fails
//! when the two drift apart.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;

/// The command that regenerates the committed spec.
pub const REGENERATE: &str = "cargo run -p bigpeer -- openapi > openapi/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bigpeer HTTP API",
        description = "bigpeer's Ditto-compatible `/api/v4` HTTP API: DQL over \
            `/store/execute`, the legacy RPC endpoints, API key management, probes, metrics \
            and the peer sync WebSocket.\n\n\
            Send an API key as `Authorization: Bearer <key>` (`bearer <key>` and the bare key \
            work too); make one with `bigpeer keys create --name NAME` or `POST \
            /api/v4/admin/keys`. Errors carry a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::store::execute,
        super::legacy::find,
        super::legacy::find_by_id,
        super::legacy::count,
        write,
        super::admin::create,
        super::admin::list,
        super::admin::revoke,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::get,
        super::webhooks::update,
        super::webhooks::delete,
        super::webhooks::deliveries,
        super::webhooks::replay,
        sync,
        super::changes::changes,
        super::health::healthz,
        super::health::readyz,
        super::metrics::metrics,
        openapi_json,
        swagger_json,
        docs,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "store", description = "DQL statements (Ditto's `/store/execute`)."),
        (name = "legacy", description = "Ditto's legacy RPC endpoints; their queries use the \
            legacy query language."),
        (name = "admin", description = "API key and webhook management, guarded by the admin \
            key (`--admin-key`); off (404) without one."),
        (name = "sync", description = "The peer sync protocol over WebSockets \
            (`docs/sync-protocol.md`)."),
        (name = "changes", description = "Change data capture: every committed change of the \
            documents a key may read, resumable (`GET /api/v4/changes`)."),
        (name = "operations", description = "Probes and metrics; no key needed."),
        (name = "docs", description = "This description and the interactive documentation; no \
            key needed."),
    )
)]
struct ApiDoc;

/// The bearer schemes: API keys, and the admin key of the key-management API.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = Some("API key".to_owned());
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "api_key",
            bearer(
                "An API key (`bpk_...`), from `bigpeer keys create` or `POST /api/v4/admin/keys`, \
                 as `Authorization: Bearer <key>`. Not needed when the server runs with \
                 `--playground`.",
            ),
        );
        components.add_security_scheme(
            "admin_key",
            bearer(
                "The admin key of the server (`--admin-key`), as `Authorization: Bearer <key>`.",
            ),
        );
    }
}

/// The spec as a value.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The spec as pretty JSON with a final newline: what `bigpeer openapi` prints and
/// `openapi/openapi.json` holds.
pub fn spec_json() -> String {
    let mut json = match spec().to_pretty_json() {
        Ok(json) => json,
        // Serialising plain data structures cannot fail; an empty document would fail the
        // drift test loudly rather than panic a server.
        Err(e) => format!("{{\"error\": {:?}}}", e.to_string()),
    };
    json.push('\n');
    json
}

/// Registers `/api/v4/openapi.json`, `/api/v4/swagger.json` and `/docs`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let spec = web::Data::new(Spec(spec_json()));
    cfg.app_data(spec)
        .route("/api/v4/openapi.json", web::get().to(openapi_json))
        .route("/api/v4/swagger.json", web::get().to(swagger_json))
        .route("/docs", web::get().to(docs));
}

fn any_members(types: &[utoipa::openapi::Type], description: &str) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, SchemaType};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(match types {
            [one] => SchemaType::new(one.clone()),
            many => SchemaType::from_iter(many.iter().cloned()),
        })
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(description))
        .build()
}

/// `args` of `/store/execute`: an object of any JSON values, or null.
pub fn dql_args() -> utoipa::openapi::Object {
    use utoipa::openapi::Type;
    any_members(
        &[Type::Object, Type::Null],
        "Values for the statement's `:name` parameters: an object whose keys are the parameter \
         names (without the colon) and whose values are any JSON values.",
    )
}

/// `args` of the legacy queries.
pub fn legacy_args() -> utoipa::openapi::Object {
    any_members(
        &[utoipa::openapi::Type::Object],
        "Values for `$args.name` in the query: an object of any JSON values.",
    )
}

/// `fields` of a legacy document.
pub fn document_fields() -> utoipa::openapi::Object {
    any_members(
        &[utoipa::openapi::Type::Object],
        "Every field of the document but `_id`: any JSON values.",
    )
}

/// `value` of an upsert.
pub fn upsert_value() -> utoipa::openapi::Object {
    any_members(
        &[utoipa::openapi::Type::Object],
        "The document's fields (with or without `_id`): any JSON values.",
    )
}

/// `items` of `/store/execute`.
pub fn select_items() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(any_members(
            &[utoipa::openapi::Type::Object],
            "A document or a row: any JSON values.",
        ))
        .description(Some(
            "The documents or rows a SELECT returns; `[]` for writes and errors.",
        ))
        .build()
}

/// The error body of every route but `/store/execute` (which keeps Ditto's envelope).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"code": "auth/invalid-key", "message": "the API key is not valid"}))]
pub struct ErrorMessage {
    /// The stable error code, such as `auth/invalid-key` or `query/invalid`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// How to fix it, when there is advice.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub hint: Option<String>,
}

impl ErrorMessage {
    pub fn new(code: &str, message: String) -> ErrorMessage {
        ErrorMessage {
            code: code.to_owned(),
            message,
            hint: None,
        }
    }
}

/// The rendered spec, made once per worker.
struct Spec(String);

fn spec_response(spec: &Spec) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(spec.0.clone())
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get,
    path = "/api/v4/openapi.json",
    tag = "docs",
    operation_id = "openapi",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document.", content_type = "application/json",
            body = Object),
    )
)]
async fn openapi_json(spec: web::Data<Spec>) -> HttpResponse {
    spec_response(&spec)
}

/// The same OpenAPI description, under Ditto's name.
#[utoipa::path(
    get,
    path = "/api/v4/swagger.json",
    tag = "docs",
    operation_id = "swagger",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document.", content_type = "application/json",
            body = Object),
    )
)]
async fn swagger_json(spec: web::Data<Spec>) -> HttpResponse {
    spec_response(&spec)
}

/// Interactive API documentation.
///
/// A small HTML page that loads Swagger UI from a public CDN in the browser; when that script
/// cannot load (offline), it lists the routes of `/api/v4/openapi.json` instead.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    operation_id = "docs",
    security(()),
    responses(
        (status = 200, description = "The documentation page.", content_type = "text/html",
            body = String),
    )
)]
async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(DOCS_HTML)
}

/// The page of `GET /docs`: Swagger UI 5.35.0 from a CDN (pinned, with subresource integrity),
/// and a plain listing of the routes when it cannot load.
const DOCS_HTML: &str = include_str!("docs.html");

/// Open a peer sync session (WebSocket).
///
/// A WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`,
/// `Sec-WebSocket-Key`) offering the subprotocol `bigpeer-sync.1` in `Sec-WebSocket-Protocol`.
/// The peer authenticates inside the session with its first message (an API key), so the upgrade
/// itself needs no `Authorization` header. Messages are binary, one protocol message each:
/// see `docs/sync-protocol.md`.
#[utoipa::path(
    get,
    path = "/api/v4/sync",
    tag = "sync",
    operation_id = "sync",
    security(()),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; \
            `Sec-WebSocket-Protocol` names the chosen subprotocol."),
        (status = 400, description = "Not a WebSocket upgrade (no `Upgrade: websocket`, \
            `Connection: Upgrade`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version` header: \
            `sync/not-websocket`), or no supported subprotocol offered \
            (`sync/unsupported-protocol`).", body = ErrorMessage, example = json!({
                "code": "sync/unsupported-protocol",
                "message": "no supported sync protocol offered in Sec-WebSocket-Protocol",
                "hint": "offer one of: bigpeer-sync.1"})),
        (status = 426, description = "An unsupported `Sec-WebSocket-Version` \
            (`sync/unsupported-websocket-version`; 13 is supported and named in the response's \
            `Sec-WebSocket-Version` header).", body = ErrorMessage, example = json!({
                "code": "sync/unsupported-websocket-version",
                "message": "WebSocket version 8 is not supported",
                "hint": "use WebSocket version 13 (RFC 6455)"})),
    )
)]
#[allow(dead_code)] // documents `crate::sync::ws`, which serves the route
fn sync() {}

/// The body of `POST /api/v4/store/write` as the spec describes it (`http/write.rs` reads each
/// command on its own, to name a malformed one by its index).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WriteRequest, example = json!({"commands": [
    {"method": "upsert", "collection": "people", "id": "abc",
        "value": {"name": "John", "orders": 0}, "valueTypeOverrides": {"orders": "counter"}},
    {"method": "update", "collection": "people", "query": "name == $args.name",
        "args": {"name": "John"},
        "commands": [{"method": "increment", "path": "orders", "value": 1}]},
    {"method": "remove", "collection": "people", "query": "name == 'Jane'"}
]}))]
pub struct WriteRequestDoc {
    /// The commands, applied in order in one transaction: all or nothing.
    #[schema(min_items = 1)]
    pub commands: Vec<WriteCommandDoc>,
}

/// One command of a write, by its `method`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = WriteCommand, discriminator(property_name = "method", mapping(
    ("upsert" = "#/components/schemas/UpsertCommand"),
    ("update" = "#/components/schemas/UpdateCommand"),
    ("remove" = "#/components/schemas/RemoveCommand"),
)))]
pub enum WriteCommandDoc {
    Upsert(UpsertCommandDoc),
    Update(UpdateCommandDoc),
    Remove(RemoveCommandDoc),
}

/// Create or merge a document.
#[allow(dead_code)] // read by serde in the tests; it describes the body
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = UpsertCommand)]
pub struct UpsertCommandDoc {
    method: UpsertName,
    collection: String,
    /// The document id; absent: taken from `value._id`, else a new one.
    #[serde(default)]
    #[schema(value_type = Value, nullable = false)]
    id: Option<serde_json::Value>,
    #[schema(schema_with = upsert_value)]
    value: serde_json::Value,
    /// CRDT types of fields, by field name.
    #[serde(default)]
    value_type_overrides: std::collections::BTreeMap<String, ValueTypeDoc>,
    /// How to combine `value` with an existing document (default `merge`).
    #[serde(default)]
    #[schema(nullable = false)]
    write_strategy: Option<WriteStrategyDoc>,
}

/// Change the documents matching a legacy query.
#[allow(dead_code)] // read by serde in the tests; it describes the body
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = UpdateCommand)]
pub struct UpdateCommandDoc {
    method: UpdateName,
    collection: String,
    /// A query in the legacy query language.
    query: String,
    #[serde(default)]
    #[schema(schema_with = legacy_args)]
    args: std::collections::BTreeMap<String, serde_json::Value>,
    /// The changes, applied to every matching document.
    commands: Vec<UpdateMethodDoc>,
}

/// Delete the documents matching a legacy query (tombstones, synced to peers).
#[allow(dead_code)] // read by serde in the tests; it describes the body
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = RemoveCommand)]
pub struct RemoveCommandDoc {
    method: RemoveName,
    collection: String,
    /// A query in the legacy query language.
    query: String,
    #[serde(default)]
    #[schema(schema_with = legacy_args)]
    args: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `upsert`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
enum UpsertName {
    Upsert,
}

/// `update`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
enum UpdateName {
    Update,
}

/// `remove`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
enum RemoveName {
    Remove,
}

/// One change of an update command, by its `method`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = UpdateMethod)]
pub enum UpdateMethodDoc {
    /// Set the field at `path` to `value`.
    Set {
        path: String,
        #[schema(value_type = Value)]
        value: serde_json::Value,
    },
    /// Set the attachment field at `path` to the attachment token `value`.
    SetAttachment {
        path: String,
        #[schema(value_type = Value)]
        value: serde_json::Value,
    },
    /// Add `value` (a number) to the counter at `path`.
    Increment { path: String, value: f64 },
    /// Turn the number at `path` into a counter.
    #[serde(rename_all = "camelCase")]
    ReplaceWithCounter {
        path: String,
        #[schema(nullable = false)]
        is_default: Option<bool>,
    },
}

/// A CRDT type for `valueTypeOverrides`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ValueType)]
pub enum ValueTypeDoc {
    Counter,
    Register,
    Map,
    Attachment,
}

/// How an upsert combines with an existing document.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WriteStrategy)]
pub enum WriteStrategyDoc {
    Merge,
    InsertIfAbsent,
    InsertDefaultIfAbsent,
    UpdateDifferentValues,
}

/// The error body of `/store/write`: `commandIndex` names the failing command.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WriteError, example = json!({
    "code": "request/invalid-command",
    "message": "command 0: missing field `collection`",
    "commandIndex": 0
}))]
pub struct WriteErrorDoc {
    pub code: String,
    pub message: String,
    /// The index of the command at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub command_index: Option<u64>,
}

/// Apply upsert, update and remove commands atomically.
///
/// Ditto's legacy write RPC: the commands run in order in one transaction; when one fails,
/// nothing is written and the error names it by `commandIndex`. The answer's transaction id is
/// also in the `X-DITTO-TXN-ID` response header.
#[utoipa::path(
    post,
    path = "/api/v4/store/write",
    tag = "legacy",
    operation_id = "write",
    security(("api_key" = [])),
    params(
        ("X-DITTO-TXN-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$",
            description = "Run only once this transaction is visible; 404 when it is not within \
                2 s, 400 when it is not an integer."),
    ),
    request_body(content = WriteRequestDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Every command was applied.",
            body = super::write::WriteResponse,
            headers(("X-DITTO-TXN-ID" = String, description = "The transaction id of the write.")),
            example = json!({"results": [
                {"method": "upsert", "transactionId": 7, "id": "abc"},
                {"method": "update", "transactionId": 7, "updated": 1, "error": 0,
                    "internalError": 0, "permissionDenied": 0},
                {"method": "remove", "transactionId": 7, "deleted": 0, "internalError": 0,
                    "permissionDenied": 0}
            ], "transactionId": 7})),
        (status = 400, description = "A malformed or empty command list \
            (`request/invalid-command`), an invalid query (`query/...`), an invalid document or \
            id (`document/...`, `crdt/...`), text holding U+0000 (`request/nul-character`), a \
            value, path or id nested too deep (`request/too-deep`), an id or collection name \
            too long (`request/too-long`), a document over the size limit \
            (`document/too-large`), a \
            bad `X-DITTO-TXN-ID` (`request/invalid-header`), malformed JSON, wrong types or \
            unknown fields (`request/invalid-json`); nothing was written.", body = WriteErrorDoc),
        (status = 401, description = "No API key, or an unknown, expired or revoked one \
            (`auth/...`).", body = WriteErrorDoc),
        (status = 403, description = "A command writes outside the key's permissions \
            (`auth/forbidden`); nothing was written.", body = WriteErrorDoc),
        (status = 404, description = "The transaction of `X-DITTO-TXN-ID` was not reached \
            within 2 s (`store/txn-not-available`).", body = WriteErrorDoc),
        (status = 408, description = "The write ran longer than the statement timeout \
            (`store/timeout`).", body = WriteErrorDoc),
        (status = 413, description = "The body is larger than 4 MiB (`request/too-large`).",
            body = WriteErrorDoc),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = WriteErrorDoc),
        (status = 429, description = "Over a rate limit (`request/rate-limited`).",
            body = WriteErrorDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 500, description = "An internal error (`internal`).", body = WriteErrorDoc),
        (status = 503, description = "Postgres is unavailable (`store/unavailable`, \
            `store/backend`): retry with backoff.", body = WriteErrorDoc),
    )
)]
#[allow(dead_code)] // documents `super::write::write`, which serves the route
fn write() {}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as atest, App};

    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json")
    }

    #[test]
    fn committed_spec_is_current() {
        let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
        assert!(
            committed == spec_json(),
            "openapi/openapi.json differs from the spec the code generates: regenerate it with \
             `{REGENERATE}` (from the repository root) and commit it"
        );
    }

    /// Every route registered with actix (a `route` call with a path literal and a method in the
    /// server's sources) is in the spec with its method.
    #[test]
    fn every_route_is_documented() {
        let spec = serde_json::to_value(spec()).unwrap_or_default();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut routes = Vec::new();
        collect_routes(&root, &mut routes);
        assert!(
            routes.len() >= 15,
            "found too few routes in the sources: {routes:?}"
        );
        for (path, method) in &routes {
            assert!(
                spec["paths"][path][method].is_object(),
                "{method} {path} is registered but not in the OpenAPI spec: annotate its handler \
                 with #[utoipa::path] and list it in http/openapi.rs"
            );
        }
    }

    fn collect_routes(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect_routes(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // `.route(PATH, web::METHOD()` with any whitespace between the parts; lines
                // that are comments are skipped.
                let text: String = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let flat: String = text.split_whitespace().collect::<Vec<_>>().join("");
                for piece in flat.split(".route(\"").skip(1) {
                    let Some((route, rest)) = piece.split_once('"') else {
                        continue;
                    };
                    let Some(method) = rest
                        .strip_prefix(",web::")
                        .and_then(|r| r.split_once("()"))
                        .map(|(m, _)| m.to_owned())
                    else {
                        continue;
                    };
                    if route.starts_with('/') {
                        out.push((route.to_owned(), method));
                    }
                }
            }
        }
    }

    /// The documented write commands are the ones `http/write.rs` reads.
    #[test]
    fn write_example_is_what_the_server_reads() {
        let spec = serde_json::to_value(spec()).unwrap_or_default();
        let example = &spec["components"]["schemas"]["WriteRequest"]["example"];
        let doc: Result<WriteRequestDoc, _> = serde_json::from_value(example.clone());
        assert!(doc.is_ok(), "{doc:?}");
        let real: Result<super::super::write::WriteRequest, _> =
            serde_json::from_value(example.clone());
        let commands = real.map(|r| r.commands).unwrap_or_default();
        assert_eq!(commands.len(), 3);
        for c in commands {
            let parsed: Result<super::super::write::Command, _> = serde_json::from_value(c.clone());
            assert!(parsed.is_ok(), "{c} does not parse: {parsed:?}");
        }
    }

    #[actix_web::test]
    async fn spec_and_docs_are_served_without_a_key() {
        let app = atest::init_service(App::new().configure(configure)).await;
        for path in ["/api/v4/openapi.json", "/api/v4/swagger.json"] {
            let resp =
                atest::call_service(&app, atest::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(
                resp.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/json"),
                "{path}"
            );
            let body = atest::read_body(resp).await;
            assert_eq!(
                std::str::from_utf8(&body).ok(),
                Some(spec_json().as_str()),
                "{path}"
            );
        }
        let resp =
            atest::call_service(&app, atest::TestRequest::get().uri("/docs").to_request()).await;
        assert_eq!(resp.status(), 200);
        let body = atest::read_body(resp).await;
        let page = std::str::from_utf8(&body).unwrap_or_default();
        assert!(page.contains("/api/v4/openapi.json"), "{page}");
        assert!(page.contains("integrity=\"sha384-"), "{page}");
    }

    #[test]
    fn spec_describes_the_api() {
        let spec = serde_json::to_value(spec()).unwrap_or_default();
        assert_eq!(spec["openapi"], "3.1.0");
        let execute = &spec["paths"]["/api/v4/store/execute"]["post"];
        for status in [
            "200", "400", "401", "403", "404", "408", "413", "429", "500", "503",
        ] {
            assert!(
                execute["responses"][status].is_object(),
                "execute lacks a {status} response"
            );
        }
        assert_eq!(execute["security"], serde_json::json!([{"api_key": []}]));
        assert_eq!(
            spec["components"]["securitySchemes"]["api_key"]["scheme"],
            "bearer"
        );
        assert_eq!(
            spec["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
        // `args` and `items` are free-form.
        let schemas = &spec["components"]["schemas"];
        assert!(schemas["ExecuteRequest"]["properties"]["args"]["type"]
            .to_string()
            .contains("object"));
        assert_eq!(schemas["ExecuteRequest"]["additionalProperties"], false);
    }
}
