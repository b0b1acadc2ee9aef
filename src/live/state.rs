//! State of a stream that outlives a restart: its next media sequence.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is persisted per stream under `data_dir/streams/`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// The next media sequence number any rendition of the stream may use.
    pub next_sequence: u64,
    /// The next init segment id, so `init-{id}.mp4` never names old bytes.
    #[serde(default)]
    pub next_init_id: u32,
    /// Discontinuities published so far, so that the discontinuity sequence
    /// carries on after a restart.
    #[serde(default)]
    pub discontinuities: u64,
}

fn path(data_dir: &Path, stream: &str) -> PathBuf {
    data_dir.join("streams").join(format!("{stream}.json"))
}

/// Reads a stream's state; a missing or unreadable file is a fresh start.
pub fn load(data_dir: &Path, stream: &str) -> PersistedState {
    let file = path(data_dir, stream);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %file.display(), error = %e, "ignoring unreadable stream state");
            PersistedState::default()
        }),
        Err(_) => PersistedState::default(),
    }
}

/// Writes a stream's state atomically (temporary file, then rename).
pub fn save(data_dir: &Path, stream: &str, state: PersistedState) -> std::io::Result<()> {
    let file = path(data_dir, stream);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let bytes = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path(), "cam"), PersistedState::default());
        save(
            dir.path(),
            "cam",
            PersistedState {
                next_sequence: 42,
                next_init_id: 3,
                discontinuities: 1,
            },
        )
        .expect("saves");
        assert_eq!(load(dir.path(), "cam").next_sequence, 42);
        std::fs::write(path(dir.path(), "cam"), b"{not json").expect("writes");
        assert_eq!(load(dir.path(), "cam"), PersistedState::default());
    }
}
