//! The audit trail (`log.audit`): one JSON line per mutating request
//! (push, tag, delete, API key created or revoked, login, logout) with who,
//! how they authenticated, from where, what, and the outcome. Never a
//! secret. Lines are written by a thread of their own, so a slow disk does
//! not hold up requests; a full queue drops lines and says so in the log.

use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

/// The client's address, put on each request by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// One audited action.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub time: String,
    /// The user, or `""` for an anonymous caller.
    pub user: String,
    /// anonymous, htpasswd, apikey, session, or `unauthenticated` when the
    /// credentials were refused.
    pub auth: String,
    pub client: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The tags a push by digest wrote (its `OCI-Tag`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    pub status: u16,
}

impl Event {
    pub fn new(action: &str, status: u16) -> Event {
        Event {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            user: String::new(),
            auth: "unauthenticated".into(),
            client: String::new(),
            action: action.into(),
            repository: None,
            reference: None,
            digest: None,
            tags: None,
            status,
        }
    }

    pub fn who(mut self, who: &berth_auth::Identity) -> Event {
        self.user = who.user.clone().unwrap_or_default();
        self.auth = match who.method {
            berth_auth::Method::Anonymous => "anonymous",
            berth_auth::Method::Htpasswd => "htpasswd",
            berth_auth::Method::ApiKey => "apikey",
            berth_auth::Method::Session => "session",
            berth_auth::Method::ClientCertificate => "certificate",
        }
        .into();
        self
    }

    pub fn from(mut self, peer: Option<&Peer>) -> Event {
        self.client = peer.map(|p| p.0.ip().to_string()).unwrap_or_default();
        self
    }
}

/// Where audit lines go.
pub struct Audit {
    tx: SyncSender<Event>,
}

/// Lines that may wait for the writer.
const QUEUE: usize = 4096;

impl Audit {
    /// Opens (appending) the audit file and starts its writer.
    pub fn open(path: &std::path::Path) -> std::io::Result<Audit> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = sync_channel::<Event>(QUEUE);
        std::thread::Builder::new()
            .name("berth-audit".into())
            .spawn(move || {
                while let Ok(e) = rx.recv() {
                    let mut line = serde_json::to_vec(&e).unwrap_or_default();
                    line.push(b'\n');
                    if let Err(err) = file.write_all(&line) {
                        tracing::error!(error = %err, "audit log write failed");
                    }
                }
            })?;
        Ok(Audit { tx })
    }

    pub fn record(&self, e: Event) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                tracing::error!(action = %e.action, "audit queue full: line dropped")
            }
            Err(TrySendError::Disconnected(_)) => tracing::error!("audit writer stopped"),
        }
    }
}
