//! voicegate-speech: streaming STT and TTS.
