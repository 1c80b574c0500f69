//! registries.conf(5), version 2, as podman reads it: per-registry
//! settings (plain HTTP, blocked), location rewriting and pull mirrors.
//!
//! Files: `$HAKO_REGISTRIES_CONF` and the drop-ins in
//! `$HAKO_REGISTRIES_CONF.d/` when that variable is set, else
//! `/etc/containers/registries.conf` and `/etc/containers/registries.conf.d/`.
//! Drop-ins are the `*.conf` files of the directory in name order; an
//! entry of a later file replaces the one with the same prefix. A missing
//! file or directory is no settings.
//!
//! ```toml
//! [[registry]]
//! prefix = "docker.io/library"                   # default: location
//! location = "registry.example.com/hub/library"  # default: prefix
//! insecure = false                               # plain HTTP
//! blocked = false                                # no pulls, no pushes
//! [[registry.mirror]]
//! location = "mirror.example.com:5000/library"
//! insecure = true
//! pull-from-mirror = "all"                       # or digest-only, tag-only
//! ```
//!
//! A prefix matches an image name (`host/path`, without tag or digest)
//! equal to it or continuing it after a `/`; `*.example.com` matches every
//! host under example.com. The longest matching prefix wins, and the part
//! of the name it matched is replaced by `location` (or a mirror's
//! location). Pulls try the eligible mirrors in order, then `location`;
//! pushes (and logins) go to the name as given, and only `insecure` and
//! `blocked` apply to them.
//!
//! Version 1 files (`[registries.insecure]` and `[registries.block]` with
//! `registries = [hosts]`) are read too. The keys about short names
//! (`unqualified-search-registries`, `[aliases]`, `short-name-mode`) are
//! ignored: hako normalises short names to docker.io, as docker does.

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::{valid_component, valid_host, Reference};

/// The variable naming another registries.conf.
pub const ENV: &str = "HAKO_REGISTRIES_CONF";
/// podman's system-wide file and its drop-in directory.
pub const SYSTEM_FILE: &str = "/etc/containers/registries.conf";
pub const SYSTEM_DROP_INS: &str = "/etc/containers/registries.conf.d";

#[derive(Debug, thiserror::Error)]
pub enum RegistriesConfError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: [[registry]] {prefix:?}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        prefix: String,
        problem: String,
    },
    #[error("{name} is blocked by {} ([[registry]] prefix {prefix:?})", file.display())]
    Blocked {
        name: String,
        prefix: String,
        file: PathBuf,
    },
    #[error(
        "{}: [[registry]] {prefix:?}: location {location:?} turns {name} into no valid \
         repository", file.display()
    )]
    Rewrite {
        file: PathBuf,
        prefix: String,
        location: String,
        name: String,
    },
}

/// Which pulls a mirror serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    #[default]
    All,
    /// Only images pulled by digest (content the mirror cannot change).
    DigestOnly,
    /// Only images pulled by tag.
    TagOnly,
}

impl std::fmt::Display for PullFromMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PullFromMirror::All => "all",
            PullFromMirror::DigestOnly => "digest-only",
            PullFromMirror::TagOnly => "tag-only",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/path]`.
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port][/path]` or `*.domain`.
    pub prefix: String,
    /// What the matched prefix is replaced with; empty for a `*.` prefix
    /// (the name's own host).
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirrors: Vec<Mirror>,
    /// The file that set this entry.
    pub file: PathBuf,
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Mirrors, then the (rewritten) location.
    Pull,
    /// The name's own host: pushes and logins.
    Direct,
}

/// An endpoint to try for one image: a host, and how the image's name
/// maps to a repository there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `host[:port]`, as in references (`docker.io` for Docker Hub).
    pub host: String,
    /// Plain HTTP (the entry's or the mirror's `insecure`).
    pub insecure: bool,
    pub mirror: bool,
    /// The part of image names replaced by `to`.
    from: String,
    /// The path on `host` that replaces `from` (may be empty).
    to: String,
}

impl Source {
    /// The reference's own host, nothing rewritten (no registries.conf).
    pub fn direct(reference: &Reference) -> Source {
        let name = reference.name();
        Source::at(&name, &name, false, false)
    }

    /// `location` (`host[/path]`) standing for the names under `from`.
    fn at(location: &str, from: &str, insecure: bool, mirror: bool) -> Source {
        let (host, to) = location.split_once('/').unwrap_or((location, ""));
        Source {
            host: host.to_string(),
            insecure,
            mirror,
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    /// The repository on this endpoint for the image name `name`
    /// (`host/path`); None when `name` is not under this source's prefix
    /// or the result is not a valid repository.
    pub fn repository(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix(self.from.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let path = format!("{}{rest}", self.to);
        let path = path.trim_start_matches('/');
        (!path.is_empty() && path.split('/').all(valid_component)).then(|| path.to_string())
    }
}

/// The merged settings of registries.conf and its drop-ins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    registries: Vec<Registry>,
}

impl RegistriesConf {
    /// The settings from `$HAKO_REGISTRIES_CONF` (and its `.d` directory)
    /// or the system files.
    pub fn load() -> Result<RegistriesConf, RegistriesConfError> {
        match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
            Some(file) => {
                let file = PathBuf::from(file);
                let mut dir = file.clone().into_os_string();
                dir.push(".d");
                RegistriesConf::load_files(&file, Some(Path::new(&dir)))
            }
            None => {
                RegistriesConf::load_files(Path::new(SYSTEM_FILE), Some(Path::new(SYSTEM_DROP_INS)))
            }
        }
    }

    /// `file`, then the `*.conf` files of `drop_ins` in name order.
    pub fn load_files(
        file: &Path,
        drop_ins: Option<&Path>,
    ) -> Result<RegistriesConf, RegistriesConfError> {
        let mut files = vec![file.to_path_buf()];
        if let Some(dir) = drop_ins {
            files.extend(drop_in_files(dir)?);
        }
        let mut conf = RegistriesConf::default();
        for f in files {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    crate::debug(&format!("{}: not found, no registry settings", f.display()));
                    continue;
                }
                Err(source) => return Err(RegistriesConfError::Read { path: f, source }),
            };
            conf.merge(parse_file(&text, &f)?);
        }
        Ok(conf)
    }

    /// Settings from one file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConf, RegistriesConfError> {
        let mut conf = RegistriesConf::default();
        conf.merge(parse_file(text, path)?);
        Ok(conf)
    }

    /// Adds `entries`, each replacing an earlier one with its prefix.
    fn merge(&mut self, entries: Vec<Registry>) {
        for r in entries {
            match self.registries.iter_mut().find(|x| x.prefix == r.prefix) {
                Some(slot) => *slot = r,
                None => self.registries.push(r),
            }
        }
    }

    pub fn registries(&self) -> &[Registry] {
        &self.registries
    }

    /// The entry for image name `name` (`host/path`) and the length of the
    /// part of `name` it matched: the longest prefix (a plain prefix
    /// before a `*.` one of the same length).
    pub fn find(&self, name: &str) -> Option<(&Registry, usize)> {
        self.registries
            .iter()
            .filter_map(|r| matched_len(&r.prefix, name).map(|n| (r, n)))
            .max_by_key(|(r, _)| (r.prefix.len(), !r.prefix.starts_with("*.")))
    }

    /// The endpoints for `reference`, in the order to try them.
    pub fn sources(
        &self,
        reference: &Reference,
        access: Access,
    ) -> Result<Vec<Source>, RegistriesConfError> {
        let name = reference.name();
        let own = Source::at(&name, &name, false, false);
        let Some((reg, at)) = self.find(&name) else {
            return Ok(vec![own]);
        };
        if reg.blocked {
            return Err(RegistriesConfError::Blocked {
                name,
                prefix: reg.prefix.clone(),
                file: reg.file.clone(),
            });
        }
        if access == Access::Direct {
            return Ok(vec![Source {
                insecure: reg.insecure,
                ..own
            }]);
        }
        let matched = &name[..at];
        let by_digest = reference.digest.is_some();
        let mut out = Vec::new();
        for m in &reg.mirrors {
            let eligible = match m.pull_from_mirror {
                PullFromMirror::All => true,
                PullFromMirror::DigestOnly => by_digest,
                PullFromMirror::TagOnly => !by_digest,
            };
            if eligible {
                out.push((
                    Source::at(&m.location, matched, m.insecure, true),
                    m.location.as_str(),
                ));
            } else {
                crate::debug(&format!(
                    "{reference}: skipping mirror {} (pull-from-mirror = {})",
                    m.location, m.pull_from_mirror
                ));
            }
        }
        let location = if reg.location.is_empty() {
            matched
        } else {
            &reg.location
        };
        out.push((Source::at(location, matched, reg.insecure, false), location));
        out.into_iter()
            .map(|(s, location)| {
                if s.repository(&name).is_some() {
                    Ok(s)
                } else {
                    Err(RegistriesConfError::Rewrite {
                        file: reg.file.clone(),
                        prefix: reg.prefix.clone(),
                        location: location.to_string(),
                        name: name.clone(),
                    })
                }
            })
            .collect()
    }
}

/// How much of `name` the prefix covers, if it matches: all of a plain
/// prefix equal to `name` or followed by `/` in it; the host for `*.domain`
/// when the name's host (without port) is a subdomain of `domain`.
fn matched_len(prefix: &str, name: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = name.split('/').next().unwrap_or(name);
        let bare = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let sub = bare.strip_suffix(domain)?.strip_suffix('.')?;
        return (!sub.is_empty()).then_some(host.len());
    }
    let rest = name.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(prefix.len())
}

fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, RegistriesConfError> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RegistriesConfError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| RegistriesConfError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        // A directory named *.conf is not a drop-in (metadata follows
        // symlinks, as podman does).
        if path.extension().is_some_and(|e| e == "conf")
            && std::fs::metadata(&path).is_ok_and(|m| m.is_file())
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

// ---- the file format ---------------------------------------------------------

#[derive(Deserialize, Default)]
struct RawFile {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    /// Version 1.
    registries: Option<RawV1>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawMirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<String>,
}

fn parse_file(text: &str, path: &Path) -> Result<Vec<Registry>, RegistriesConfError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        RegistriesConfError::Parse {
            path: path.to_path_buf(),
            message: match line {
                Some(n) => format!("line {n}: {}", e.message().trim_end()),
                None => e.message().trim_end().to_string(),
            },
        }
    })?;
    let mut out: Vec<Registry> = Vec::new();
    match raw.registries {
        Some(_) if !raw.registry.is_empty() => {
            return Err(RegistriesConfError::Parse {
                path: path.to_path_buf(),
                message: "mixes version 1 ([registries.*]) and version 2 ([[registry]]) tables"
                    .into(),
            })
        }
        Some(v1) => {
            let lists = [(v1.insecure, true, false), (v1.block, false, true)];
            for (list, insecure, blocked) in lists {
                for host in list.map(|l| l.registries).unwrap_or_default() {
                    check_prefix(&host).map_err(|problem| invalid(path, &host, problem))?;
                    match out.iter_mut().find(|r| r.prefix == host) {
                        Some(r) => {
                            r.insecure |= insecure;
                            r.blocked |= blocked;
                        }
                        None => out.push(Registry {
                            location: host.clone(),
                            prefix: host,
                            insecure,
                            blocked,
                            mirrors: Vec::new(),
                            file: path.to_path_buf(),
                        }),
                    }
                }
            }
            // registries.search is about short names: not used.
            let _ = v1.search;
        }
        None => {
            for r in raw.registry {
                let reg = registry(r, path)?;
                if out.iter().any(|x| x.prefix == reg.prefix) {
                    return Err(invalid(
                        path,
                        &reg.prefix,
                        "a second [[registry]] with this prefix".into(),
                    ));
                }
                out.push(reg);
            }
        }
    }
    Ok(out)
}

fn invalid(path: &Path, prefix: &str, problem: String) -> RegistriesConfError {
    RegistriesConfError::Invalid {
        path: path.to_path_buf(),
        prefix: prefix.to_string(),
        problem,
    }
}

fn registry(r: RawRegistry, path: &Path) -> Result<Registry, RegistriesConfError> {
    let location = r.location.filter(|l| !l.is_empty());
    let prefix = match (r.prefix.filter(|p| !p.is_empty()), &location) {
        (Some(p), _) => p,
        (None, Some(l)) => l.clone(),
        (None, None) => {
            return Err(invalid(
                path,
                "",
                "neither prefix nor location is set".into(),
            ))
        }
    };
    let bad = |problem: String| invalid(path, &prefix, problem);
    check_prefix(&prefix).map_err(&bad)?;
    let location = match location {
        Some(_) if prefix.starts_with("*.") => {
            return Err(bad(
                "a wildcard prefix takes no location (the name's own host is used)".into(),
            ))
        }
        Some(l) => {
            check_location(&l).map_err(|p| bad(format!("location {l:?}: {p}")))?;
            l
        }
        None if prefix.starts_with("*.") => String::new(),
        None => prefix.clone(),
    };
    let mut mirrors = Vec::new();
    for m in r.mirror {
        check_location(&m.location)
            .map_err(|p| bad(format!("mirror location {:?}: {p}", m.location)))?;
        let pull_from_mirror = match m.pull_from_mirror.as_deref() {
            None | Some("") if r.mirror_by_digest_only => PullFromMirror::DigestOnly,
            None | Some("") | Some("all") => PullFromMirror::All,
            Some("digest-only") => PullFromMirror::DigestOnly,
            Some("tag-only") => PullFromMirror::TagOnly,
            Some(other) => {
                return Err(bad(format!(
                    "mirror {:?}: pull-from-mirror is \"all\", \"digest-only\" or \
                     \"tag-only\", not {other:?}",
                    m.location
                )))
            }
        };
        if r.mirror_by_digest_only && pull_from_mirror != PullFromMirror::DigestOnly {
            return Err(bad(format!(
                "mirror {:?}: pull-from-mirror conflicts with mirror-by-digest-only = true",
                m.location
            )));
        }
        mirrors.push(Mirror {
            location: m.location,
            insecure: m.insecure,
            pull_from_mirror,
        });
    }
    Ok(Registry {
        prefix,
        location,
        insecure: r.insecure,
        blocked: r.blocked,
        mirrors,
        file: path.to_path_buf(),
    })
}

/// `*.domain` or a location.
fn check_prefix(p: &str) -> Result<(), String> {
    match p.strip_prefix("*.") {
        Some(domain) if domain.contains('/') || domain.contains(':') || !valid_host(domain) => {
            Err("a wildcard prefix is *.domain, without port or path".into())
        }
        Some(_) => Ok(()),
        None => check_location(p),
    }
}

/// `host[:port][/path]`, without tag or digest.
fn check_location(l: &str) -> Result<(), String> {
    if l.contains("://") {
        return Err("no scheme here (http:// or https://); \
                    insecure = true speaks plain HTTP"
            .into());
    }
    let (host, path) = l.split_once('/').map_or((l, None), |(h, p)| (h, Some(p)));
    if !valid_host(host) {
        return Err(format!("{host:?} is not a valid host[:port]"));
    }
    if let Some(path) = path {
        if path.contains(':') || path.contains('@') {
            return Err("a tag or digest here is not supported".into());
        }
        if !path.split('/').all(valid_component) {
            return Err(
                "path components are lowercase letters and digits, separated by \
                 '.', '_', '__' or '-'"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Result<RegistriesConf, RegistriesConfError> {
        RegistriesConf::parse(text, Path::new("/test/registries.conf"))
    }

    fn reference(s: &str) -> Reference {
        Reference::parse(s).expect("reference")
    }

    /// (host, repository, insecure, mirror) of each source.
    fn plan(c: &RegistriesConf, r: &str, access: Access) -> Vec<(String, String, bool, bool)> {
        let r = reference(r);
        c.sources(&r, access)
            .expect("sources")
            .into_iter()
            .map(|s| {
                let repo = s.repository(&r.name()).expect("repository");
                (s.host, repo, s.insecure, s.mirror)
            })
            .collect()
    }

    fn t(h: &str, r: &str, insecure: bool, mirror: bool) -> (String, String, bool, bool) {
        (h.into(), r.into(), insecure, mirror)
    }

    #[test]
    fn parses_podmans_format() {
        let c = conf(
            r#"
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "docker.io/library"
location = "127.0.0.1:5000/hub/library"
insecure = true

[[registry.mirror]]
location = "mirror.example.com/library"

[[registry.mirror]]
location = "10.0.0.1:5000"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
location = "quay.io"
blocked = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"#,
        )
        .expect("parse");
        let r = c.registries();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prefix, "docker.io/library");
        assert_eq!(r[0].location, "127.0.0.1:5000/hub/library");
        assert!(r[0].insecure && !r[0].blocked);
        assert_eq!(
            r[0].mirrors,
            vec![
                Mirror {
                    location: "mirror.example.com/library".into(),
                    insecure: false,
                    pull_from_mirror: PullFromMirror::All
                },
                Mirror {
                    location: "10.0.0.1:5000".into(),
                    insecure: true,
                    pull_from_mirror: PullFromMirror::DigestOnly
                }
            ]
        );
        assert_eq!(r[1].prefix, "quay.io");
        assert!(r[1].blocked);
        assert_eq!(r[1].file, Path::new("/test/registries.conf"));
        // Debian's file: comments only.
        assert_eq!(
            conf("# nothing\n").expect("empty"),
            RegistriesConf::default()
        );
    }

    #[test]
    fn malformed_files_name_the_file_and_the_problem() {
        let cases = [
            ("[[registry]\nprefix = 1", "line 1"),
            ("[[registry]]\nprefix = 1", "invalid type"),
            ("[[registry]]\nlocation = \"a.io\"\ninsecrue = true", "insecrue"),
            ("[[registry]]\ninsecure = true", "neither prefix nor location"),
            ("[[registry]]\nlocation = \"https://a.io\"", "no scheme"),
            ("[[registry]]\nlocation = \"a.io/x:tag\"", "tag or digest"),
            ("[[registry]]\nlocation = \"a.io/Upper\"", "path components"),
            ("[[registry]]\nlocation = \"bad host!\"", "not a valid host"),
            (
                "[[registry]]\nprefix = \"*.a.io\"\nlocation = \"b.io\"",
                "wildcard prefix takes no location",
            ),
            ("[[registry]]\nprefix = \"*.a.io/x\"", "wildcard prefix is"),
            (
                "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"",
                "not \"sometimes\"",
            ),
            (
                "[[registry]]\nlocation = \"a.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"tag-only\"",
                "conflicts with mirror-by-digest-only",
            ),
            (
                "[[registry]]\nlocation = \"a.io\"\n[[registry]]\nprefix = \"a.io\"",
                "a second [[registry]]",
            ),
            (
                "[registries.insecure]\nregistries = [\"a.io\"]\n[[registry]]\nlocation = \"b.io\"",
                "mixes version 1",
            ),
        ];
        for (text, want) in cases {
            let err = conf(text).expect_err(text).to_string();
            assert!(err.starts_with("/test/registries.conf: "), "{text}: {err}");
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn version_1_lists() {
        let c = conf(
            "[registries.search]\nregistries = [\"docker.io\"]\n\
             [registries.insecure]\nregistries = [\"10.1.1.1:5000\", \"b.io\"]\n\
             [registries.block]\nregistries = [\"b.io\"]\n",
        )
        .expect("v1");
        let r = c.registries();
        assert_eq!(r.len(), 2);
        assert!(r[0].insecure && !r[0].blocked && r[0].prefix == "10.1.1.1:5000");
        assert!(r[1].insecure && r[1].blocked && r[1].prefix == "b.io");
    }

    #[test]
    fn prefixes_match_whole_components_and_the_longest_wins() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com"
location = "a.io"
[[registry]]
prefix = "example.com/foo"
location = "b.io/x"
[[registry]]
prefix = "*.example.com"
[[registry]]
prefix = "c.example.com"
location = "c.io"
"#,
        )
        .expect("parse");
        let found = |name: &str| c.find(name).map(|(r, n)| (r.prefix.as_str(), n));
        assert_eq!(found("example.com/foo"), Some(("example.com/foo", 15)));
        assert_eq!(found("example.com/foo/bar"), Some(("example.com/foo", 15)));
        assert_eq!(found("example.com/foobar"), Some(("example.com", 11)));
        assert_eq!(found("example.com:5000/foo"), None);
        assert_eq!(found("example.community/x"), None);
        assert_eq!(found("a.example.com/x"), Some(("*.example.com", 13)));
        assert_eq!(found("a.b.example.com:5000/x"), Some(("*.example.com", 20)));
        assert_eq!(found("c.example.com/x"), Some(("c.example.com", 13)));
        assert_eq!(found("xexample.com/x"), None);
        assert_eq!(found("docker.io/library/busybox"), None);
    }

    #[test]
    fn sources_rewrite_locations_and_pick_mirrors() {
        let c = conf(
            r#"
[[registry]]
prefix = "docker.io/library"
location = "127.0.0.1:5000/mirror/library"
[[registry.mirror]]
location = "m1.io"
insecure = true
[[registry.mirror]]
location = "m2.io/d"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m3.io/t"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "*.corp.example"
insecure = true
[[registry.mirror]]
location = "cache.io/corp"

[[registry]]
prefix = "blocked.io/private"
blocked = true
"#,
        )
        .expect("parse");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            plan(&c, "busybox", Access::Pull),
            vec![
                t("m1.io", "busybox", true, true),
                t("m3.io", "t/busybox", false, true),
                t("127.0.0.1:5000", "mirror/library/busybox", false, false),
            ]
        );
        assert_eq!(
            plan(&c, &format!("busybox@{d}"), Access::Pull),
            vec![
                t("m1.io", "busybox", true, true),
                t("m2.io", "d/busybox", false, true),
                t("127.0.0.1:5000", "mirror/library/busybox", false, false),
            ]
        );
        // Pushes go to the name itself.
        assert_eq!(
            plan(&c, "busybox", Access::Direct),
            vec![t("docker.io", "library/busybox", false, false)]
        );
        assert_eq!(
            plan(&c, "git.corp.example/team/app:1", Access::Pull),
            vec![
                t("cache.io", "corp/team/app", false, true),
                t("git.corp.example", "team/app", true, false),
            ]
        );
        // No entry: the name as it is.
        assert_eq!(
            plan(&c, "quay.io/a/b", Access::Pull),
            vec![t("quay.io", "a/b", false, false)]
        );
        // Blocked, for pulls and pushes; the next component is not.
        for access in [Access::Pull, Access::Direct] {
            let err = c
                .sources(&reference("blocked.io/private/x"), access)
                .expect_err("blocked")
                .to_string();
            assert!(err.contains("blocked.io/private/x is blocked by /test/registries.conf"));
        }
        assert_eq!(
            plan(&c, "blocked.io/privatex", Access::Pull),
            vec![t("blocked.io", "privatex", false, false)]
        );
    }

    #[test]
    fn a_location_that_leaves_no_repository_is_an_error() {
        let c = conf("[[registry]]\nprefix = \"a.io/app\"\nlocation = \"b.io\"").expect("parse");
        let err = c
            .sources(&reference("a.io/app"), Access::Pull)
            .expect_err("no repository")
            .to_string();
        assert!(
            err.contains("location \"b.io\" turns a.io/app into no valid"),
            "{err}"
        );
        assert_eq!(
            plan(&c, "a.io/app/x", Access::Pull),
            vec![t("b.io", "x", false, false)]
        );
    }

    #[test]
    fn drop_ins_override_per_prefix_in_name_order() {
        let dir = std::env::temp_dir().join(format!("hako-regconf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.join("registries.conf.d");
        std::fs::create_dir_all(d.join("dir.conf")).expect("mkdir");
        let main = dir.join("registries.conf");
        let write = |p: &Path, s: &str| std::fs::write(p, s).expect("write");
        write(
            &main,
            "[[registry]]\nlocation = \"a.io\"\n[[registry]]\nlocation = \"b.io\"\ninsecure = true",
        );
        write(
            &d.join("20-b.conf"),
            "[[registry]]\nlocation = \"a.io\"\nblocked = true",
        );
        write(
            &d.join("10-a.conf"),
            "[[registry]]\nlocation = \"a.io\"\ninsecure = true",
        );
        write(&d.join("30-c.conf.bak"), "not toml at all [");
        let c = RegistriesConf::load_files(&main, Some(&d)).expect("load");
        let r = c.registries();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prefix, "a.io");
        assert!(
            r[0].blocked && !r[0].insecure,
            "20-b.conf replaces 10-a.conf"
        );
        assert_eq!(r[0].file, d.join("20-b.conf"));
        assert!(r[1].insecure);
        // Missing files: no settings.
        let none = RegistriesConf::load_files(&dir.join("nope.conf"), Some(&dir.join("nope.d")))
            .expect("missing");
        assert_eq!(none, RegistriesConf::default());
        // A malformed drop-in names itself.
        write(
            &d.join("40-bad.conf"),
            "[[registry]]\nlocation = \"a.io\"\nblocked = \"yes\"",
        );
        let err = RegistriesConf::load_files(&main, Some(&d))
            .expect_err("bad drop-in")
            .to_string();
        assert!(
            err.starts_with(&format!("{}: line 3", d.join("40-bad.conf").display())),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
