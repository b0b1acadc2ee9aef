//! Signed, expiring playback tokens.
//!
//! A token rides in the URL path as a prefix, `/p/{token}/live/{stream}/...`,
//! so every relative URI a player follows from a playlist or MPD carries it.
//! It reads `{key id}.{expiry}.{scope}.{stream tag}.{mac}`:
//!
//! - the key id names one of the configured signing keys, so two keys can be
//!   valid at once while keys rotate;
//! - the expiry is Unix seconds;
//! - the scope is `p` (everything of the stream) or `t` (thumbnail only),
//!   with `i` appended when the token is bound to the client's IP address;
//! - the stream tag is 8 hex digits of SHA-256 of the stream name, only to
//!   tell "token for another stream" apart from tampering;
//! - the MAC is HMAC-SHA256 over all of it, the stream name and the bound
//!   address, in lowercase hex, compared in constant time.
//!
//! Pure functions over data; the time comes in as `now`.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::validate::is_valid_name;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for the MAC input.
const MAC_CONTEXT: &str = "bigfoot playback token v1";
/// Longest token accepted before any parsing.
pub const MAX_TOKEN_LEN: usize = 200;

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Playlists, manifests, segments and thumbnails of one stream.
    Playback,
    /// Only the stream's thumbnail.
    Thumbnail,
}

/// A key that signs tokens.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub id: String,
    pub secret: Vec<u8>,
}

/// What to sign.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pub stream: &'a str,
    pub expires: u64,
    pub scope: Scope,
    pub client_ip: Option<IpAddr>,
}

/// Why a token was refused; each has its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the playback token is malformed")]
    Malformed,
    #[error("the playback token was signed with an unknown key")]
    UnknownKey,
    #[error("the playback token is for another stream")]
    WrongStream,
    #[error("the playback token has expired")]
    Expired,
    #[error("the playback token's signature does not match")]
    BadSignature,
    #[error("the playback token does not allow this file")]
    WrongScope,
}

impl TokenError {
    /// The stable error code returned to clients.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "TOKEN_MALFORMED",
            Self::UnknownKey => "TOKEN_UNKNOWN_KEY",
            Self::WrongStream => "TOKEN_WRONG_STREAM",
            Self::Expired => "TOKEN_EXPIRED",
            Self::BadSignature => "TOKEN_INVALID",
            Self::WrongScope => "TOKEN_WRONG_SCOPE",
        }
    }
}

fn stream_tag(stream: &str) -> String {
    hex::encode(&Sha256::digest(stream.as_bytes())[..4])
}

fn scope_text(scope: Scope, bound: bool) -> &'static str {
    match (scope, bound) {
        (Scope::Playback, false) => "p",
        (Scope::Playback, true) => "pi",
        (Scope::Thumbnail, false) => "t",
        (Scope::Thumbnail, true) => "ti",
    }
}

fn mac(key: &SigningKey, head: &str, stream: &str, ip: Option<IpAddr>) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(&key.secret).ok()?;
    let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
    mac.update(format!("{MAC_CONTEXT}\n{head}\n{stream}\n{ip}").as_bytes());
    Some(mac)
}

/// Signs a grant with `key`; `None` only if the key is unusable.
pub fn sign(key: &SigningKey, grant: &Grant<'_>) -> Option<String> {
    if !is_valid_name(&key.id) || !is_valid_name(grant.stream) {
        return None;
    }
    let head = format!(
        "{}.{}.{}.{}",
        key.id,
        grant.expires,
        scope_text(grant.scope, grant.client_ip.is_some()),
        stream_tag(grant.stream)
    );
    let tag = mac(key, &head, grant.stream, grant.client_ip)?
        .finalize()
        .into_bytes();
    Some(format!("{head}.{}", hex::encode(tag)))
}

/// Checks a token for `stream` at `now` (Unix seconds) from `client_ip`.
pub fn verify(
    token: &str,
    stream: &str,
    keys: &[SigningKey],
    now: u64,
    leeway: u64,
    client_ip: IpAddr,
) -> Result<Scope, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [key_id, expires, scope, tag, signature] = parts.as_slice() else {
        return Err(TokenError::Malformed);
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_valid_name(key_id)
        || !digits(expires)
        || tag.len() != 8
        || signature.len() != 64
        || !lower_hex(tag)
        || !lower_hex(signature)
    {
        return Err(TokenError::Malformed);
    }
    let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let (scope, bound) = match *scope {
        "p" => (Scope::Playback, false),
        "pi" => (Scope::Playback, true),
        "t" => (Scope::Thumbnail, false),
        "ti" => (Scope::Thumbnail, true),
        _ => return Err(TokenError::Malformed),
    };
    let key = keys
        .iter()
        .find(|k| k.id == *key_id)
        .ok_or(TokenError::UnknownKey)?;
    if *tag != stream_tag(stream) {
        return Err(TokenError::WrongStream);
    }
    let signature = hex::decode(signature).map_err(|_| TokenError::Malformed)?;
    let head_len = token.len() - 65;
    let head = token.get(..head_len).ok_or(TokenError::Malformed)?;
    let ip = bound.then_some(client_ip);
    mac(key, head, stream, ip)
        .ok_or(TokenError::BadSignature)?
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    if now > expires.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    Ok(scope)
}

/// Which manifest or file a playback URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Hls,
    Dash,
    Thumbnail,
}

impl Target {
    fn file(self) -> &'static str {
        match self {
            Self::Hls => "master.m3u8",
            Self::Dash => "manifest.mpd",
            Self::Thumbnail => "thumbnail.jpg",
        }
    }
}

/// Mints and checks playback tokens with the configured keys.
#[derive(Debug, Clone)]
pub struct Signer {
    keys: Vec<SigningKey>,
    active: String,
    leeway: u64,
}

impl Signer {
    pub fn new(keys: Vec<SigningKey>, active: String, leeway: u64) -> Self {
        Self {
            keys,
            active,
            leeway,
        }
    }

    /// From the server's secrets and `[playback]` settings.
    pub fn from_secrets(
        secrets: &crate::config::secrets::Secrets,
        playback: &crate::config::PlaybackSettings,
    ) -> Self {
        let keys = secrets
            .playback_keys
            .iter()
            .map(|(id, secret)| SigningKey {
                id: id.clone(),
                secret: secret.clone(),
            })
            .collect();
        Self::new(
            keys,
            secrets.signing_key_id.clone(),
            playback.clock_leeway_secs,
        )
    }

    /// A full playback URL under `base` (such as `http://host:8080`).
    pub fn url(
        &self,
        base: &str,
        stream: &str,
        target: Target,
        expires: u64,
        client_ip: Option<IpAddr>,
    ) -> Option<String> {
        let key = self.keys.iter().find(|k| k.id == self.active)?;
        let scope = match target {
            Target::Thumbnail => Scope::Thumbnail,
            Target::Hls | Target::Dash => Scope::Playback,
        };
        let grant = Grant {
            stream,
            expires,
            scope,
            client_ip,
        };
        let token = sign(key, &grant)?;
        let base = base.trim_end_matches('/');
        Some(format!("{base}/p/{token}/live/{stream}/{}", target.file()))
    }

    /// Checks a token taken from a request path.
    pub fn verify(
        &self,
        token: &str,
        stream: &str,
        now: u64,
        client_ip: IpAddr,
    ) -> Result<Scope, TokenError> {
        verify(token, stream, &self.keys, now, self.leeway, client_ip)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    fn keys() -> Vec<SigningKey> {
        vec![
            SigningKey {
                id: "k1".into(),
                secret: b"first secret first secret first!".to_vec(),
            },
            SigningKey {
                id: "k2".into(),
                secret: b"second secret second secret sec!".to_vec(),
            },
        ]
    }

    fn grant(stream: &str, expires: u64) -> Grant<'_> {
        Grant {
            stream,
            expires,
            scope: Scope::Playback,
            client_ip: None,
        }
    }

    fn token(key: usize, grant: &Grant<'_>) -> String {
        sign(&keys()[key], grant).expect("signs")
    }

    #[test]
    fn valid_with_either_key_until_expiry_plus_leeway() {
        for key in 0..2 {
            let t = token(key, &grant("cam", 1000));
            assert_eq!(
                verify(&t, "cam", &keys(), 999, 30, CLIENT),
                Ok(Scope::Playback)
            );
            assert_eq!(
                verify(&t, "cam", &keys(), 1030, 30, CLIENT),
                Ok(Scope::Playback)
            );
            assert_eq!(
                verify(&t, "cam", &keys(), 1031, 30, CLIENT),
                Err(TokenError::Expired)
            );
        }
    }

    #[test]
    fn each_attack_has_its_code() {
        let t = token(0, &grant("cam", 1000));
        assert_eq!(
            verify(&t, "other", &keys(), 0, 0, CLIENT),
            Err(TokenError::WrongStream)
        );
        let later = t.replacen(".1000.", ".9000.", 1);
        assert_eq!(
            verify(&later, "cam", &keys(), 0, 0, CLIENT),
            Err(TokenError::BadSignature)
        );
        let unknown = t.replacen("k1.", "k9.", 1);
        assert_eq!(
            verify(&unknown, "cam", &keys(), 0, 0, CLIENT),
            Err(TokenError::UnknownKey)
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert_eq!(
            verify(&flipped, "cam", &keys(), 0, 0, CLIENT),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "a.b",
            "k1.x.p.00000000.00",
            &"a".repeat(300),
            "K1.1.p.1.1",
        ] {
            assert_eq!(
                verify(bad, "cam", &keys(), 0, 0, CLIENT),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn signer_urls_verify() {
        let signer = Signer::new(keys(), "k2".into(), 5);
        let url = signer
            .url("http://edge:8080/", "cam", Target::Dash, 100, None)
            .expect("url");
        let token = url
            .strip_prefix("http://edge:8080/p/")
            .and_then(|rest| rest.strip_suffix("/live/cam/manifest.mpd"))
            .expect("layout");
        assert!(token.starts_with("k2."), "{token}");
        assert_eq!(
            signer.verify(token, "cam", 104, CLIENT),
            Ok(Scope::Playback)
        );
        assert_eq!(
            signer.verify(token, "cam", 106, CLIENT),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn ip_binding_and_scope() {
        let mut g = grant("cam", 1000);
        g.client_ip = Some(CLIENT);
        g.scope = Scope::Thumbnail;
        let t = token(1, &g);
        assert_eq!(
            verify(&t, "cam", &keys(), 0, 0, CLIENT),
            Ok(Scope::Thumbnail)
        );
        let elsewhere = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(
            verify(&t, "cam", &keys(), 0, 0, elsewhere),
            Err(TokenError::BadSignature)
        );
    }
}
