//! voicegate-sip: SIP signalling for voicegate.
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod transaction;
