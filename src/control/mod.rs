//! Control: the catalog of streams that may publish, and (next to it) the
//! REST API, health, metrics and events that observe and change them.
//!
//! Control never blocks on media work: it reads stream snapshots and sends
//! commands to stream tasks through the live registry.

pub mod catalog;
