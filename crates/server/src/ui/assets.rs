//! The one style sheet and the one script, compiled into the binary and
//! served from the same origin (the Content-Security-Policy allows nothing
//! else). Light and dark themes follow `prefers-color-scheme`.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

const CSS: &str = r#":root{--bg:#fbfbfd;--fg:#1c1e21;--muted:#595f69;--line:#d9dce1;--card:#fff;--accent:#0b57d0;--accent-fg:#fff;--code:#eef0f4;--add:#0a6b2c;--del:#b3261e;--shared:#4a5568;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#111318;--fg:#e6e8ec;--muted:#a3aab5;--line:#2f343d;--card:#181b21;--accent:#8ab4f8;--accent-fg:#0b1020;--code:#232730;--add:#7ddc9a;--del:#f4a29b;--shared:#b8c0cc}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,summary:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.skip{position:absolute;left:-999px;top:0;background:var(--accent);color:var(--accent-fg);padding:.5rem 1rem;z-index:2}
.skip:focus{left:0}
.visually-hidden{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
header.top{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center;justify-content:space-between;padding:.6rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
header.top nav{display:flex;gap:1rem;align-items:baseline;flex-wrap:wrap}
header.top nav a{text-decoration:none;font-weight:500}
header.top nav a.brand{font-weight:700;font-size:1.2rem;color:var(--fg)}
.who{display:flex;gap:.5rem 1rem;flex-wrap:wrap;align-items:center}
main{max-width:72rem;margin:0 auto;padding:1rem}
main:focus{outline:none}
h1{font-size:1.6rem;margin:.6rem 0 1rem;word-break:break-word}
h2{font-size:1.2rem;margin:1.6rem 0 .6rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem}
.muted{color:var(--muted);font-weight:normal}
.crumbs{font-size:.9rem;color:var(--muted)}
form.bar{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:.5rem 0 1rem}
input,select,button{font:inherit;color:inherit;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.35rem .6rem;min-height:2.25rem}
input[type=search]{min-width:min(20rem,100%)}
button{cursor:pointer;background:var(--code)}
button[type=submit],#delete-tag{background:var(--accent);color:var(--accent-fg);border-color:var(--accent)}
button.danger{background:var(--del);color:var(--bg);border-color:var(--del)}
button.copy,button.delete{min-height:1.8rem;padding:.1rem .5rem;font-size:.85rem}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:8px;background:var(--card)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .7rem;border-bottom:1px solid var(--line);vertical-align:top}
tbody tr:last-child th,tbody tr:last-child td{border-bottom:0}
thead th{font-size:.85rem;color:var(--muted);font-weight:600;white-space:nowrap}
tbody th{font-weight:500}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
code{background:var(--code);padding:.05rem .3rem;border-radius:4px;overflow-wrap:anywhere}
code.digest,td time{white-space:nowrap}
pre{background:var(--code);padding:1rem;border-radius:8px;overflow:auto;max-height:32rem}
pre code{background:none;padding:0}
.cmd{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
.cmd code{padding:.3rem .5rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;min-width:0;word-break:break-word}
@media (max-width:40rem){dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:.4rem}}
ul.plain{list-style:none;padding:0}
ul.plain li{margin:.2rem 0}
ol.history li{margin:.3rem 0}
.pages{display:flex;gap:1rem;margin:1rem 0}
.empty{padding:1rem;color:var(--muted)}
.badge{display:inline-block;padding:0 .5rem;border-radius:999px;border:1px solid currentColor;font-size:.85rem}
tr.added .badge{color:var(--add)}
tr.removed .badge{color:var(--del)}
tr.shared .badge{color:var(--shared)}
details{margin:1rem 0}
summary{cursor:pointer;font-weight:600}
dialog{border:1px solid var(--line);border-radius:10px;background:var(--card);color:var(--fg);max-width:34rem}
dialog::backdrop{background:rgba(0,0,0,.45)}
dialog .actions{display:flex;flex-wrap:wrap;gap:.5rem}
.key{font-size:1.05rem}
"#;

const JS: &str = r#"'use strict';
// Berth's only script. Pages work without it; it adds search as you type,
// copy buttons, deletes with a confirmation, and API key management.
const H = {'X-Berth-Request': '1'};
const $ = (s, r = document) => r.querySelector(s);
function say(text) { const s = $('#status'); if (s) { s.textContent = ''; setTimeout(() => { s.textContent = text; }, 30); } }

function wireCopy(root) {
  for (const b of root.querySelectorAll('button.copy')) {
    b.hidden = false;
    b.onclick = async () => {
      const text = b.dataset.copy;
      try { await navigator.clipboard.writeText(text); }
      catch (e) {
        const t = document.createElement('textarea'); t.value = text; document.body.append(t); t.select();
        document.execCommand('copy'); t.remove();
      }
      b.textContent = 'Copied'; say('Copied to the clipboard');
      setTimeout(() => { b.textContent = 'Copy'; }, 1500);
    };
  }
}

let pending = null;
function wireDelete(root) {
  const dialog = $('#confirm');
  if (!dialog) return;
  for (const b of root.querySelectorAll('button.delete')) {
    b.hidden = false;
    b.onclick = () => {
      pending = b.dataset;
      $('#confirm-text').textContent = `Delete tag “${b.dataset.tag}” of ${b.dataset.repo}? Deleting the manifest (${b.dataset.digest.slice(0, 19)}…) removes every tag pointing at it. This cannot be undone.`;
      $('#confirm-error').textContent = '';
      dialog.showModal();
      $('#delete-cancel').focus();
    };
  }
}

async function doDelete(byDigest) {
  if (!pending) return;
  const ref = byDigest ? pending.digest : pending.tag;
  // Tags and digests need no escaping in a path (and /v2 takes them as is).
  const path = '/v2/' + pending.repo + '/manifests/' + ref;
  const r = await fetch(path, {method: 'DELETE', headers: H, credentials: 'same-origin'});
  if (r.ok) {
    $('#confirm').close(); say('Deleted');
    // The repository may be gone with its last manifest: back to the list.
    if (!(await refresh(location.href))) location.href = '/';
  }
  else { $('#confirm-error').textContent = 'Could not delete: ' + r.status + ' ' + (await r.text()).slice(0, 200); }
}

async function refresh(url) {
  const r = await fetch(url, {credentials: 'same-origin'});
  if (!r.ok) return false;
  const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
  const fresh = doc.getElementById('results'), old = $('#results');
  if (fresh && old) { old.replaceWith(fresh); wire(fresh); }
  return true;
}

function wireLive() {
  for (const form of document.querySelectorAll('form[data-live]')) {
    let timer = null;
    const go = () => {
      const params = new URLSearchParams(new FormData(form));
      const url = form.getAttribute('action') + '?' + params.toString();
      history.replaceState(null, '', url);
      refresh(url).then(() => {
        const n = $('#results tbody') ? $('#results tbody').rows.length : 0;
        say(n + ' results');
      });
    };
    form.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(go, 150); });
    form.addEventListener('submit', (e) => { e.preventDefault(); clearTimeout(timer); go(); });
  }
}

function wire(root) { wireCopy(root); wireDelete(root); }

function cell(text) { const td = document.createElement('td'); td.textContent = text ?? ''; return td; }
async function loadKeys() {
  const r = await fetch('/zot/auth/apikey', {headers: H, credentials: 'same-origin'});
  const body = $('#keys');
  body.replaceChildren();
  if (!r.ok) { body.append(cell('could not list keys: ' + r.status)); return; }
  for (const k of (await r.json()).apiKeys) {
    const tr = document.createElement('tr');
    tr.append(cell(k.label), cell((k.scopes || []).join(' ') || 'all of yours'), cell(k.createdAt),
              cell(k.isExpired ? 'expired' : (k.expirationDate || 'never')));
    const b = document.createElement('button'); b.type = 'button'; b.textContent = 'Revoke';
    b.setAttribute('aria-label', 'Revoke key ' + k.label);
    b.onclick = async () => { await fetch('/zot/auth/apikey?id=' + encodeURIComponent(k.uuid), {method: 'DELETE', headers: H, credentials: 'same-origin'}); say('Key revoked'); loadKeys(); };
    const td = document.createElement('td'); td.append(b); tr.append(td);
    body.append(tr);
  }
}

function wireAccount() {
  const create = $('#create');
  if (create) {
    create.onsubmit = async (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const req = {label: f.get('label'), scopes: String(f.get('scopes') || '').split(/[\s,]+/).filter(s => s.includes(':'))};
      const days = Number(f.get('days'));
      if (days > 0) req.expirationDate = new Date(Date.now() + days * 86400000).toISOString().replace(/\.\d+Z$/, 'Z');
      const r = await fetch('/zot/auth/apikey', {method: 'POST', headers: {...H, 'Content-Type': 'application/json'}, credentials: 'same-origin', body: JSON.stringify(req)});
      const out = $('#newkey');
      if (r.ok) {
        const k = await r.json();
        out.replaceChildren('New key (shown once): ');
        const c = document.createElement('code'); c.className = 'key'; c.id = 'secret'; c.textContent = k.apiKey; out.append(c);
        e.target.reset();
      } else {
        out.textContent = 'Could not create the key: ' + (await r.text());
      }
      loadKeys();
    };
    loadKeys();
  }
  const logout = $('#logout');
  if (logout) {
    logout.hidden = false;
    logout.onclick = async () => {
      await fetch('/zot/auth/logout', {method: 'POST', headers: H, credentials: 'same-origin'});
      location.href = '/ui/account';
    };
  }
}

document.addEventListener('DOMContentLoaded', () => {
  wire(document);
  wireLive();
  wireAccount();
  if ($('#confirm')) {
    $('#delete-tag').onclick = () => doDelete(false);
    $('#delete-manifest').onclick = () => doDelete(true);
    $('#delete-cancel').onclick = () => $('#confirm').close();
  }
});
"#;

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// `GET /ui/app.js`.
pub async fn script() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

/// `GET /ui/style.css`.
pub async fn style() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}
