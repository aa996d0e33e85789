//! voicegate gateway library.
