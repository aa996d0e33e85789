//! The `session.ended` webhook: the final call record POSTed as JSON to
//! `webhook.url`, signed, retried with exponential backoff, on its own task
//! so it never holds up a call.
//!
//! Signature (the scheme Stripe and others use, so receivers have code for
//! it): header `Voicegate-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is
//! HMAC-SHA256 over `"{t}.{body}"` with the secret from `webhook.secret_env`.
//! Including the timestamp lets receivers reject replays. Each delivery also
//! carries `Voicegate-Delivery: ID` (the same on every retry) so receivers can
//! drop duplicates.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::records::CallRecord;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Voicegate-Signature";
/// Header carrying the delivery id.
pub const DELIVERY_HEADER: &str = "Voicegate-Delivery";

/// Sends `session.ended` notifications.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
    max_attempts: u32,
    retry_initial: Duration,
}

impl Webhook {
    /// The webhook of `cfg`, or `None` when no URL is configured.
    pub fn from_config(cfg: &WebhookConfig) -> anyhow::Result<Option<Self>> {
        let Some(url) = cfg.url.clone() else {
            return Ok(None);
        };
        let secret = crate::config::secret_from(cfg.secret_file.as_deref(), &cfg.secret_env)?;
        if secret.is_none() {
            tracing::warn!(
                env = %cfg.secret_env,
                "webhook secret not set: session.ended deliveries are unsigned"
            );
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent(concat!("voicegate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Webhook {
            url,
            secret: secret.map(String::into_bytes),
            client,
            max_attempts: cfg.max_attempts,
            retry_initial: Duration::from_millis(cfg.retry_initial_ms),
        }))
    }

    /// Queues the delivery of `record` (returns at once).
    pub fn session_ended(&self, record: CallRecord) {
        let this = self.clone();
        tokio::spawn(async move { this.deliver(record).await });
    }

    async fn deliver(&self, record: CallRecord) {
        let delivery = crate::records::new_call_id();
        let body = json!({
            "type": "session.ended",
            "delivery_id": delivery,
            "call": record,
        })
        .to_string();
        let mut delay = self.retry_initial;
        for attempt in 1..=self.max_attempts {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut req = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header(DELIVERY_HEADER, &delivery);
            if let Some(secret) = &self.secret {
                req = req.header(SIGNATURE_HEADER, sign(secret, t, &body));
            }
            match req.body(body.clone()).send().await {
                Ok(resp) if resp.status().is_success() => {
                    metrics::counter!("voicegate_webhook_deliveries_total", "result" => "ok")
                        .increment(1);
                    tracing::debug!(call = %record.id, attempt, "session.ended delivered");
                    return;
                }
                Ok(resp) => {
                    tracing::warn!(call = %record.id, attempt, status = resp.status().as_u16(), "webhook refused");
                }
                Err(e) => {
                    tracing::warn!(call = %record.id, attempt, error = %e, "webhook delivery failed");
                }
            }
            if attempt < self.max_attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(Duration::from_secs(300));
            }
        }
        metrics::counter!("voicegate_webhook_deliveries_total", "result" => "gave_up").increment(1);
        tracing::error!(call = %record.id, attempts = self.max_attempts, "session.ended webhook given up");
    }
}

/// The signature header value for `body` sent at UNIX time `t`.
pub fn sign(secret: &[u8], t: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header against `body` (for receivers and tests).
pub fn verify(secret: &[u8], header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.verify_slice(&v1).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog")
        // is the RFC 4231-style well-known vector f7bc83f4...; here the message
        // is "{t}.{body}" with t = 0 and body = "The quick ...": compute the
        // expected value from the same primitive to check the framing.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let header = sign(b"secret", 1_700_000_000, "{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(b"secret", &header, "{\"a\":1}"));
        assert!(!verify(b"secret", &header, "{\"a\":2}"));
        assert!(!verify(b"other", &header, "{\"a\":1}"));
        assert!(!verify(b"secret", "t=x,v1=zz", "{\"a\":1}"));
    }
}
