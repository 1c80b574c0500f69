//! A distribution-spec client: manifests and blobs, with bearer-token and
//! basic auth, retries and Range resume. A client made with
//! [`Client::configured`] pulls through the mirrors and location that
//! registries.conf gives the image ([`crate::registries_conf`]), each
//! endpoint with its own scheme, credentials and tokens, falling through
//! to the next one when an endpoint fails.
//!
//! HTTPS with the system's root certificates; plain HTTP for loopback
//! hosts (127.0.0.0/8, ::1, localhost), hosts listed in
//! `HAKO_INSECURE_REGISTRIES` (comma-separated host[:port]) and clients
//! made with `insecure` (podman's `--tls-verify=false`).
//! Credentials come from the auth.json podman and docker read:
//! $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
//! ~/.docker/config.json.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;

use crate::digest::Digest;
use crate::manifest::{self, ManifestError, ACCEPT, MAX_JSON};
use crate::reference::Reference;
use crate::registries_conf::{Access, RegistriesConf, RegistriesConfError, Source};
use crate::store::{Ingest, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: authentication failed ({status}){hint}")]
    Auth {
        url: String,
        status: u16,
        hint: String,
    },
    #[error("{url}: not found (404): {what}")]
    NotFound { url: String, what: String },
    #[error("{url}: the manifest has digest {got}, not {expected}")]
    ManifestDigest {
        url: String,
        expected: Digest,
        got: Digest,
    },
    #[error("{url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("{url}: the response is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: storing the blob: {source}")]
    Storing { url: String, source: io::Error },
    #[error("{url}: {source}")]
    BadManifest { url: String, source: ManifestError },
    /// registries.conf: unreadable, malformed, or the registry is blocked.
    #[error(transparent)]
    Conf(#[from] RegistriesConfError),
    /// Every endpoint (mirrors, then the registry) failed, in the order
    /// they were tried.
    #[error("{what}: every source failed: {}", join_errors(.errors))]
    Sources {
        what: String,
        errors: Vec<RegistryError>,
    },
}

impl RegistryError {
    /// A failure of this machine (store, disk) rather than of the
    /// endpoint: trying another endpoint will not help. A blob with other
    /// content than its digest, or more bytes than its descriptor, is the
    /// endpoint's fault.
    fn is_local(&self) -> bool {
        match self {
            RegistryError::Store {
                source: StoreError::Verify { .. },
                ..
            } => false,
            RegistryError::Store { .. } | RegistryError::Conf(_) => true,
            RegistryError::Storing { source, .. } => source.kind() != io::ErrorKind::InvalidData,
            _ => false,
        }
    }
}

fn join_errors(errors: &[RegistryError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What [`Client::fetch_blob`] reports as a blob arrives.
pub enum BlobEvent<'a> {
    /// The next bytes of the blob.
    Data(&'a [u8]),
    /// The server sent the blob again from its first byte.
    Restart,
}

/// A request body: bytes, or a file streamed from its start on every
/// attempt (a layer need not fit in memory).
#[derive(Clone, Copy)]
enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// Basic credentials for a registry.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Where credentials are read from and written to, in podman's order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        v.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(d).join("containers/auth.json"));
    } else if nix::unistd::geteuid().is_root() {
        v.push(PathBuf::from("/run/containers/0/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        v.push(PathBuf::from(h).join(".docker/config.json"));
    }
    v
}

/// Credentials for `registry` from the auth files.
pub fn credentials_for(registry: &str) -> Option<Credentials> {
    let keys = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        if registry == crate::reference::DOCKER_HUB {
            "https://index.docker.io/v1/".to_string()
        } else {
            String::new()
        },
    ];
    for f in auth_files() {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for k in keys.iter().filter(|k| !k.is_empty()) {
            let Some(auth) = json["auths"][k.as_str()]["auth"].as_str() else {
                continue;
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth) else {
                continue;
            };
            let text = String::from_utf8_lossy(&decoded);
            if let Some((u, p)) = text.split_once(':') {
                return Some(Credentials {
                    username: u.into(),
                    password: p.into(),
                });
            }
        }
    }
    None
}

/// Stores credentials for `registry` in the first auth file (creating it,
/// mode 0600); `None` removes them. Returns the file.
pub fn save_credentials(registry: &str, creds: Option<&Credentials>) -> io::Result<PathBuf> {
    let file = auth_files()
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::other("no place for auth.json (set REGISTRY_AUTH_FILE)"))?;
    // Other registries' credentials live in the same file: one that
    // cannot be read is an error, not something to replace.
    let mut json: serde_json::Value = match std::fs::read_to_string(&file) {
        Ok(t) if t.trim().is_empty() => serde_json::json!({"auths": {}}),
        Ok(t) => serde_json::from_str(&t).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not valid JSON ({e}); not overwriting it",
                    file.display()
                ),
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::json!({"auths": {}}),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", file.display()),
            ))
        }
    };
    if !json.is_object() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a JSON object; not overwriting it", file.display()),
        ));
    }
    if !json["auths"].is_object() {
        json["auths"] = serde_json::json!({});
    }
    let auths = json["auths"]
        .as_object_mut()
        .ok_or_else(|| io::Error::other("auths"))?;
    match creds {
        Some(c) => {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            auths.insert(registry.to_string(), serde_json::json!({"auth": token}));
        }
        None => {
            auths.remove(registry);
        }
    }
    let at = |what: &str, p: &std::path::Path| {
        let what = format!("{what} {}", p.display());
        move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(at("creating", dir))?;
    }
    let tmp = file.with_extension("json.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(at("creating", &tmp))?;
        f.write_all(
            serde_json::to_string_pretty(&json)
                .unwrap_or_default()
                .as_bytes(),
        )
        .map_err(at("writing", &tmp))?;
    }
    std::fs::rename(&tmp, &file).map_err(at("replacing", &file))?;
    Ok(file)
}

fn is_insecure(host: &str) -> bool {
    let bare = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if bare == "localhost" {
        return true;
    }
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        if ip.is_loopback() {
            return true;
        }
    }
    std::env::var("HAKO_INSECURE_REGISTRIES")
        .map(|v| v.split(',').any(|h| h.trim() == host || h.trim() == bare))
        .unwrap_or(false)
}

/// One place a client speaks to: a mirror, or the image's registry at
/// its configured location.
struct Endpoint {
    agent: ureq::Agent,
    /// `scheme://api-host`.
    base: String,
    source: Source,
    creds: Option<Credentials>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    /// Attempts per request on transport errors and 5xx (a mirror gives
    /// way to the next endpoint sooner than the last one).
    attempts: u32,
}

/// A client for one image's registry: its mirrors and its location from
/// registries.conf, or just the host of the reference.
pub struct Client {
    /// The registry of the reference, as the user named it.
    registry: String,
    /// In the order to try them; the last is the registry itself.
    endpoints: Vec<Endpoint>,
    /// The endpoint the last manifest came from: tried first.
    preferred: AtomicUsize,
}

impl Client {
    /// A client for `reference`'s registry over HTTPS (plain HTTP for the
    /// insecure hosts above). `creds` override the auth files.
    /// registries.conf is not read: see [`Client::configured`].
    pub fn new(reference: &Reference, creds: Option<Credentials>) -> Client {
        Client::connect(reference, creds, false)
    }

    /// Like [`Client::new`]; `insecure` speaks plain HTTP to any host.
    pub fn connect(reference: &Reference, creds: Option<Credentials>, insecure: bool) -> Client {
        let agent = agent();
        let endpoint = Endpoint::new(&agent, Source::direct(reference), insecure, creds);
        Client {
            registry: reference.registry.clone(),
            endpoints: vec![endpoint],
            preferred: AtomicUsize::new(0),
        }
    }

    /// A client with `conf`'s settings for `reference`: for
    /// [`Access::Pull`] its mirrors, then its location; for
    /// [`Access::Direct`] (pushes, logins) its own host. A blocked
    /// registry is an error. `creds` (else the auth files' entry for the
    /// registry's host) are for the registry; a mirror gets the auth
    /// files' entry for its own host. `insecure` is plain HTTP to every
    /// endpoint, as podman's `--tls-verify=false`.
    pub fn configured(
        reference: &Reference,
        creds: Option<Credentials>,
        insecure: bool,
        conf: &RegistriesConf,
        access: Access,
    ) -> Result<Client, RegistryError> {
        let agent = agent();
        let endpoints: Vec<Endpoint> = conf
            .sources(reference, access)?
            .into_iter()
            .map(|s| {
                let creds = if s.mirror { None } else { creds.clone() };
                Endpoint::new(&agent, s, insecure, creds)
            })
            .collect();
        for e in &endpoints {
            crate::debug(&format!(
                "{reference}: {} {}",
                if e.source.mirror {
                    "mirror"
                } else {
                    "registry"
                },
                e.base
            ));
        }
        Ok(Client {
            registry: reference.registry.clone(),
            endpoints,
            preferred: AtomicUsize::new(0),
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The registry itself (pushes, pings): the last endpoint.
    fn primary(&self) -> &Endpoint {
        // `configured` and `connect` always make at least one.
        &self.endpoints[self.endpoints.len() - 1]
    }

    /// GET /v2/: checks the registry answers and the credentials work.
    pub fn ping(&self) -> Result<(), RegistryError> {
        let ep = self.primary();
        let url = format!("{}/v2/", ep.base);
        ep.send("GET", &url, "", &[], None).map(|_| ())
    }

    /// `repository` (under the client's registry) on endpoint `ep`.
    fn path(&self, ep: &Endpoint, repository: &str) -> String {
        ep.source
            .repository(&format!("{}/{repository}", self.registry))
            .unwrap_or_else(|| repository.to_string())
    }

    /// Runs `f` on each endpoint, the preferred first, until one succeeds;
    /// returns its result and index. `f` is told whether its endpoint is
    /// the last one left. An error of this machine (the store, the disk)
    /// ends the tries; the others are kept, and all of them reported when
    /// every endpoint failed.
    fn try_each<T>(
        &self,
        what: impl Fn() -> String,
        mut f: impl FnMut(&Endpoint, bool) -> Result<T, RegistryError>,
    ) -> Result<(T, usize), RegistryError> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed).min(n - 1);
        let order: Vec<usize> = std::iter::once(first)
            .chain((0..n).filter(|&i| i != first))
            .collect();
        let mut errors = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let last = k + 1 == n;
            match f(&self.endpoints[i], last) {
                Ok(v) => return Ok((v, i)),
                Err(e) if e.is_local() => return Err(e),
                Err(e) => {
                    if let Some(&next) = order.get(k + 1) {
                        crate::debug(&format!(
                            "{}: {e}; trying {}",
                            what(),
                            self.endpoints[next].base
                        ));
                    }
                    errors.push(e);
                }
            }
        }
        if errors.len() == 1 {
            if let Some(e) = errors.pop() {
                return Err(e);
            }
        }
        Err(RegistryError::Sources {
            what: what(),
            errors,
        })
    }
}

impl Endpoint {
    fn new(
        agent: &ureq::Agent,
        source: Source,
        insecure: bool,
        creds: Option<Credentials>,
    ) -> Endpoint {
        let scheme = if insecure || source.insecure || is_insecure(&source.host) {
            "http"
        } else {
            "https"
        };
        let api_host = if source.host == crate::reference::DOCKER_HUB {
            crate::reference::DOCKER_HUB_API
        } else {
            &source.host
        };
        Endpoint {
            agent: agent.clone(),
            base: format!("{scheme}://{api_host}"),
            creds: creds.or_else(|| credentials_for(&source.host)),
            tokens: Mutex::new(HashMap::new()),
            attempts: if source.mirror { 2 } else { 5 },
            source,
        }
    }

    /// Sends a request with auth, retrying transport errors and 5xx, and
    /// answering a 401 once with a token or basic credentials.
    fn send(
        &self,
        method: &str,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: Option<Body<'_>>,
    ) -> Result<ureq::Response, RegistryError> {
        let mut delay = Duration::from_millis(200);
        let mut attempts = 0;
        let mut authed = false;
        loop {
            attempts += 1;
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(auth) = self.auth_header(scope) {
                req = req.set("Authorization", &auth);
            }
            let result = match body {
                Some(Body::Bytes(b)) => req.send_bytes(b),
                Some(Body::File(path)) => {
                    let file = std::fs::File::open(path).map_err(|e| RegistryError::Http {
                        url: url.into(),
                        message: format!("opening {}: {e}", path.display()),
                    })?;
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    req.set("Content-Length", &len.to_string())
                        .send(io::BufReader::with_capacity(256 << 10, file))
                }
                None => req.call(),
            };
            match result {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if !authed => {
                    authed = true;
                    let challenge = r.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate(url, scope, &challenge)?;
                }
                Err(ureq::Error::Status(code @ (401 | 403), r)) => {
                    let body = r.into_string().unwrap_or_default();
                    return Err(RegistryError::Auth {
                        url: url.into(),
                        status: code,
                        hint: if self.creds.is_none() {
                            " (no credentials: hako login)".into()
                        } else {
                            format!(": {}", body.chars().take(200).collect::<String>())
                        },
                    });
                }
                Err(ureq::Error::Status(404, r)) => {
                    return Err(RegistryError::NotFound {
                        url: url.into(),
                        what: r
                            .into_string()
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect(),
                    })
                }
                Err(ureq::Error::Status(code, r)) if code >= 500 && attempts < self.attempts => {
                    drop(r);
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(ureq::Error::Status(code, r)) => {
                    return Err(RegistryError::Http {
                        url: url.into(),
                        message: format!(
                            "HTTP {code}: {}",
                            r.into_string()
                                .unwrap_or_default()
                                .chars()
                                .take(300)
                                .collect::<String>()
                        ),
                    })
                }
                Err(ureq::Error::Transport(t))
                    if attempts < self.attempts && !is_tls_failure(&t) =>
                {
                    crate::debug(&format!("{url}: {t}; retrying"));
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(RegistryError::Http {
                        url: url.into(),
                        message: transport_message(&t, url),
                    })
                }
            }
        }
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        if let Ok(t) = self.tokens.lock() {
            if let Some(tok) = t.get(scope).or_else(|| t.get("*")) {
                return Some(tok.clone());
            }
        }
        None
    }

    /// Answers a WWW-Authenticate challenge: Bearer → fetch a token from
    /// the realm (with basic credentials if we have them); Basic → use the
    /// credentials.
    fn authenticate(&self, url: &str, scope: &str, challenge: &str) -> Result<(), RegistryError> {
        let (kind, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        let value = match kind.to_ascii_lowercase().as_str() {
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| RegistryError::Auth {
                    url: url.into(),
                    status: 401,
                    hint: ": a Bearer challenge without realm".into(),
                })?;
                let mut token_url = realm.clone();
                let mut sep = if token_url.contains('?') { '&' } else { '?' };
                if let Some(s) = params.get("service") {
                    token_url.push_str(&format!("{sep}service={}", urlencode(s)));
                    sep = '&';
                }
                let scope_param = if scope.is_empty() {
                    params.get("scope").cloned().unwrap_or_default()
                } else {
                    scope.to_string()
                };
                if !scope_param.is_empty() {
                    token_url.push_str(&format!("{sep}scope={}", urlencode(&scope_param)));
                }
                let mut req = self.agent.get(&token_url);
                if let Some(c) = &self.creds {
                    req = req.set("Authorization", &basic(c));
                }
                let resp = req.call().map_err(|e| RegistryError::Auth {
                    url: token_url.clone(),
                    status: match &e {
                        ureq::Error::Status(c, _) => *c,
                        _ => 0,
                    },
                    hint: format!(": getting a token: {e}"),
                })?;
                let json: serde_json::Value =
                    serde_json::from_reader(resp.into_reader().take(MAX_JSON)).map_err(|e| {
                        RegistryError::Auth {
                            url: token_url.clone(),
                            status: 200,
                            hint: format!(": the token response is not JSON: {e}"),
                        }
                    })?;
                let tok = json["token"]
                    .as_str()
                    .or_else(|| json["access_token"].as_str())
                    .ok_or_else(|| RegistryError::Auth {
                        url: token_url.clone(),
                        status: 200,
                        hint: ": the token response has no token".into(),
                    })?;
                format!("Bearer {tok}")
            }
            "basic" => {
                let c = self.creds.as_ref().ok_or_else(|| RegistryError::Auth {
                    url: url.into(),
                    status: 401,
                    hint: " (the registry wants credentials: hako login)".into(),
                })?;
                basic(c)
            }
            _ => {
                return Err(RegistryError::Auth {
                    url: url.into(),
                    status: 401,
                    hint: format!(": unsupported challenge {challenge:?}"),
                })
            }
        };
        let key = if kind.eq_ignore_ascii_case("basic") {
            "*"
        } else {
            scope
        };
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(key.to_string(), value);
        }
        Ok(())
    }

    /// A manifest from this endpoint (see [`Client::manifest`]).
    fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>, Digest), RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let scope = scope(repository, "pull");
        let resp = self.send("GET", &url, &scope, &[("Accept", ACCEPT)], None)?;
        let ct = resp.header("content-type").map(str::to_string);
        let header_digest = resp
            .header("docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok());
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| RegistryError::Http {
                url: url.clone(),
                message: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(RegistryError::TooLarge {
                url,
                limit: MAX_JSON,
            });
        }
        let digest = match reference.parse::<Digest>() {
            Ok(expected) => {
                let got = expected.of_same_kind(&bytes);
                if got != expected {
                    return Err(RegistryError::ManifestDigest { url, expected, got });
                }
                expected
            }
            Err(_) => {
                let computed = Digest::sha256_of(&bytes);
                match header_digest {
                    Some(h) if h.of_same_kind(&bytes) != h => {
                        return Err(RegistryError::ManifestDigest {
                            url,
                            expected: h.clone(),
                            got: h.of_same_kind(&bytes),
                        })
                    }
                    _ => computed,
                }
            }
        };
        Ok((bytes, ct, digest))
    }

    /// Downloads blob `url` of `size` bytes into `ingest`, resuming with
    /// Range after a broken connection (see [`Client::fetch_blob`]).
    fn download(
        &self,
        url: &str,
        scope: &str,
        ingest: &mut Ingest<'_>,
        size: u64,
        on_data: &mut dyn FnMut(BlobEvent<'_>),
    ) -> Result<(), RegistryError> {
        let mut failures = 0;
        // The most bytes any attempt reached: only beating it is progress
        // (a server that ignores Range starts from 0 every time).
        let mut best = 0;
        loop {
            let offset = ingest.written();
            if offset >= size {
                break;
            }
            let range = format!("bytes={offset}-");
            let headers: Vec<(&str, &str)> = if offset > 0 {
                vec![("Range", range.as_str())]
            } else {
                vec![]
            };
            let resp = self.send("GET", url, scope, &headers, None)?;
            if offset > 0 && resp.status() != 206 {
                // The server sent everything again.
                ingest.restart().map_err(|source| RegistryError::Storing {
                    url: url.into(),
                    source,
                })?;
                on_data(BlobEvent::Restart);
            }
            let mut reader = resp.into_reader();
            let mut buf = vec![0u8; 256 << 10];
            let stopped = loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => n,
                    Err(e) => break Some(e),
                };
                // A write error is no reason to ask this endpoint again
                // (disk full, more bytes than the descriptor says).
                if let Err(source) = ingest.write_all(&buf[..n]) {
                    return Err(RegistryError::Storing {
                        url: url.into(),
                        source,
                    });
                }
                on_data(BlobEvent::Data(&buf[..n]));
            };
            if stopped.is_none() && ingest.written() >= size {
                break;
            }
            // Another attempt after progress; `attempts` in a row
            // without any end it.
            if ingest.written() > best {
                best = ingest.written();
                failures = 0;
            }
            failures += 1;
            let why = match &stopped {
                Some(e) => format!("{e} at {} of {size} bytes", ingest.written()),
                None => format!("the blob ended at {} of {size} bytes", ingest.written()),
            };
            if failures > self.attempts {
                return Err(RegistryError::Http {
                    url: url.into(),
                    message: why,
                });
            }
            crate::debug(&format!("{url}: {why}; resuming"));
            std::thread::sleep(Duration::from_millis(100 << failures));
        }
        Ok(())
    }
}

impl Client {
    /// Fetches a manifest by tag or digest: (bytes, content type, digest).
    /// A manifest asked for by digest is verified against it. Endpoints
    /// are tried in turn; one that fails, or serves a manifest that does
    /// not parse while others are left, is skipped. The endpoint that
    /// answered is asked first from then on (blobs included).
    pub fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>, Digest), RegistryError> {
        let what = || format!("{}/{repository}: manifest {reference}", self.registry);
        let (got, i) = self.try_each(what, |ep, last| {
            let path = self.path(ep, repository);
            let got = ep.manifest(&path, reference)?;
            if !last {
                let url = format!("{}/v2/{path}/manifests/{reference}", ep.base);
                if let Err(source) = manifest::parse(&got.0, got.1.as_deref(), &url) {
                    return Err(RegistryError::BadManifest { url, source });
                }
            }
            Ok(got)
        })?;
        self.preferred.store(i, Ordering::Relaxed);
        Ok(got)
    }

    /// Downloads blob `digest` of `size` bytes into the store, verified,
    /// resuming with Range after a broken connection, from the endpoint
    /// of the last manifest first, then the others. `on_data` sees every
    /// byte as it arrives, in order ([`BlobEvent::Restart`] when a server
    /// ignored a Range request and sent the blob again from the start, or
    /// the next endpoint is tried after some bytes came); nothing when the
    /// store already has the blob. While another process downloads the
    /// same blob into the store, this waits for it.
    pub fn fetch_blob(
        &self,
        store: &Store,
        repository: &str,
        digest: &Digest,
        size: u64,
        on_data: &mut dyn FnMut(BlobEvent<'_>),
    ) -> Result<(), RegistryError> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let blob_url = |ep: &Endpoint| {
            format!(
                "{}/v2/{}/blobs/{digest}",
                ep.base,
                self.path(ep, repository)
            )
        };
        let lock = store
            .lock_blob(digest)
            .map_err(|source| RegistryError::Store {
                url: blob_url(self.primary()),
                source,
            })?;
        if store.has_blob(digest) {
            return Ok(());
        }
        let mut delivered = false;
        let what = || format!("{}/{repository}: blob {digest}", self.registry);
        let fetched = self.try_each(what, |ep, _| {
            if std::mem::take(&mut delivered) {
                on_data(BlobEvent::Restart);
            }
            let url = blob_url(ep);
            let store_err = |source| RegistryError::Store {
                url: url.clone(),
                source,
            };
            let mut ingest = store.ingest(digest, Some(size)).map_err(store_err)?;
            let scope = scope(&self.path(ep, repository), "pull");
            ep.download(&url, &scope, &mut ingest, size, &mut |ev| {
                delivered |= matches!(ev, BlobEvent::Data(_));
                on_data(ev);
            })?;
            ingest.commit().map_err(store_err)
        });
        drop(lock);
        fetched.map(|_| ())
    }

    /// True when the registry (not a mirror) has blob `digest` in
    /// `repository`.
    pub fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let ep = self.primary();
        let repository = &self.path(ep, repository);
        let url = format!("{}/v2/{repository}/blobs/{digest}", ep.base);
        match ep.send("HEAD", &url, &scope(repository, "pull,push"), &[], None) {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads blob `digest` from the file `path` (monolithic POST + PUT,
    /// streamed), or mounts it from `mount_from` (another repository of
    /// the same registry) when the registry allows.
    pub fn push_blob(
        &self,
        repository: &str,
        digest: &Digest,
        path: &std::path::Path,
        mount_from: Option<&str>,
    ) -> Result<(), RegistryError> {
        if self.has_blob(repository, digest)? {
            return Ok(());
        }
        let ep = self.primary();
        let repository = &self.path(ep, repository);
        let scope = scope(repository, "pull,push");
        let mut url = format!("{}/v2/{repository}/blobs/uploads/", ep.base);
        if let Some(from) = mount_from {
            url.push_str(&format!("?mount={digest}&from={}", urlencode(from)));
        }
        let resp = ep.send(
            "POST",
            &url,
            &scope,
            &[("Content-Length", "0")],
            Some(Body::Bytes(&[])),
        )?;
        if resp.status() == 201 {
            return Ok(()); // mounted
        }
        let location = resp.header("location").unwrap_or("").to_string();
        let mut put = if location.starts_with("http") {
            location
        } else {
            format!("{}{}", ep.base, location)
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={}", urlencode(&digest.to_string())));
        ep.send(
            "PUT",
            &put,
            &scope,
            &[("Content-Type", "application/octet-stream")],
            Some(Body::File(path)),
        )?;
        Ok(())
    }

    pub fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        data: &[u8],
    ) -> Result<(), RegistryError> {
        let ep = self.primary();
        let repository = &self.path(ep, repository);
        let url = format!("{}/v2/{repository}/manifests/{reference}", ep.base);
        ep.send(
            "PUT",
            &url,
            &scope(repository, "pull,push"),
            &[("Content-Type", media_type)],
            Some(Body::Bytes(data)),
        )?;
        Ok(())
    }
}

fn scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("hako/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A TLS handshake or certificate failure: retrying will not help.
fn is_tls_failure(t: &ureq::Transport) -> bool {
    let text = t.to_string().to_ascii_lowercase();
    text.contains("tls") || text.contains("certificate")
}

/// What went wrong, without ureq's copy of the URL (the error names it),
/// unless a redirect led elsewhere; a hint when TLS met plain HTTP.
fn transport_message(t: &ureq::Transport, url: &str) -> String {
    let mut m = t.kind().to_string();
    if let Some(msg) = t.message() {
        m.push_str(&format!(": {msg}"));
    }
    if let Some(src) = std::error::Error::source(t) {
        m.push_str(&format!(": {src}"));
    }
    if let Some(at) = t.url().filter(|u| u.as_str() != url) {
        m.push_str(&format!(" (at {at})"));
    }
    if url.starts_with("https:") && is_tls_failure(t) {
        m.push_str(
            "; if this registry speaks plain HTTP, use --tls-verify=false \
             or list it in HAKO_INSECURE_REGISTRIES",
        );
    }
    m
}

fn basic(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `realm="…",service="…",scope="…"` → map.
fn parse_challenge(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let m = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(m["realm"], "https://auth.docker.io/token");
        assert_eq!(m["service"], "registry.docker.io");
        assert_eq!(m["scope"], "repository:library/busybox:pull");
    }

    #[test]
    fn only_this_machines_failures_stop_the_fallback() {
        let d = Digest::sha256_of(b"x");
        let url = || "http://m/v2/a/blobs/x".to_string();
        let verify = RegistryError::Store {
            url: url(),
            source: StoreError::Verify {
                expected: d,
                problem: "content has digest …".into(),
            },
        };
        assert!(!verify.is_local());
        let too_long = RegistryError::Storing {
            url: url(),
            source: io::Error::new(io::ErrorKind::InvalidData, "larger than its descriptor"),
        };
        assert!(!too_long.is_local());
        let disk_full = RegistryError::Storing {
            url: url(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(disk_full.is_local());
        let store = RegistryError::Store {
            url: url(),
            source: StoreError::NotFound("x".into()),
        };
        assert!(store.is_local());
        for remote in [
            RegistryError::NotFound {
                url: url(),
                what: String::new(),
            },
            RegistryError::Http {
                url: url(),
                message: "connection refused".into(),
            },
        ] {
            assert!(!remote.is_local());
        }
    }

    #[test]
    fn a_client_without_registries_conf_speaks_to_the_name() {
        let r = Reference::parse("busybox").expect("reference");
        let c = Client::connect(&r, None, false);
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.primary().base, "https://registry-1.docker.io");
        assert_eq!(c.path(c.primary(), "library/busybox"), "library/busybox");
        let conf = RegistriesConf::parse(
            "[[registry]]\nprefix = \"docker.io/library\"\nlocation = \"10.0.0.1:5000/hub\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"localhost:5001\"\n",
            std::path::Path::new("/t.conf"),
        )
        .expect("conf");
        let c = Client::configured(&r, None, false, &conf, Access::Pull).expect("client");
        let bases: Vec<_> = c.endpoints.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(bases, ["http://localhost:5001", "http://10.0.0.1:5000"]);
        assert_eq!(c.path(&c.endpoints[0], "library/busybox"), "busybox");
        assert_eq!(c.path(&c.endpoints[1], "library/busybox"), "hub/busybox");
        let c = Client::configured(&r, None, false, &conf, Access::Direct).expect("client");
        // The name's own host, with the entry's `insecure` (as podman).
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.primary().base, "http://registry-1.docker.io");
        assert_eq!(c.path(c.primary(), "library/busybox"), "library/busybox");
    }

    #[test]
    fn insecure_hosts() {
        assert!(is_insecure("127.0.0.1:5000"));
        assert!(is_insecure("localhost:5000"));
        assert!(is_insecure("[::1]:5000"));
        assert!(!is_insecure("quay.io"));
    }
}
