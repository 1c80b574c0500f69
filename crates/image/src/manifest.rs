//! Manifests, indexes and image configs: OCI image-spec and Docker's
//! schema 2 (manifest and manifest list), read into one form; platform
//! selection from an index. Schema 1 is refused with a clear error.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What hako asks registries for, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or config hako reads (a hostile registry could
/// otherwise send gigabytes of JSON).
pub const MAX_JSON: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what}: not valid JSON for its media type: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("{0}: Docker schema 1 manifests are not supported (deprecated since 2017); push the image again with a current client")]
    Schema1(String),
    #[error("{what}: unsupported media type {media_type:?}")]
    MediaType { what: String, media_type: String },
    #[error("{what}: layer {digest} has media type {media_type:?}, which hako cannot unpack")]
    LayerType {
        what: String,
        digest: String,
        media_type: String,
    },
    #[error("{what}: no image for platform {wanted}; the index has: {available}")]
    NoPlatform {
        what: String,
        wanted: String,
        available: String,
    },
    #[error("{what}: not a container image: its config has media type {media_type:?} (an OCI artifact?)")]
    NotAnImage { what: String, media_type: String },
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    BadPlatform(String),
}

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on (Go's names, as in image-spec).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        let variant = match architecture {
            "arm64" => Some("v8".to_string()),
            "arm" => Some("v7".to_string()),
            _ => None,
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant,
        }
    }

    /// Parses `os/arch[/variant]`, lowercased, with the kernel's names for
    /// architectures (x86_64, aarch64) mapped to image-spec's.
    pub fn parse(s: &str) -> Result<Platform, ManifestError> {
        let lower = s.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(ManifestError::BadPlatform(s.to_string()));
        }
        let architecture = match parts[1] {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            "i386" | "i686" => "386",
            other => other,
        };
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: architecture.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    fn matches(&self, other: &Platform) -> bool {
        let norm_variant = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            ("arm", None) => Some("v7".to_string()),
            (_, v) => v.map(str::to_string),
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() && other.architecture != "arm"
                || norm_variant(self) == norm_variant(other))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How a layer is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<(Descriptor, LayerCompression)>,
}

/// What a manifest endpoint returned.
#[derive(Debug, Clone)]
pub enum Parsed {
    Manifest(Manifest),
    Index(Vec<Descriptor>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// Parses a manifest or index. `content_type` is the HTTP Content-Type
/// (or a descriptor's media type), used when the document has none.
pub fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<Parsed, ManifestError> {
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| !c.is_empty());
    if matches!(ct.as_deref(), Some(DOCKER_V1 | DOCKER_V1_SIGNED)) {
        return Err(ManifestError::Schema1(what.into()));
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what: what.into(),
        source,
    })?;
    if raw.schema_version == Some(1) {
        return Err(ManifestError::Schema1(what.into()));
    }
    let media_type = raw
        .media_type
        .clone()
        .or(ct)
        .or_else(|| {
            // OCI allows leaving mediaType out: tell by the fields.
            if raw.manifests.is_some() {
                Some(OCI_INDEX.to_string())
            } else if raw.config.is_some() {
                Some(OCI_MANIFEST.to_string())
            } else {
                None
            }
        })
        .unwrap_or_default();
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index(raw.manifests.unwrap_or_default())),
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw.config.ok_or_else(|| ManifestError::MediaType {
                what: what.into(),
                media_type: format!("{media_type} without a config"),
            })?;
            if !matches!(config.media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG | "") {
                return Err(ManifestError::NotAnImage {
                    what: what.into(),
                    media_type: config.media_type,
                });
            }
            let mut layers = Vec::new();
            for l in raw.layers.unwrap_or_default() {
                let c =
                    layer_compression(&l.media_type).ok_or_else(|| ManifestError::LayerType {
                        what: what.into(),
                        digest: l.digest.to_string(),
                        media_type: l.media_type.clone(),
                    })?;
                layers.push((l, c));
            }
            Ok(Parsed::Manifest(Manifest {
                media_type,
                config,
                layers,
            }))
        }
        DOCKER_V1 | DOCKER_V1_SIGNED => Err(ManifestError::Schema1(what.into())),
        _ => Err(ManifestError::MediaType {
            what: what.into(),
            media_type,
        }),
    }
}

fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    Some(match media_type {
        "application/vnd.oci.image.layer.v1.tar" => LayerCompression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => LayerCompression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd" => LayerCompression::Zstd,
        // The decompressor tells gzip from zstd from plain by magic bytes.
        "application/vnd.docker.image.rootfs.diff.tar" => LayerCompression::None,
        _ => return None,
    })
}

/// Picks the manifest for `wanted` from an index.
pub fn select<'a>(
    index: &'a [Descriptor],
    wanted: &Platform,
    what: &str,
) -> Result<&'a Descriptor, ManifestError> {
    index
        .iter()
        .filter(|d| matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | ""))
        .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
        .ok_or_else(|| ManifestError::NoPlatform {
            what: what.into(),
            wanted: wanted.to_string(),
            available: index
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or("(no platform)".to_string(), |p| p.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The parts of an image config hako uses (OCI and Docker share them).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// The `config` object of an image config: how to run it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfig, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what: what.into(),
        source,
    })
}

/// The OCI form of a Docker schema 2 manifest (as skopeo converts one
/// when it writes an OCI layout): the same config and layer blobs under
/// OCI media types. An OCI manifest is returned unchanged.
pub fn to_oci_manifest(bytes: &[u8], what: &str) -> Result<Vec<u8>, ManifestError> {
    let mut v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            what: what.into(),
            source,
        })?;
    let media_type = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
    match media_type.as_str() {
        OCI_MANIFEST => return Ok(bytes.to_vec()),
        DOCKER_MANIFEST => {}
        _ => {
            return Err(ManifestError::MediaType {
                what: what.into(),
                media_type,
            })
        }
    }
    v["mediaType"] = OCI_MANIFEST.into();
    v["config"]["mediaType"] = OCI_CONFIG.into();
    if let Some(layers) = v["layers"].as_array_mut() {
        for l in layers {
            let t = l["mediaType"].as_str().unwrap_or_default().to_string();
            let oci = match layer_compression(&t) {
                Some(LayerCompression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(LayerCompression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(LayerCompression::None) => "application/vnd.oci.image.layer.v1.tar",
                None => {
                    return Err(ManifestError::LayerType {
                        what: what.into(),
                        digest: l["digest"].as_str().unwrap_or_default().to_string(),
                        media_type: t,
                    })
                }
            };
            l["mediaType"] = oci.into();
        }
    }
    serde_json::to_vec(&v).map_err(|source| ManifestError::Json {
        what: what.into(),
        source,
    })
}

/// A Docker schema 2 manifest for a config and layers (docker-archive
/// images, which carry none): (media type, size, digest) each.
pub fn docker_manifest(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let d = |x: &Descriptor| serde_json::json!({"mediaType": x.media_type, "size": x.size, "digest": x.digest.to_string()});
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": d(config),
        "layers": layers.iter().map(d).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The Docker layer media type for a layer of this compression.
pub fn docker_layer_type(c: LayerCompression) -> &'static str {
    match c {
        LayerCompression::None => "application/vnd.docker.image.rootfs.diff.tar",
        LayerCompression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        // Docker has no zstd type of its own; moby reads the OCI one.
        LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_and_oci_manifests() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D}","size":1}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D}","size":2}}]}}"#
        );
        let Parsed::Manifest(m) = parse(m.as_bytes(), None, "t").expect("docker") else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers[0].1, LayerCompression::Gzip);
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":1}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{D}","size":2}}]}}"#
        );
        assert!(matches!(
            parse(oci.as_bytes(), None, "t"),
            Ok(Parsed::Manifest(_))
        ));
    }

    #[test]
    fn docker_manifest_to_oci() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D}","size":1}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D}","size":2}},
                         {{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","digest":"{D}","size":3}}]}}"#
        );
        let oci = to_oci_manifest(m.as_bytes(), "t").expect("convert");
        let v: serde_json::Value = serde_json::from_slice(&oci).expect("json");
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["config"]["mediaType"], OCI_CONFIG);
        assert_eq!(
            v["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            v["layers"][1]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(v["layers"][1]["size"], 3);
        assert_eq!(to_oci_manifest(&oci, "t").expect("same"), oci);
        assert!(to_oci_manifest(br#"{"mediaType":"x"}"#, "t").is_err());
    }

    #[test]
    fn schema1_and_unknown_refused() {
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            parse(s1, None, "t"),
            Err(ManifestError::Schema1(_))
        ));
        assert!(matches!(
            parse(b"{}", Some(DOCKER_V1_SIGNED), "t"),
            Err(ManifestError::Schema1(_))
        ));
        let odd = br#"{"schemaVersion":2,"mediaType":"application/x-odd"}"#;
        assert!(matches!(
            parse(odd, None, "t"),
            Err(ManifestError::MediaType { .. })
        ));
        let foreign = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":1}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D}","size":2}}]}}"#
        );
        assert!(matches!(
            parse(foreign.as_bytes(), None, "t"),
            Err(ManifestError::LayerType { .. })
        ));
        let artifact = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D}","size":1}},"layers":[]}}"#
        );
        let err = parse(artifact.as_bytes(), None, "t").expect_err("artifact");
        assert!(err.to_string().contains("helm"), "{err}");
    }

    #[test]
    fn platform_selection() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let Parsed::Index(i) = parse(idx.as_bytes(), None, "t").expect("index") else {
            panic!("not an index")
        };
        let amd = Platform::parse("linux/amd64").expect("p");
        assert_eq!(select(&i, &amd, "t").expect("amd64").size, 2);
        let arm = Platform::parse("linux/arm64/v8").expect("p");
        assert_eq!(select(&i, &arm, "t").expect("arm64").size, 1);
        let kernel_names = Platform::parse("Linux/x86_64").expect("p");
        assert_eq!(select(&i, &kernel_names, "t").expect("x86_64").size, 2);
        assert!(Platform::parse("linux/arm64/").is_err());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/a b").is_err());
        let err =
            select(&i, &Platform::parse("linux/s390x").expect("p"), "t").expect_err("no s390x");
        assert!(
            err.to_string().contains("linux/arm64, linux/amd64"),
            "{err}"
        );
    }
}
