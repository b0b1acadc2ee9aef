//! AVC decoder configuration (`avcC`) and the picture size from its SPS.
//!
//! Only what the server needs to plan a ladder: profile, level and the
//! cropped picture size. Parsing is bounds-checked throughout.

use bytes::Bytes;

/// Facts read from an AVC sequence header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub level: u8,
    pub width: u32,
    pub height: u32,
    /// The raw `avcC` record, handed to the decoder as `codec_data`.
    pub record: Bytes,
}

/// Why an AVC sequence header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvcError {
    #[error("AVC decoder configuration is truncated")]
    Truncated,
    #[error("AVC decoder configuration has version {0}, expected 1")]
    Version(u8),
    #[error("AVC decoder configuration carries no SPS")]
    NoSps,
    #[error("AVC SPS is malformed: {0}")]
    BadSps(&'static str),
}

impl AvcConfig {
    /// Parses an `avcC` record and its first SPS.
    pub fn parse(record: Bytes) -> Result<Self, AvcError> {
        let head = record.get(..6).ok_or(AvcError::Truncated)?;
        if head[0] != 1 {
            return Err(AvcError::Version(head[0]));
        }
        if head[5] & 0x1f == 0 {
            return Err(AvcError::NoSps);
        }
        let len_bytes = record.get(6..8).ok_or(AvcError::Truncated)?;
        let sps_len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let sps = record.get(8..8 + sps_len).ok_or(AvcError::Truncated)?;
        let (width, height) = sps_picture_size(sps)?;
        Ok(Self {
            profile: head[1],
            level: head[3],
            width,
            height,
            record,
        })
    }
}

/// Reads bits MSB first from an RBSP (emulation prevention bytes removed).
struct BitReader {
    rbsp: Vec<u8>,
    pos: usize,
}

impl BitReader {
    fn new(nal: &[u8]) -> Self {
        let mut rbsp = Vec::with_capacity(nal.len());
        let mut zeros = 0;
        for &b in nal {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            rbsp.push(b);
        }
        Self { rbsp, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, AvcError> {
        let byte = self
            .rbsp
            .get(self.pos / 8)
            .ok_or(AvcError::BadSps("ends early"))?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Result<u32, AvcError> {
        let mut value = 0u32;
        for _ in 0..n {
            value = (value << 1) | self.bit()?;
        }
        Ok(value)
    }

    fn ue(&mut self) -> Result<u32, AvcError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(AvcError::BadSps("Exp-Golomb code too long"));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Result<i64, AvcError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

fn skip_scaling_list(r: &mut BitReader, size: usize) -> Result<(), AvcError> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        last = if next == 0 { last } else { next };
    }
    Ok(())
}

/// The cropped picture size an SPS NAL unit (with its header byte) declares.
pub fn sps_picture_size(nal: &[u8]) -> Result<(u32, u32), AvcError> {
    let body = nal.get(1..).ok_or(AvcError::BadSps("empty"))?;
    let mut r = BitReader::new(body);
    let profile = r.bits(8)?;
    r.bits(16)?;
    r.ue()?;
    let mut chroma_format = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?;
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(AvcError::BadSps("too many reference frames in cycle"));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?;
    r.bit()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?;
    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    if r.bit()? == 1 {
        let (left, right) = (u64::from(r.ue()?), u64::from(r.ue()?));
        let (top, bottom) = (u64::from(r.ue()?), u64::from(r.ue()?));
        let (unit_x, unit_y) = match chroma_format {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = (left + right) * unit_x;
        crop_y = (top + bottom) * unit_y;
    }
    let width = (width_mbs * 16).saturating_sub(crop_x);
    let height = ((2 - frame_mbs_only) * height_map_units * 16).saturating_sub(crop_y);
    match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) if (16..=16384).contains(&w) && (16..=16384).contains(&h) => Ok((w, h)),
        _ => Err(AvcError::BadSps("picture size out of range")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SPS from x264 for 1280x720 High profile (level 3.1).
    const SPS_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];

    fn record(sps: &[u8]) -> Bytes {
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        r.extend_from_slice(&u16::try_from(sps.len()).expect("short").to_be_bytes());
        r.extend_from_slice(sps);
        r.extend_from_slice(&[1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb]);
        Bytes::from(r)
    }

    #[test]
    fn reads_720p_high_profile() {
        let config = AvcConfig::parse(record(SPS_720P)).expect("parses");
        assert_eq!((config.width, config.height), (1280, 720));
        assert_eq!((config.profile, config.level), (0x64, 0x1f));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = record(SPS_720P);
        for len in 0..full.len() - 7 {
            assert!(AvcConfig::parse(full.slice(..len)).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let mut sps = vec![0x67];
            for _ in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                sps.push((seed >> 16) as u8);
            }
            let _ = sps_picture_size(&sps);
        }
    }
}
