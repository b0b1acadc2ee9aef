//! The catalog of streams that may publish.
//!
//! Streams come from `config.toml` (read-only here) and from the control
//! API; API-created streams are persisted in `data_dir/catalog.json`,
//! written atomically, so they survive a restart. Stream keys are compared
//! in constant time and never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::validate::is_valid_name;
use crate::config::{Config, Rung};

/// Random bytes in a generated stream key (shown as hex).
const KEY_BYTES: usize = 24;

/// Where a stream was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `[[streams]]` in config.toml: changed by editing the file.
    Config,
    /// Created through the control API.
    Api,
}

/// A stream that may publish, with its per-stream settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub name: String,
    /// Secret: never logged, only returned by create and rotate.
    pub key: String,
    pub enabled: bool,
    /// Overrides `transcode.ladder` for this stream.
    pub ladder: Option<Vec<Rung>>,
    /// Overrides `transcode.passthrough` for this stream.
    pub passthrough: Option<bool>,
    pub origin: Origin,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A change to a stream's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamPatch {
    pub enabled: Option<bool>,
    pub ladder: Option<Vec<Rung>>,
    pub passthrough: Option<bool>,
}

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("stream `{0}` does not exist")]
    NotFound(String),
    #[error("stream `{0}` already exists")]
    Exists(String),
    #[error("stream `{0}` is defined in config.toml; edit the file to change it")]
    ManagedByConfig(String),
    #[error("invalid stream name `{0}`: use 1 to 64 of a-z, 0-9, - and _")]
    BadName(String),
    #[error("invalid ladder: {0}")]
    BadLadder(String),
    #[error("cannot read {file}: {message}")]
    Load { file: PathBuf, message: String },
    #[error("cannot save {file}: {source}")]
    Save {
        file: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedCatalog {
    streams: Vec<StreamRecord>,
}

/// All streams that may publish, by name.
#[derive(Debug)]
pub struct Catalog {
    streams: RwLock<BTreeMap<String, StreamRecord>>,
    file: PathBuf,
}

impl Catalog {
    /// The config's streams plus those saved by the API.
    pub fn load(config: &Config) -> Result<Self, CatalogError> {
        let file = config.data_dir().join("catalog.json");
        let mut streams = BTreeMap::new();
        for stream in &config.streams {
            let record = StreamRecord {
                name: stream.name.clone(),
                key: stream.key.clone(),
                enabled: true,
                ladder: None,
                passthrough: None,
                origin: Origin::Config,
                created_at: OffsetDateTime::UNIX_EPOCH,
            };
            streams.insert(stream.name.clone(), record);
        }
        for record in read_saved(&file)? {
            if streams.contains_key(&record.name) {
                tracing::warn!(
                    stream = %record.name,
                    "an API-created stream has the name of a config stream; the config wins"
                );
                continue;
            }
            streams.insert(record.name.clone(), record);
        }
        Ok(Self {
            streams: RwLock::new(streams),
            file,
        })
    }

    /// The stream a publish key belongs to, compared in constant time.
    pub fn resolve_key(&self, key: &str) -> Option<StreamRecord> {
        let streams = self.streams.read().ok()?;
        let mut found = None;
        for record in streams.values() {
            let same: bool = record.key.as_bytes().ct_eq(key.as_bytes()).into();
            if same {
                found = Some(record.clone());
            }
        }
        found
    }

    /// Whether a stream of this name exists (from config or the API).
    pub fn contains(&self, name: &str) -> bool {
        self.streams.read().is_ok_and(|s| s.contains_key(name))
    }

    pub fn get(&self, name: &str) -> Option<StreamRecord> {
        self.streams.read().ok()?.get(name).cloned()
    }

    /// Every stream, ordered by name.
    pub fn list(&self) -> Vec<StreamRecord> {
        self.streams
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Creates a stream with a freshly generated key.
    pub fn create(
        &self,
        name: &str,
        ladder: Option<Vec<Rung>>,
        passthrough: Option<bool>,
    ) -> Result<StreamRecord, CatalogError> {
        if !is_valid_name(name) {
            return Err(CatalogError::BadName(name.to_string()));
        }
        if let Some(ladder) = &ladder {
            check_ladder(ladder)?;
        }
        self.change(|streams| {
            if streams.contains_key(name) {
                return Err(CatalogError::Exists(name.to_string()));
            }
            let record = StreamRecord {
                name: name.to_string(),
                key: new_key(),
                enabled: true,
                ladder,
                passthrough,
                origin: Origin::Api,
                created_at: OffsetDateTime::now_utc(),
            };
            streams.insert(name.to_string(), record.clone());
            Ok(record)
        })
    }

    /// Applies a patch to an API-created stream.
    pub fn update(&self, name: &str, patch: StreamPatch) -> Result<StreamRecord, CatalogError> {
        if let Some(ladder) = &patch.ladder {
            check_ladder(ladder)?;
        }
        self.change_api_stream(name, |record| {
            if let Some(enabled) = patch.enabled {
                record.enabled = enabled;
            }
            if patch.ladder.is_some() {
                record.ladder = patch.ladder;
            }
            if patch.passthrough.is_some() {
                record.passthrough = patch.passthrough;
            }
        })
    }

    /// Replaces an API-created stream's key; the old key stops working.
    pub fn rotate_key(&self, name: &str) -> Result<StreamRecord, CatalogError> {
        self.change_api_stream(name, |record| record.key = new_key())
    }

    /// Deletes an API-created stream.
    pub fn delete(&self, name: &str) -> Result<StreamRecord, CatalogError> {
        self.change(|streams| match streams.get(name) {
            None => Err(CatalogError::NotFound(name.to_string())),
            Some(r) if r.origin == Origin::Config => {
                Err(CatalogError::ManagedByConfig(name.to_string()))
            }
            Some(_) => streams
                .remove(name)
                .ok_or_else(|| CatalogError::NotFound(name.to_string())),
        })
    }

    fn change_api_stream(
        &self,
        name: &str,
        edit: impl FnOnce(&mut StreamRecord),
    ) -> Result<StreamRecord, CatalogError> {
        self.change(|streams| {
            let record = streams
                .get_mut(name)
                .ok_or_else(|| CatalogError::NotFound(name.to_string()))?;
            if record.origin == Origin::Config {
                return Err(CatalogError::ManagedByConfig(name.to_string()));
            }
            edit(record);
            Ok(record.clone())
        })
    }

    /// Runs `edit` under the write lock and saves the API streams when it
    /// succeeds; a failed save undoes nothing in memory but is reported.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut BTreeMap<String, StreamRecord>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let (result, saved) = {
            let mut streams = self.streams.write().map_err(|_| CatalogError::Load {
                file: self.file.clone(),
                message: "catalog lock poisoned".into(),
            })?;
            let result = edit(&mut streams)?;
            let saved = SavedCatalog {
                streams: streams
                    .values()
                    .filter(|r| r.origin == Origin::Api)
                    .cloned()
                    .collect(),
            };
            (result, saved)
        };
        write_saved(&self.file, &saved)?;
        Ok(result)
    }
}

fn check_ladder(ladder: &[Rung]) -> Result<(), CatalogError> {
    let mut names = std::collections::HashSet::new();
    for rung in ladder {
        if !is_valid_name(&rung.name) || rung.name == "audio" || rung.name == "source" {
            return Err(CatalogError::BadLadder(format!(
                "bad rung name `{}`",
                rung.name
            )));
        }
        if !names.insert(rung.name.as_str()) {
            return Err(CatalogError::BadLadder(format!(
                "`{}` used twice",
                rung.name
            )));
        }
        if !(64..=4320).contains(&rung.height) || !rung.height.is_multiple_of(2) {
            return Err(CatalogError::BadLadder(format!(
                "height {} must be even and within 64 to 4320",
                rung.height
            )));
        }
        if !(50..=100_000).contains(&rung.video_kbps) {
            return Err(CatalogError::BadLadder(format!(
                "video_kbps {} is outside 50 to 100000",
                rung.video_kbps
            )));
        }
    }
    Ok(())
}

/// A new random stream key: 48 lowercase hex digits.
pub fn new_key() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn read_saved(file: &Path) -> Result<Vec<StreamRecord>, CatalogError> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CatalogError::Load {
                file: file.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    let saved: SavedCatalog = serde_json::from_slice(&bytes).map_err(|e| CatalogError::Load {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(saved
        .streams
        .into_iter()
        .filter(|r| r.origin == Origin::Api && is_valid_name(&r.name))
        .collect())
}

fn write_saved(file: &Path, saved: &SavedCatalog) -> Result<(), CatalogError> {
    let save_error = |source| CatalogError::Save {
        file: file.to_path_buf(),
        source,
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(save_error)?;
    }
    let bytes =
        serde_json::to_vec_pretty(saved).map_err(|e| save_error(std::io::Error::other(e)))?;
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(save_error)?;
    std::fs::rename(&tmp, file).map_err(save_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let text = format!(
            "[server]\ndata_dir = {:?}\n[[streams]]\nname = \"cam\"\nkey = \"camkey1\"\n",
            dir.display().to_string()
        );
        Config::from_toml(&text, Path::new("test.toml")).expect("valid")
    }

    #[test]
    fn api_streams_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::load(&config(dir.path())).expect("loads");
        let created = catalog.create("show", None, Some(false)).expect("created");
        assert_eq!(created.key.len(), KEY_BYTES * 2);
        let reloaded = Catalog::load(&config(dir.path())).expect("reloads");
        let again = reloaded.get("show").expect("persisted");
        assert_eq!(again.key, created.key);
        assert_eq!(again.passthrough, Some(false));
        assert_eq!(
            reloaded.resolve_key("camkey1").map(|r| r.name),
            Some("cam".into())
        );
    }

    #[test]
    fn rotation_replaces_the_key_and_config_streams_are_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::load(&config(dir.path())).expect("loads");
        let old = catalog.create("show", None, None).expect("created").key;
        let new = catalog.rotate_key("show").expect("rotated").key;
        assert_ne!(old, new);
        assert!(catalog.resolve_key(&old).is_none());
        assert!(catalog.resolve_key(&new).is_some());
        assert!(matches!(
            catalog.rotate_key("cam"),
            Err(CatalogError::ManagedByConfig(_))
        ));
        assert!(matches!(
            catalog.create("cam", None, None),
            Err(CatalogError::Exists(_))
        ));
        assert!(matches!(
            catalog.create("../x", None, None),
            Err(CatalogError::BadName(_))
        ));
        catalog.delete("show").expect("deleted");
        assert!(catalog.get("show").is_none());
    }
}
