//! zot's API key endpoints: `POST`, `GET` and `DELETE /zot/auth/apikey`.
//!
//! A key is minted for the authenticated caller, shown once, and stored
//! only as its hash. It acts with the groups its owner had when it was made,
//! restricted to its scopes when it has any. Keys cannot mint or manage
//! keys: a leaked key must not be able to outlive its revocation.

use crate::app::App;
use crate::auth::Auth;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_auth::apikey::{ApiKey, KeyRequest};
use berth_auth::{Identity, Method};
use berth_core::accounts::RecordKind;
use berth_oci::endpoint::Query;
use berth_oci::ErrorCode;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;

/// Largest request body accepted.
const MAX_BODY: usize = 8 * 1024;

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Every method of `/zot/auth/apikey`.
pub async fn handle(State(app): State<App>, req: Request) -> Response {
    match serve(&app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn caller(
    auth: &Arc<Auth>,
    method: &http::Method,
    headers: &http::HeaderMap,
) -> Result<Identity, ApiError> {
    let who = auth.identify(method, headers).await?;
    match who.method {
        Method::Anonymous => Err(auth.unauthorized("authentication required")),
        Method::ApiKey => Err(ApiError::with_detail(
            ErrorCode::Denied,
            "API keys cannot manage API keys",
        )),
        _ => Ok(who),
    }
}

async fn serve(app: &App, req: Request) -> Result<Response, ApiError> {
    let auth = crate::app::in_force(req.extensions(), app);
    let Some(table) = auth.api_keys.clone() else {
        return Ok((StatusCode::NOT_FOUND, "API keys are not enabled\n").into_response());
    };
    let (parts, body) = req.into_parts();
    let who = caller(&auth, &parts.method, &parts.headers).await?;
    let user = who.user.clone().unwrap_or_default();
    match parts.method {
        http::Method::GET => {
            let keys: Vec<_> = table
                .owned_by(&user)
                .await?
                .iter()
                .map(ApiKey::public_view)
                .collect();
            Ok(json(StatusCode::OK, serde_json::json!({ "apiKeys": keys })))
        }
        http::Method::POST => {
            let ua = parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            let body = read_body(body).await?;
            let request: KeyRequest = serde_json::from_slice(&body).map_err(|e| {
                ApiError::with_detail(ErrorCode::Unsupported, format!("request body: {e}"))
            })?;
            let (mut record, key) = ApiKey::mint(&request, &user, who.groups.clone(), &ua)
                .map_err(|e| ApiError::with_detail(ErrorCode::Unsupported, e.to_string()))?;
            record.minted_by = match who.method {
                Method::Htpasswd => "htpasswd",
                Method::Session => "session",
                _ => "other",
            }
            .into();
            let stored =
                serde_json::to_vec(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
            app.registry
                .put_record(RecordKind::ApiKey, &record.hash, stored.into())
                .await?;
            tracing::info!(user = %user, key = %record.uuid, label = %record.label, "API key created");
            audit(app, "create api key", 201, &who, &parts, &record.uuid);
            let mut view = record.public_view();
            view["apiKey"] = serde_json::Value::String(key);
            Ok(json(StatusCode::CREATED, view))
        }
        http::Method::DELETE => {
            let query = Query::parse(parts.uri.query());
            let id = query.get("id").filter(|i| !i.is_empty()).ok_or_else(|| {
                ApiError::with_detail(ErrorCode::Unsupported, "the id parameter is required")
            })?;
            if let Some(k) = table
                .owned_by(&user)
                .await?
                .into_iter()
                .find(|k| k.uuid == id)
            {
                app.registry
                    .delete_record(RecordKind::ApiKey, &k.hash)
                    .await?;
                tracing::info!(user = %user, key = %k.uuid, "API key revoked");
                audit(app, "revoke api key", 200, &who, &parts, &k.uuid);
            }
            // Like zot: revoking an unknown id is not an error.
            Ok(json(StatusCode::OK, serde_json::json!({})))
        }
        _ => Err(ApiError::from(
            berth_oci::endpoint::RouteError::MethodNotAllowed("GET, POST, DELETE"),
        )),
    }
}

fn audit(
    app: &App,
    action: &str,
    status: u16,
    who: &Identity,
    parts: &http::request::Parts,
    key: &str,
) {
    if let Some(a) = &app.audit {
        let mut e = crate::audit::Event::new(action, status)
            .who(who)
            .from(parts.extensions.get::<crate::audit::Peer>());
        e.reference = Some(key.to_owned());
        a.record(e);
    }
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(ApiError::with_detail(
            ErrorCode::SizeInvalid,
            "request body too large or unreadable",
        )),
    }
}
