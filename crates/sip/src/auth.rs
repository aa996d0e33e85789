//! HTTP Digest authentication for SIP (RFC 3261 22, RFC 7616, RFC 8760).
//!
//! - [`Challenge`]: a `WWW-Authenticate` / `Proxy-Authenticate` value, parsed
//!   (client side) or built and printed (server side).
//! - [`Authorization`]: an `Authorization` / `Proxy-Authorization` value,
//!   computed from a challenge and [`Credentials`] (client side) or parsed and
//!   checked with [`Authorization::verify`] (server side).
//! - [`DigestClient`]: the client's per-nonce state (the nonce count of
//!   RFC 7616 3.4: each request answered under one nonce gets the next count).
//! - [`ClientAuth`]: a request stream's challenge handling (RFC 3261 22.2):
//!   used by the endpoint for outbound INVITEs and REGISTERs.
//! - [`DigestServer`]: stateless nonces and credential checks, for inbound
//!   digest access control.
//!
//! Supported: algorithms MD5, MD5-sess, SHA-256 and SHA-256-sess; `qop=auth`
//! (preferred), `qop=auth-int`, and the RFC 2069 form without qop. Not
//! supported: `userhash` (RFC 7616 3.4.4) and SHA-512-256.
//!
//! Nothing here reads the clock or a random source: the client nonce
//! (`cnonce`) is passed in by the caller.

use std::fmt::{self, Write as _};

use md5::Md5;
use rsip::headers::UntypedHeader;
use sha2::{Digest, Sha256};

/// The digest algorithm of RFC 7616 3.2 (and RFC 8760 for SIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (the default when a challenge names none).
    Md5,
    /// MD5-sess: HA1 bound to the nonce and cnonce.
    Md5Sess,
    /// SHA-256.
    Sha256,
    /// SHA-256-sess.
    Sha256Sess,
}

impl Algorithm {
    /// Parses the `algorithm` token (case-insensitive); None when unsupported.
    pub fn from_token(token: &str) -> Option<Self> {
        let t = token.trim();
        [
            ("MD5", Self::Md5),
            ("MD5-sess", Self::Md5Sess),
            ("SHA-256", Self::Sha256),
            ("SHA-256-sess", Self::Sha256Sess),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(t))
        .map(|(_, a)| a)
    }

    /// The token as RFC 7616 spells it.
    pub fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Whether this is a `-sess` variant (RFC 7616 3.4.2).
    pub fn is_session(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// H(data) as lower-case hex.
    pub fn hash(self, data: &[u8]) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(data)),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(data)),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why a challenge or authorization could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The scheme is not Digest.
    #[error("not a Digest challenge")]
    NotDigest,
    /// The parameter list does not parse.
    #[error("malformed Digest parameters")]
    Malformed,
    /// A mandatory parameter is missing.
    #[error("missing Digest parameter {0}")]
    Missing(&'static str),
    /// The algorithm is one we do not implement.
    #[error("unsupported Digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The challenge offers only qop values we do not implement.
    #[error("unsupported qop {0:?}")]
    UnsupportedQop(String),
}

/// A user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (the `username` parameter).
    pub username: String,
    /// The password.
    pub password: String,
    /// Answer only challenges for this realm; None answers any realm.
    pub realm: Option<String>,
}

impl Credentials {
    /// Credentials that answer any realm.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            realm: None,
        }
    }

    /// Whether these credentials may answer a challenge for `realm`.
    pub fn answers(&self, realm: &str) -> bool {
        self.realm.as_deref().is_none_or(|r| r == realm)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// Splits `Digest k=v, k="v", ...` into the scheme and its parameters
/// (names lower-cased, quoted values unescaped).
fn parse_params(value: &str) -> Result<(String, Vec<(String, String)>), AuthError> {
    let value = value.trim();
    let (scheme, rest) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    let mut params = Vec::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let name = rest[start..i].trim().to_ascii_lowercase();
        if name.is_empty() || i >= bytes.len() || bytes[i] != b'=' {
            return Err(AuthError::Malformed);
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut val = String::new();
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut closed = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if i + 1 < bytes.len() => {
                        // The escaped character may be multi-byte.
                        let ch = rest[i + 1..].chars().next().ok_or(AuthError::Malformed)?;
                        val.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    _ => {
                        // Keep multi-byte UTF-8 intact.
                        let ch = rest[i..].chars().next().ok_or(AuthError::Malformed)?;
                        val.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if !closed {
                return Err(AuthError::Malformed);
            }
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            val = rest[start..i].trim().to_string();
        }
        params.push((name, val));
    }
    Ok((scheme.to_string(), params))
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The quality of protection a response is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// Authentication only.
    Auth,
    /// Authentication with integrity protection of the body.
    AuthInt,
}

impl Qop {
    /// The token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

/// A Digest challenge (RFC 7616 3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value echoed back unchanged.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// Offered qop values in the server's order (empty: RFC 2069 form).
    pub qop: Vec<String>,
    /// The previous request's nonce was stale, not its credentials wrong.
    pub stale: bool,
    /// `domain` parameter, if any.
    pub domain: Option<String>,
}

impl Challenge {
    /// A server challenge with `qop="auth"` and no opaque.
    pub fn new(realm: impl Into<String>, nonce: impl Into<String>, algorithm: Algorithm) -> Self {
        Self {
            realm: realm.into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm,
            qop: vec!["auth".to_string()],
            stale: false,
            domain: None,
        }
    }

    /// Parses one challenge (a `WWW-Authenticate` or `Proxy-Authenticate`
    /// value). An unsupported algorithm is an error so that the caller can
    /// try the next challenge (RFC 8760 2.4).
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let (scheme, params) = parse_params(value)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::NotDigest);
        }
        let realm = get(&params, "realm").ok_or(AuthError::Missing("realm"))?;
        let nonce = get(&params, "nonce").ok_or(AuthError::Missing("nonce"))?;
        let algorithm = match get(&params, "algorithm") {
            None => Algorithm::Md5,
            Some(a) => {
                Algorithm::from_token(a).ok_or(AuthError::UnsupportedAlgorithm(a.to_string()))?
            }
        };
        let qop = get(&params, "qop")
            .map(|q| {
                q.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            opaque: get(&params, "opaque").map(str::to_string),
            algorithm,
            qop,
            stale: get(&params, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            domain: get(&params, "domain").map(str::to_string),
        })
    }

    /// The first challenge among `values` that parses with a supported
    /// algorithm and qop (servers list their preferred one first).
    pub fn pick<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        values
            .into_iter()
            .filter_map(|v| Self::parse(v).ok())
            .find(|c| c.choose_qop().is_ok())
    }

    /// The qop the client uses: `auth` when offered, else `auth-int`, None
    /// for the RFC 2069 form without qop.
    pub fn choose_qop(&self) -> Result<Option<Qop>, AuthError> {
        if self.qop.is_empty() {
            return Ok(None);
        }
        if self.qop.iter().any(|q| q == "auth") {
            return Ok(Some(Qop::Auth));
        }
        if self.qop.iter().any(|q| q == "auth-int") {
            return Ok(Some(Qop::AuthInt));
        }
        Err(AuthError::UnsupportedQop(self.qop.join(",")))
    }

    /// Prints the challenge as a header value.
    pub fn to_header_value(&self) -> String {
        let mut s = format!(
            "Digest realm={}, nonce={}, algorithm={}",
            quote(&self.realm),
            quote(&self.nonce),
            self.algorithm
        );
        if !self.qop.is_empty() {
            let _ = write!(s, ", qop={}", quote(&self.qop.join(", ")));
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque={}", quote(o));
        }
        if let Some(d) = &self.domain {
            let _ = write!(s, ", domain={}", quote(d));
        }
        if self.stale {
            s.push_str(", stale=true");
        }
        s
    }
}

/// Digest credentials as sent in `Authorization` / `Proxy-Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// User name.
    pub username: String,
    /// Realm from the challenge.
    pub realm: String,
    /// Nonce from the challenge.
    pub nonce: String,
    /// The digest-uri (the Request-URI).
    pub uri: String,
    /// The request digest, lower-case hex.
    pub response: String,
    /// Algorithm used.
    pub algorithm: Algorithm,
    /// Client nonce (with qop or a -sess algorithm).
    pub cnonce: Option<String>,
    /// Opaque echoed from the challenge.
    pub opaque: Option<String>,
    /// qop used (None: RFC 2069 form).
    pub qop: Option<Qop>,
    /// Nonce count (with qop).
    pub nc: Option<u32>,
}

/// The inputs of a request digest.
struct DigestInput<'a> {
    algorithm: Algorithm,
    username: &'a str,
    realm: &'a str,
    nonce: &'a str,
    cnonce: Option<&'a str>,
    nc: Option<u32>,
    qop: Option<Qop>,
    method: &'a str,
    uri: &'a str,
    body: &'a [u8],
}

impl DigestInput<'_> {
    /// HA1 from H(username:realm:password) (RFC 7616 3.4.2).
    fn ha1(&self, password: &str) -> String {
        let base = self
            .algorithm
            .hash(format!("{}:{}:{}", self.username, self.realm, password).as_bytes());
        self.ha1_from(base)
    }

    fn ha1_from(&self, base: String) -> String {
        if self.algorithm.is_session() {
            let cnonce = self.cnonce.unwrap_or_default();
            self.algorithm
                .hash(format!("{base}:{}:{cnonce}", self.nonce).as_bytes())
        } else {
            base
        }
    }

    /// The request digest (RFC 7616 3.4.1; RFC 2069 when qop is absent).
    fn response(&self, ha1: &str) -> String {
        let alg = self.algorithm;
        let ha2 = match self.qop {
            Some(Qop::AuthInt) => {
                alg.hash(format!("{}:{}:{}", self.method, self.uri, alg.hash(self.body)).as_bytes())
            }
            _ => alg.hash(format!("{}:{}", self.method, self.uri).as_bytes()),
        };
        match self.qop {
            Some(q) => alg.hash(
                format!(
                    "{ha1}:{}:{:08x}:{}:{}:{ha2}",
                    self.nonce,
                    self.nc.unwrap_or(1),
                    self.cnonce.unwrap_or_default(),
                    q.token()
                )
                .as_bytes(),
            ),
            None => alg.hash(format!("{ha1}:{}:{ha2}", self.nonce).as_bytes()),
        }
    }
}

impl Authorization {
    /// Computes the credentials answering `challenge` for a request
    /// `method uri` with `body` (used only for auth-int). `cnonce` comes from
    /// the caller's random source and `nc` from [`DigestClient`].
    pub fn compute(
        challenge: &Challenge,
        creds: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
        nc: u32,
    ) -> Result<Self, AuthError> {
        let qop = challenge.choose_qop()?;
        let cnonce =
            (qop.is_some() || challenge.algorithm.is_session()).then(|| cnonce.to_string());
        let input = DigestInput {
            algorithm: challenge.algorithm,
            username: &creds.username,
            realm: &challenge.realm,
            nonce: &challenge.nonce,
            cnonce: cnonce.as_deref(),
            nc: qop.map(|_| nc),
            qop,
            method,
            uri,
            body,
        };
        let response = input.response(&input.ha1(&creds.password));
        Ok(Self {
            username: creds.username.clone(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_string(),
            response,
            algorithm: challenge.algorithm,
            cnonce,
            opaque: challenge.opaque.clone(),
            qop,
            nc: qop.map(|_| nc),
        })
    }

    /// Prints the header value.
    pub fn to_header_value(&self) -> String {
        let mut s = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm
        );
        if let Some(c) = &self.cnonce {
            let _ = write!(s, ", cnonce={}", quote(c));
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque={}", quote(o));
        }
        if let Some(q) = self.qop {
            let _ = write!(s, ", qop={}", q.token());
        }
        if let Some(nc) = self.nc {
            let _ = write!(s, ", nc={nc:08x}");
        }
        s
    }

    /// Parses an `Authorization` / `Proxy-Authorization` value.
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let (scheme, params) = parse_params(value)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::NotDigest);
        }
        let need = |n: &'static str| {
            get(&params, n)
                .map(str::to_string)
                .ok_or(AuthError::Missing(n))
        };
        let algorithm = match get(&params, "algorithm") {
            None => Algorithm::Md5,
            Some(a) => {
                Algorithm::from_token(a).ok_or(AuthError::UnsupportedAlgorithm(a.to_string()))?
            }
        };
        let qop = match get(&params, "qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(Qop::Auth),
            Some(q) if q.eq_ignore_ascii_case("auth-int") => Some(Qop::AuthInt),
            Some(q) => return Err(AuthError::UnsupportedQop(q.to_string())),
        };
        let nc = match get(&params, "nc") {
            None => None,
            Some(n) => Some(u32::from_str_radix(n, 16).map_err(|_| AuthError::Malformed)?),
        };
        if qop.is_some() && (nc.is_none() || get(&params, "cnonce").is_none()) {
            return Err(AuthError::Missing("cnonce/nc"));
        }
        Ok(Self {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?.to_ascii_lowercase(),
            algorithm,
            cnonce: get(&params, "cnonce").map(str::to_string),
            opaque: get(&params, "opaque").map(str::to_string),
            qop,
            nc,
        })
    }

    fn input<'a>(&'a self, method: &'a str, body: &'a [u8]) -> DigestInput<'a> {
        DigestInput {
            algorithm: self.algorithm,
            username: &self.username,
            realm: &self.realm,
            nonce: &self.nonce,
            cnonce: self.cnonce.as_deref(),
            nc: self.nc,
            qop: self.qop,
            method,
            uri: &self.uri,
            body,
        }
    }

    /// Server side: whether `response` is right for `password` and this
    /// request's method (and body, for auth-int). The caller checks that
    /// `nonce` is one it issued and still valid, that `uri` matches the
    /// Request-URI, and that `nc` grows (replay protection).
    pub fn verify(&self, password: &str, method: &str, body: &[u8]) -> bool {
        let input = self.input(method, body);
        constant_time_eq(
            input.response(&input.ha1(password)).as_bytes(),
            self.response.as_bytes(),
        )
    }

    /// As [`verify`](Self::verify), with the stored H(username:realm:password)
    /// instead of the password, hashed with this authorization's algorithm.
    pub fn verify_ha1(&self, ha1: &str, method: &str, body: &[u8]) -> bool {
        let input = self.input(method, body);
        let ha1 = input.ha1_from(ha1.to_ascii_lowercase());
        constant_time_eq(input.response(&ha1).as_bytes(), self.response.as_bytes())
    }
}

/// Compares without an early exit, so that timing does not reveal how much
/// of a digest matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client's nonce counts: RFC 7616 3.4 requires each request sent under
/// one nonce to carry the next count, so a server can detect replays.
#[derive(Debug, Clone, Default)]
pub struct DigestClient {
    /// (nonce, last count used), most recent last; bounded.
    counts: Vec<(String, u32)>,
}

/// Nonces remembered by a [`DigestClient`].
const NONCES_KEPT: usize = 8;

impl DigestClient {
    /// A client with no nonce seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next nonce count for `nonce` (1 for a nonce not used before).
    pub fn next_count(&mut self, nonce: &str) -> u32 {
        if let Some(entry) = self.counts.iter_mut().find(|(n, _)| n == nonce) {
            entry.1 = entry.1.wrapping_add(1).max(1);
            return entry.1;
        }
        if self.counts.len() == NONCES_KEPT {
            self.counts.remove(0);
        }
        self.counts.push((nonce.to_string(), 1));
        1
    }

    /// Answers `challenge`: computes the authorization with the next nonce
    /// count for its nonce.
    pub fn authorize(
        &mut self,
        challenge: &Challenge,
        creds: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
    ) -> Result<Authorization, AuthError> {
        // Validate before spending a count.
        challenge.choose_qop()?;
        let nc = self.next_count(&challenge.nonce);
        Authorization::compute(challenge, creds, method, uri, body, cnonce, nc)
    }
}

/// What [`DigestServer::check`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestCheck {
    /// The credentials are right for this request.
    Valid {
        /// The authenticated user.
        username: String,
    },
    /// Right credentials under an expired nonce: challenge again with
    /// `stale=true` (RFC 7616 3.3) so the client retries without asking
    /// its user.
    Stale,
    /// Wrong, malformed or foreign credentials: challenge (or refuse).
    Invalid(&'static str),
}

/// The host and port a SIP URI addresses (lower case, port 5060 when
/// absent), without user part or parameters.
///
/// Decision: RFC 7616 3.4.6 wants the digest-uri to be the Request-URI, but
/// deployed clients differ (SIPp puts `sip:HOST:PORT`, without the user).
/// The response hash covers the uri the client sent, so accepting a
/// digest-uri with no user part that addresses the same host and port as
/// the Request-URI keeps the credentials bound to this server while letting
/// those clients in. A digest-uri with a user part must equal the
/// Request-URI, and one naming another server is refused.
fn uri_target(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let hostport = rest.rsplit('@').next()?.split([';', '?', '>']).next()?;
    if hostport.is_empty() {
        return None;
    }
    let has_port = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':'))
    } else {
        hostport.contains(':')
    };
    let hostport = hostport.to_ascii_lowercase();
    Some(if has_port {
        hostport
    } else {
        format!("{hostport}:5060")
    })
}

/// The server side of digest authentication (for inbound access control):
/// issues nonces and checks credentials. Nonces are stateless: a timestamp
/// and an HMAC-SHA256 over it with the server's secret, so any node sharing
/// the secret accepts them until `nonce_lifetime` passes. Nonce counts are
/// not tracked, so a captured request can be replayed within the lifetime
/// (RFC 7616 5.5); keep the lifetime short.
#[derive(Clone)]
pub struct DigestServer {
    realm: String,
    algorithm: Algorithm,
    secret: Vec<u8>,
    /// How long a nonce stays valid.
    pub nonce_lifetime: std::time::Duration,
}

impl fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestServer")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .finish_non_exhaustive()
    }
}

impl DigestServer {
    /// A server for `realm`, challenging with `algorithm`; `secret` keys
    /// the nonces (random bytes, shared by the nodes of a cluster). Nonces
    /// live 5 minutes.
    pub fn new(realm: impl Into<String>, algorithm: Algorithm, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            realm: realm.into(),
            algorithm,
            secret: secret.into(),
            nonce_lifetime: std::time::Duration::from_secs(300),
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, issued_s: u64) -> String {
        let msg = format!("{issued_s:x}:{}", self.realm);
        hex(&hmac_sha256(&self.secret, msg.as_bytes())[..16])
    }

    /// A fresh challenge (put it in `WWW-Authenticate` of a 401, or
    /// `Proxy-Authenticate` of a 407). `now_unix_s` is the wall clock in
    /// seconds; `stale` answers a [`DigestCheck::Stale`].
    pub fn challenge(&self, now_unix_s: u64, stale: bool) -> Challenge {
        let mut c = Challenge::new(
            self.realm.clone(),
            format!("{now_unix_s:x}.{}", self.mac(now_unix_s)),
            self.algorithm,
        );
        c.stale = stale;
        c
    }

    /// Checks an `Authorization` value sent with `method request_uri`
    /// (and `body`, for auth-int). `password` looks a user's password up.
    pub fn check(
        &self,
        authorization: &str,
        method: &str,
        request_uri: &str,
        body: &[u8],
        now_unix_s: u64,
        password: impl FnOnce(&str) -> Option<String>,
    ) -> DigestCheck {
        let Ok(auth) = Authorization::parse(authorization) else {
            return DigestCheck::Invalid("malformed credentials");
        };
        if auth.realm != self.realm {
            return DigestCheck::Invalid("wrong realm");
        }
        let same_server = !auth.uri.contains('@')
            && uri_target(&auth.uri).is_some()
            && uri_target(&auth.uri) == uri_target(request_uri);
        if !auth.uri.trim().eq_ignore_ascii_case(request_uri.trim()) && !same_server {
            return DigestCheck::Invalid("digest-uri does not match the Request-URI");
        }
        let Some((ts, mac)) = auth.nonce.split_once('.') else {
            return DigestCheck::Invalid("not our nonce");
        };
        let Ok(issued) = u64::from_str_radix(ts, 16) else {
            return DigestCheck::Invalid("not our nonce");
        };
        if ts != format!("{issued:x}")
            || !constant_time_eq(mac.as_bytes(), self.mac(issued).as_bytes())
        {
            return DigestCheck::Invalid("not our nonce");
        }
        if issued > now_unix_s.saturating_add(5) {
            return DigestCheck::Invalid("nonce from the future");
        }
        let Some(pw) = password(&auth.username) else {
            return DigestCheck::Invalid("unknown user");
        };
        if !auth.verify(&pw, method, body) {
            return DigestCheck::Invalid("wrong password");
        }
        if now_unix_s.saturating_sub(issued) > self.nonce_lifetime.as_secs() {
            return DigestCheck::Stale;
        }
        DigestCheck::Valid {
            username: auth.username,
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Where a challenge came from, which decides the credentials' header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// `WWW-Authenticate` in a 401, answered with `Authorization`.
    Www,
    /// `Proxy-Authenticate` in a 407, answered with `Proxy-Authorization`.
    Proxy,
}

/// Why a client stopped answering challenges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// The response carries no Digest challenge we can answer.
    #[error("no usable Digest challenge")]
    NoUsableChallenge,
    /// The realm was challenged again, not as stale: the credentials are wrong.
    #[error("credentials rejected for realm {0:?}")]
    Rejected(String),
    /// The credentials are for another realm.
    #[error("no credentials for realm {0:?}")]
    WrongRealm(String),
    /// Too many challenges for one request.
    #[error("too many challenges")]
    TooManyAttempts,
}

/// Challenges one request may answer (a stale nonce, then a proxy and a
/// UAS realm, leave room to spare).
const MAX_ATTEMPTS: u32 = 4;

/// The client side of digest authentication for one request stream (the
/// INVITE of a call, or the REGISTERs of one registration): answers 401/407
/// challenges per RFC 3261 22.2-22.3, keeping one credentials header per
/// (kind, realm), and gives up when a realm already answered is challenged
/// again without `stale=true`.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    creds: Credentials,
    digest: DigestClient,
    /// The challenge answered last per (kind, realm), reused for later
    /// requests (RFC 3261 22.3) with the next nonce count.
    cached: Vec<(ChallengeKind, Challenge)>,
    /// Realms answered for the current request.
    answered: Vec<(ChallengeKind, String)>,
    attempts: u32,
}

impl ClientAuth {
    /// Starts with no challenge seen.
    pub fn new(creds: Credentials) -> Self {
        Self {
            creds,
            digest: DigestClient::new(),
            cached: Vec::new(),
            answered: Vec::new(),
            attempts: 0,
        }
    }

    /// The credentials in use.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// A new request begins (a REGISTER refresh): challenges to it are
    /// answered afresh.
    pub fn new_request(&mut self) {
        self.answered.clear();
        self.attempts = 0;
    }

    /// Takes in the challenges of a 401/407 to a request. On success the
    /// caller re-sends the request with [`headers`](Self::headers).
    pub fn challenged(&mut self, response: &rsip::Response) -> Result<(), GiveUp> {
        self.attempts += 1;
        if self.attempts > MAX_ATTEMPTS {
            return Err(GiveUp::TooManyAttempts);
        }
        // Group values by kind and realm; the first supported one of each
        // group is answered (RFC 8760 2.4).
        let mut values: Vec<(ChallengeKind, &str)> = Vec::new();
        for h in response.headers.iter() {
            match h {
                rsip::Header::WwwAuthenticate(v) => values.push((ChallengeKind::Www, v.value())),
                rsip::Header::ProxyAuthenticate(v) => {
                    values.push((ChallengeKind::Proxy, v.value()))
                }
                _ => {}
            }
        }
        let mut chosen: Vec<(ChallengeKind, Challenge)> = Vec::new();
        for (kind, v) in values {
            let Ok(c) = Challenge::parse(v) else { continue };
            if c.choose_qop().is_err()
                || chosen.iter().any(|(k, x)| *k == kind && x.realm == c.realm)
            {
                continue;
            }
            chosen.push((kind, c));
        }
        if chosen.is_empty() {
            return Err(GiveUp::NoUsableChallenge);
        }
        for (kind, c) in &chosen {
            if !self.creds.answers(&c.realm) {
                return Err(GiveUp::WrongRealm(c.realm.clone()));
            }
            if !c.stale && self.answered.contains(&(*kind, c.realm.clone())) {
                return Err(GiveUp::Rejected(c.realm.clone()));
            }
        }
        for (kind, c) in chosen {
            self.answered.push((kind, c.realm.clone()));
            self.cached
                .retain(|(k, x)| !(*k == kind && x.realm == c.realm));
            self.cached.push((kind, c));
        }
        Ok(())
    }

    /// The credentials headers for a request `method uri` with `body`, one
    /// per challenge answered so far, each with the next nonce count and a
    /// client nonce from `cnonce`. Empty before any challenge.
    pub fn headers(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &mut dyn FnMut() -> String,
    ) -> Vec<rsip::Header> {
        let mut out = Vec::new();
        for (kind, c) in &self.cached {
            let Ok(a) = self
                .digest
                .authorize(c, &self.creds, method, uri, body, &cnonce())
            else {
                continue;
            };
            let v = a.to_header_value();
            out.push(match kind {
                ChallengeKind::Www => {
                    rsip::Header::Authorization(rsip::headers::Authorization::new(v))
                }
                ChallengeKind::Proxy => {
                    rsip::Header::ProxyAuthorization(rsip::headers::ProxyAuthorization::new(v))
                }
            });
        }
        out
    }

    /// Replaces the credentials headers of `req` with fresh ones
    /// (see [`headers`](Self::headers)).
    pub fn apply(&mut self, req: &mut rsip::Request, cnonce: &mut dyn FnMut() -> String) {
        let uri = req.uri.to_string();
        let method = req.method.to_string();
        let headers = self.headers(&method, &uri, &req.body, cnonce);
        req.headers.retain(|h| {
            !matches!(
                h,
                rsip::Header::Authorization(_) | rsip::Header::ProxyAuthorization(_)
            )
        });
        for h in headers {
            req.headers.push(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 3.9.1.
    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc_challenge(algorithm: &str) -> String {
        format!(
            "Digest\n       realm=\"http-auth@example.org\",\n       qop=\"auth, auth-int\",\n       \
             algorithm={algorithm},\n       nonce=\"{RFC_NONCE}\",\n       opaque=\"{RFC_OPAQUE}\""
        )
    }

    fn mufasa() -> Credentials {
        Credentials::new("Mufasa", "Circle of Life")
    }

    fn rfc_response(algorithm: &str) -> Authorization {
        let c = Challenge::parse(&rfc_challenge(algorithm)).unwrap();
        assert_eq!(c.realm, "http-auth@example.org");
        assert_eq!(c.qop, vec!["auth", "auth-int"]);
        assert_eq!(c.opaque.as_deref(), Some(RFC_OPAQUE));
        Authorization::compute(&c, &mufasa(), "GET", "/dir/index.html", b"", RFC_CNONCE, 1).unwrap()
    }

    #[test]
    fn rfc7616_example_md5() {
        let a = rfc_response("MD5");
        assert_eq!(a.response, "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(a.qop, Some(Qop::Auth));
        let v = a.to_header_value();
        assert!(v.contains("nc=00000001"), "{v}");
        assert!(v.contains("qop=auth,"), "{v}");
        assert!(v.contains(&format!("opaque=\"{RFC_OPAQUE}\"")), "{v}");
    }

    #[test]
    fn rfc7616_example_sha256() {
        let a = rfc_response("SHA-256");
        assert_eq!(
            a.response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(a.algorithm, Algorithm::Sha256);
    }

    #[test]
    fn authorization_round_trips_and_verifies() {
        for alg in ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"] {
            let a = rfc_response(alg);
            let back = Authorization::parse(&a.to_header_value()).unwrap();
            assert_eq!(back, a, "{alg}");
            assert!(back.verify("Circle of Life", "GET", b""), "{alg}");
            assert!(!back.verify("circle of life", "GET", b""), "{alg}");
            assert!(!back.verify("Circle of Life", "POST", b""), "{alg}");
            let algorithm = Algorithm::from_token(alg).unwrap();
            let ha1 = algorithm.hash(b"Mufasa:http-auth@example.org:Circle of Life");
            assert!(back.verify_ha1(&ha1, "GET", b""), "{alg}");
        }
    }

    #[test]
    fn rfc2069_form_without_qop() {
        // RFC 2069 2.4: response = H(H(A1):nonce:H(A2)).
        let c = Challenge::parse("Digest realm=\"biloxi.com\", nonce=\"abc\"").unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        let a = Authorization::compute(
            &c,
            &Credentials::new("bob", "zanzibar"),
            "INVITE",
            "sip:bob@biloxi.com",
            b"",
            "ignored",
            1,
        )
        .unwrap();
        let ha1 = Algorithm::Md5.hash(b"bob:biloxi.com:zanzibar");
        let ha2 = Algorithm::Md5.hash(b"INVITE:sip:bob@biloxi.com");
        assert_eq!(
            a.response,
            Algorithm::Md5.hash(format!("{ha1}:abc:{ha2}").as_bytes())
        );
        let v = a.to_header_value();
        assert!(
            !v.contains("qop") && !v.contains("nc=") && !v.contains("cnonce"),
            "{v}"
        );
        assert!(
            Authorization::parse(&v)
                .unwrap()
                .verify("zanzibar", "INVITE", b"")
        );
    }

    #[test]
    fn auth_int_hashes_the_body() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"").unwrap();
        let a = Authorization::compute(&c, &mufasa(), "INVITE", "sip:x", b"v=0", "cn", 1).unwrap();
        assert_eq!(a.qop, Some(Qop::AuthInt));
        assert!(a.verify("Circle of Life", "INVITE", b"v=0"));
        assert!(!a.verify("Circle of Life", "INVITE", b"v=1"));
    }

    #[test]
    fn challenge_parsing_details() {
        let c = Challenge::parse(
            "digest realm=\"a\\\"b\", nonce=n1, stale=TRUE, algorithm=sha-256-SESS, qop=\"auth\"",
        )
        .unwrap();
        assert_eq!(c.realm, "a\"b");
        assert_eq!(c.nonce, "n1");
        assert!(c.stale);
        assert_eq!(c.algorithm, Algorithm::Sha256Sess);
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(AuthError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"x\""),
            Err(AuthError::Missing("nonce"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"y\", algorithm=SHA-512-256"),
            Err(AuthError::UnsupportedAlgorithm(_))
        ));
        assert_eq!(
            Challenge::parse("Digest realm=\"x, nonce=\"y\""),
            Err(AuthError::Malformed)
        );
        // The first supported challenge wins.
        let picked = Challenge::pick([
            "Digest realm=\"x\", nonce=\"y\", algorithm=SHA-512-256",
            "Digest realm=\"x\", nonce=\"y\", algorithm=SHA-256",
            "Digest realm=\"x\", nonce=\"y\", algorithm=MD5",
        ])
        .unwrap();
        assert_eq!(picked.algorithm, Algorithm::Sha256);
        // Server challenges print and parse back.
        let mut s = Challenge::new("voicegate", "abc", Algorithm::Sha256);
        s.stale = true;
        s.opaque = Some("o".into());
        assert_eq!(Challenge::parse(&s.to_header_value()).unwrap(), s);
    }

    #[test]
    fn nonce_count_increments_per_nonce() {
        let mut client = DigestClient::new();
        let c1 = Challenge::new("r", "n1", Algorithm::Md5);
        let c2 = Challenge::new("r", "n2", Algorithm::Md5);
        let creds = mufasa();
        let a = client
            .authorize(&c1, &creds, "REGISTER", "sip:r", b"", "c")
            .unwrap();
        let b = client
            .authorize(&c1, &creds, "REGISTER", "sip:r", b"", "c")
            .unwrap();
        let c = client
            .authorize(&c2, &creds, "REGISTER", "sip:r", b"", "c")
            .unwrap();
        assert_eq!((a.nc, b.nc, c.nc), (Some(1), Some(2), Some(1)));
        assert_ne!(a.response, b.response);
        assert!(b.to_header_value().contains("nc=00000002"));
    }

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn digest_server_issues_and_checks() {
        let server = DigestServer::new("voicegate", Algorithm::Sha256, b"k".to_vec());
        let t = 1_700_000_000;
        let c = server.challenge(t, false);
        let creds = Credentials::new("trunk", "pw");
        let uri = "sip:+1555@10.0.0.1";
        let a = Authorization::compute(&c, &creds, "INVITE", uri, b"", "cn", 1).unwrap();
        let v = a.to_header_value();
        let lookup = |u: &str| (u == "trunk").then(|| "pw".to_string());
        assert_eq!(
            server.check(&v, "INVITE", uri, b"", t + 10, lookup),
            DigestCheck::Valid {
                username: "trunk".into()
            }
        );
        assert_eq!(
            server.check(&v, "INVITE", uri, b"", t + 301, lookup),
            DigestCheck::Stale
        );
        assert_eq!(
            server.check(&v, "BYE", uri, b"", t, lookup),
            DigestCheck::Invalid("wrong password")
        );
        assert_eq!(
            server.check(&v, "INVITE", "sip:other@10.0.0.1", b"", t, lookup),
            DigestCheck::Invalid("digest-uri does not match the Request-URI")
        );
        // SIPp-style digest-uri: the server without a user part.
        let host_only = Authorization::compute(&c, &creds, "INVITE", "sip:10.0.0.1", b"", "cn", 1)
            .unwrap()
            .to_header_value();
        assert_eq!(
            server.check(&host_only, "INVITE", uri, b"", t + 10, lookup),
            DigestCheck::Valid {
                username: "trunk".into()
            }
        );
        assert_eq!(
            server.check(
                &host_only,
                "INVITE",
                "sip:+1555@10.0.0.2",
                b"",
                t + 10,
                lookup
            ),
            DigestCheck::Invalid("digest-uri does not match the Request-URI")
        );
        assert_eq!(
            uri_target("sip:svc@127.0.0.1:5070;transport=udp"),
            uri_target("sip:127.0.0.1:5070")
        );
        assert_eq!(
            uri_target("sip:Example.COM"),
            Some("example.com:5060".into())
        );
        assert_ne!(uri_target("sip:a@10.0.0.1"), uri_target("sip:a@10.0.0.2"));
        assert_eq!(
            server.check(&v, "INVITE", uri, b"", t, |_| None),
            DigestCheck::Invalid("unknown user")
        );
        // A nonce from another secret (or forged) is refused.
        let other = DigestServer::new("voicegate", Algorithm::Sha256, b"x".to_vec());
        let forged = Authorization::compute(
            &other.challenge(t, false),
            &creds,
            "INVITE",
            uri,
            b"",
            "cn",
            1,
        )
        .unwrap()
        .to_header_value();
        assert_eq!(
            server.check(&forged, "INVITE", uri, b"", t, lookup),
            DigestCheck::Invalid("not our nonce")
        );
        assert!(
            server
                .challenge(t, true)
                .to_header_value()
                .contains("stale=true")
        );
        assert!(!format!("{server:?}").contains("secret"));
    }

    #[test]
    fn debug_hides_password() {
        let d = format!("{:?}", mufasa());
        assert!(!d.contains("Circle"), "{d}");
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "",
            "Digest",
            "Digest ,,,",
            "Digest a",
            "Digest a=\"\\",
            "Digest realm=é, nonce=\"ü\\",
            "Digest realm=\"é\", nonce=\"ü\"",
            // Found by the property test: an escaped multi-byte character.
            "Digest kj=\"\\\u{fffd}S$\", a=\"x\"",
        ] {
            let _ = Challenge::parse(s);
            let _ = Authorization::parse(s);
        }
    }
}
