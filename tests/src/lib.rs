//! Helpers for voicegate interop tests.
