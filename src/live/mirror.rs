//! The optional on-disk mirror of a stream's playlists and segments.
//!
//! Files go under `data_dir/live/{stream}/` with the same layout as the
//! playback URLs, so any static web server can serve the folder. Segments
//! that leave the window are deleted; the folder goes when the stream is
//! released. Serving from memory never depends on the mirror.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::warn;

use super::snapshot::StreamSnapshot;

/// A change in the mirror's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorHealth {
    Unchanged,
    /// Writing failed (a full disk, a missing folder); the error.
    Failed(String),
    Recovered,
}

/// Mirrors one stream's snapshots to disk.
pub struct Mirror {
    dir: PathBuf,
    /// Per rendition, the init and media segment files on disk.
    written: HashMap<String, BTreeSet<String>>,
    /// Playlists as last written, by file name relative to `dir`: most
    /// snapshots change only some of them (or only the stream's status).
    playlists: HashMap<String, Bytes>,
    failing: bool,
}

impl Mirror {
    pub fn new(data_dir: &Path, stream: &str) -> Self {
        Self {
            dir: data_dir.join("live").join(stream),
            written: HashMap::new(),
            playlists: HashMap::new(),
            failing: false,
        }
    }

    /// Brings the folder in line with a snapshot. Returns what changed in
    /// the mirror's health, so the stream can report it once.
    pub fn write(&mut self, snapshot: &StreamSnapshot) -> MirrorHealth {
        let result = self.try_write(snapshot);
        if result.is_err() {
            // Whatever the failure left behind is rewritten next time.
            self.playlists.clear();
        }
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                warn!(dir = %self.dir.display(), "disk mirror works again");
                MirrorHealth::Recovered
            }
            Ok(()) => MirrorHealth::Unchanged,
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(dir = %self.dir.display(), error = %e, "disk mirror failed; \
                      playback from memory continues");
                MirrorHealth::Failed(e.to_string())
            }
            Err(_) => MirrorHealth::Unchanged,
        }
    }

    /// Whether the last write failed.
    pub fn failing(&self) -> bool {
        self.failing
    }

    fn try_write(&mut self, snapshot: &StreamSnapshot) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        if let Some(master) = &snapshot.master {
            self.write_playlist("master.m3u8", master)?;
        }
        for (name, rendition) in &snapshot.renditions {
            let dir = self.dir.join(name);
            std::fs::create_dir_all(&dir)?;
            let written = self.written.entry(name.clone()).or_default();
            let inits = rendition
                .inits
                .iter()
                .map(|(id, data)| (format!("init-{id}.mp4"), data));
            let segments = rendition
                .segments
                .iter()
                .map(|(seq, data)| (format!("{seq}.m4s"), data));
            let mut keep = BTreeSet::new();
            for (file, data) in inits.chain(segments) {
                if !written.contains(&file) {
                    write_atomic(&dir.join(&file), data)?;
                }
                keep.insert(file);
            }
            // The playlist goes before any file leaves, so it never names a
            // missing one.
            self.write_playlist(&format!("{name}/index.m3u8"), &rendition.playlist)?;
            if let Some(written) = self.written.get_mut(name) {
                for gone in written.difference(&keep) {
                    let _ = std::fs::remove_file(dir.join(gone));
                }
                *written = keep;
            }
        }
        Ok(())
    }

    /// Writes a playlist unless the file already holds `data`.
    fn write_playlist(&mut self, file: &str, data: &Bytes) -> std::io::Result<()> {
        if self.playlists.get(file) == Some(data) {
            return Ok(());
        }
        write_atomic(&self.dir.join(file), data)?;
        self.playlists.insert(file.to_string(), data.clone());
        Ok(())
    }

    /// Removes the stream's folder.
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %self.dir.display(), error = %e, "cannot remove mirrored files");
        }
    }
}

/// Removes whatever an earlier run mirrored: at start-up nothing is live,
/// so every stream folder under `data_dir/live/` is an orphan.
pub fn sweep_orphans(data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("live")) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove a mirrored file"),
        }
    }
    removed
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;

    use super::*;
    use crate::live::RenditionSnapshot;
    use crate::package::isobmff::TrackKind;

    fn snapshot(sequences: &[u64]) -> StreamSnapshot {
        let segments = sequences
            .iter()
            .map(|s| (*s, Bytes::from(format!("segment {s}"))))
            .collect();
        let rendition = RenditionSnapshot {
            kind: TrackKind::Video,
            playlist: Bytes::from_static(b"#EXTM3U\n"),
            inits: HashMap::from([(0, Bytes::from_static(b"init"))]),
            segments,
        };
        StreamSnapshot {
            status: Default::default(),
            live: true,
            pending: true,
            planned: true,
            master: Some(Bytes::from_static(b"#EXTM3U\n")),
            dash: None,
            thumbnail: None,
            renditions: HashMap::from([("360p".to_string(), rendition)]),
        }
    }

    #[test]
    fn a_failing_disk_is_reported_once_and_its_recovery_too() {
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(data.path().join("live")).expect("live dir");
        std::fs::write(data.path().join("live/cam"), b"not a folder").expect("blocker");
        let mut mirror = Mirror::new(data.path(), "cam");
        assert!(matches!(
            mirror.write(&snapshot(&[1])),
            MirrorHealth::Failed(_)
        ));
        assert_eq!(mirror.write(&snapshot(&[2])), MirrorHealth::Unchanged);
        assert!(mirror.failing());
        std::fs::remove_file(data.path().join("live/cam")).expect("unblock");
        assert_eq!(mirror.write(&snapshot(&[3])), MirrorHealth::Recovered);
        assert!(!mirror.failing());
    }

    #[test]
    fn orphans_are_swept() {
        let data = tempfile::tempdir().expect("tempdir");
        let mut mirror = Mirror::new(data.path(), "old");
        mirror.write(&snapshot(&[1]));
        assert_eq!(sweep_orphans(data.path()), 1);
        assert!(!data.path().join("live/old").exists());
        assert_eq!(sweep_orphans(&data.path().join("missing")), 0);
    }

    #[test]
    fn keeps_the_window_and_removes_the_rest() {
        let data = tempfile::tempdir().expect("tempdir");
        let mut mirror = Mirror::new(data.path(), "cam");
        assert_eq!(mirror.write(&snapshot(&[1, 2, 3])), MirrorHealth::Unchanged);
        assert_eq!(mirror.write(&snapshot(&[2, 3, 4])), MirrorHealth::Unchanged);
        let dir = data.path().join("live/cam/360p");
        assert!(!dir.join("1.m4s").exists());
        assert_eq!(std::fs::read(dir.join("4.m4s")).expect("4"), b"segment 4");
        assert!(dir.join("index.m3u8").exists() && dir.join("init-0.mp4").exists());
        mirror.remove();
        assert!(!data.path().join("live/cam").exists());
    }
}
