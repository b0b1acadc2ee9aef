//! Request paths to routes: the one gate every playback path goes through.
//!
//! Only a closed alphabet reaches the router (lowercase letters, digits,
//! `-`, `_`, `.` and single `/` separators), so percent-encoding, `..`,
//! backslashes, NUL and doubled slashes are refused before any lookup.

use crate::config::validate::{MAX_NAME_LEN, is_valid_name};

/// Longest request path accepted.
const MAX_PATH_LEN: usize = 512;

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The server's clock, for DASH players (`UTCTiming`).
    Time,
    Master {
        stream: String,
    },
    Dash {
        stream: String,
    },
    Thumbnail {
        stream: String,
    },
    Media {
        stream: String,
        rendition: String,
    },
    Init {
        stream: String,
        rendition: String,
        id: u32,
    },
    Segment {
        stream: String,
        rendition: String,
        sequence: u64,
    },
}

impl Route {
    /// The stream a route serves, if it is a playback route.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Self::Time => None,
            Self::Master { stream }
            | Self::Dash { stream }
            | Self::Thumbnail { stream }
            | Self::Media { stream, .. }
            | Self::Init { stream, .. }
            | Self::Segment { stream, .. } => Some(stream),
        }
    }
}

/// A playback path, with the token prefix split off when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<'a> {
    pub token: Option<&'a str>,
    pub route: Route,
}

/// Maps a path that may start with `/p/{token}` to its route.
pub fn signed_route(path: &str) -> Result<Signed<'_>, RouteError> {
    let Some(rest) = path.strip_prefix("/p/") else {
        return route(path).map(|route| Signed { token: None, route });
    };
    if path.len() > MAX_PATH_LEN || path.contains("..") || path.contains("//") {
        return Err(RouteError::BadPath);
    }
    let (token, inner) = rest.split_at(rest.find('/').ok_or(RouteError::NotFound)?);
    if token.is_empty() || token.len() > super::token::MAX_TOKEN_LEN {
        return Err(RouteError::BadPath);
    }
    let route = route(inner)?;
    if route.stream().is_none() {
        return Err(RouteError::NotFound);
    }
    check_alphabet(token)?;
    Ok(Signed {
        token: Some(token),
        route,
    })
}

fn check_alphabet(text: &str) -> Result<(), RouteError> {
    let ok = text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(RouteError::BadPath) }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// Malformed: characters outside the alphabet, `..`, `//`, too long.
    BadPath,
    /// Well-formed, but nothing is served there.
    NotFound,
}

/// Maps a request path (without the query) to a route.
pub fn route(path: &str) -> Result<Route, RouteError> {
    if path.len() > MAX_PATH_LEN || !path.starts_with('/') {
        return Err(RouteError::BadPath);
    }
    let allowed = |b: u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'/')
    };
    if !path.bytes().all(allowed) || path.contains("//") || path.contains("..") {
        return Err(RouteError::BadPath);
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    match parts.as_slice() {
        ["time"] => Ok(Route::Time),
        ["live", stream, "master.m3u8"] => Ok(Route::Master {
            stream: name(stream)?,
        }),
        ["live", stream, "manifest.mpd"] => Ok(Route::Dash {
            stream: name(stream)?,
        }),
        ["live", stream, "thumbnail.jpg"] => Ok(Route::Thumbnail {
            stream: name(stream)?,
        }),
        ["live", stream, rendition, file] => {
            let stream = name(stream)?;
            let rendition = name(rendition)?;
            file_route(stream, rendition, file)
        }
        _ => Err(RouteError::NotFound),
    }
}

fn name(part: &str) -> Result<String, RouteError> {
    if part.len() > MAX_NAME_LEN {
        return Err(RouteError::BadPath);
    }
    if is_valid_name(part) {
        Ok(part.to_string())
    } else {
        Err(RouteError::NotFound)
    }
}

fn file_route(stream: String, rendition: String, file: &str) -> Result<Route, RouteError> {
    if file == "index.m3u8" {
        return Ok(Route::Media { stream, rendition });
    }
    if let Some(id) = file
        .strip_prefix("init-")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        let id = number(id)?;
        return Ok(Route::Init {
            stream,
            rendition,
            id,
        });
    }
    if let Some(sequence) = file.strip_suffix(".m4s") {
        return Ok(Route::Segment {
            stream,
            rendition,
            sequence: number(sequence)?,
        });
    }
    Err(RouteError::NotFound)
}

/// A decimal number without sign, leading zeros or overflow.
fn number<T: std::str::FromStr>(text: &str) -> Result<T, RouteError> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(RouteError::NotFound);
    }
    text.parse().map_err(|_| RouteError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_routes() {
        assert_eq!(
            route("/live/demo/master.m3u8"),
            Ok(Route::Master {
                stream: "demo".into()
            })
        );
        assert_eq!(
            route("/live/demo/360p/42.m4s"),
            Ok(Route::Segment {
                stream: "demo".into(),
                rendition: "360p".into(),
                sequence: 42
            })
        );
        assert_eq!(
            route("/live/demo/audio/init-3.mp4"),
            Ok(Route::Init {
                stream: "demo".into(),
                rendition: "audio".into(),
                id: 3
            })
        );
        assert_eq!(route("/healthz"), Err(RouteError::NotFound));
        assert_eq!(
            route("/live/demo/manifest.mpd"),
            Ok(Route::Dash {
                stream: "demo".into()
            })
        );
        assert_eq!(
            route("/live/demo/thumbnail.jpg"),
            Ok(Route::Thumbnail {
                stream: "demo".into()
            })
        );
        assert_eq!(route("/time"), Ok(Route::Time));
    }

    #[test]
    fn token_prefix_is_split_off() {
        let signed = signed_route("/p/k1.99.p.0a0b0c0d.ff/live/demo/360p/7.m4s").expect("ok");
        assert_eq!(signed.token, Some("k1.99.p.0a0b0c0d.ff"));
        assert_eq!(signed.route.stream(), Some("demo"));
        assert_eq!(signed_route("/p/tok/time"), Err(RouteError::NotFound));
        assert_eq!(
            signed_route("/p//live/demo/master.m3u8"),
            Err(RouteError::BadPath)
        );
        assert_eq!(
            signed_route("/p/a%2f/live/demo/master.m3u8"),
            Err(RouteError::BadPath)
        );
        assert_eq!(signed_route("/p/tok"), Err(RouteError::NotFound));
        assert_eq!(
            signed_route("/p/../live/demo/master.m3u8"),
            Err(RouteError::BadPath)
        );
        assert_eq!(
            signed_route("/p/k1..x/live/demo/master.m3u8"),
            Err(RouteError::BadPath)
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        let bad = [
            "/live/../etc/passwd",
            "/live/demo/..%2f..%2fetc",
            "/live/%2e%2e/master.m3u8",
            "/live//demo/master.m3u8",
            "/live\\demo\\master.m3u8",
            "/live/de\0mo/master.m3u8",
            "/live/DEMO/master.m3u8",
            "live/demo/master.m3u8",
        ];
        for path in bad {
            assert_eq!(route(path), Err(RouteError::BadPath), "{path:?}");
        }
        let long = format!("/live/{}/master.m3u8", "a".repeat(300));
        assert_eq!(route(&long), Err(RouteError::BadPath));
        let huge = format!("/live/{}/master.m3u8", "a".repeat(65536));
        assert_eq!(route(&huge), Err(RouteError::BadPath));
    }

    #[test]
    fn odd_but_clean_paths_are_not_found() {
        for path in [
            "/live/demo/360p/0042.m4s",
            "/live/demo/360p/-1.m4s",
            "/live/demo/360p/99999999999999999999999.m4s",
            "/live/demo/360p/segment.ts",
            "/live/-x/master.m3u8",
            "/",
            "/live/demo",
        ] {
            assert_eq!(route(path), Err(RouteError::NotFound), "{path:?}");
        }
    }
}
