//! The typed shape of zot's `config.json`, as Berth reads it.
//!
//! Field names are zot's keys in lower case: the loader lower-cases every key
//! of the file first (as zot's loader does), so matching is
//! case-insensitive. Every struct refuses unknown keys. Free-form sections
//! (storage drivers, event sinks) are kept as JSON maps.

use super::duration::GoDuration;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

type Free = Map<String, Value>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(rename = "distspecversion")]
    pub dist_spec_version: Option<String>,
    #[serde(rename = "goversion")]
    pub go_version: Option<String>,
    pub commit: Option<String>,
    #[serde(rename = "releasetag")]
    pub release_tag: Option<String>,
    #[serde(rename = "binarytype")]
    pub binary_type: Option<String>,
    pub storage: Storage,
    pub http: Http,
    pub log: Log,
    pub extensions: Option<Extensions>,
    pub scheduler: Option<Scheduler>,
    pub cluster: Option<Cluster>,
    /// The file as parsed (keys lower-cased), for telling the operator
    /// which keys it sets that this build does not act on.
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    #[serde(rename = "rootdirectory")]
    pub root_directory: Option<String>,
    pub dedupe: Option<bool>,
    #[serde(rename = "remotecache")]
    pub remote_cache: Option<bool>,
    pub gc: Option<bool>,
    #[serde(rename = "gcdelay")]
    pub gc_delay: Option<GoDuration>,
    #[serde(rename = "gcinterval")]
    pub gc_interval: Option<GoDuration>,
    #[serde(rename = "gctimewindow")]
    pub gc_time_window: Option<String>,
    #[serde(rename = "gcmaxschedulerdelay")]
    pub gc_max_scheduler_delay: Option<GoDuration>,
    pub commit: Option<bool>,
    #[serde(rename = "maxrepos")]
    pub max_repos: Option<u64>,
    #[serde(rename = "redirectbloburl")]
    pub redirect_blob_url: Option<bool>,
    #[serde(rename = "fastrestart")]
    pub fast_restart: Option<bool>,
    pub retention: Option<Retention>,
    #[serde(rename = "storagedriver")]
    pub storage_driver: Option<Free>,
    #[serde(rename = "cachedriver")]
    pub cache_driver: Option<Free>,
    #[serde(rename = "subpaths")]
    pub sub_paths: Option<BTreeMap<String, Storage>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    #[serde(rename = "dryrun")]
    pub dry_run: bool,
    pub delay: Option<GoDuration>,
    pub policies: Vec<RetentionPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    pub repositories: Vec<String>,
    #[serde(rename = "deletereferrers")]
    pub delete_referrers: bool,
    #[serde(rename = "deleteuntagged")]
    pub delete_untagged: Option<bool>,
    #[serde(rename = "keeptags")]
    pub keep_tags: Vec<KeepRule>,
    #[serde(rename = "keepuntagged")]
    pub keep_untagged: Option<KeepRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepRule {
    pub patterns: Vec<String>,
    #[serde(rename = "pulledwithin")]
    pub pulled_within: Option<GoDuration>,
    #[serde(rename = "pushedwithin")]
    pub pushed_within: Option<GoDuration>,
    #[serde(rename = "mostrecentlypushedcount")]
    pub most_recently_pushed_count: u64,
    #[serde(rename = "mostrecentlypulledcount")]
    pub most_recently_pulled_count: u64,
}

/// zot writes the port as a string; a number is accepted too.
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "port must be a string, got {other}"
        ))),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub address: Option<String>,
    #[serde(deserialize_with = "port")]
    pub port: Option<String>,
    #[serde(rename = "externalurl")]
    pub external_url: Option<String>,
    pub realm: Option<String>,
    #[serde(rename = "alloworigin")]
    pub allow_origin: Option<String>,
    #[serde(rename = "readtimeout")]
    pub read_timeout: Option<GoDuration>,
    #[serde(rename = "writetimeout")]
    pub write_timeout: Option<GoDuration>,
    pub tls: Option<Tls>,
    pub auth: Option<Auth>,
    #[serde(rename = "accesscontrol")]
    pub access_control: Option<AccessControl>,
    pub ratelimit: Option<RateLimit>,
    #[serde(deserialize_with = "one_or_many")]
    pub compat: Vec<String>,
}

/// zot accepts a single value where a list is expected.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub cacert: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub htpasswd: Option<Htpasswd>,
    pub ldap: Option<Ldap>,
    pub bearer: Option<Bearer>,
    pub openid: Option<OpenId>,
    pub apikey: Option<bool>,
    #[serde(rename = "sessionkeysfile")]
    pub session_keys_file: Option<String>,
    #[serde(rename = "sessiondriver")]
    pub session_driver: Option<Free>,
    #[serde(rename = "securesession")]
    pub secure_session: Option<bool>,
    #[serde(rename = "sessionhashkey")]
    pub session_hash_key: Option<Value>,
    #[serde(rename = "sessionencryptkey")]
    pub session_encrypt_key: Option<Value>,
    pub mtls: Option<Free>,
    #[serde(rename = "faildelay")]
    pub fail_delay: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Htpasswd {
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ldap {
    pub address: Option<String>,
    pub port: Option<u16>,
    #[serde(rename = "basedn")]
    pub base_dn: Option<String>,
    #[serde(rename = "userattribute")]
    pub user_attribute: Option<String>,
    #[serde(rename = "usergroupattribute")]
    pub user_group_attribute: Option<String>,
    #[serde(rename = "userfilter")]
    pub user_filter: Option<String>,
    #[serde(rename = "credentialsfile")]
    pub credentials_file: Option<String>,
    #[serde(rename = "starttls")]
    pub start_tls: Option<bool>,
    pub insecure: Option<bool>,
    #[serde(rename = "skipverify")]
    pub skip_verify: Option<bool>,
    #[serde(rename = "subtreesearch")]
    pub subtree_search: Option<bool>,
    #[serde(rename = "cacert")]
    pub ca_cert: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bearer {
    pub realm: Option<String>,
    pub service: Option<String>,
    pub cert: Option<String>,
    #[serde(rename = "upstreamtokenendpoint")]
    pub upstream_token_endpoint: Option<Free>,
    pub oidc: Option<Vec<Free>>,
    #[serde(rename = "awssecretsmanager")]
    pub aws_secrets_manager: Option<Free>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenId {
    pub providers: BTreeMap<String, OpenIdProvider>,
    #[serde(rename = "callbackalloworigins")]
    pub callback_allow_origins: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenIdProvider {
    pub name: Option<String>,
    pub clientid: Option<String>,
    pub clientsecret: Option<String>,
    #[serde(rename = "credentialsfile")]
    pub credentials_file: Option<String>,
    pub keypath: Option<String>,
    pub issuer: Option<String>,
    pub authurl: Option<String>,
    pub tokenurl: Option<String>,
    pub scopes: Vec<String>,
    #[serde(rename = "claimmapping")]
    pub claim_mapping: Option<ClaimMapping>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub username: Option<String>,
    pub groups: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessControl {
    pub repositories: BTreeMap<String, RepoPolicy>,
    #[serde(rename = "adminpolicy")]
    pub admin_policy: Option<Policy>,
    pub groups: BTreeMap<String, GroupMembers>,
    pub metrics: Option<MetricsPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepoPolicy {
    pub policies: Vec<Policy>,
    #[serde(rename = "defaultpolicy")]
    pub default_policy: Vec<String>,
    #[serde(rename = "anonymouspolicy")]
    pub anonymous_policy: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub actions: Vec<String>,
    pub conditions: Vec<Free>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupMembers {
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsPolicy {
    pub users: Vec<String>,
    #[serde(rename = "anonymouspolicy")]
    pub anonymous_policy: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub rate: Option<u64>,
    pub methods: Vec<MethodRate>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodRate {
    pub method: String,
    pub rate: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: Option<String>,
    pub output: Option<String>,
    pub audit: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Extensions {
    pub sync: Option<Sync>,
    pub search: Option<Search>,
    pub metrics: Option<Metrics>,
    pub scrub: Option<Scrub>,
    pub lint: Option<Lint>,
    pub ui: Option<Toggle>,
    pub trust: Option<Trust>,
    pub mgmt: Option<Toggle>,
    pub apikey: Option<Toggle>,
    pub events: Option<Events>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Toggle {
    pub enable: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sync {
    pub enable: Option<bool>,
    #[serde(rename = "credentialsfile")]
    pub credentials_file: Option<String>,
    #[serde(rename = "downloaddir")]
    pub download_dir: Option<String>,
    pub registries: Vec<SyncRegistry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncRegistry {
    pub urls: Vec<String>,
    #[serde(rename = "ondemand")]
    pub on_demand: bool,
    #[serde(rename = "pollinterval")]
    pub poll_interval: Option<GoDuration>,
    #[serde(rename = "tlsverify")]
    pub tls_verify: Option<bool>,
    #[serde(rename = "certdir")]
    pub cert_dir: Option<String>,
    #[serde(rename = "maxretries")]
    pub max_retries: Option<u64>,
    #[serde(rename = "retrydelay")]
    pub retry_delay: Option<GoDuration>,
    #[serde(rename = "maxretrydelay")]
    pub max_retry_delay: Option<GoDuration>,
    #[serde(rename = "onlysigned")]
    pub only_signed: Option<bool>,
    pub content: Vec<SyncContent>,
    #[serde(rename = "preservedigest")]
    pub preserve_digest: Option<bool>,
    #[serde(rename = "synctimeout")]
    pub sync_timeout: Option<GoDuration>,
    #[serde(rename = "responseheadertimeout")]
    pub response_header_timeout: Option<GoDuration>,
    #[serde(rename = "manifestcheckinterval")]
    pub manifest_check_interval: Option<GoDuration>,
    #[serde(rename = "synclegacycosigntags")]
    pub sync_legacy_cosign_tags: Option<bool>,
    #[serde(rename = "credentialhelper")]
    pub credential_helper: Option<String>,
    #[serde(rename = "oauth2credentialhelper")]
    pub oauth2_credential_helper: Option<Free>,
    #[serde(rename = "reqconcurrent")]
    pub req_concurrent: Option<u64>,
    #[serde(rename = "reqpersec")]
    pub req_per_sec: Option<f64>,
    #[serde(rename = "disablehttp2")]
    pub disable_http2: Option<bool>,
    #[serde(rename = "maxidleconnsperhost")]
    pub max_idle_conns_per_host: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncContent {
    pub prefix: String,
    pub destination: Option<String>,
    #[serde(rename = "stripprefix")]
    pub strip_prefix: bool,
    pub tags: Option<SyncTags>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncTags {
    pub regex: Option<String>,
    #[serde(rename = "excluderegex")]
    pub exclude_regex: Option<String>,
    pub semver: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Search {
    pub enable: Option<bool>,
    pub cve: Option<Free>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    pub enable: Option<bool>,
    pub prometheus: Option<Prometheus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prometheus {
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scrub {
    pub enable: Option<bool>,
    pub interval: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lint {
    pub enable: Option<bool>,
    #[serde(rename = "mandatoryannotations")]
    pub mandatory_annotations: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    pub enable: Option<bool>,
    pub cosign: Option<bool>,
    pub notation: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    pub enable: Option<bool>,
    pub sinks: Vec<Free>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scheduler {
    #[serde(rename = "numworkers")]
    pub num_workers: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    pub members: Vec<String>,
    #[serde(rename = "hashkey")]
    pub hash_key: Option<String>,
    pub tls: Option<Tls>,
}
