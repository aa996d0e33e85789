//! Voice selection: a VoiceRun voice name or a `{provider, identifier}` pair.

use serde::{Deserialize, Serialize};

use crate::config::TtsConfig;

/// The `voice` field of a TextToSpeechEvent, as it arrives on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(untagged)]
pub enum VoiceSelection {
    /// A VoiceRun voice name such as "nova", mapped through `tts.voices`.
    Name(String),
    /// A provider voice, used as is.
    Identifier(VoiceTarget),
}

/// A concrete provider voice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceTarget {
    /// Provider name as in `tts.providers` ("flite", "espeak", "openai").
    pub provider: String,
    /// The provider's voice identifier.
    pub identifier: String,
}

impl VoiceSelection {
    /// Resolves to a provider voice: mapped names go through `tts.voices`; an unmapped
    /// name goes to the first configured provider with the name as its identifier.
    pub fn resolve(&self, cfg: &TtsConfig) -> VoiceTarget {
        match self {
            VoiceSelection::Identifier(t) => t.clone(),
            VoiceSelection::Name(name) => {
                cfg.voices
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| VoiceTarget {
                        provider: cfg
                            .providers
                            .first()
                            .map(|p| p.name())
                            .unwrap_or("flite")
                            .to_string(),
                        identifier: name.clone(),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_parse_and_resolve() {
        let name: VoiceSelection = serde_json::from_str(r#""nova""#).unwrap();
        let ident: VoiceSelection =
            serde_json::from_str(r#"{"provider":"openai","identifier":"coral"}"#).unwrap();
        let mut cfg = TtsConfig::default();
        assert_eq!(name.resolve(&cfg).provider, "flite");
        cfg.voices.insert(
            "nova".into(),
            VoiceTarget {
                provider: "openai".into(),
                identifier: "nova".into(),
            },
        );
        assert_eq!(name.resolve(&cfg).provider, "openai");
        assert_eq!(ident.resolve(&cfg).identifier, "coral");
    }
}
