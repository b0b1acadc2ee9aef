//! Secrets an operator did not set in config.toml, generated once and kept
//! in `data_dir/secrets.json` (mode 0600) so that `bigfoot sign` and
//! `bigfoot token` agree with the running server.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::Config;

/// Bytes of a generated secret.
const SECRET_BYTES: usize = 32;
/// Key id of a generated playback signing key.
const GENERATED_KEY_ID: &str = "auto";

/// The secrets in force.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Every key that may verify playback tokens.
    pub playback_keys: Vec<(String, Vec<u8>)>,
    /// The key that signs new playback tokens.
    pub signing_key_id: String,
    /// HS256 secret of the control API.
    pub jwt_secret: Vec<u8>,
}

/// Why the secrets could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("secrets file {file}: {message}")]
pub struct SecretsError {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedSecrets {
    #[serde(default)]
    playback_secret: String,
    #[serde(default)]
    jwt_secret: String,
}

impl Secrets {
    /// The configured secrets, with generated ones filling the gaps.
    pub fn load_or_create(config: &Config) -> Result<Self, SecretsError> {
        let file = config.data_dir().join("secrets.json");
        let need_playback = config.playback.signing_keys.is_empty();
        let need_jwt = config.api.jwt_secret.is_empty();
        let saved = if need_playback || need_jwt {
            load_or_generate(&file)?
        } else {
            SavedSecrets::default()
        };

        let (playback_keys, signing_key_id) = if need_playback {
            let key = (
                GENERATED_KEY_ID.to_string(),
                saved.playback_secret.into_bytes(),
            );
            (vec![key], GENERATED_KEY_ID.to_string())
        } else {
            let keys: Vec<_> = config
                .playback
                .signing_keys
                .iter()
                .map(|k| (k.id.clone(), k.secret.clone().into_bytes()))
                .collect();
            let active = if config.playback.signing_key_id.is_empty() {
                keys.first().map(|k| k.0.clone()).unwrap_or_default()
            } else {
                config.playback.signing_key_id.clone()
            };
            (keys, active)
        };
        let jwt_secret = if need_jwt {
            saved.jwt_secret.into_bytes()
        } else {
            config.api.jwt_secret.clone().into_bytes()
        };
        Ok(Self {
            playback_keys,
            signing_key_id,
            jwt_secret,
        })
    }
}

fn load_or_generate(file: &Path) -> Result<SavedSecrets, SecretsError> {
    let error = |message: String| SecretsError {
        file: file.to_path_buf(),
        message,
    };
    let mut saved = match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SavedSecrets::default(),
        Err(e) => return Err(error(e.to_string())),
    };
    let mut changed = false;
    for secret in [&mut saved.playback_secret, &mut saved.jwt_secret] {
        if secret.len() < SECRET_BYTES {
            let mut bytes = [0u8; SECRET_BYTES];
            rand::rng().fill_bytes(&mut bytes);
            *secret = hex::encode(bytes);
            changed = true;
        }
    }
    if changed {
        write_private(file, &saved).map_err(|e| error(e.to_string()))?;
    }
    Ok(saved)
}

fn write_private(file: &Path, saved: &SavedSecrets) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    std::fs::rename(tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[server]\ndata_dir = {:?}\n",
            dir.path().display().to_string()
        );
        let config = Config::from_toml(&text, Path::new("t.toml")).expect("valid");
        let first = Secrets::load_or_create(&config).expect("created");
        let again = Secrets::load_or_create(&config).expect("read");
        assert_eq!(first.playback_keys, again.playback_keys);
        assert_eq!(first.jwt_secret, again.jwt_secret);
        assert_eq!(first.signing_key_id, "auto");
        assert!(first.jwt_secret.len() >= 32);
        let mode = std::fs::metadata(dir.path().join("secrets.json"))
            .expect("file")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
