//! voicegate-sip: SIP signalling for voicegate.
//!
//! - [`message`]: tolerant parsing on top of rsip, validation, response building.
//! - [`transaction`]: the four RFC 3261 17 transaction machines, sans-IO.
//! - [`auth`]: HTTP Digest (RFC 7616) challenges and credentials, client and server.
//! - [`dialog`]: dialog state (RFC 3261 12) for UAS and UAC roles.
//! - [`endpoint`]: the sans-IO endpoint that ties them together: the UAS/UAC cores,
//!   CANCEL, OPTIONS and the error responses.
//! - [`refer`]: REFER/NOTIFY transfer events and sipfrag bodies (RFC 3515).
//! - [`register`]: the REGISTER client (refresh, digest, backoff, unregister), sans-IO.
//! - [`session_timer`]: RFC 4028 session timers (Session-Expires, Min-SE, refresher).
//! - [`framing`]: Content-Length framing and CRLF keep-alive on stream transports.
//! - [`transport`]: the tokio driver: UDP and TCP sockets, timers, commands.
//!
//! # The drain rule
//!
//! Every sans-IO type is fed with `handle_*(input, now)` and drained with `poll_*()`:
//! after each `handle_*` call (or command), call `poll_transmit` and `poll_event` until
//! both return `None`, then sleep until `poll_timeout()` or the next input. Nothing in
//! these types reads the clock or the OS random source; time comes in as `now` and
//! randomness (tags, branches, Call-IDs) from the seed given at construction.
pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod framing;
pub mod message;
pub mod refer;
pub mod register;
pub mod session_timer;
pub mod transaction;
pub mod transport;
