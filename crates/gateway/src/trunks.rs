//! SIP trunks: credentials (passwords only from the environment, never
//! logged), registration with the carrier and its visible status.

use std::time::Instant;

use dashmap::DashMap;
use serde::Serialize;
use voicegate_sip::auth::Credentials;
use voicegate_sip::endpoint::{Peer, TransportKind};
use voicegate_sip::register::{RegistrationConfig, RegistrationId, RegistrationState};

use crate::config::TrunkConfig;

/// A trunk's registration as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrunkStatus {
    /// Trunk name.
    pub name: String,
    /// `disabled` (register = false), `registering`, `registered`, `failed`,
    /// `unregistering`, `unregistered`.
    pub registration: String,
    /// Seconds until the binding lapses (registered).
    pub expires_in_s: Option<u64>,
    /// Last failure's SIP status.
    pub last_status: Option<u16>,
    /// Last failure's reason.
    pub last_reason: Option<String>,
}

/// The last registration failure: SIP status and reason.
type LastFailure = Option<(Option<u16>, String)>;

/// Registration bookkeeping for all trunks.
#[derive(Default)]
pub(crate) struct Trunks {
    by_registration: DashMap<RegistrationId, String>,
    status: DashMap<String, (RegistrationState, LastFailure)>,
}

impl Trunks {
    /// Registers every trunk with `register = true`.
    pub(crate) async fn register_all(
        &self,
        trunks: &[TrunkConfig],
        sip: &voicegate_sip::transport::SipHandle,
    ) -> anyhow::Result<()> {
        for t in trunks.iter().filter(|t| t.register) {
            let peer = trunk_peer(t).await?;
            let user = t.username.clone().unwrap_or_default();
            let mut cfg = RegistrationConfig::new(
                format!("sip:{}:{}", t.host, t.port),
                format!("sip:{user}@{}", t.host),
                peer,
            );
            cfg.credentials = credentials(t)?;
            cfg.expires = std::time::Duration::from_secs(u64::from(t.register_expiry_s));
            cfg.contact_user = Some(user);
            let id = sip
                .register(cfg)
                .await
                .map_err(|e| anyhow::anyhow!("trunk {}: cannot register: {e}", t.name))?;
            self.by_registration.insert(id, t.name.clone());
            self.status
                .insert(t.name.clone(), (RegistrationState::Registering, None));
            tracing::info!(trunk = %t.name, host = %t.host, "registering with trunk");
        }
        Ok(())
    }

    /// A registration changed state.
    pub(crate) fn registration_event(&self, id: RegistrationId, state: RegistrationState) {
        let Some(name) = self.by_registration.get(&id).map(|n| n.clone()) else {
            return;
        };
        let registered = matches!(state, RegistrationState::Registered { .. });
        metrics::gauge!("voicegate_trunk_registered", "trunk" => name.clone()).set(if registered {
            1.0
        } else {
            0.0
        });
        match &state {
            RegistrationState::Registered { expires, .. } => {
                tracing::info!(trunk = %name, expires_s = expires.as_secs(), "trunk registered")
            }
            RegistrationState::Failed { status, reason, .. } => {
                tracing::warn!(trunk = %name, ?status, %reason, "trunk registration failed")
            }
            other => tracing::info!(trunk = %name, state = other.label(), "trunk registration"),
        }
        let mut entry = self
            .status
            .entry(name)
            .or_insert((RegistrationState::Registering, None));
        if let RegistrationState::Failed { status, reason, .. } = &state {
            entry.1 = Some((*status, reason.clone()));
        }
        entry.0 = state;
    }

    /// Every trunk's status, in configuration order.
    pub(crate) fn statuses(&self, trunks: &[TrunkConfig], now: Instant) -> Vec<TrunkStatus> {
        trunks
            .iter()
            .map(|t| {
                let entry = self.status.get(&t.name);
                let (registration, expires_in_s, last) = match entry.as_deref() {
                    None => ("disabled".to_string(), None, None),
                    Some((state, last)) => {
                        let expires = match state {
                            RegistrationState::Registered { expires_at, .. } => {
                                Some(expires_at.saturating_duration_since(now).as_secs())
                            }
                            _ => None,
                        };
                        (state.label().to_string(), expires, last.clone())
                    }
                };
                TrunkStatus {
                    name: t.name.clone(),
                    registration,
                    expires_in_s,
                    last_status: last.as_ref().and_then(|l| l.0),
                    last_reason: last.map(|l| l.1),
                }
            })
            .collect()
    }
}

/// The trunk's digest credentials; the password comes from `password_file`
/// or the environment variable named by `password_env`, never the config.
pub(crate) fn credentials(t: &TrunkConfig) -> anyhow::Result<Option<Credentials>> {
    let Some(user) = &t.username else {
        return Ok(None);
    };
    let env = t.password_env.as_deref().unwrap_or("");
    let password = crate::config::secret_from(t.password_file.as_deref(), env)?.ok_or_else(|| {
        anyhow::anyhow!(
            "trunk {}: no password: set the variable {env:?} (trunks.password_env) or trunks.password_file",
            t.name
        )
    })?;
    Ok(Some(Credentials::new(user.clone(), password)))
}

/// Where the trunk's SIP traffic goes.
pub(crate) async fn trunk_peer(t: &TrunkConfig) -> anyhow::Result<Peer> {
    let addr = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| anyhow::anyhow!("trunk {}: cannot resolve {}:{}", t.name, t.host, t.port))?;
    Ok(Peer {
        transport: if t.transport == "tcp" {
            TransportKind::Tcp
        } else {
            TransportKind::Udp
        },
        addr,
        connection: None,
    })
}
