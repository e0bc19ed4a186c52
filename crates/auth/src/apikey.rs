//! API keys: `zak_` followed by 64 hex digits of OS randomness, shown once,
//! kept only as the SHA-256 of the part after the prefix (as zot keeps
//! them). A high-entropy key needs no slow hash: looking it up by its hash
//! is both fast and safe, and the lookup compares hashes, never the key.

use crate::policy::Scope;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const PREFIX: &str = "zak_";

/// A stored API key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub uuid: String,
    pub label: String,
    pub scopes: Vec<String>,
    /// RFC 3339, or absent for a key that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    pub created_at: String,
    pub creator_ua: String,
    pub owner: String,
    /// The owner's groups when the key was made; the key acts with them.
    pub groups: Vec<String>,
    /// Hex SHA-256 of the key without its prefix.
    pub hash: String,
    /// How the owner proved who they were when minting it (`htpasswd`,
    /// `session`): a key minted with a password dies with that user.
    #[serde(default)]
    pub minted_by: String,
}

/// What a client asks for when creating a key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRequest {
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expiration_date: Option<String>,
}

/// Why a key request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expirationDate {0:?} is not an RFC 3339 date")]
    BadDate(String),
    #[error("expirationDate is in the past")]
    Past,
    #[error("{0}")]
    BadScope(String),
}

/// Hex SHA-256 of a presented key, or `None` if it is not an API key.
pub fn hash_of(presented: &str) -> Option<String> {
    let body = presented.strip_prefix(PREFIX)?;
    if body.is_empty() {
        return None;
    }
    Some(hex::encode(Sha256::digest(body.as_bytes())))
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl ApiKey {
    /// Checks a request and mints a key for `owner`. Returns the record to
    /// store and the key to show once.
    pub fn mint(
        req: &KeyRequest,
        owner: &str,
        groups: Vec<String>,
        user_agent: &str,
    ) -> Result<(ApiKey, String), KeyError> {
        let expiration_date = match req
            .expiration_date
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            None => None,
            Some(d) => {
                let when = OffsetDateTime::parse(d, &Rfc3339)
                    .map_err(|_| KeyError::BadDate(d.to_owned()))?;
                if when <= OffsetDateTime::now_utc() {
                    return Err(KeyError::Past);
                }
                Some(when.format(&Rfc3339).unwrap_or_else(|_| d.to_owned()))
            }
        };
        for s in &req.scopes {
            Scope::parse(s).map_err(KeyError::BadScope)?;
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| KeyError::BadScope(format!("no randomness: {e}")))?;
        let key = format!("{PREFIX}{}", hex::encode(raw));
        let hash = hash_of(&key).unwrap_or_default();
        let record = ApiKey {
            uuid: uuid::Uuid::new_v4().to_string(),
            label: req.label.clone(),
            scopes: req.scopes.clone(),
            expiration_date,
            created_at: now_rfc3339(),
            creator_ua: user_agent.to_owned(),
            owner: owner.to_owned(),
            groups,
            hash,
            minted_by: String::new(),
        };
        Ok((record, key))
    }

    /// Past its expiration date; a date that does not parse (a record
    /// edited or damaged) counts as past: a key fails closed.
    pub fn is_expired(&self) -> bool {
        self.expiration_date.as_deref().is_some_and(|d| {
            OffsetDateTime::parse(d, &Rfc3339)
                .map_or(true, |when| when <= OffsetDateTime::now_utc())
        })
    }

    /// The parsed scopes (`None` = the owner's full rights).
    pub fn parsed_scopes(&self) -> Option<Vec<Scope>> {
        if self.scopes.is_empty() {
            return None;
        }
        // Scopes were checked at creation; one that no longer parses allows
        // nothing (and if none parses, the key can do nothing).
        Some(
            self.scopes
                .iter()
                .filter_map(|s| Scope::parse(s).ok())
                .collect(),
        )
    }

    /// The record as listed to its owner: no hash.
    pub fn public_view(&self) -> serde_json::Value {
        serde_json::json!({
            "uuid": self.uuid,
            "label": self.label,
            "scopes": self.scopes,
            "expirationDate": self.expiration_date,
            "isExpired": self.is_expired(),
            "createdAt": self.created_at,
            "creatorUa": self.creator_ua,
            "generatedBy": "manual",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_check() {
        let req = KeyRequest {
            label: "ci".into(),
            scopes: vec!["repository:ci/**:read,create".into()],
            expiration_date: Some("2999-01-01T00:00:00Z".into()),
        };
        let (rec, key) = ApiKey::mint(&req, "alice", vec!["devs".into()], "curl").unwrap();
        assert!(key.starts_with(PREFIX) && key.len() == 4 + 64);
        assert_eq!(hash_of(&key).unwrap(), rec.hash);
        assert!(!rec.hash.contains(&key[4..]));
        assert!(!rec.is_expired());
        assert_eq!(rec.parsed_scopes().unwrap().len(), 1);
        assert!(rec.public_view().get("hash").is_none());
        let (_, other) = ApiKey::mint(&KeyRequest::default(), "alice", vec![], "").unwrap();
        assert_ne!(key, other);
        assert_eq!(hash_of("not-a-key"), None);
        assert_eq!(hash_of("zak_"), None);
    }

    #[test]
    fn refusals() {
        let past = KeyRequest {
            expiration_date: Some("2001-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            ApiKey::mint(&past, "a", vec![], "").unwrap_err(),
            KeyError::Past
        );
        let bad = KeyRequest {
            expiration_date: Some("tomorrow".into()),
            ..Default::default()
        };
        assert!(matches!(
            ApiKey::mint(&bad, "a", vec![], ""),
            Err(KeyError::BadDate(_))
        ));
        let scope = KeyRequest {
            scopes: vec!["x:fly".into()],
            ..Default::default()
        };
        assert!(matches!(
            ApiKey::mint(&scope, "a", vec![], ""),
            Err(KeyError::BadScope(_))
        ));
        let mut rec = ApiKey::mint(&KeyRequest::default(), "a", vec![], "")
            .unwrap()
            .0;
        rec.expiration_date = Some("2001-01-01T00:00:00Z".into());
        assert!(rec.is_expired());
        // A stored date that does not parse fails closed.
        rec.expiration_date = Some("one day".into());
        assert!(rec.is_expired());
        rec.expiration_date = None;
        assert!(!rec.is_expired());
    }
}
