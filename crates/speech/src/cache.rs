//! Synthesis cache: finished utterances kept as PCM, bounded in bytes, least recently
//! used evicted first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::tts::TtsRequest;

/// What identifies a synthesis: text, voice, speed, language (and the instructions and
/// model override, which change the audio too).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: String,
    provider: String,
    voice: String,
    speed_bits: u32,
    language: String,
    instructions: Option<String>,
    model: Option<String>,
}

impl CacheKey {
    /// The key for a request.
    pub fn of(req: &TtsRequest) -> Self {
        Self {
            text: req.text.clone(),
            provider: req.voice.provider.clone(),
            voice: req.voice.identifier.clone(),
            speed_bits: req.speed.to_bits(),
            language: req.language.clone(),
            instructions: req.instructions.clone().filter(|s| !s.is_empty()),
            model: req.model.clone(),
        }
    }

    fn bytes(&self) -> usize {
        self.text.len() + self.provider.len() + self.voice.len() + self.language.len() + 64
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<CacheKey, (Arc<[i16]>, u64)>,
    by_use: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

/// A shared, size-bounded cache of synthesised PCM. Cloning shares the cache.
#[derive(Debug, Clone)]
pub struct SynthesisCache {
    max_bytes: usize,
    inner: Arc<Mutex<Inner>>,
}

impl SynthesisCache {
    /// A cache holding at most `max_bytes` of PCM and keys; 0 disables it.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Arc::default(),
        }
    }

    /// The cached PCM for `key`, marking it recently used.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<[i16]>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.tick += 1;
        let tick = g.tick;
        let Some((pcm, used)) = g.entries.get_mut(key) else {
            g.misses += 1;
            return None;
        };
        let old = std::mem::replace(used, tick);
        let pcm = pcm.clone();
        g.by_use.remove(&old);
        g.by_use.insert(tick, key.clone());
        g.hits += 1;
        Some(pcm)
    }

    /// Stores PCM for `key`, evicting least recently used entries to stay in bounds.
    /// An entry bigger than the whole cache is not stored.
    pub fn insert(&self, key: CacheKey, pcm: Arc<[i16]>) {
        let size = pcm.len() * 2 + key.bytes();
        if size > self.max_bytes {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old_pcm, old_tick)) = g.entries.remove(&key) {
            g.by_use.remove(&old_tick);
            g.bytes -= old_pcm.len() * 2 + key.bytes();
        }
        while g.bytes + size > self.max_bytes {
            let Some((_, victim)) = g.by_use.pop_first() else {
                break;
            };
            if let Some((p, _)) = g.entries.remove(&victim) {
                g.bytes -= p.len() * 2 + victim.bytes();
            }
        }
        g.tick += 1;
        let tick = g.tick;
        g.by_use.insert(tick, key.clone());
        g.entries.insert(key, (pcm, tick));
        g.bytes += size;
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (g.hits, g.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::VoiceTarget;

    fn key(text: &str, speed: f32) -> CacheKey {
        let mut r = TtsRequest::new(
            text,
            VoiceTarget {
                provider: "flite".into(),
                identifier: "slt".into(),
            },
        );
        r.speed = speed;
        CacheKey::of(&r)
    }

    #[test]
    fn keyed_on_text_voice_speed_language() {
        let c = SynthesisCache::new(1 << 20);
        c.insert(key("hi", 1.0), vec![1i16; 10].into());
        assert!(c.get(&key("hi", 1.0)).is_some());
        assert!(c.get(&key("hi", 1.5)).is_none());
        assert!(c.get(&key("ho", 1.0)).is_none());
        let mut other_lang = key("hi", 1.0);
        other_lang.language = "fr".into();
        assert!(c.get(&other_lang).is_none());
        assert_eq!(c.stats(), (1, 3));
    }

    #[test]
    fn bounded_and_evicts_least_recently_used() {
        let entry = 1000 * 2 + key("a", 1.0).bytes();
        let c = SynthesisCache::new(entry * 3);
        for t in ["a", "b", "c"] {
            c.insert(key(t, 1.0), vec![0i16; 1000].into());
        }
        assert!(c.get(&key("a", 1.0)).is_some()); // a is now the most recent
        c.insert(key("d", 1.0), vec![0i16; 1000].into());
        assert!(c.bytes() <= entry * 3);
        assert!(c.get(&key("b", 1.0)).is_none(), "b was least recently used");
        assert!(c.get(&key("a", 1.0)).is_some());
        assert!(c.get(&key("d", 1.0)).is_some());
        // Too big for the whole cache: not stored, nothing evicted.
        c.insert(key("huge", 1.0), vec![0i16; 10_000].into());
        assert!(c.get(&key("huge", 1.0)).is_none());
        assert!(c.get(&key("c", 1.0)).is_some());
        // Re-inserting a key replaces it without double counting.
        c.insert(key("c", 1.0), vec![0i16; 1000].into());
        assert!(c.bytes() <= entry * 3);
    }
}
