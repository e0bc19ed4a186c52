//! OpenID Connect login on zot's endpoints: `GET /zot/auth/login`,
//! `GET /zot/auth/callback/<provider>`, `POST /zot/auth/logout`.
//!
//! Authorization code flow with state, nonce and PKCE. The ID token is
//! verified (signature against the provider's keys, issuer, audience,
//! expiry, nonce); username and groups come from the claims named by
//! `claimMapping`, in the ID token or from userinfo. The provider is
//! discovered on first use, so Berth starts even while the provider is down.

use crate::app::App;
use crate::session::{self, Session, LOGIN_COOKIE};
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use berth_oci::endpoint::Query;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndUserEmail, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse,
    UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Claims beyond the standard ones (`groups`, or whatever `claimMapping`
/// names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extra {
    #[serde(flatten)]
    pub other: HashMap<String, serde_json::Value>,
}
impl AdditionalClaims for Extra {}

type Fields = IdTokenFields<
    Extra,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResp = StandardTokenResponse<Fields, CoreTokenType>;
type OidcClient = Client<
    Extra,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResp,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long a login may take at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);

/// One configured provider.
pub struct Provider {
    pub display_name: String,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    username_claim: String,
    groups_claim: String,
    client: tokio::sync::OnceCell<OidcClient>,
}

/// Every configured provider and what the flow needs.
pub struct Oidc {
    pub providers: BTreeMap<String, Provider>,
    http: reqwest::Client,
    /// `externalUrl` (or the listener's own URL), without a trailing `/`.
    base_url: String,
    /// Origins `callback_ui` may point at besides relative paths.
    allowed_origins: Vec<String>,
}

/// What the login cookie carries across the trip to the provider.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    state: String,
    nonce: String,
    verifier: String,
    callback: String,
}

fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if host.is_empty() || host.contains('@') {
        return None;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(&host).to_owned();
    Some(format!("{scheme}://{host}"))
}

/// Where to send the browser after login: a relative path, or a URL on an
/// allowed origin; anything else (including `//evil`, `\`, CR/LF) is `/`.
pub fn safe_callback(raw: Option<&str>, allowed_origins: &[String]) -> String {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return "/".into();
    };
    // No control characters or spaces at all: browsers strip some of them
    // (`/\t/evil` becomes `//evil`), so none may pass.
    if raw
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        || raw.starts_with("//")
    {
        return "/".into();
    }
    if raw.starts_with('/') {
        return raw.to_owned();
    }
    match origin_of(raw) {
        Some(o)
            if allowed_origins
                .iter()
                .any(|a| origin_of(a).as_deref() == Some(&o)) =>
        {
            raw.to_owned()
        }
        _ => "/".into(),
    }
}

fn claim_string(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_owned).filter(|s| !s.is_empty())
}

fn claim_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(items) => items.iter().filter_map(claim_string).collect(),
        serde_json::Value::String(s) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

impl Oidc {
    pub fn new(cfg: &crate::config::types::OpenId, base_url: &str) -> Result<Oidc, String> {
        let mut providers = BTreeMap::new();
        for (key, p) in &cfg.providers {
            let (mut client_id, mut client_secret) = (p.clientid.clone(), p.clientsecret.clone());
            if let Some(path) = &p.credentials_file {
                #[derive(Deserialize)]
                struct Creds {
                    #[serde(alias = "clientId", alias = "clientid")]
                    client_id: String,
                    #[serde(default, alias = "clientSecret", alias = "clientsecret")]
                    client_secret: Option<String>,
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("openid provider {key}: credentialsFile {path}: {e}"))?;
                let c: Creds = serde_json::from_str(&text)
                    .map_err(|e| format!("openid provider {key}: credentialsFile {path}: {e}"))?;
                client_id = Some(c.client_id);
                client_secret = c.client_secret;
            }
            let issuer = p
                .issuer
                .clone()
                .ok_or_else(|| format!("openid provider {key}: issuer is required"))?;
            let client_id =
                client_id.ok_or_else(|| format!("openid provider {key}: clientid is required"))?;
            let mapping = p.claim_mapping.clone().unwrap_or_default();
            providers.insert(
                key.clone(),
                Provider {
                    display_name: p.name.clone().unwrap_or_else(|| key.clone()),
                    issuer,
                    client_id,
                    client_secret: client_secret.filter(|s| !s.is_empty()),
                    scopes: p.scopes.clone(),
                    username_claim: mapping.username.unwrap_or_else(|| "email".into()),
                    groups_claim: mapping.groups.unwrap_or_else(|| "groups".into()),
                    client: tokio::sync::OnceCell::new(),
                },
            );
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        let mut allowed_origins = cfg.callback_allow_origins.clone();
        allowed_origins.push(base_url.clone());
        Ok(Oidc {
            providers,
            http,
            base_url,
            allowed_origins,
        })
    }

    async fn client(&self, name: &str) -> Result<&OidcClient, String> {
        let p = self
            .providers
            .get(name)
            .ok_or_else(|| format!("unknown provider {name:?}"))?;
        p.client
            .get_or_try_init(|| async {
                let issuer =
                    IssuerUrl::new(p.issuer.clone()).map_err(|e| format!("issuer: {e}"))?;
                let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| format!("discovery of {}: {e}", p.issuer))?;
                let redirect =
                    RedirectUrl::new(format!("{}/zot/auth/callback/{name}", self.base_url))
                        .map_err(|e| e.to_string())?;
                Ok::<_, String>(
                    OidcClient::from_provider_metadata(
                        meta,
                        ClientId::new(p.client_id.clone()),
                        p.client_secret.clone().map(ClientSecret::new),
                    )
                    .set_redirect_uri(redirect),
                )
            })
            .await
    }
}

fn text(status: http::StatusCode, body: &str) -> Response {
    (status, format!("{body}\n")).into_response()
}

fn redirect(to: &str) -> Response {
    let mut r = http::StatusCode::FOUND.into_response();
    if let Ok(v) = http::HeaderValue::from_str(to) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// `GET /zot/auth/login?provider=<name>&callback_ui=<where to return>`.
pub async fn login(State(app): State<App>, req: Request) -> Response {
    let auth = crate::app::in_force(req.extensions(), &app);
    let (Some(oidc), Some(sessions)) = (&auth.oidc, &auth.sessions) else {
        return text(
            http::StatusCode::NOT_FOUND,
            "OpenID login is not configured",
        );
    };
    let query = Query::parse(req.uri().query());
    let name = query.get("provider").unwrap_or("oidc").to_owned();
    let Some(provider) = oidc.providers.get(&name) else {
        return text(http::StatusCode::BAD_REQUEST, "unknown provider");
    };
    let client = match oidc.client(&name).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(provider = %name, error = %e, "OpenID provider unavailable");
            return text(
                http::StatusCode::BAD_GATEWAY,
                "the identity provider is unavailable",
            );
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut auth = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in provider.scopes.iter().filter(|s| s.as_str() != "openid") {
        auth = auth.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = auth.set_pkce_challenge(challenge).url();
    let pending = Pending {
        provider: name,
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        callback: safe_callback(query.get("callback_ui"), &oidc.allowed_origins),
    };
    let value = serde_json::to_string(&pending).unwrap_or_default();
    let mut r = redirect(url.as_str());
    let cookie = session::set_private(
        &sessions.key,
        LOGIN_COOKIE,
        value,
        "/zot/auth/callback",
        LOGIN_TTL,
        sessions.secure,
    );
    r.headers_mut().append(http::header::SET_COOKIE, cookie);
    r
}

/// `GET /zot/auth/callback/<provider>?code=..&state=..`.
pub async fn callback(
    State(app): State<App>,
    Path(name): Path<String>,
    uri: http::Uri,
    headers: http::HeaderMap,
    peer: Option<axum::Extension<crate::audit::Peer>>,
    in_force: Option<axum::Extension<crate::app::InForce>>,
) -> Response {
    let peer = peer.map(|p| p.0);
    let auth = in_force.map_or_else(|| app.current_auth(), |f| f.0 .0);
    let (Some(oidc), Some(sessions)) = (&auth.oidc, &auth.sessions) else {
        return text(
            http::StatusCode::NOT_FOUND,
            "OpenID login is not configured",
        );
    };
    match finish(&auth, oidc, &name, &uri, &headers).await {
        Ok((session, back)) => match sessions.create(&session).await {
            Ok(cookie) => {
                tracing::info!(user = %session.user, provider = %name, "login");
                if let Some(a) = &app.audit {
                    let who = berth_auth::Identity::user(
                        &session.user,
                        session.groups.clone(),
                        berth_auth::Method::Session,
                    );
                    a.record(
                        crate::audit::Event::new("login", 302)
                            .who(&who)
                            .from(peer.as_ref()),
                    );
                }
                let mut r = redirect(&back);
                r.headers_mut().append(http::header::SET_COOKIE, cookie);
                r.headers_mut().append(
                    http::header::SET_COOKIE,
                    session::clear(LOGIN_COOKIE, "/zot/auth/callback"),
                );
                r
            }
            Err(e) => crate::error::ApiError::from(e).into_response(),
        },
        Err(e) => {
            tracing::info!(provider = %name, reason = %e, "login refused");
            if let Some(a) = &app.audit {
                a.record(crate::audit::Event::new("login", 401).from(peer.as_ref()));
            }
            if !auth.fail_delay.is_zero() {
                tokio::time::sleep(auth.fail_delay).await;
            }
            let mut r = text(http::StatusCode::UNAUTHORIZED, "login failed");
            r.headers_mut().append(
                http::header::SET_COOKIE,
                session::clear(LOGIN_COOKIE, "/zot/auth/callback"),
            );
            r
        }
    }
}

async fn finish(
    auth: &crate::auth::Auth,
    oidc: &Oidc,
    name: &str,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Result<(Session, String), String> {
    let sessions = auth
        .sessions
        .as_ref()
        .ok_or("sessions are not configured")?;
    let query = Query::parse(uri.query());
    if let Some(err) = query.get("error") {
        return Err(format!("provider answered {err}"));
    }
    let raw = session::private_value(headers, &sessions.key, LOGIN_COOKIE)
        .ok_or("no login in progress")?;
    let pending: Pending = serde_json::from_str(&raw).map_err(|_| "bad login cookie")?;
    let state = query.get("state").unwrap_or("");
    if pending.provider != name || !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
        return Err("state does not match".into());
    }
    let code = query
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or("no code")?;
    let provider = oidc.providers.get(name).ok_or("unknown provider")?;
    let client = oidc.client(name).await?;
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| e.to_string())?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&oidc.http)
        .await
        .map_err(|e| format!("code exchange: {e}"))?;
    let id_token = token.id_token().ok_or("no ID token")?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
        .map_err(|e| format!("ID token: {e}"))?;
    let mut extra = claims.additional_claims().other.clone();
    let mut user = standard_claim(
        &provider.username_claim,
        claims.subject().as_str(),
        verified(claims.email(), claims.email_verified()),
        claims.preferred_username().map(|u| u.as_str()),
    );
    if let Ok(request) =
        client.user_info(token.access_token().clone(), Some(claims.subject().clone()))
    {
        if let Ok(info) = request.request_async(&oidc.http).await {
            let info: UserInfoClaims<Extra, CoreGenderClaim> = info;
            for (k, v) in &info.additional_claims().other {
                extra.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if user.is_none() {
                user = standard_claim(
                    &provider.username_claim,
                    info.subject().as_str(),
                    verified(info.email(), info.email_verified()),
                    info.preferred_username().map(|u| u.as_str()),
                );
            }
        }
    }
    let user = user
        .or_else(|| extra.get(&provider.username_claim).and_then(claim_string))
        .ok_or_else(|| match provider.username_claim.as_str() {
            "email" => "no email the provider says it verified (email_verified); \
                        claimMapping.username may name another claim"
                .to_owned(),
            other => format!("no {other} claim"),
        })?;
    let mut groups = extra
        .get(&provider.groups_claim)
        .map(claim_list)
        .unwrap_or_default();
    groups.sort();
    groups.dedup();
    let session = Session {
        user,
        groups,
        provider: name.to_owned(),
        expires: session::now() + session::SESSION_TTL.as_secs(),
    };
    // Checked again on the way out: whoever holds the cookie key could
    // have written any callback into the login cookie.
    let callback = safe_callback(Some(&pending.callback), &oidc.allowed_origins);
    Ok((session, callback))
}

/// An email as a user name only when the provider says it verified it:
/// else anyone who may type an address at the provider could log in as its
/// owner (policies and key ownership match on the name).
fn verified(email: Option<&EndUserEmail>, verified: Option<bool>) -> Option<&str> {
    email.filter(|_| verified == Some(true)).map(|e| e.as_str())
}

fn standard_claim(
    which: &str,
    sub: &str,
    email: Option<&str>,
    preferred: Option<&str>,
) -> Option<String> {
    match which {
        "sub" => Some(sub.to_owned()),
        "email" => email.map(str::to_owned),
        "preferred_username" => preferred.map(str::to_owned),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// `POST /zot/auth/logout`: ends the session.
pub async fn logout(State(app): State<App>, req: Request) -> Response {
    let auth = crate::app::in_force(req.extensions(), &app);
    let Some(sessions) = &auth.sessions else {
        return text(http::StatusCode::NOT_FOUND, "sessions are not configured");
    };
    // A state change a cookie authenticates: the marker is required, as
    // for every other (a page of another origin could end the session).
    if !crate::auth::marked_request(req.headers()) {
        return text(
            http::StatusCode::FORBIDDEN,
            "logout needs the X-Berth-Request header",
        );
    }
    if let (Some(a), Some(s)) = (&app.audit, sessions.lookup(req.headers()).await) {
        let who = berth_auth::Identity::user(&s.user, s.groups, berth_auth::Method::Session);
        a.record(
            crate::audit::Event::new("logout", 200)
                .who(&who)
                .from(req.extensions().get::<crate::audit::Peer>()),
        );
    }
    let clear = sessions.end(req.headers()).await;
    let mut r = (http::StatusCode::OK, "{}").into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().append(http::header::SET_COOKIE, clear);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_open_redirects() {
        let allowed = vec!["https://ui.example.test".to_owned()];
        assert_eq!(safe_callback(Some("/home?x=1"), &allowed), "/home?x=1");
        assert_eq!(
            safe_callback(Some("https://ui.example.test/after"), &allowed),
            "https://ui.example.test/after"
        );
        assert_eq!(
            safe_callback(Some("https://UI.example.test:443/x"), &allowed),
            "https://UI.example.test:443/x"
        );
        for bad in [
            "//evil.test/x",
            "/\\evil.test",
            "https://evil.test/",
            "javascript:alert(1)",
            "https://ui.example.test.evil.test/",
            "https://user@ui.example.test/",
            "/x\r\nSet-Cookie: a=b",
            "relative",
            "/\t/evil.test",
            "/ /evil.test",
            "/\u{0b}/evil.test",
        ] {
            assert_eq!(safe_callback(Some(bad), &allowed), "/", "{bad}");
        }
        assert_eq!(safe_callback(None, &allowed), "/");
    }
}
