//! HTTP delivery: hyper serving playlists and segments from the live
//! snapshots, with content types, cache headers, CORS and JSON errors.
//!
//! Delivery reads immutable stream snapshots; it never blocks on media work
//! and never touches a file a request names.

pub mod host;
mod respond;
pub mod route;
mod server;
pub mod token;
pub mod viewers;

pub use server::serve;
