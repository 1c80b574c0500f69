//! Image references and transports, spelled as skopeo spells them.
//!
//! - `busybox`, `docker://busybox` → `docker.io/library/busybox:latest`
//!   (docker's normalisation: a first component with '.' or ':' or equal
//!   to `localhost` is a registry host, else the host is docker.io and a
//!   single name goes under `library/`).
//! - `name:tag`, `name@sha256:…`, `name:tag@sha256:…` (the digest wins).
//! - `oci:PATH[:TAG]`, `oci-archive:PATH[:TAG]`, `docker-archive:PATH`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::Digest;

/// A reference that does not follow the grammar.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {value:?}: {reason}")]
pub struct ReferenceError {
    pub value: String,
    pub reason: String,
}

/// Docker Hub's name in references, and the host its API is served from.
pub const DOCKER_HUB: &str = "docker.io";
pub(crate) const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A name in a registry: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Host and optional port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Path components, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a docker-style name (`latest` when neither a
    /// tag nor a digest is given).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            value: s.chars().take(300).collect(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > 4096 {
            return Err(err("longer than 4096 bytes"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag (one before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err(
                    "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, more))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), more.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if !valid_host(&registry) {
            return Err(err("the registry host is not a valid host[:port]"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.is_empty() || !repository.split('/').all(valid_component) {
            return Err(err(
                "repository path components are lowercase letters and digits, \
                 separated by '.', '_', '__' or '-'",
            ));
        }
        if registry.len() + 1 + repository.len() > 255 {
            return Err(err("the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest if
    /// there is one, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host serving the registry API (Docker Hub's differs from its
    /// name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Docker's short form of `name:tag` (`docker.io/library/busybox:1` →
    /// `busybox:1`, `docker.io/u/app:1` → `u/app:1`; other registries keep
    /// their host), without a digest: what `docker save` writes in
    /// RepoTags.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        format!("{name}:{}", self.tag.as_deref().unwrap_or("latest"))
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
pub(crate) fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

pub(crate) fn valid_host(h: &str) -> bool {
    // `[v6]` and `[v6]:port` keep their colons inside the brackets.
    let (host, port) = if h.starts_with('[') && h.ends_with(']') {
        (h, None)
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Where an image comes from or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A registry (`docker://` or a bare name).
    Registry(Reference),
    /// An OCI image layout directory.
    OciLayout { path: PathBuf, tag: Option<String> },
    /// A tar of an OCI image layout.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// `docker save`'s format; `reference` picks one of several images
    /// (`docker-archive:PATH:NAME:TAG`, or `@INDEX` as skopeo spells it).
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
}

impl ImageSource {
    /// Parses `docker://NAME`, a bare NAME, `oci:PATH[:TAG]`,
    /// `oci-archive:PATH[:TAG]` or `docker-archive:PATH[:NAME[:TAG]|:@N]`
    /// (as skopeo, the archive's path ends at its first ':').
    pub fn parse(s: &str) -> Result<ImageSource, ReferenceError> {
        let path_and_tag = |rest: &str| -> Result<(PathBuf, Option<String>), ReferenceError> {
            let (path, tag) = match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
                _ => (rest, None),
            };
            if path.is_empty() {
                return Err(ReferenceError {
                    value: s.to_string(),
                    reason: "no path".into(),
                });
            }
            Ok((PathBuf::from(path), tag))
        };
        if let Some(rest) = s.strip_prefix("docker://") {
            return Reference::parse(rest).map(ImageSource::Registry);
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = path_and_tag(rest)?;
            return Ok(ImageSource::OciLayout { path, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = path_and_tag(rest)?;
            return Ok(ImageSource::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) => (p, Some(r)),
                None => (rest, None),
            };
            let bad = |reason: &str| ReferenceError {
                value: s.to_string(),
                reason: reason.into(),
            };
            if path.is_empty() {
                return Err(bad("no path"));
            }
            let reference = match reference {
                None => None,
                Some(r) if r.starts_with('@') => {
                    if r.len() < 2 || !r[1..].bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("@ is followed by the index of an image in the archive"));
                    }
                    Some(r.to_string())
                }
                Some(r) => Some(Reference::parse(r)?.to_string()),
            };
            return Ok(ImageSource::DockerArchive {
                path: PathBuf::from(path),
                reference,
            });
        }
        if let Some((transport, _)) = s.split_once("://") {
            return Err(ReferenceError {
                value: s.to_string(),
                reason: format!("unknown transport {transport:?} (docker://, oci:, oci-archive:, docker-archive: are known)"),
            });
        }
        Reference::parse(s).map(ImageSource::Registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).expect(s).to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/img:1.0"), "docker.io/user/img:1.0");
        assert_eq!(norm("quay.io/a/b"), "quay.io/a/b:latest");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("127.0.0.1:5000/x/y:t"), "127.0.0.1:5000/x/y:t");
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        let r = Reference::parse(&format!("busybox:1@{d}")).expect("tag and digest");
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        let fam = |s: &str| Reference::parse(s).expect(s).familiar();
        assert_eq!(fam("busybox"), "busybox:latest");
        assert_eq!(fam("docker.io/u/app:1"), "u/app:1");
        assert_eq!(fam("127.0.0.1:5000/a/b:c"), "127.0.0.1:5000/a/b:c");
        assert_eq!(norm("[::1]/x:t"), "[::1]/x:t");
        assert_eq!(
            norm("Registry.Example.com/a_b/c-d"),
            "Registry.Example.com/a_b/c-d:latest"
        );
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/../b",
            "busybox@sha256:abc",
            "host:99999999/x",
            "[::1/x",
            "[zz::1]:5000/x",
            "-a",
            "a_-b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transports() {
        assert_eq!(
            ImageSource::parse("oci:/tmp/l:v1").expect("oci"),
            ImageSource::OciLayout {
                path: "/tmp/l".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageSource::parse("docker-archive:/x.tar").expect("da"),
            ImageSource::DockerArchive {
                path: "/x.tar".into(),
                reference: None
            }
        );
        assert_eq!(
            ImageSource::parse("docker-archive:/x.tar:busybox:1").expect("da"),
            ImageSource::DockerArchive {
                path: "/x.tar".into(),
                reference: Some("docker.io/library/busybox:1".into())
            }
        );
        assert_eq!(
            ImageSource::parse("docker-archive:x.tar:@1").expect("da"),
            ImageSource::DockerArchive {
                path: "x.tar".into(),
                reference: Some("@1".into())
            }
        );
        assert!(ImageSource::parse("docker-archive:x.tar:@x").is_err());
        assert!(ImageSource::parse("oci:").is_err());
        assert_eq!(
            ImageSource::parse("oci-archive:img.tar").expect("oa"),
            ImageSource::OciArchive {
                path: "img.tar".into(),
                tag: None
            }
        );
        assert!(matches!(
            ImageSource::parse("docker://busybox").expect("docker"),
            ImageSource::Registry(_)
        ));
        assert!(ImageSource::parse("ftp://x").is_err());
    }
}
