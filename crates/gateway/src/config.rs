//! The gateway's configuration: typed, `deny_unknown_fields`, validated up
//! front with every problem reported at once, each naming its key.
//!
//! Every section has defaults, so an empty file (or no file) is a working
//! configuration: SIP on 127.0.0.1:5060, HTTP on 127.0.0.1:8080, RTP on
//! 127.0.0.1 ports 20000-29999. `config/voicegate.toml` documents each key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use voicegate_sdp::CodecPreference;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SIP signalling.
    pub sip: SipConfig,
    /// The HTTP listener (metrics, health; the call API later).
    pub http: HttpConfig,
    /// RTP media.
    pub media: MediaConfig,
    /// Capacity limits.
    pub limits: LimitsConfig,
    /// How calls are answered.
    pub calls: CallsConfig,
    /// Agents and the numbers routed to them.
    pub agents: Vec<AgentConfig>,
    /// Who may send us INVITEs, and how fast.
    pub access: AccessConfig,
    /// The HTTP call API.
    pub api: ApiConfig,
    /// The `session.ended` webhook.
    pub webhook: WebhookConfig,
    /// SIP trunks (carriers) for outbound calls and trusted inbound sources.
    pub trunks: Vec<TrunkConfig>,
    /// Speech-to-text and text-to-speech (see the voicegate-speech crate).
    pub speech: voicegate_speech::SpeechConfig,
}

/// `[access]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Networks (CIDR) allowed to send INVITEs, besides every trunk's `sources`.
    pub allow: Vec<String>,
    /// New INVITEs per second per source address; 0 disables the limit.
    pub invites_per_second: f64,
    /// Bursts of new INVITEs a source may send above the rate.
    pub burst: u32,
    /// Users who may call from any source by answering a digest challenge
    /// (a PBX or softphone outside the allow list).
    pub users: Vec<DigestUser>,
    /// The digest realm of our challenges.
    pub realm: String,
    /// `MD5` (what most phones and SIPp support) or `SHA-256`.
    pub digest_algorithm: String,
    /// Environment variable with the key for stateless nonces; nodes behind
    /// one load balancer need the same key. Unset: a random key per process.
    pub nonce_secret_env: String,
}

/// `[[access.users]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestUser {
    /// The digest user name.
    pub username: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password; wins over `password_env`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            allow: vec!["0.0.0.0/0".into(), "::/0".into()],
            invites_per_second: 0.0,
            burst: 100,
            users: Vec::new(),
            realm: "voicegate".into(),
            digest_algorithm: "MD5".into(),
            nonce_secret_env: "VOICEGATE_NONCE_SECRET".into(),
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Environment variable holding the bearer token for `/v1/*`. When it is
    /// unset or empty (and no `token_file`), every `/v1/*` request is refused
    /// with 401.
    pub token_env: String,
    /// A file holding the token (e.g. a mounted secret); wins over `token_env`.
    pub token_file: Option<PathBuf>,
    /// How long records of ended calls stay queryable.
    pub keep_ended_s: u64,
    /// At most this many ended-call records are kept (oldest dropped first).
    pub max_ended: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token_env: "VOICEGATE_API_TOKEN".into(),
            token_file: None,
            keep_ended_s: 3600,
            max_ended: 10_000,
        }
    }
}

/// `[webhook]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// URL receiving `session.ended` POSTs; unset disables the webhook.
    pub url: Option<String>,
    /// Environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: String,
    /// A file holding the secret; wins over `secret_env`.
    pub secret_file: Option<PathBuf>,
    /// Delivery attempts before giving up.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further retry.
    pub retry_initial_ms: u64,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret_env: "VOICEGATE_WEBHOOK_SECRET".into(),
            secret_file: None,
            max_attempts: 6,
            retry_initial_ms: 1000,
            timeout_ms: 10_000,
        }
    }
}

/// How a trunk wants numbers written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    /// `sip:+14155550123@trunk.host` (E.164 with `+` in a SIP URI).
    #[default]
    E164,
    /// `tel:+14155550123`.
    Tel,
    /// `sip:14155550123@trunk.host` (digits only, no `+`).
    Sip,
}

/// A secret from a file (trimmed) or else an environment variable; `None`
/// when neither gives a non-empty value.
pub fn secret_from(file: Option<&Path>, env: &str) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read secret file {}: {e}", path.display()))?;
        let text = text.trim().to_string();
        return Ok((!text.is_empty()).then_some(text));
    }
    Ok(std::env::var(env).ok().filter(|s| !s.is_empty()))
}

/// `[[trunks]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name used in the API (`trunk`) and logs.
    pub name: String,
    /// The carrier's SIP host (IP address or name).
    pub host: String,
    /// Its port.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// `udp` or `tcp`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Digest user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the digest password (never in the file).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (a mounted secret); wins over `password_env`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Register with the trunk.
    #[serde(default)]
    pub register: bool,
    /// Requested registration expiry.
    #[serde(default = "default_register_expiry")]
    pub register_expiry_s: u32,
    /// Caller number for outbound calls when the request gives none.
    #[serde(default)]
    pub from_number: Option<String>,
    /// How numbers are written in Request-URI, To and From.
    #[serde(default)]
    pub number_format: NumberFormat,
    /// Codec order for calls through this trunk (default: `media.codecs`).
    #[serde(default)]
    pub codecs: Option<Vec<String>>,
    /// Networks (CIDR) the trunk sends calls from; they may send INVITEs.
    #[serde(default)]
    pub sources: Vec<String>,
}

fn default_sip_port() -> u16 {
    5060
}

fn default_transport() -> String {
    "udp".into()
}

fn default_register_expiry() -> u32 {
    300
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Address bound for both UDP and TCP.
    pub listen: SocketAddr,
    /// Address put in Via/Contact when it differs from `listen` (NAT, 0.0.0.0).
    pub advertised: Option<SocketAddr>,
    /// Server / User-Agent header.
    pub user_agent: String,
    /// RFC 3261 T1 in milliseconds (500).
    pub t1_ms: u64,
    /// RFC 3261 T2 in milliseconds (4000).
    pub t2_ms: u64,
    /// RFC 3261 T4 in milliseconds (5000).
    pub t4_ms: u64,
    /// RFC 4028 session interval we ask for; 0 turns session timers off.
    pub session_expires_s: u64,
    /// The smallest session interval we accept (Min-SE; RFC 4028 says 90 or
    /// more, lower values are for tests).
    pub min_se_s: u64,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5060)),
            advertised: None,
            user_agent: concat!("voicegate/", env!("CARGO_PKG_VERSION")).to_string(),
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            session_expires_s: 1800,
            min_se_s: 90,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener (`/metrics`, `/healthz`).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        }
    }
}

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// IP the RTP sockets bind to.
    pub rtp_ip: IpAddr,
    /// IP put in SDP `c=` when it differs from `rtp_ip`.
    pub advertised_ip: Option<IpAddr>,
    /// First port of the RTP range (even).
    pub rtp_port_min: u16,
    /// Last port of the RTP range.
    pub rtp_port_max: u16,
    /// Seconds a released port pair waits before reuse.
    pub port_quarantine_s: u64,
    /// Codecs in preference order: PCMU, PCMA, opus, telephone-event.
    pub codecs: Vec<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            rtp_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised_ip: None,
            rtp_port_min: 20000,
            rtp_port_max: 29999,
            port_quarantine_s: 5,
            codecs: ["PCMU", "PCMA", "opus", "telephone-event"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent calls; more get 503 with Retry-After.
    pub max_calls: usize,
    /// Retry-After (seconds) on 503s while over capacity or draining.
    pub retry_after_s: u32,
    /// How long the first SIGTERM waits for live calls before ending them.
    pub drain_timeout_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_calls: 1000,
            retry_after_s: 30,
            drain_timeout_s: 300,
        }
    }
}

/// `[calls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// Ring (180 Ringing) this long before answering; 0 answers at once.
    pub ring_ms: u64,
    /// A bridged transfer (B2BUA) waits this long for the target to
    /// answer, then cancels and tells the agent (no answer).
    pub transfer_timeout_s: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            ring_ms: 0,
            transfer_timeout_s: 30,
        }
    }
}

/// `[[agents]]`: one agent and the called numbers (Request-URI users) routed to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's id (`context.agent_id`).
    pub id: String,
    /// Directory holding the agent's `handler.py`.
    pub dir: PathBuf,
    /// Called numbers or users routed to this agent; `*` matches any.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// `context.environment` for the handler.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// `context.variables` for the handler (any TOML table).
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// Sandbox worker processes for this agent.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

fn default_environment() -> String {
    "development".to_string()
}

fn default_workers() -> usize {
    2
}

/// A configuration that failed validation: every problem, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// One line per problem, `key: what is wrong`.
    pub problems: Vec<String>,
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let cfg = Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values serde cannot: ranges, names, consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let sip = &self.sip;
        if sip.t1_ms == 0 {
            problems.push("sip.t1_ms: must be greater than 0".to_string());
        }
        if sip.t2_ms < sip.t1_ms {
            problems.push("sip.t2_ms: must be at least sip.t1_ms".to_string());
        }
        if sip.min_se_s == 0 {
            problems.push("sip.min_se_s: must be at least 1".to_string());
        }
        if sip.session_expires_s > 0 && sip.session_expires_s < sip.min_se_s {
            problems.push(format!(
                "sip.session_expires_s: {} is below sip.min_se_s ({})",
                sip.session_expires_s, sip.min_se_s
            ));
        }
        if sip.user_agent.trim().is_empty() || sip.user_agent.contains(['\r', '\n']) {
            problems.push("sip.user_agent: must be one non-empty line".to_string());
        }
        let m = &self.media;
        if !m.rtp_port_min.is_multiple_of(2) {
            problems.push(format!(
                "media.rtp_port_min: {} is odd; RTP uses even ports (RFC 3550 11)",
                m.rtp_port_min
            ));
        }
        if m.rtp_port_min == 0 || m.rtp_port_max <= m.rtp_port_min {
            problems.push(format!(
                "media.rtp_port_max: range {}-{} holds no port pair",
                m.rtp_port_min, m.rtp_port_max
            ));
        }
        if let Err(e) = CodecPreference::from_names(m.codecs.iter().map(String::as_str)) {
            problems.push(format!("media.codecs: {e}"));
        }
        if self.calls.ring_ms > 60_000 {
            problems.push(format!(
                "calls.ring_ms: {} is longer than a caller waits (max 60000)",
                self.calls.ring_ms
            ));
        }
        if !(1..=300).contains(&self.calls.transfer_timeout_s) {
            problems.push(format!(
                "calls.transfer_timeout_s: {} is outside 1..=300",
                self.calls.transfer_timeout_s
            ));
        }
        if self.limits.max_calls == 0 {
            problems.push("limits.max_calls: must be greater than 0".to_string());
        }
        let mut ids = std::collections::HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            if a.id.trim().is_empty() {
                problems.push(format!("agents[{i}].id: must not be empty"));
            }
            if a.workers == 0 || a.workers > 64 {
                problems.push(format!(
                    "agents[{i}].workers: {} is outside 1..=64",
                    a.workers
                ));
            }
            if !ids.insert(a.id.as_str()) {
                problems.push(format!("agents[{i}].id: duplicate id {:?}", a.id));
            }
        }
        for (i, c) in self.access.allow.iter().enumerate() {
            if let Err(e) = c.parse::<crate::access::Cidr>() {
                problems.push(format!("access.allow[{i}]: {e}"));
            }
        }
        if self.access.invites_per_second.is_nan() || self.access.invites_per_second < 0.0 {
            problems.push("access.invites_per_second: must be 0 or more".to_string());
        }
        if !matches!(self.access.digest_algorithm.as_str(), "MD5" | "SHA-256") {
            problems.push(format!(
                "access.digest_algorithm: {:?} is not MD5 or SHA-256",
                self.access.digest_algorithm
            ));
        }
        for (i, u) in self.access.users.iter().enumerate() {
            if u.username.trim().is_empty() {
                problems.push(format!("access.users[{i}].username: must not be empty"));
            }
            if u.password_env.is_none() && u.password_file.is_none() {
                problems.push(format!(
                    "access.users[{i}].password_env: give password_env or password_file"
                ));
            }
        }
        if let Some(url) = &self.webhook.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!("webhook.url: {url:?} is not an http(s) URL"));
        }
        if self.webhook.max_attempts == 0 {
            problems.push("webhook.max_attempts: must be at least 1".to_string());
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.trunks.iter().enumerate() {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                problems.push(format!("trunks[{i}].name: empty or duplicate {:?}", t.name));
            }
            if t.host.trim().is_empty() {
                problems.push(format!("trunks[{i}].host: must not be empty"));
            }
            if !matches!(t.transport.as_str(), "udp" | "tcp") {
                problems.push(format!(
                    "trunks[{i}].transport: {:?} is not udp or tcp",
                    t.transport
                ));
            }
            let has_password = t.password_env.is_some() || t.password_file.is_some();
            if t.username.is_some() != has_password {
                problems.push(format!(
                    "trunks[{i}].password_env: username needs password_env or password_file, and they need username"
                ));
            }
            if t.register && t.username.is_none() {
                problems.push(format!(
                    "trunks[{i}].register: needs username and password_env"
                ));
            }
            if t.register && t.register_expiry_s < 60 {
                problems.push(format!("trunks[{i}].register_expiry_s: at least 60"));
            }
            for (j, c) in t.sources.iter().enumerate() {
                if let Err(e) = c.parse::<crate::access::Cidr>() {
                    problems.push(format!("trunks[{i}].sources[{j}]: {e}"));
                }
            }
            if let Some(codecs) = &t.codecs
                && let Err(e) = CodecPreference::from_names(codecs.iter().map(String::as_str))
            {
                problems.push(format!("trunks[{i}].codecs: {e}"));
            }
        }
        match self.speech.validate() {
            Ok(()) => {}
            Err(voicegate_speech::SpeechError::Config(list)) => {
                problems.extend(list.into_iter().map(|p| format!("speech.{p}")));
            }
            Err(e) => problems.push(format!("speech: {e}")),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The codec preference (validated in [`Config::validate`]).
    pub fn codecs(&self) -> CodecPreference {
        CodecPreference::from_names(self.media.codecs.iter().map(String::as_str))
            .expect("validated codec list")
    }

    /// The inbound allow list: `access.allow` and every trunk's sources
    /// (validated in [`Config::validate`]).
    pub fn allowed_sources(&self) -> Vec<crate::access::Cidr> {
        self.access
            .allow
            .iter()
            .chain(self.trunks.iter().flat_map(|t| t.sources.iter()))
            .filter_map(|c| c.parse().ok())
            .collect()
    }

    /// SIP timer values.
    pub fn timers(&self) -> voicegate_sip::transaction::Timers {
        voicegate_sip::transaction::Timers {
            t1: Duration::from_millis(self.sip.t1_ms),
            t2: Duration::from_millis(self.sip.t2_ms),
            t4: Duration::from_millis(self.sip.t4_ms),
        }
    }

    /// The agent a called user routes to: an exact number match, else a `*`
    /// route, else the only agent when just one is configured and it lists no
    /// numbers. `None` means 404.
    pub fn route(&self, called: Option<&str>) -> Option<&AgentConfig> {
        if let Some(user) = called
            && let Some(a) = self
                .agents
                .iter()
                .find(|a| a.numbers.iter().any(|n| n == user))
        {
            return Some(a);
        }
        if let Some(a) = self
            .agents
            .iter()
            .find(|a| a.numbers.iter().any(|n| n == "*"))
        {
            return Some(a);
        }
        match self.agents.as_slice() {
            [only] if only.numbers.is_empty() => Some(only),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.sip.listen, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(cfg.http.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../../config/voicegate.toml");
        let cfg = Config::parse(text).unwrap();
        assert_eq!(cfg.sip.listen, "127.0.0.1:5060".parse().unwrap());
        assert!(cfg.route(Some("anything")).is_some());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("[sip]\nlisten = \"127.0.0.1:5060\"\nlsten = 1\n").unwrap_err();
        assert!(err.to_string().contains("lsten"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::parse(
            "[access]\nallow = [\"10.0.0.0/40\"]\n[media]\nrtp_port_min = 20001\nrtp_port_max = 20000\ncodecs = [\"G729\"]\n\
             [limits]\nmax_calls = 0\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "media.rtp_port_min",
            "access.allow[0]",
            "media.rtp_port_max",
            "media.codecs",
            "limits.max_calls",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }

    #[test]
    fn routes_by_number_then_wildcard() {
        let cfg = Config::parse(
            "[[agents]]\nid = \"sales\"\ndir = \"a\"\nnumbers = [\"100\"]\n\
             [[agents]]\nid = \"front\"\ndir = \"b\"\nnumbers = [\"*\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.route(Some("100")).unwrap().id, "sales");
        assert_eq!(cfg.route(Some("200")).unwrap().id, "front");
        assert_eq!(cfg.route(None).unwrap().id, "front");
        let cfg = Config::parse("[[agents]]\nid = \"sales\"\ndir = \"a\"\nnumbers = [\"100\"]\n")
            .unwrap();
        assert!(cfg.route(Some("200")).is_none());
    }
}
