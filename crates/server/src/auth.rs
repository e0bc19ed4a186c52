//! Authentication and the one authorization decision of each request.
//!
//! [`Auth::identify`] turns the `Authorization` header into an
//! [`Identity`] (htpasswd, then API key; no header means anonymous).
//! [`Auth::authorize`] maps an endpoint to the actions it needs (a manifest
//! PUT to an existing tag is `update`, so `read`+`create` means immutable
//! tags) and asks the policy once, before any handler runs.

use crate::config::types::{AccessControl, Policy as PolicyConfig};
use crate::config::Settings;
use crate::error::ApiError;
use berth_auth::apikey::{self, ApiKey};
use berth_auth::basic::{self, Presented};
use berth_auth::htpasswd::Htpasswd;
use berth_auth::policy::{PolicySpec, RepoSpec, RuleSpec};
use berth_auth::{Action, Identity, Method, Policy};
use berth_core::accounts::RecordKind;
use berth_core::manifests::TagWrite;
use berth_core::Registry;
use berth_oci::endpoint::{tag_params, Query};
use berth_oci::{Endpoint, ErrorCode, Reference, RepoName};
use http::{header, HeaderMap};
use std::sync::Arc;
use std::time::Duration;

/// A refused request, with the identity it proved (if any): the audit trail
/// records refusals under who asked, not as unauthenticated.
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub identity: Option<Identity>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused {
            error,
            identity: None,
        }
    }
}

/// The tag zot lets `create` move (its authorization exempts it from
/// `update`).
pub const LATEST: &str = "latest";

/// What the authorization step hands to the handler.
#[derive(Debug, Clone)]
pub struct Access {
    pub identity: Identity,
    /// Whether a mount without `from` may take the blob from any repository
    /// (only when nothing is access-controlled).
    pub mount_anywhere: bool,
    /// Whether a mount's `from` repository is readable by the caller; when
    /// not, the mount is ignored and a plain upload session opened.
    pub mount_source_readable: bool,
    /// How a manifest PUT may write its tag: a caller without `update`
    /// only creates it, and the store decides which racing push was first.
    pub tag_write: TagWrite,
}

/// API keys by hash, read from the registry's store at every use: no copy
/// is kept, so a key revoked or minted on one replica is refused or
/// accepted on every other at once (one indexed read per request that
/// presents a key).
pub struct KeyTable {
    registry: Registry,
}

impl KeyTable {
    pub fn new(registry: &Registry) -> KeyTable {
        KeyTable {
            registry: registry.clone(),
        }
    }

    /// The key with this hash, if one is stored (an unreadable record is
    /// logged and treated as absent).
    pub async fn get(&self, hash: &str) -> Result<Option<ApiKey>, berth_core::CoreError> {
        let Some(raw) = self.registry.get_record(RecordKind::ApiKey, hash).await? else {
            return Ok(None);
        };
        Ok(parse_key(&raw))
    }

    /// The keys of one owner, oldest first.
    pub async fn owned_by(&self, owner: &str) -> Result<Vec<ApiKey>, berth_core::CoreError> {
        let mut keys: Vec<ApiKey> = self
            .registry
            .records(RecordKind::ApiKey)
            .await?
            .iter()
            .filter_map(|raw| parse_key(raw))
            .filter(|k| k.owner == owner)
            .collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.uuid.cmp(&b.uuid))
        });
        Ok(keys)
    }
}

fn parse_key(raw: &[u8]) -> Option<ApiKey> {
    serde_json::from_slice::<ApiKey>(raw)
        .inspect_err(|e| tracing::warn!(error = %e, "unreadable API key record skipped"))
        .ok()
}

/// The authentication configuration in force.
pub struct Auth {
    /// Some authentication method is active: anonymous callers are limited
    /// by the policy.
    pub enabled: bool,
    pub policy: Policy,
    pub htpasswd: Option<Htpasswd>,
    pub api_keys: Option<Arc<KeyTable>>,
    pub realm: String,
    pub fail_delay: Duration,
    /// OpenID Connect providers, when configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// Only unsupported methods are configured: refuse every request.
    pub fail_closed: bool,
    /// Browser sessions (with OpenID).
    pub sessions: Option<Arc<crate::session::Sessions>>,
}

fn rule(p: &PolicyConfig) -> RuleSpec {
    RuleSpec {
        users: p.users.clone(),
        groups: p.groups.clone(),
        actions: p.actions.clone(),
    }
}

/// zot's `accessControl` in the policy engine's terms.
pub fn policy_spec(ac: &AccessControl) -> PolicySpec {
    PolicySpec {
        repositories: ac
            .repositories
            .iter()
            .map(|(pattern, r)| RepoSpec {
                pattern: pattern.clone(),
                policies: r.policies.iter().map(rule).collect(),
                default_policy: r.default_policy.clone(),
                anonymous_policy: r.anonymous_policy.clone(),
            })
            .collect(),
        admin: ac.admin_policy.as_ref().map(rule),
        groups: ac
            .groups
            .iter()
            .map(|(g, m)| (g.clone(), m.users.clone()))
            .collect(),
        metrics_users: ac
            .metrics
            .as_ref()
            .map(|m| m.users.clone())
            .unwrap_or_default(),
        metrics_anonymous: ac
            .metrics
            .as_ref()
            .map(|m| m.anonymous_policy.clone())
            .unwrap_or_default(),
    }
}

impl Auth {
    /// No authentication: everything is open (the embedded default).
    pub fn open() -> Auth {
        Auth {
            enabled: false,
            policy: Policy::open(),
            htpasswd: None,
            api_keys: None,
            realm: "berth".into(),
            fail_delay: Duration::ZERO,
            oidc: None,
            sessions: None,
            fail_closed: false,
        }
    }

    /// Builds the authentication in force from the settings; loads the
    /// htpasswd file and the stored API keys.
    /// `base_url` is `http.externalUrl` or the listener's own URL.
    pub async fn from_settings(
        s: &Settings,
        registry: &Registry,
        base_url: &str,
    ) -> Result<Auth, String> {
        let enabled = s.auth.is_some() || s.access_control.is_some();
        if !enabled {
            return Ok(Auth {
                realm: s.realm.clone(),
                ..Auth::open()
            });
        }
        let policy = match &s.access_control {
            Some(ac) => {
                Policy::new(&policy_spec(ac)).map_err(|e| format!("http.accessControl: {e}"))?
            }
            None => Policy::authenticated_only(),
        };
        let a = s.auth.clone().unwrap_or_default();
        let htpasswd = match a.htpasswd.as_ref().and_then(|h| h.path.as_ref()) {
            Some(path) => Some(
                Htpasswd::open(path).map_err(|e| format!("http.auth.htpasswd.path {path}: {e}"))?,
            ),
            None => None,
        };
        // zot turns API keys on whenever OpenID is configured.
        let api_keys = if a.apikey == Some(true) || a.openid.is_some() {
            Some(Arc::new(KeyTable::new(registry)))
        } else {
            None
        };
        let (oidc, sessions) = match &a.openid {
            Some(cfg) => {
                let key = crate::session::cookie_key_for(a.session_keys_file.as_deref(), registry)
                    .await?;
                let secure = s.tls.is_some()
                    || a.secure_session == Some(true)
                    || base_url.starts_with("https://");
                let oidc = Arc::new(crate::oidc::Oidc::new(cfg, base_url)?);
                (
                    Some(oidc),
                    Some(Arc::new(crate::session::Sessions::new(
                        key,
                        secure,
                        registry.clone(),
                    ))),
                )
            }
            None => (None, None),
        };
        Ok(Auth {
            enabled,
            policy,
            htpasswd,
            api_keys,
            realm: s.realm.clone(),
            fail_delay: Duration::from_secs(a.fail_delay.unwrap_or(0)),
            oidc,
            sessions,
            fail_closed: s.auth_unsupported,
        })
    }

    fn challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm.replace(['"', '\\'], ""))
    }

    /// 401 with a challenge.
    pub fn unauthorized(&self, detail: &str) -> ApiError {
        ApiError::with_detail(ErrorCode::Unauthorized, detail)
            .header(header::WWW_AUTHENTICATE, self.challenge())
    }

    async fn fail(&self, e: ApiError) -> ApiError {
        if !self.fail_delay.is_zero() {
            tokio::time::sleep(self.fail_delay).await;
        }
        e
    }

    /// Who the request is from. Bad or unknown credentials are refused, never
    /// downgraded to anonymous.
    pub async fn identify(
        self: &Arc<Self>,
        method: &http::Method,
        headers: &HeaderMap,
    ) -> Result<Identity, ApiError> {
        if !self.enabled {
            return Ok(Identity::anonymous());
        }
        if headers.get(header::AUTHORIZATION).is_none() {
            if let Some(s) = self.session_identity(method, headers).await {
                return Ok(s);
            }
        }
        let presented = match basic::parse(
            headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes()),
        ) {
            Ok(p) => p,
            Err(e) => return Err(self.fail(self.unauthorized(&e.to_string())).await),
        };
        let (user, password) = match presented {
            Presented::None => return Ok(Identity::anonymous()),
            Presented::Bearer(_) => {
                return Err(self
                    .fail(self.unauthorized("bearer tokens are not accepted"))
                    .await)
            }
            Presented::Basic { user, password } => (user, password),
        };
        // An API key is recognised by its prefix and looked up by hash
        // first: cheap, and it spares a password check that must fail.
        if let (Some(keys), Some(hash)) = (&self.api_keys, apikey::hash_of(&password)) {
            let found = keys.get(&hash).await.unwrap_or_else(|e| {
                // Refused below like a wrong key, never let through.
                tracing::error!(error = %e, "cannot read the API key store");
                None
            });
            if let Some(k) = found {
                // A key minted with a password lives only as long as that
                // password's user, and acts with today's static groups.
                let by_password = k.minted_by == "htpasswd";
                let owner_gone =
                    by_password && !self.htpasswd.as_ref().is_some_and(|h| h.has_user(&user));
                if k.owner == user && !k.is_expired() && !owner_gone {
                    let groups = if by_password {
                        self.policy.static_groups(&user)
                    } else {
                        k.groups.clone()
                    };
                    let mut id = Identity::user(&user, groups, Method::ApiKey);
                    id.scopes = k.parsed_scopes();
                    return Ok(id);
                }
            }
        }
        if let Some(h) = &self.htpasswd {
            // Unknown users are checked against a decoy hash inside verify,
            // so the answer takes as long whether or not the user exists.
            let ok = h.cached(&user, &password) || {
                let me = self.clone();
                let (u, p) = (user.clone(), password.clone());
                tokio::task::spawn_blocking(move || {
                    me.htpasswd.as_ref().is_some_and(|h| h.verify(&u, &p))
                })
                .await
                .unwrap_or(false)
            };
            if ok {
                let groups = self.policy.static_groups(&user);
                return Ok(Identity::user(&user, groups, Method::Htpasswd));
            }
        }
        Err(self.fail(self.unauthorized("invalid credentials")).await)
    }

    /// The browser session of a request. A cookie alone authenticates safe
    /// methods; anything else must also carry `X-Berth-Request` (or zot's
    /// UI header), which a cross-site form cannot send.
    async fn session_identity(
        &self,
        method: &http::Method,
        headers: &HeaderMap,
    ) -> Option<Identity> {
        let sessions = self.sessions.as_ref()?;
        let safe = method == http::Method::GET || method == http::Method::HEAD;
        if !safe && !marked_request(headers) {
            return None;
        }
        let s = sessions.lookup(headers).await?;
        // A provider taken out of the configuration (compromised, say)
        // takes its sessions with it.
        let configured = self
            .oidc
            .as_ref()
            .is_some_and(|o| o.providers.contains_key(&s.provider));
        configured.then(|| Identity::user(&s.user, s.groups, Method::Session))
    }

    /// Refuses `who` doing `action` on `repo` unless the policy allows it.
    pub async fn require(
        &self,
        who: &Identity,
        action: Action,
        repo: &str,
    ) -> Result<(), ApiError> {
        let d = self.policy.decide(who, action, repo);
        if d.allowed {
            return Ok(());
        }
        tracing::debug!(user = ?who.user, %action, repo, reason = %d.reason, "denied");
        Err(self.fail(self.refusal(who, action, repo)).await)
    }

    /// The answer to `who` not being allowed `action` on `repo`: 401 with a
    /// challenge for anonymous callers, 403 DENIED for everyone else.
    pub fn refusal(&self, who: &Identity, action: Action, repo: &str) -> ApiError {
        if who.is_anonymous() {
            self.unauthorized("authentication required")
        } else {
            ApiError::with_detail(
                ErrorCode::Denied,
                format!("{action} on {repo} is not allowed"),
            )
            .header(header::WWW_AUTHENTICATE, self.challenge())
        }
    }

    /// The single authorization decision for a `/v2` request.
    pub async fn authorize(
        self: &Arc<Self>,
        registry: &Registry,
        ep: &Endpoint,
        query: &Query,
        method: &http::Method,
        headers: &HeaderMap,
    ) -> Result<Access, Refused> {
        let identity = self.identify(method, headers).await?;
        self.decide(registry, ep, query, identity)
            .await
            .map_err(|(error, identity)| Refused {
                error,
                identity: Some(identity),
            })
    }

    /// The decision for a caller already identified.
    async fn decide(
        self: &Arc<Self>,
        registry: &Registry,
        ep: &Endpoint,
        query: &Query,
        identity: Identity,
    ) -> Result<Access, (ApiError, Identity)> {
        let access = |identity| Access {
            identity,
            mount_anywhere: !self.enabled,
            mount_source_readable: true,
            tag_write: TagWrite::Overwrite,
        };
        let repo = match ep {
            // The base endpoint only tells a client whether to log in: when
            // some repository needs credentials, an anonymous caller is
            // challenged so `docker login` and pushes work in mixed setups.
            Endpoint::Base => {
                if self.enabled && identity.is_anonymous() && self.policy.needs_credentials() {
                    return Err((self.unauthorized("authentication required"), identity));
                }
                return Ok(access(identity));
            }
            // Filtered by what the caller may read, never refused.
            Endpoint::Catalog => return Ok(access(identity)),
            other => other
                .repo()
                .map(RepoName::as_str)
                .unwrap_or_default()
                .to_owned(),
        };
        let action = match ep {
            // As in zot, `latest` is exempt: re-pushing it needs only
            // `create`, so CI that moves `:latest` keeps working.
            Endpoint::PutManifest {
                repo: r,
                reference: Reference::Tag(t),
            } if t.as_str() != LATEST => {
                let exists = match registry.tag_target(r, t).await {
                    Ok(target) => target.is_some(),
                    Err(e) => return Err((e.into(), identity)),
                };
                if exists {
                    Action::Update
                } else {
                    Action::Create
                }
            }
            // A push by digest may also tag (`?tag=`): moving a tag that
            // exists needs `update` as well ("latest" exempt, as above).
            // Malformed tag parameters are refused by the handler before
            // anything is written.
            Endpoint::PutManifest {
                repo: r,
                reference: Reference::Digest(_),
            } => {
                let tags = tag_params(query).unwrap_or_default();
                for t in tags.iter().filter(|t| t.as_str() != LATEST) {
                    match registry.tag_target(r, t).await {
                        Ok(None) => {}
                        Ok(Some(_)) => {
                            if let Err(e) = self.require(&identity, Action::Update, &repo).await {
                                return Err((e, identity));
                            }
                            break;
                        }
                        Err(e) => return Err((e.into(), identity)),
                    }
                }
                Action::Create
            }
            Endpoint::DeleteManifest { .. }
            | Endpoint::DeleteBlob { .. }
            | Endpoint::CancelUpload { .. } => Action::Delete,
            Endpoint::StartUpload { .. }
            | Endpoint::PatchUpload { .. }
            | Endpoint::FinishUpload { .. } => Action::Create,
            _ => Action::Read,
        };
        if let Err(e) = self.require(&identity, action, &repo).await {
            return Err((e, identity));
        }
        let mut granted = access(identity);
        // The tag looked new a moment ago; a caller who may not update it
        // must not win by racing another push to it: create-once.
        // For the `tag` parameters of a push by digest, `tag_write` is what
        // applies to each tag but "latest".
        if let Endpoint::PutManifest { reference, .. } = ep {
            let may_update = self
                .policy
                .decide(&granted.identity, Action::Update, &repo)
                .allowed;
            let exempt = matches!(reference, Reference::Tag(t) if t.as_str() == LATEST);
            if !exempt && !may_update {
                granted.tag_write = TagWrite::CreateOnly;
            }
        }
        // A mount also reads its source; without that right the client just
        // uploads the blob (no error, no hint whether the source has it).
        if let (Endpoint::StartUpload { .. }, Some(_), Some(from)) =
            (ep, query.get("mount"), query.get("from"))
        {
            granted.mount_source_readable = self
                .policy
                .decide(&granted.identity, Action::Read, from)
                .allowed;
        }
        Ok(granted)
    }
}

/// Whether a browser request carries `X-Berth-Request` (or zot's UI
/// header): a cross-site form cannot send one, so a state-changing request
/// that a cookie authenticates must.
pub fn marked_request(headers: &HeaderMap) -> bool {
    headers.contains_key("x-berth-request")
        || headers
            .get("x-zot-api-client")
            .is_some_and(|v| v.as_bytes() == b"zot-ui")
}
