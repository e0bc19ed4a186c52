//! The page to land on: who you are, log in with the configured provider,
//! and list, create and revoke your API keys. Server-rendered HTML with a
//! small script served from the same origin (no inline script, so a strict
//! Content-Security-Policy holds).

use crate::app::App;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Berth</title>\
<meta name=viewport content=\"width=device-width\">\
<style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}\
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}}\
code{{background:#f3f3f3;padding:.1rem .3rem;word-break:break-all}}.key{{font-size:1.1rem}}</style></head>\
<body><h1>Berth</h1>{body}</body></html>"
    );
    let mut r = (StatusCode::OK, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /`.
pub async fn index(State(app): State<App>, req: Request) -> Response {
    let auth = crate::app::in_force(req.extensions(), &app);
    let session = match &auth.sessions {
        Some(s) => s.lookup(req.headers()).await,
        None => None,
    };
    match session {
        Some(s) => {
            let groups = if s.groups.is_empty() {
                "none".to_owned()
            } else {
                escape(&s.groups.join(", "))
            };
            page(&format!(
                "<p id=whoami>Signed in as <b>{}</b> (groups: {groups}). <button id=logout>Log out</button></p>\
<h2>API keys</h2><p>Use a key as the password with your user name: <code>docker login -u {} --password-stdin</code>.</p>\
<form id=create><label>Label <input name=label required maxlength=100></label> \
<label>Scopes <input name=scopes placeholder=\"repository:ci/**:read,create\" size=30></label> \
<label>Expires in days <input name=days type=number min=1 max=3650></label> <button>Create key</button></form>\
<p id=newkey></p><table><thead><tr><th>Label</th><th>Scopes</th><th>Created</th><th>Expires</th><th></th></tr></thead>\
<tbody id=keys></tbody></table><script src=\"/ui/app.js\"></script>",
                escape(&s.user),
                escape(&s.user)
            ))
        }
        None => {
            let buttons: String = match &auth.oidc {
                Some(oidc) => oidc
                    .providers
                    .iter()
                    .map(|(key, p)| {
                        let href = format!(
                            "/zot/auth/login?provider={}&callback_ui=/",
                            form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
                        );
                        format!(
                            "<p><a class=login href=\"{}\">Log in with {}</a></p>",
                            escape(&href),
                            escape(&p.display_name)
                        )
                    })
                    .collect(),
                None => "<p>Browser login is not configured on this registry.</p>".into(),
            };
            page(&format!("<p>An OCI registry. Pull anonymously where allowed; log in to manage API keys.</p>{buttons}"))
        }
    }
}

const APP_JS: &str = r#"'use strict';
const H = {'X-Berth-Request': '1'};
function cell(text) { const td = document.createElement('td'); td.textContent = text ?? ''; return td; }
async function load() {
  const r = await fetch('/zot/auth/apikey', {headers: H, credentials: 'same-origin'});
  const body = document.getElementById('keys');
  body.replaceChildren();
  if (!r.ok) { body.append(cell('could not list keys: ' + r.status)); return; }
  for (const k of (await r.json()).apiKeys) {
    const tr = document.createElement('tr');
    tr.append(cell(k.label), cell((k.scopes || []).join(' ') || 'all of yours'), cell(k.createdAt),
              cell(k.isExpired ? 'expired' : (k.expirationDate || 'never')));
    const b = document.createElement('button'); b.textContent = 'Revoke';
    b.onclick = async () => { await fetch('/zot/auth/apikey?id=' + encodeURIComponent(k.uuid), {method: 'DELETE', headers: H, credentials: 'same-origin'}); load(); };
    const td = document.createElement('td'); td.append(b); tr.append(td);
    body.append(tr);
  }
}
document.getElementById('create').onsubmit = async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const req = {label: f.get('label'), scopes: String(f.get('scopes') || '').split(/[\s,]+/).filter(s => s.includes(':'))};
  const days = Number(f.get('days'));
  if (days > 0) req.expirationDate = new Date(Date.now() + days * 86400000).toISOString().replace(/\.\d+Z$/, 'Z');
  const r = await fetch('/zot/auth/apikey', {method: 'POST', headers: {...H, 'Content-Type': 'application/json'}, credentials: 'same-origin', body: JSON.stringify(req)});
  const out = document.getElementById('newkey');
  if (r.ok) {
    const k = await r.json();
    out.replaceChildren('New key (shown once): ');
    const c = document.createElement('code'); c.className = 'key'; c.id = 'secret'; c.textContent = k.apiKey; out.append(c);
    e.target.reset();
  } else {
    out.textContent = 'Could not create the key: ' + (await r.text());
  }
  load();
};
document.getElementById('logout').onclick = async () => {
  await fetch('/zot/auth/logout', {method: 'POST', headers: H, credentials: 'same-origin'});
  location.href = '/';
};
load();
"#;

/// `GET /ui/app.js`.
pub async fn script() -> Response {
    let mut r = (StatusCode::OK, APP_JS).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
