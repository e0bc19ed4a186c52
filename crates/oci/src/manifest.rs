//! Manifest parsing and validation.
//!
//! Berth stores manifests byte for byte; this module only reads what the
//! registry must check or index: the kind, the descriptors a manifest points
//! at (which must exist), its `subject` and its artifact type (for the
//! referrers API). Unknown fields are kept in the stored bytes and ignored
//! here.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Layers that by design live elsewhere (they carry `urls`) and need not be
/// pushed to the registry.
const NON_DISTRIBUTABLE: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// A content descriptor as found in manifests and in referrers responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// Whether the registry must hold this blob for the manifest to be valid.
    pub fn must_exist(&self) -> bool {
        !NON_DISTRIBUTABLE.contains(&self.media_type.as_str())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// Whether a manifest points at blobs or at other manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub kind: Kind,
    /// The media type to store and serve it with.
    pub media_type: String,
    /// Config and layers (image), which must be blobs in the repository.
    pub blobs: Vec<Descriptor>,
    /// Child manifests (index), which must be manifests in the repository.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without it, the config's
    /// media type: what the referrers API reports.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Why a manifest was refused; each maps to MANIFEST_INVALID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    Syntax(String),
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("Docker schema 1 manifests are not supported")]
    Schema1,
    #[error("media type {0:?} is not a manifest type")]
    UnknownMediaType(String),
    #[error("mediaType field {field:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { field: String, header: String },
    #[error("image manifest has no config")]
    MissingConfig,
    #[error("index has no manifests list")]
    MissingManifests,
    /// Fields of both an image manifest and an index: which one it is would
    /// depend on who reads it (the class of CVE-2021-41190).
    #[error("document has both manifests and config/layers: ambiguous")]
    Ambiguous,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// Parses a manifest body. `content_type` is the request's Content-Type,
/// with parameters removed, if the client sent one.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    let content_type = content_type.filter(|c| !c.is_empty());
    if let Some(ct) = content_type {
        if ct == DOCKER_SCHEMA1 || ct == DOCKER_SCHEMA1_SIGNED {
            return Err(ManifestError::Schema1);
        }
    }
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| ManifestError::Syntax(e.to_string()))?;
    if raw.schema_version == Some(1) {
        return Err(ManifestError::Schema1);
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    // The field, when present, is authoritative and must agree with the header.
    let media_type = match (&raw.media_type, content_type) {
        (Some(field), Some(header)) if kind_of(header).is_some() && field != header => {
            return Err(ManifestError::MediaTypeMismatch {
                field: field.clone(),
                header: header.to_owned(),
            })
        }
        (Some(field), _) => field.clone(),
        (None, Some(header)) if kind_of(header).is_some() => header.to_owned(),
        // Neither says: decide by shape, as the image-spec allows.
        (None, _) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) => OCI_MANIFEST.to_owned(),
    };
    let kind =
        kind_of(&media_type).ok_or_else(|| ManifestError::UnknownMediaType(media_type.clone()))?;
    // A document read one way by Berth must not read another way elsewhere.
    let foreign = match kind {
        Kind::Image => raw.manifests.is_some(),
        Kind::Index => raw.config.is_some() || raw.layers.is_some(),
    };
    if foreign {
        return Err(ManifestError::Ambiguous);
    }
    let mut m = Manifest {
        kind,
        media_type,
        blobs: Vec::new(),
        manifests: Vec::new(),
        subject: raw.subject,
        // An empty artifactType counts as missing (the spec's referrers
        // rules say "empty or missing" alike).
        artifact_type: raw.artifact_type.filter(|t| !t.is_empty()),
        annotations: raw.annotations,
    };
    match kind {
        Kind::Image => {
            let config = raw.config.ok_or(ManifestError::MissingConfig)?;
            if m.artifact_type.is_none() {
                m.artifact_type = Some(config.media_type.clone());
            }
            m.blobs.push(config);
            m.blobs.extend(raw.layers.unwrap_or_default());
        }
        Kind::Index => {
            m.manifests = raw.manifests.ok_or(ManifestError::MissingManifests)?;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":0}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":2}}]{extra}}}"#
        )
    }

    #[test]
    fn image_manifest() {
        let m = parse(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(m.subject.is_none());
    }

    #[test]
    fn artifact_with_subject() {
        let body = image(&format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":7}}"#
        ));
        let m = parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
        assert_eq!(m.subject.unwrap().digest.as_str(), D1);
    }

    #[test]
    fn an_empty_artifact_type_counts_as_missing() {
        let m = parse(image(r#","artifactType":"""#).as_bytes(), None).unwrap();
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"","manifests":[]}}"#
        );
        assert_eq!(parse(index.as_bytes(), None).unwrap().artifact_type, None);
    }

    #[test]
    fn index_and_docker_list() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let m = parse(body.as_bytes(), Some(DOCKER_LIST)).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.manifests.len(), 1);
        // No mediaType field: the shape decides.
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(parse(bare.as_bytes(), None).unwrap().media_type, OCI_INDEX);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse(b"not json", None),
            Err(ManifestError::Syntax(_))
        ));
        assert!(matches!(parse(b"[]", None), Err(ManifestError::Syntax(_))));
        assert_eq!(
            parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err(),
            ManifestError::Schema1
        );
        assert_eq!(
            parse(br#"{"schemaVersion":3,"manifests":[]}"#, None).unwrap_err(),
            ManifestError::SchemaVersion
        );
        assert!(matches!(
            parse(image("").as_bytes(), Some(OCI_INDEX)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let no_config =
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
        assert_eq!(
            parse(no_config.as_bytes(), None).unwrap_err(),
            ManifestError::MissingConfig
        );
        let bad_digest = image("").replace(D2, "sha256:nothex");
        assert!(matches!(
            parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Syntax(_))
        ));
        let negative = image("").replace(r#""size":2"#, r#""size":-2"#);
        assert!(matches!(
            parse(negative.as_bytes(), None),
            Err(ManifestError::Syntax(_))
        ));
        // Both shapes at once (CVE-2021-41190): refused whatever the
        // Content-Type or mediaType field says.
        let parts = format!(
            r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":0}},"layers":[],"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":3}}]"#
        );
        let both = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{parts}}}"#);
        let bare = format!(r#"{{"schemaVersion":2,{parts}}}"#);
        for (body, ct) in [
            (&both, None),
            (&bare, None),
            (&bare, Some(OCI_INDEX)),
            (&bare, Some(OCI_MANIFEST)),
            (&bare, Some(DOCKER_LIST)),
        ] {
            assert_eq!(
                parse(body.as_bytes(), ct).unwrap_err(),
                ManifestError::Ambiguous,
                "{ct:?} {body}"
            );
        }
        let index_with_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"layers":[]}}"#
        );
        assert_eq!(
            parse(index_with_layers.as_bytes(), None).unwrap_err(),
            ManifestError::Ambiguous
        );
        let other = r#"{"schemaVersion":2,"mediaType":"text/plain"}"#;
        assert!(matches!(
            parse(other.as_bytes(), None),
            Err(ManifestError::UnknownMediaType(_))
        ));
    }
}
