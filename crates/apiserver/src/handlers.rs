//! Request dispatch: authentication, routing, and the verbs on resources.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, header};
use serde_json::{Value, json};

use crate::discovery;
use crate::http::{self, Body, Query};
use crate::patch::{self, PatchType, ScaleChange};
use crate::registry::{
    DeleteOptions, FieldValidation, Filters, ObjectRef, Registry, WriteOptions, WriteOutcome,
    decode_body,
};
use crate::routes::{self, ResourcePath, Route};
use crate::status::{ApiError, ApiResult};
use crate::strategy::Target;
use crate::tables::{self, IncludeObject};
use crate::versions;
use crate::watch::{self, WatchParams};
use ferry_api::resources::ResourceType;

/// What every request handler shares.
pub struct ServerState {
    pub registry: Arc<Registry>,
    pub token: String,
    /// host:port clients use, for `/api`'s serverAddressByClientCIDRs.
    pub server_address: String,
}

pub async fn handle(state: Arc<ServerState>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = dispatch(&state, req).await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.code >= 500 {
                tracing::warn!(%method, %path, code = e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(%method, %path, code = e.code, message = %e.message, "request refused");
            }
            http::error(&e)
        }
    }
}

fn authorized(state: &ServerState, req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    constant_time_eq(token.trim().as_bytes(), state.token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn dispatch(state: &ServerState, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let route = routes::parse(req.uri().path());
    // Health and version are open to everyone, as on kube-apiserver.
    match &route {
        Ok(Route::Health) => return Ok(http::text(200, "ok")),
        Ok(Route::Version) => return Ok(http::json(200, &discovery::version())),
        _ => {}
    }
    if !authorized(state, &req) {
        return Err(ApiError::unauthorized());
    }
    let accept = header_str(&req, header::ACCEPT).to_string();
    match route? {
        Route::Health | Route::Version => unreachable!("answered above"),
        Route::ApiRoot => Ok(if http::wants_aggregated_discovery(&accept) {
            aggregated(discovery::aggregated(true))
        } else {
            http::json(200, &discovery::core_versions(&state.server_address))
        }),
        Route::ApisRoot => Ok(if http::wants_aggregated_discovery(&accept) {
            aggregated(discovery::aggregated(false))
        } else {
            http::json(200, &discovery::group_list())
        }),
        Route::Group(g) => discovery::group(&g)
            .map(|v| http::json(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::ResourceList { group, version } => discovery::resource_list(&group, &version)
            .map(|v| http::json(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::OpenApiV2 => Ok(if accept.contains("protobuf") {
            http::json_bytes(
                200,
                discovery::openapi_v2_protobuf(),
                discovery::OPENAPI_V2_PROTOBUF,
            )
        } else {
            http::json(200, &discovery::openapi_v2())
        }),
        Route::Metrics => Ok(http::json_bytes(
            200,
            state.registry.services.metrics(),
            "text/plain; version=0.0.4; charset=utf-8",
        )),
        Route::OpenApiV3Root => Ok(http::json(200, &discovery::openapi_v3_root())),
        Route::OpenApiV3 { group, version } => discovery::openapi_v3(&group, &version)
            .map(|v| http::json(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::Resource(path) => resource(state, req, path, &accept).await,
    }
}

fn aggregated(v: Value) -> Response<Body> {
    http::json_bytes(
        200,
        serde_json::to_vec(&v).unwrap_or_default(),
        discovery::AGGREGATED_CONTENT_TYPE,
    )
}

fn write_options(query: &Query) -> ApiResult<WriteOptions> {
    let dry_run = match query.get("dryRun") {
        None => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )));
        }
    };
    Ok(WriteOptions {
        field_validation: FieldValidation::parse(query.get("fieldValidation"))?,
        dry_run,
    })
}

fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = format!("299 - \"{escaped}\"").parse() {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn written(code: u16, outcome: WriteOutcome) -> Response<Body> {
    let resp = http::json_bytes(code, outcome.object, "application/json");
    with_warnings(resp, &outcome.warnings)
}

async fn resource(
    state: &ServerState,
    req: Request<Incoming>,
    path: ResourcePath,
    accept: &str,
) -> ApiResult<Response<Body>> {
    let deprecation = versions::deprecation(path.rt);
    let resp = resource_verbs(state, req, path, accept).await?;
    Ok(match deprecation {
        Some(w) => with_warnings(resp, &[w.to_string()]),
        None => resp,
    })
}

/// Answers with the written object, in the version the client used.
fn written_as(
    view: &'static ResourceType,
    code: u16,
    mut outcome: WriteOutcome,
) -> ApiResult<Response<Body>> {
    outcome.object = versions::bytes_from_storage(view, outcome.object)?;
    Ok(written(code, outcome))
}

async fn resource_verbs(
    state: &ServerState,
    req: Request<Incoming>,
    path: ResourcePath,
    accept: &str,
) -> ApiResult<Response<Body>> {
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let content_type = header_str(&req, header::CONTENT_TYPE).to_string();
    let registry = &state.registry;
    // `view` is the version the client speaks, `rt` the one stored.
    let view = path.rt;
    let rt = view.storage();
    if rt.namespaced && path.namespace.is_none() && path.name.is_some() {
        return Err(ApiError::path_not_found());
    }
    let table = http::wants_table(accept).then(|| IncludeObject::parse(query.get("includeObject")));
    let sub = path.subresource.as_deref();
    let namespace = path.namespace.as_deref();
    if let (Some(sub), Some(ns), Some(name)) = (sub, namespace, path.name.as_deref())
        && crate::pod_streams::is_stream_subresource(sub)
    {
        return crate::pod_streams::handle(state, req, ns, name, sub).await;
    }

    let Some(name) = path.name.as_deref() else {
        // Collection verbs.
        return match method {
            Method::GET if path.watch_prefix || query.flag("watch") => {
                watch_collection(state, &path, &query, table)
            }
            Method::GET => list(registry, &path, &query, table),
            Method::POST => {
                if namespace.is_none() && rt.namespaced {
                    return Err(ApiError::method_not_allowed("create"));
                }
                let body = read_body(registry, req).await?;
                let obj = versions::to_storage(view, decode_body(&content_type, &body)?)?;
                let outcome = registry
                    .create(rt, namespace, obj, write_options(&query)?)
                    .await?;
                written_as(view, 201, outcome)
            }
            Method::DELETE => {
                let body = read_body(registry, req).await?;
                let body = (!body.is_empty())
                    .then(|| decode_body(&content_type, &body))
                    .transpose()?;
                let opts = DeleteOptions::from_parts(body.as_ref(), &query)?;
                let filters =
                    Filters::parse(rt, query.get("labelSelector"), query.get("fieldSelector"))?;
                let page = registry.list(rt, namespace, &filters, None, None);
                for (_, stored) in page.items {
                    let obj: Value = serde_json::from_slice(&stored.data).unwrap_or(Value::Null);
                    let (Some(n), ns) = (
                        obj["metadata"]["name"].as_str(),
                        obj["metadata"]["namespace"].as_str(),
                    ) else {
                        continue;
                    };
                    let r = ObjectRef {
                        rt,
                        namespace: ns,
                        name: n,
                    };
                    match registry.delete(r, &opts).await {
                        Ok(_) => {}
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(http::json(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ))
            }
            _ => Err(ApiError::method_not_allowed(method.as_str())),
        };
    };

    let r = ObjectRef {
        rt,
        namespace,
        name,
    };
    match (method, sub) {
        (Method::GET, Some("scale")) => {
            let (_, obj) = registry.get_value(r)?;
            Ok(http::json(200, &patch::scale_of(&obj)))
        }
        (Method::GET, _) => {
            if let Some(include) = table {
                let (stored, obj) = registry.get_value(r)?;
                let t = tables::table(
                    rt,
                    std::slice::from_ref(&obj),
                    include,
                    json!({"resourceVersion": stored.revision.to_string()}),
                );
                return Ok(http::json(200, &t));
            }
            let stored = registry.get(r)?;
            let data = versions::bytes_from_storage(view, stored.data)?;
            Ok(http::json_bytes(200, data, "application/json"))
        }
        (Method::PUT, Some("scale")) => {
            let body = read_body(registry, req).await?;
            let scale = decode_body(&content_type, &body)?;
            let out = patch::write_scale(
                registry,
                r,
                ScaleChange::Replace(&scale),
                write_options(&query)?,
            )
            .await?;
            Ok(http::json(200, &out))
        }
        (Method::PATCH, Some("scale")) => {
            let patch_type = PatchType::from_content_type(&content_type)?;
            let body = read_body(registry, req).await?;
            let p = parse_patch(&body)?;
            let out = patch::write_scale(
                registry,
                r,
                ScaleChange::Patch(patch_type, &p),
                write_options(&query)?,
            )
            .await?;
            Ok(http::json(200, &out))
        }
        (Method::POST, Some("binding")) => {
            let body = read_body(registry, req).await?;
            let binding = decode_body(&content_type, &body)?;
            registry.bind_pod(r, &binding).await?;
            Ok(http::json(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (Method::PUT, Some("finalize")) => {
            let body = read_body(registry, req).await?;
            let obj = decode_body(&content_type, &body)?;
            let outcome = crate::namespaces::finalize(registry, name, &obj).await?;
            Ok(written(200, outcome))
        }
        (Method::PUT, sub) => {
            let body = read_body(registry, req).await?;
            let obj = versions::to_storage(view, decode_body(&content_type, &body)?)?;
            let target = if sub == Some("status") {
                Target::Status
            } else {
                Target::Main
            };
            let outcome = registry
                .update(r, target, obj, write_options(&query)?)
                .await?;
            written_as(view, if outcome.created { 201 } else { 200 }, outcome)
        }
        (Method::PATCH, sub) if sub != Some("finalize") => {
            let patch_type = PatchType::from_content_type(&content_type)?;
            let body = read_body(registry, req).await?;
            let p = parse_patch(&body)?;
            let target = if sub == Some("status") {
                Target::Status
            } else {
                Target::Main
            };
            let outcome = patch::patch_object(
                registry,
                r,
                view,
                target,
                patch_type,
                &p,
                write_options(&query)?,
            )
            .await?;
            written_as(view, 200, outcome)
        }
        (Method::DELETE, None) => {
            let body = read_body(registry, req).await?;
            let body = (!body.is_empty())
                .then(|| decode_body(&content_type, &body))
                .transpose()?;
            let opts = DeleteOptions::from_parts(body.as_ref(), &query)?;
            let obj = registry.delete(r, &opts).await?;
            let data = versions::bytes_from_storage(view, obj)?;
            Ok(http::json_bytes(200, data, "application/json"))
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

async fn read_body(registry: &Registry, req: Request<Incoming>) -> ApiResult<Bytes> {
    http::read_body(req.into_body(), registry.max_object_bytes).await
}

fn parse_patch(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn list(
    registry: &Registry,
    path: &ResourcePath,
    query: &Query,
    table: Option<IncludeObject>,
) -> ApiResult<Response<Body>> {
    let view = path.rt;
    let rt = view.storage();
    let filters = Filters::parse(rt, query.get("labelSelector"), query.get("fieldSelector"))?;
    let limit = query.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let token = query
        .get("continue")
        .map(|c| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c.trim_end_matches('='))
                .ok()
                .and_then(|raw| serde_json::from_slice::<ContinueToken>(&raw).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))
        })
        .transpose()?;
    let page = registry.list(
        rt,
        path.namespace.as_deref(),
        &filters,
        token.as_ref().map(|t| t.start.as_str()),
        limit,
    );
    // A continued list reports the revision of its first page.
    let revision = token.as_ref().map_or(page.revision, |t| t.rv);
    let continue_token = page.next_key.map(|start| {
        let t = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv: revision,
            start,
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&t).unwrap_or_default())
    });
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = &continue_token {
        metadata["continue"] = json!(c);
    }
    if let Some(include) = table {
        let body = tables::table_bytes(
            rt,
            page.items.iter().map(|(_, s)| &s.data[..]),
            include,
            metadata,
        );
        return Ok(http::json_bytes(200, body, "application/json"));
    }
    let mut items = page
        .items
        .into_iter()
        .map(|(_, s)| s.data)
        .collect::<Vec<_>>();
    if view.is_legacy_version() {
        items = items
            .into_iter()
            .map(|data| versions::bytes_from_storage(view, data))
            .collect::<ApiResult<_>>()?;
    }
    // Items are already JSON; splice them in without re-encoding.
    let head =
        json!({"kind": view.list_kind(), "apiVersion": view.api_version(), "metadata": metadata});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let mut out =
        BytesMut::with_capacity(head.len() + 16 + items.iter().map(|d| d.len() + 1).sum::<usize>());
    out.put_slice(&head[..head.len() - 1]);
    out.put_slice(b",\"items\":[");
    for (i, data) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(data);
    }
    out.put_slice(b"]}");
    Ok(http::json_bytes(200, out.freeze(), "application/json"))
}

fn watch_collection(
    state: &ServerState,
    path: &ResourcePath,
    query: &Query,
    table: Option<IncludeObject>,
) -> ApiResult<Response<Body>> {
    let view = path.rt;
    let rt = view.storage();
    let filters = Filters::parse(rt, query.get("labelSelector"), query.get("fieldSelector"))?;
    let timeout = match query.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        // kube-apiserver picks between 30 and 60 minutes so that watches
        // of many clients do not all end together.
        _ => Duration::from_secs(1800 + (uuid::Uuid::new_v4().as_u128() % 1800) as u64),
    };
    let params = WatchParams {
        resource_version: query.get("resourceVersion").map(str::to_string),
        timeout,
        bookmarks: query.flag("allowWatchBookmarks"),
        send_initial_events: query.flag("sendInitialEvents"),
        filters,
        table,
        view,
    };
    let body = watch::start(state.registry.clone(), rt, path.namespace.clone(), params)?;
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("static response parts are valid"))
}
