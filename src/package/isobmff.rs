//! A small ISO BMFF reader for the CMAF segments `cmafmux` hands us.
//!
//! It owns the facts the playlists need from the bytes: the codec string,
//! picture size, timescale and audio layout from an init segment
//! ([`InitInfo`]), and the sequence number, decode time, sample count and
//! duration of a media segment ([`FragmentInfo`]). It reads only; it never
//! writes or rewrites boxes. All input is untrusted: every read is bounds
//! checked and bad bytes give a [`PackageError`], never a panic.

use super::PackageError;

/// Size of a plain box header: 32-bit size and four-character type.
const BOX_HEADER: usize = 8;

/// Size of a box header that carries a 64-bit `largesize`.
const LARGE_BOX_HEADER: usize = 16;

/// Bytes of a `VisualSampleEntry` before its child boxes.
const VISUAL_SAMPLE_ENTRY: usize = 78;

/// Extra bytes a QuickTime version 1 sound description carries.
const AUDIO_SAMPLE_ENTRY_V1_EXTRA: usize = 16;

/// `sample_is_non_sync_sample` in the ISO BMFF sample flags.
const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

/// MPEG-4 Audio in the `DecoderConfigDescriptor` object type indication.
const OTI_MPEG4_AUDIO: u8 = 0x40;

/// Descriptor tags used inside `esds`.
const ES_DESCRIPTOR_TAG: u8 = 0x03;
const DECODER_CONFIG_TAG: u8 = 0x04;
const DECODER_SPECIFIC_INFO_TAG: u8 = 0x05;

/// Whether a track carries pictures or sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// A `vide` handler.
    Video,
    /// A `soun` handler.
    Audio,
}

/// What an init segment says about its single track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitInfo {
    /// Video or audio.
    pub kind: TrackKind,
    /// RFC 6381 codec string, for example `avc1.64001F` or `mp4a.40.2`.
    pub codec: String,
    /// Picture width in pixels (0 for audio).
    pub width: u32,
    /// Picture height in pixels (0 for audio).
    pub height: u32,
    /// Media timescale from `mdhd`, in ticks per second.
    pub timescale: u32,
    /// Audio sample rate in Hz (0 for video).
    pub sample_rate: u32,
    /// Audio channel count (0 for video).
    pub channels: u16,
}

/// What a media segment (one or more `moof`/`mdat` pairs) says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// `mfhd` sequence number of the first fragment.
    pub sequence_number: u32,
    /// `tfdt` base media decode time of the first fragment, in timescale ticks.
    pub base_decode_time: u64,
    /// Samples over all fragments in the segment.
    pub sample_count: u32,
    /// Summed sample durations over all fragments, in timescale ticks.
    pub duration_ticks: u64,
    /// Whether the first sample is a sync sample (a keyframe for video).
    pub first_sample_is_sync: bool,
}

/// One box: its type and the bytes after its header.
#[derive(Debug, Clone, Copy)]
struct Mp4Box<'a> {
    kind: [u8; 4],
    payload: &'a [u8],
}

/// Walks the boxes laid end to end in `data`; stops after the first error.
struct Boxes<'a> {
    data: &'a [u8],
    failed: bool,
}

impl<'a> Boxes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Boxes {
            data,
            failed: false,
        }
    }

    fn next_box(&mut self) -> Result<Mp4Box<'a>, PackageError> {
        let mut header = Reader::new(self.data, "box header");
        let size32 = header.u32()?;
        let kind = header.fourcc()?;

        let (size, header_len) = match size32 {
            0 => (self.data.len() as u64, BOX_HEADER),
            1 => (header.u64()?, LARGE_BOX_HEADER),
            n => (u64::from(n), BOX_HEADER),
        };

        let bad_size = || PackageError::BadBoxSize {
            kind: fourcc_name(kind),
            size,
            available: self.data.len() as u64,
        };
        if size < header_len as u64 {
            return Err(bad_size());
        }
        // Refuses a size past the end of the parent, and one too large for usize.
        let end = usize::try_from(size).map_err(|_| bad_size())?;
        let payload = self.data.get(header_len..end).ok_or_else(bad_size)?;
        self.data = self.data.get(end..).unwrap_or_default();
        Ok(Mp4Box { kind, payload })
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Mp4Box<'a>, PackageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.data.is_empty() {
            return None;
        }
        let item = self.next_box();
        self.failed = item.is_err();
        Some(item)
    }
}

/// The first box of type `kind` among the boxes in `data`, if any.
fn find_box<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<Mp4Box<'a>>, PackageError> {
    for item in Boxes::new(data) {
        let found = item?;
        if &found.kind == kind {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The first box of type `kind` in `data`, or `MissingBox(name)`.
fn require_box<'a>(
    data: &'a [u8],
    kind: &[u8; 4],
    name: &'static str,
) -> Result<Mp4Box<'a>, PackageError> {
    find_box(data, kind)?.ok_or(PackageError::MissingBox(name))
}

/// A four-character code made printable for error messages.
fn fourcc_name(kind: [u8; 4]) -> String {
    kind.escape_ascii().to_string()
}

/// A bounds-checked big-endian cursor over a byte slice.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, pos: 0, what }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], PackageError> {
        let truncated = PackageError::Truncated {
            what: self.what,
            needed: n as u64,
            available: self.remaining() as u64,
        };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let out = self.data.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, n: usize) -> Result<(), PackageError> {
        self.bytes(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PackageError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, PackageError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, PackageError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, PackageError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, PackageError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn fourcc(&mut self) -> Result<[u8; 4], PackageError> {
        self.array()
    }

    /// Version byte and 24-bit flags of a full box.
    fn full_box_header(&mut self) -> Result<(u8, u32), PackageError> {
        let word = self.u32()?;
        Ok(((word >> 24) as u8, word & 0x00FF_FFFF))
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = self.data.get(self.pos..).unwrap_or_default();
        self.pos = self.data.len();
        out
    }
}

impl InitInfo {
    /// Reads the first track of a CMAF init segment (`ftyp` + `moov`).
    pub fn parse(init: &[u8]) -> Result<InitInfo, PackageError> {
        let moov = require_box(init, b"moov", "moov")?;
        let trak = require_box(moov.payload, b"trak", "moov/trak")?;
        let mdia = require_box(trak.payload, b"mdia", "trak/mdia")?;

        let timescale = parse_mdhd(require_box(mdia.payload, b"mdhd", "mdia/mdhd")?.payload)?;
        let handler = parse_hdlr(require_box(mdia.payload, b"hdlr", "mdia/hdlr")?.payload)?;
        let kind = match &handler {
            b"vide" => TrackKind::Video,
            b"soun" => TrackKind::Audio,
            other => return Err(PackageError::UnsupportedHandler(fourcc_name(*other))),
        };

        let minf = require_box(mdia.payload, b"minf", "mdia/minf")?;
        let stbl = require_box(minf.payload, b"stbl", "minf/stbl")?;
        let stsd = require_box(stbl.payload, b"stsd", "stbl/stsd")?;
        let entry = first_sample_entry(stsd.payload)?;

        let mut info = InitInfo {
            kind,
            codec: String::new(),
            width: 0,
            height: 0,
            timescale,
            sample_rate: 0,
            channels: 0,
        };
        match kind {
            TrackKind::Video => read_visual_entry(entry, &mut info)?,
            TrackKind::Audio => read_audio_entry(entry, &mut info)?,
        }
        Ok(info)
    }
}

/// The timescale from an `mdhd` payload.
fn parse_mdhd(payload: &[u8]) -> Result<u32, PackageError> {
    let mut r = Reader::new(payload, "mdhd");
    let (version, _flags) = r.full_box_header()?;
    // creation_time and modification_time: 64-bit in version 1.
    r.skip(if version == 1 { 16 } else { 8 })?;
    let timescale = r.u32()?;
    if timescale == 0 {
        return Err(PackageError::Invalid {
            what: "mdhd timescale",
            detail: "zero".to_owned(),
        });
    }
    Ok(timescale)
}

/// The handler type from an `hdlr` payload.
fn parse_hdlr(payload: &[u8]) -> Result<[u8; 4], PackageError> {
    let mut r = Reader::new(payload, "hdlr");
    r.full_box_header()?;
    r.skip(4)?; // pre_defined
    r.fourcc()
}

/// The first sample entry box inside an `stsd` payload.
fn first_sample_entry(payload: &[u8]) -> Result<Mp4Box<'_>, PackageError> {
    let mut r = Reader::new(payload, "stsd");
    r.full_box_header()?;
    let entry_count = r.u32()?;
    if entry_count == 0 {
        return Err(PackageError::MissingBox("stsd sample entry"));
    }
    match Boxes::new(r.rest()).next() {
        Some(entry) => entry,
        None => Err(PackageError::MissingBox("stsd sample entry")),
    }
}

/// Codec string and picture size from a visual sample entry.
fn read_visual_entry(entry: Mp4Box<'_>, info: &mut InitInfo) -> Result<(), PackageError> {
    let mut r = Reader::new(entry.payload, "visual sample entry");
    r.skip(8 + 16)?; // SampleEntry header, pre_defined and reserved
    info.width = u32::from(r.u16()?);
    info.height = u32::from(r.u16()?);
    r.skip(VISUAL_SAMPLE_ENTRY - 8 - 16 - 4)?;
    let children = r.rest();

    info.codec = match &entry.kind {
        b"avc1" | b"avc3" => {
            let avcc = require_box(children, b"avcC", "avcC")?;
            avc_codec(entry.kind, avcc.payload)?
        }
        b"hvc1" | b"hev1" => {
            let hvcc = require_box(children, b"hvcC", "hvcC")?;
            hevc_codec(entry.kind, hvcc.payload)?
        }
        other => return Err(PackageError::UnsupportedCodec(fourcc_name(*other))),
    };
    Ok(())
}

/// What the master playlist needs of an H.264 track, from its `avcC` record
/// and picture size, before the track's first segment exists.
pub fn avc_track_info(avcc: &[u8], width: u32, height: u32) -> Result<InitInfo, PackageError> {
    Ok(InitInfo {
        kind: TrackKind::Video,
        codec: avc_codec(*b"avc1", avcc)?,
        width,
        height,
        timescale: 0,
        sample_rate: 0,
        channels: 0,
    })
}

/// What the master playlist needs of an AAC track, from its
/// AudioSpecificConfig, before the track's first segment exists.
pub fn aac_track_info(
    asc: &[u8],
    sample_rate: u32,
    channels: u16,
) -> Result<InitInfo, PackageError> {
    Ok(InitInfo {
        kind: TrackKind::Audio,
        codec: aac_codec(asc)?,
        width: 0,
        height: 0,
        timescale: 0,
        sample_rate,
        channels,
    })
}

/// `avc1.PPCCLL` from an `avcC` payload (RFC 6381, uppercase hex like Apple).
fn avc_codec(kind: [u8; 4], avcc: &[u8]) -> Result<String, PackageError> {
    let mut r = Reader::new(avcc, "avcC");
    let _configuration_version = r.u8()?;
    let profile = r.u8()?;
    let constraints = r.u8()?;
    let level = r.u8()?;
    Ok(format!(
        "{}.{profile:02X}{constraints:02X}{level:02X}",
        fourcc_name(kind)
    ))
}

/// The HEVC codec string of ISO/IEC 14496-15 Annex E from an `hvcC` payload,
/// for example `hvc1.1.6.L93.B0`.
fn hevc_codec(kind: [u8; 4], hvcc: &[u8]) -> Result<String, PackageError> {
    let mut r = Reader::new(hvcc, "hvcC");
    let _configuration_version = r.u8()?;
    let byte = r.u8()?;
    let profile_space = byte >> 6;
    let tier_flag = (byte >> 5) & 1;
    let profile_idc = byte & 0x1F;
    let compatibility = r.u32()?;
    let constraints: [u8; 6] = r.array()?;
    let level_idc = r.u8()?;

    let space = match profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let tier = if tier_flag == 1 { 'H' } else { 'L' };
    let mut codec = format!(
        "{}.{space}{profile_idc}.{:X}.{tier}{level_idc}",
        fourcc_name(kind),
        compatibility.reverse_bits()
    );

    let used = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    for byte in constraints.iter().take(used) {
        codec.push_str(&format!(".{byte:X}"));
    }
    Ok(codec)
}

/// Codec string, sample rate and channel count from an audio sample entry.
fn read_audio_entry(entry: Mp4Box<'_>, info: &mut InitInfo) -> Result<(), PackageError> {
    if &entry.kind != b"mp4a" {
        return Err(PackageError::UnsupportedCodec(fourcc_name(entry.kind)));
    }

    let mut r = Reader::new(entry.payload, "audio sample entry");
    r.skip(8)?; // SampleEntry header
    let version = r.u16()?; // QuickTime sound description version
    r.skip(6)?;
    info.channels = r.u16()?;
    r.skip(2 + 2 + 2)?; // samplesize, pre_defined, reserved
    let rate = r.u32()? >> 16;
    info.sample_rate = if rate == 0 { info.timescale } else { rate };
    if version == 1 {
        r.skip(AUDIO_SAMPLE_ENTRY_V1_EXTRA)?;
    }
    let children = r.rest();

    let esds = require_box(children, b"esds", "esds")?;
    info.codec = mp4a_codec(esds.payload)?;
    Ok(())
}

/// `mp4a.40.N` (or `mp4a.OO` for other object types) from an `esds` payload.
fn mp4a_codec(esds: &[u8]) -> Result<String, PackageError> {
    let mut r = Reader::new(esds, "esds");
    r.full_box_header()?;

    let es = descriptor(&mut r, ES_DESCRIPTOR_TAG, "ES_Descriptor")?;
    let mut es = Reader::new(es, "ES_Descriptor");
    es.skip(2)?; // ES_ID
    let flags = es.u8()?;
    if flags & 0x80 != 0 {
        es.skip(2)?; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        let url_len = es.u8()?;
        es.skip(usize::from(url_len))?;
    }
    if flags & 0x20 != 0 {
        es.skip(2)?; // OCR_ES_Id
    }

    let config = descriptor(&mut es, DECODER_CONFIG_TAG, "DecoderConfigDescriptor")?;
    let mut config = Reader::new(config, "DecoderConfigDescriptor");
    let object_type = config.u8()?;
    if object_type != OTI_MPEG4_AUDIO {
        return Ok(format!("mp4a.{object_type:02X}"));
    }
    config.skip(1 + 3 + 4 + 4)?; // streamType, bufferSizeDB, maxBitrate, avgBitrate

    let asc = descriptor(
        &mut config,
        DECODER_SPECIFIC_INFO_TAG,
        "DecoderSpecificInfo",
    )?;
    aac_codec(asc)
}

/// `mp4a.40.N` from an AudioSpecificConfig.
fn aac_codec(asc: &[u8]) -> Result<String, PackageError> {
    let audio_object_type = audio_object_type(asc)?;
    if audio_object_type == 0 {
        return Err(PackageError::Invalid {
            what: "AudioSpecificConfig",
            detail: "audio object type 0".to_owned(),
        });
    }
    Ok(format!("mp4a.40.{audio_object_type}"))
}

/// Reads one descriptor (tag byte, expandable length) and returns its body.
/// Descriptors with other tags before the wanted one are skipped.
fn descriptor<'a>(
    r: &mut Reader<'a>,
    want: u8,
    name: &'static str,
) -> Result<&'a [u8], PackageError> {
    while r.remaining() > 0 {
        let tag = r.u8()?;
        let len = descriptor_length(r)?;
        let body = r.bytes(len)?;
        if tag == want {
            return Ok(body);
        }
    }
    Err(PackageError::MissingBox(name))
}

/// An expandable descriptor size: up to four bytes of 7 bits, high bit set on
/// every byte but the last.
fn descriptor_length(r: &mut Reader<'_>) -> Result<usize, PackageError> {
    let mut len = 0usize;
    for _ in 0..4 {
        let byte = r.u8()?;
        len = (len << 7) | usize::from(byte & 0x7F);
        if byte & 0x80 == 0 {
            return Ok(len);
        }
    }
    Err(PackageError::Invalid {
        what: "esds descriptor length",
        detail: "more than four length bytes".to_owned(),
    })
}

/// The audio object type at the start of an AudioSpecificConfig: five bits,
/// or 32 plus the next six bits when the five bits are the escape value 31.
fn audio_object_type(asc: &[u8]) -> Result<u8, PackageError> {
    let truncated = |needed| PackageError::Truncated {
        what: "AudioSpecificConfig",
        needed,
        available: asc.len() as u64,
    };
    let first = *asc.first().ok_or(truncated(1))?;
    let object_type = first >> 3;
    if object_type != 31 {
        return Ok(object_type);
    }
    let second = *asc.get(1).ok_or(truncated(2))?;
    let extension = ((first & 0x07) << 3) | (second >> 5);
    Ok(32 + extension)
}

/// Track fragment defaults from `tfhd` that `trun` falls back to.
#[derive(Debug, Clone, Copy, Default)]
struct FragmentDefaults {
    track_id: u32,
    sample_duration: Option<u32>,
    sample_flags: Option<u32>,
}

/// Running totals while walking the fragments of one segment.
#[derive(Debug, Default)]
struct FragmentTotals {
    sequence_number: Option<u32>,
    base_decode_time: Option<u64>,
    track_id: Option<u32>,
    sample_count: u32,
    duration_ticks: u64,
    first_sample_is_sync: Option<bool>,
}

impl FragmentInfo {
    /// Reads a CMAF media segment: an optional `styp`, then one or more
    /// `moof`/`mdat` pairs of a single track. Counts and durations are summed
    /// over every fragment; the sequence number and decode time are the
    /// first fragment's.
    pub fn parse(segment: &[u8]) -> Result<FragmentInfo, PackageError> {
        let mut totals = FragmentTotals::default();
        for item in Boxes::new(segment) {
            let top = item?;
            if &top.kind == b"moof" {
                read_moof(top.payload, &mut totals)?;
            }
        }

        let sequence_number = totals
            .sequence_number
            .ok_or(PackageError::MissingBox("moof"))?;
        let base_decode_time = totals
            .base_decode_time
            .ok_or(PackageError::MissingBox("traf/tfdt"))?;
        Ok(FragmentInfo {
            sequence_number,
            base_decode_time,
            sample_count: totals.sample_count,
            duration_ticks: totals.duration_ticks,
            // No sample flags anywhere we can see (only `trex` would say):
            // treat as sync, as the brief for CMAF fragments allows.
            first_sample_is_sync: totals.first_sample_is_sync.unwrap_or(true),
        })
    }
}

/// Adds one `moof` to the totals.
fn read_moof(moof: &[u8], totals: &mut FragmentTotals) -> Result<(), PackageError> {
    let mfhd = require_box(moof, b"mfhd", "moof/mfhd")?;
    let mut r = Reader::new(mfhd.payload, "mfhd");
    r.full_box_header()?;
    let sequence_number = r.u32()?;
    totals.sequence_number.get_or_insert(sequence_number);

    let mut saw_traf = false;
    for item in Boxes::new(moof) {
        let traf = item?;
        if &traf.kind == b"traf" {
            saw_traf = true;
            read_traf(traf.payload, totals)?;
        }
    }
    if !saw_traf {
        return Err(PackageError::MissingBox("moof/traf"));
    }
    Ok(())
}

/// Adds one `traf` to the totals; trafs of other tracks than the first seen
/// are skipped, since a CMAF segment carries one track.
fn read_traf(traf: &[u8], totals: &mut FragmentTotals) -> Result<(), PackageError> {
    let tfhd = require_box(traf, b"tfhd", "traf/tfhd")?;
    let defaults = parse_tfhd(tfhd.payload)?;
    if *totals.track_id.get_or_insert(defaults.track_id) != defaults.track_id {
        return Ok(());
    }

    let tfdt = require_box(traf, b"tfdt", "traf/tfdt")?;
    let decode_time = parse_tfdt(tfdt.payload)?;
    totals.base_decode_time.get_or_insert(decode_time);

    for item in Boxes::new(traf) {
        let trun = item?;
        if &trun.kind == b"trun" {
            read_trun(trun.payload, &defaults, totals)?;
        }
    }
    Ok(())
}

fn parse_tfhd(payload: &[u8]) -> Result<FragmentDefaults, PackageError> {
    let mut r = Reader::new(payload, "tfhd");
    let (_version, flags) = r.full_box_header()?;
    let mut defaults = FragmentDefaults {
        track_id: r.u32()?,
        ..FragmentDefaults::default()
    };
    if flags & 0x01 != 0 {
        r.skip(8)?; // base-data-offset
    }
    if flags & 0x02 != 0 {
        r.skip(4)?; // sample-description-index
    }
    if flags & 0x08 != 0 {
        defaults.sample_duration = Some(r.u32()?);
    }
    if flags & 0x10 != 0 {
        r.skip(4)?; // default-sample-size
    }
    if flags & 0x20 != 0 {
        defaults.sample_flags = Some(r.u32()?);
    }
    Ok(defaults)
}

fn parse_tfdt(payload: &[u8]) -> Result<u64, PackageError> {
    let mut r = Reader::new(payload, "tfdt");
    let (version, _flags) = r.full_box_header()?;
    if version == 1 {
        r.u64()
    } else {
        Ok(u64::from(r.u32()?))
    }
}

/// Adds one `trun` to the totals.
fn read_trun(
    payload: &[u8],
    defaults: &FragmentDefaults,
    totals: &mut FragmentTotals,
) -> Result<(), PackageError> {
    let mut r = Reader::new(payload, "trun");
    let (_version, flags) = r.full_box_header()?;
    let sample_count = r.u32()?;
    if flags & 0x001 != 0 {
        r.skip(4)?; // data-offset
    }
    let first_sample_flags = if flags & 0x004 != 0 {
        Some(r.u32()?)
    } else {
        None
    };

    let has_duration = flags & 0x100 != 0;
    let has_size = flags & 0x200 != 0;
    let has_flags = flags & 0x400 != 0;
    let has_cto = flags & 0x800 != 0;
    let per_sample = 4 * [has_duration, has_size, has_flags, has_cto]
        .iter()
        .filter(|&&present| present)
        .count();

    // Refuse a count the box cannot hold before looping over it.
    let needed = u64::from(sample_count) * per_sample as u64;
    if needed > r.remaining() as u64 {
        return Err(PackageError::Truncated {
            what: "trun samples",
            needed,
            available: r.remaining() as u64,
        });
    }
    if sample_count > 0 && !has_duration && defaults.sample_duration.is_none() {
        return Err(PackageError::Invalid {
            what: "trun",
            detail: "no per-sample duration and no tfhd default-sample-duration".to_owned(),
        });
    }

    let default_duration = defaults.sample_duration.unwrap_or(0);
    let mut duration: u64 = 0;
    let mut first_flags = first_sample_flags;
    // With nothing stored per sample there is nothing to walk: a huge count
    // must not become a huge loop.
    let walked = if per_sample == 0 { 0 } else { sample_count };
    if per_sample == 0 {
        duration = u64::from(sample_count) * u64::from(default_duration);
    }
    for index in 0..walked {
        let sample_duration = if has_duration {
            r.u32()?
        } else {
            default_duration
        };
        if has_size {
            r.skip(4)?;
        }
        let sample_flags = if has_flags { Some(r.u32()?) } else { None };
        if has_cto {
            r.skip(4)?;
        }

        if index == 0 {
            first_flags = first_flags.or(sample_flags);
        }
        duration += u64::from(sample_duration);
    }

    if sample_count > 0 && totals.first_sample_is_sync.is_none() {
        let flags = first_flags.or(defaults.sample_flags);
        totals.first_sample_is_sync = Some(flags.is_none_or(|f| f & SAMPLE_IS_NON_SYNC == 0));
    }

    totals.sample_count =
        totals
            .sample_count
            .checked_add(sample_count)
            .ok_or(PackageError::Invalid {
                what: "trun sample_count",
                detail: "total over fragments overflows u32".to_owned(),
            })?;
    totals.duration_ticks = totals.duration_ticks.saturating_add(duration);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box: 32-bit size, type, payload.
    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        out.extend_from_slice(&(payload.len() as u32 + 8).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    /// A full box: version and flags, then payload.
    fn full(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut body = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
        body.extend_from_slice(payload);
        bx(kind, &body)
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn mdhd(version: u8, timescale: u32) -> Vec<u8> {
        let mut p = Vec::new();
        if version == 1 {
            p.extend_from_slice(&[0; 16]);
            p.extend_from_slice(&timescale.to_be_bytes());
            p.extend_from_slice(&[0; 8]);
        } else {
            p.extend_from_slice(&[0; 8]);
            p.extend_from_slice(&timescale.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p.extend_from_slice(&[0; 4]); // language, pre_defined
        full(b"mdhd", version, 0, &p)
    }

    fn hdlr(handler: &[u8; 4]) -> Vec<u8> {
        let mut p = vec![0; 4];
        p.extend_from_slice(handler);
        p.extend_from_slice(&[0; 12]);
        p.push(0); // empty name
        full(b"hdlr", 0, 0, &p)
    }

    fn visual_entry(kind: &[u8; 4], width: u16, height: u16, config: &[u8]) -> Vec<u8> {
        let mut p = vec![0; 6];
        p.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&width.to_be_bytes());
        p.extend_from_slice(&height.to_be_bytes());
        p.extend_from_slice(&0x0048_0000u32.to_be_bytes());
        p.extend_from_slice(&0x0048_0000u32.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&0x0018u16.to_be_bytes());
        p.extend_from_slice(&0xFFFFu16.to_be_bytes());
        assert_eq!(p.len(), VISUAL_SAMPLE_ENTRY);
        p.extend_from_slice(config);
        bx(kind, &p)
    }

    fn audio_entry(channels: u16, rate: u32, esds: &[u8]) -> Vec<u8> {
        let mut p = vec![0; 6];
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&channels.to_be_bytes());
        p.extend_from_slice(&16u16.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&(rate << 16).to_be_bytes());
        assert_eq!(p.len(), 28, "AudioSampleEntry v0 header size");
        p.extend_from_slice(esds);
        bx(b"mp4a", &p)
    }

    /// An esds whose descriptor lengths use the four-byte 0x80 form, as many
    /// muxers write them.
    fn esds(asc: &[u8]) -> Vec<u8> {
        fn desc(tag: u8, body: &[u8]) -> Vec<u8> {
            let n = body.len() as u8;
            let mut out = vec![tag, 0x80, 0x80, 0x80, n];
            out.extend_from_slice(body);
            out
        }
        let dsi = desc(DECODER_SPECIFIC_INFO_TAG, asc);
        let mut dcd = vec![OTI_MPEG4_AUDIO, 0x15, 0, 0, 0];
        dcd.extend_from_slice(&128_000u32.to_be_bytes());
        dcd.extend_from_slice(&128_000u32.to_be_bytes());
        dcd.extend_from_slice(&dsi);
        let dcd = desc(DECODER_CONFIG_TAG, &dcd);
        let mut es = vec![0, 1, 0]; // ES_ID, flags
        es.extend_from_slice(&dcd);
        es.extend_from_slice(&desc(0x06, &[0x02])); // SLConfigDescriptor
        full(b"esds", 0, 0, &desc(ES_DESCRIPTOR_TAG, &es))
    }

    fn init_segment(handler: &[u8; 4], timescale: u32, entry: &[u8]) -> Vec<u8> {
        let mut stsd_body = 1u32.to_be_bytes().to_vec();
        stsd_body.extend_from_slice(entry);
        let stsd = full(b"stsd", 0, 0, &stsd_body);
        let stbl = bx(b"stbl", &stsd);
        let minf = bx(b"minf", &stbl);
        let mdia = bx(b"mdia", &cat(&[&mdhd(0, timescale), &hdlr(handler), &minf]));
        let trak = bx(b"trak", &cat(&[&full(b"tkhd", 0, 3, &[0; 80]), &mdia]));
        let moov = bx(b"moov", &cat(&[&full(b"mvhd", 0, 0, &[0; 96]), &trak]));
        let ftyp = bx(b"ftyp", b"iso6\0\0\0\0iso6cmfc");
        cat(&[&ftyp, &moov])
    }

    fn avc_init() -> Vec<u8> {
        let avcc = bx(b"avcC", &[1, 0x64, 0x00, 0x1F, 0xFF, 0xE0]);
        init_segment(b"vide", 90_000, &visual_entry(b"avc1", 1280, 720, &avcc))
    }

    fn aac_init() -> Vec<u8> {
        // AAC-LC (2), 48 kHz (index 3), 2 channels.
        let asc = [0x11, 0x90];
        init_segment(b"soun", 48_000, &audio_entry(2, 48_000, &esds(&asc)))
    }

    #[test]
    fn avc_init_gives_codec_size_and_timescale() {
        let info = InitInfo::parse(&avc_init()).expect("valid init");
        assert_eq!(info.kind, TrackKind::Video);
        assert_eq!(info.codec, "avc1.64001F");
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.timescale, 90_000);
        assert_eq!((info.sample_rate, info.channels), (0, 0));
    }

    #[test]
    fn avc3_entry_keeps_its_own_prefix() {
        let avcc = bx(b"avcC", &[1, 0x42, 0xC0, 0x1E]);
        let init = init_segment(b"vide", 90_000, &visual_entry(b"avc3", 640, 360, &avcc));
        let info = InitInfo::parse(&init).expect("valid init");
        assert_eq!(info.codec, "avc3.42C01E");
    }

    #[test]
    fn aac_init_gives_codec_rate_and_channels() {
        let info = InitInfo::parse(&aac_init()).expect("valid init");
        assert_eq!(info.kind, TrackKind::Audio);
        assert_eq!(info.codec, "mp4a.40.2");
        assert_eq!(info.sample_rate, 48_000);
        assert_eq!(info.channels, 2);
        assert_eq!(info.timescale, 48_000);
        assert_eq!((info.width, info.height), (0, 0));
    }

    #[test]
    fn track_info_from_decoder_configuration_matches_the_init() {
        let video = avc_track_info(&[1, 0x64, 0x00, 0x1F, 0xFF], 1280, 720).expect("avcC");
        let parsed = InitInfo::parse(&avc_init()).expect("valid init");
        assert_eq!(video.codec, parsed.codec);
        assert_eq!((video.width, video.height), (1280, 720));
        assert!(avc_track_info(&[1, 0x64], 1280, 720).is_err());

        let audio = aac_track_info(&[0x11, 0x90], 48_000, 2).expect("ASC");
        assert_eq!(audio.codec, "mp4a.40.2");
        assert_eq!((audio.sample_rate, audio.channels), (48_000, 2));
        assert!(aac_track_info(&[0x00, 0x00], 48_000, 2).is_err());
        assert!(aac_track_info(&[], 48_000, 2).is_err());
    }

    #[test]
    fn he_aac_and_escaped_object_types() {
        // HE-AAC v2 signalled explicitly: object type 29.
        let init = init_segment(
            b"soun",
            44_100,
            &audio_entry(2, 44_100, &esds(&[0xEA, 0x00])),
        );
        assert_eq!(InitInfo::parse(&init).expect("valid").codec, "mp4a.40.29");

        // Escape 31 then 6 bits = 10: object type 42 (USAC).
        // 11111 001 010xxxxx
        let init = init_segment(
            b"soun",
            48_000,
            &audio_entry(2, 48_000, &esds(&[0xF9, 0x40])),
        );
        assert_eq!(InitInfo::parse(&init).expect("valid").codec, "mp4a.40.42");
    }

    #[test]
    fn short_descriptor_lengths_parse_too() {
        // The same esds with one-byte lengths.
        let asc = [0x11, 0x90];
        let mut dcd = vec![OTI_MPEG4_AUDIO, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        dcd.extend_from_slice(&[DECODER_SPECIFIC_INFO_TAG, 2]);
        dcd.extend_from_slice(&asc);
        let mut es = vec![0, 1, 0x20, 0, 0]; // OCRstreamFlag with its OCR_ES_Id
        es.push(DECODER_CONFIG_TAG);
        es.push(dcd.len() as u8);
        es.extend_from_slice(&dcd);
        let mut body = vec![ES_DESCRIPTOR_TAG, es.len() as u8];
        body.extend_from_slice(&es);
        let esds = full(b"esds", 0, 0, &body);
        let init = init_segment(b"soun", 48_000, &audio_entry(1, 48_000, &esds));
        let info = InitInfo::parse(&init).expect("valid init");
        assert_eq!(info.codec, "mp4a.40.2");
        assert_eq!(info.channels, 1);
    }

    #[test]
    fn hevc_codec_string_follows_annex_e() {
        // Main profile, compatibility flags 0x60000000, level 93, constraints B0.
        let mut hvcc = vec![1, 0x01];
        hvcc.extend_from_slice(&0x6000_0000u32.to_be_bytes());
        hvcc.extend_from_slice(&[0xB0, 0, 0, 0, 0, 0]);
        hvcc.push(93);
        let init = init_segment(
            b"vide",
            90_000,
            &visual_entry(b"hvc1", 1920, 1080, &bx(b"hvcC", &hvcc)),
        );
        let info = InitInfo::parse(&init).expect("valid init");
        assert_eq!(info.codec, "hvc1.1.6.L93.B0");
        assert_eq!((info.width, info.height), (1920, 1080));

        // Main 10 in high tier, profile space 1, no constraint flags.
        let mut hvcc = vec![1, 0x40 | 0x20 | 0x02];
        hvcc.extend_from_slice(&0x2000_0000u32.to_be_bytes());
        hvcc.extend_from_slice(&[0; 6]);
        hvcc.push(120);
        let init = init_segment(
            b"vide",
            90_000,
            &visual_entry(b"hev1", 3840, 2160, &bx(b"hvcC", &hvcc)),
        );
        assert_eq!(
            InitInfo::parse(&init).expect("valid").codec,
            "hev1.A2.4.H120"
        );
    }

    #[test]
    fn mdhd_version_1_and_unknown_handler() {
        let mdia = bx(b"mdia", &cat(&[&mdhd(1, 1000), &hdlr(b"vide")]));
        let moov = bx(b"moov", &bx(b"trak", &mdia));
        // Missing minf, but the timescale was read first; the error names minf.
        assert_eq!(
            InitInfo::parse(&moov),
            Err(PackageError::MissingBox("mdia/minf"))
        );

        let mdia = bx(b"mdia", &cat(&[&mdhd(1, 1000), &hdlr(b"subt")]));
        let moov = bx(b"moov", &bx(b"trak", &mdia));
        assert_eq!(
            InitInfo::parse(&moov),
            Err(PackageError::UnsupportedHandler("subt".to_owned()))
        );
    }

    #[test]
    fn unsupported_entries_are_refused() {
        let init = init_segment(b"vide", 90_000, &visual_entry(b"vp09", 640, 360, &[]));
        assert_eq!(
            InitInfo::parse(&init),
            Err(PackageError::UnsupportedCodec("vp09".to_owned()))
        );
        let init = init_segment(b"soun", 48_000, &bx(b"Opus", &[0; 28]));
        assert_eq!(
            InitInfo::parse(&init),
            Err(PackageError::UnsupportedCodec("Opus".to_owned()))
        );
    }

    #[test]
    fn every_prefix_of_an_init_segment_fails_cleanly() {
        for init in [avc_init(), aac_init()] {
            for len in 0..init.len() {
                assert!(
                    InitInfo::parse(&init[..len]).is_err(),
                    "prefix of {len} bytes parsed"
                );
            }
            assert!(InitInfo::parse(&init).is_ok());
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let init = avc_init();
        for index in 0..init.len() {
            for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut bad = init.clone();
                bad[index] = value;
                let _ = InitInfo::parse(&bad);
                let _ = FragmentInfo::parse(&bad);
            }
        }
        let fragment = fragment(1, 0, &trun_full());
        for index in 0..fragment.len() {
            let mut bad = fragment.clone();
            bad[index] ^= 0xFF;
            let _ = FragmentInfo::parse(&bad);
        }
    }

    #[test]
    fn box_sizes_are_checked() {
        // Size smaller than the header.
        let mut data = bx(b"moov", &[]);
        data[3] = 4;
        assert!(matches!(
            InitInfo::parse(&data),
            Err(PackageError::BadBoxSize { size: 4, .. })
        ));

        // Size larger than the data.
        let mut data = bx(b"moov", &[0; 4]);
        data[3] = 200;
        assert!(matches!(
            InitInfo::parse(&data),
            Err(PackageError::BadBoxSize { size: 200, .. })
        ));

        // A largesize that overflows everything.
        let mut data = 1u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"moov");
        data.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            InitInfo::parse(&data),
            Err(PackageError::BadBoxSize { .. })
        ));
    }

    #[test]
    fn largesize_and_size_zero_boxes_are_walked() {
        let payload = b"hello";
        let mut data = 1u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"free");
        data.extend_from_slice(&(16 + payload.len() as u64).to_be_bytes());
        data.extend_from_slice(payload);
        // A size-0 box runs to the end of its parent.
        data.extend_from_slice(&0u32.to_be_bytes());
        data.extend_from_slice(b"mdat");
        data.extend_from_slice(b"rest");

        let boxes: Vec<_> = Boxes::new(&data)
            .collect::<Result<_, _>>()
            .expect("valid boxes");
        assert_eq!(boxes.len(), 2);
        assert_eq!(&boxes[0].kind, b"free");
        assert_eq!(boxes[0].payload, payload);
        assert_eq!(&boxes[1].kind, b"mdat");
        assert_eq!(boxes[1].payload, b"rest");
    }

    fn mfhd(sequence: u32) -> Vec<u8> {
        full(b"mfhd", 0, 0, &sequence.to_be_bytes())
    }

    fn tfhd(flags: u32, duration: Option<u32>, sample_flags: Option<u32>) -> Vec<u8> {
        let mut p = 1u32.to_be_bytes().to_vec();
        if flags & 0x08 != 0 {
            p.extend_from_slice(&duration.unwrap_or(0).to_be_bytes());
        }
        if flags & 0x20 != 0 {
            p.extend_from_slice(&sample_flags.unwrap_or(0).to_be_bytes());
        }
        full(b"tfhd", 0, flags | 0x02_0000, &p)
    }

    fn tfdt_v0(time: u32) -> Vec<u8> {
        full(b"tfdt", 0, 0, &time.to_be_bytes())
    }

    fn tfdt_v1(time: u64) -> Vec<u8> {
        full(b"tfdt", 1, 0, &time.to_be_bytes())
    }

    /// trun with data-offset, first-sample-flags and per-sample duration,
    /// size and cto: three samples of 3000 ticks, first one sync.
    fn trun_full() -> Vec<u8> {
        let mut p = 3u32.to_be_bytes().to_vec();
        p.extend_from_slice(&100u32.to_be_bytes()); // data offset
        p.extend_from_slice(&0x0200_0000u32.to_be_bytes()); // first sample: sync
        for _ in 0..3 {
            p.extend_from_slice(&3000u32.to_be_bytes());
            p.extend_from_slice(&500u32.to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
        }
        full(b"trun", 0, 0x001 | 0x004 | 0x100 | 0x200 | 0x800, &p)
    }

    fn fragment(sequence: u32, time: u32, trun: &[u8]) -> Vec<u8> {
        let traf = bx(b"traf", &cat(&[&tfhd(0, None, None), &tfdt_v0(time), trun]));
        let moof = bx(b"moof", &cat(&[&mfhd(sequence), &traf]));
        cat(&[&moof, &bx(b"mdat", &[0; 16])])
    }

    #[test]
    fn fragment_with_full_trun() {
        let segment = cat(&[
            &bx(b"styp", b"cmfs\0\0\0\0"),
            &fragment(7, 90_000, &trun_full()),
        ]);
        let info = FragmentInfo::parse(&segment).expect("valid fragment");
        assert_eq!(info.sequence_number, 7);
        assert_eq!(info.base_decode_time, 90_000);
        assert_eq!(info.sample_count, 3);
        assert_eq!(info.duration_ticks, 9000);
        assert!(info.first_sample_is_sync);
    }

    #[test]
    fn trun_falls_back_to_tfhd_defaults() {
        // No per-sample fields: durations and flags come from tfhd.
        let trun = full(b"trun", 0, 0, &4u32.to_be_bytes());
        let tfhd = tfhd(0x08 | 0x20, Some(1024), Some(SAMPLE_IS_NON_SYNC));
        let traf = bx(b"traf", &cat(&[&tfhd, &tfdt_v1(1 << 40), &trun]));
        let moof = bx(b"moof", &cat(&[&mfhd(1), &traf]));
        let info = FragmentInfo::parse(&moof).expect("valid fragment");
        assert_eq!(info.base_decode_time, 1 << 40);
        assert_eq!(info.sample_count, 4);
        assert_eq!(info.duration_ticks, 4096);
        assert!(!info.first_sample_is_sync);
    }

    #[test]
    fn per_sample_flags_decide_sync_when_no_first_sample_flags() {
        let mut p = 2u32.to_be_bytes().to_vec();
        for flags in [SAMPLE_IS_NON_SYNC | 0x0100_0000, 0x0200_0000] {
            p.extend_from_slice(&1000u32.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        let trun = full(b"trun", 0, 0x100 | 0x400, &p);
        let info = FragmentInfo::parse(&fragment(2, 0, &trun)).expect("valid fragment");
        assert_eq!(info.duration_ticks, 2000);
        assert!(!info.first_sample_is_sync);
    }

    #[test]
    fn no_flags_anywhere_counts_as_sync() {
        let mut p = 1u32.to_be_bytes().to_vec();
        p.extend_from_slice(&1000u32.to_be_bytes());
        let trun = full(b"trun", 0, 0x100, &p);
        let info = FragmentInfo::parse(&fragment(2, 0, &trun)).expect("valid fragment");
        assert!(info.first_sample_is_sync);
    }

    #[test]
    fn several_fragments_in_one_segment_are_summed() {
        let segment = cat(&[
            &fragment(5, 1000, &trun_full()),
            &fragment(6, 10_000, &trun_full()),
        ]);
        let info = FragmentInfo::parse(&segment).expect("valid segment");
        assert_eq!(info.sequence_number, 5);
        assert_eq!(info.base_decode_time, 1000);
        assert_eq!(info.sample_count, 6);
        assert_eq!(info.duration_ticks, 18_000);
    }

    #[test]
    fn trun_sample_count_larger_than_the_box_is_refused() {
        let mut p = u32::MAX.to_be_bytes().to_vec();
        p.extend_from_slice(&1000u32.to_be_bytes());
        let trun = full(b"trun", 0, 0x100, &p);
        assert!(matches!(
            FragmentInfo::parse(&fragment(1, 0, &trun)),
            Err(PackageError::Truncated {
                what: "trun samples",
                ..
            })
        ));
    }

    #[test]
    fn huge_count_with_defaults_only_is_computed_not_walked() {
        let trun = full(b"trun", 0, 0, &u32::MAX.to_be_bytes());
        let traf = bx(
            b"traf",
            &cat(&[&tfhd(0x08, Some(2), None), &tfdt_v0(0), &trun]),
        );
        let moof = bx(b"moof", &cat(&[&mfhd(1), &traf]));
        let info = FragmentInfo::parse(&moof).expect("valid fragment");
        assert_eq!(info.sample_count, u32::MAX);
        assert_eq!(info.duration_ticks, 2 * u64::from(u32::MAX));
    }

    #[test]
    fn trun_without_any_duration_is_refused() {
        let trun = full(b"trun", 0, 0, &2u32.to_be_bytes());
        assert!(matches!(
            FragmentInfo::parse(&fragment(1, 0, &trun)),
            Err(PackageError::Invalid { what: "trun", .. })
        ));
    }

    #[test]
    fn segment_without_moof_or_tfdt_is_refused() {
        assert_eq!(
            FragmentInfo::parse(&bx(b"mdat", &[1, 2, 3])),
            Err(PackageError::MissingBox("moof"))
        );
        assert_eq!(
            FragmentInfo::parse(&[]),
            Err(PackageError::MissingBox("moof"))
        );

        let traf = bx(b"traf", &cat(&[&tfhd(0, None, None), &trun_full()]));
        let moof = bx(b"moof", &cat(&[&mfhd(1), &traf]));
        assert_eq!(
            FragmentInfo::parse(&moof),
            Err(PackageError::MissingBox("traf/tfdt"))
        );
    }

    #[test]
    fn every_prefix_of_a_fragment_fails_or_reads_less() {
        let segment = fragment(3, 0, &trun_full());
        let moof_len = segment.len() - 24; // mdat is 8 + 16 bytes
        for len in 0..moof_len {
            assert!(
                FragmentInfo::parse(&segment[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        // A cut inside the mdat is also a bad box size.
        assert!(FragmentInfo::parse(&segment[..segment.len() - 1]).is_err());
        assert!(FragmentInfo::parse(&segment).is_ok());
    }
}

#[cfg(test)]
mod real_output_tests {
    use super::*;

    const VIDEO_INIT: &[u8] = include_bytes!("../../assets/cmaf/video-240p-init.mp4");
    const VIDEO_SEGMENT: &[u8] = include_bytes!("../../assets/cmaf/video-240p-segment.m4s");
    const AUDIO_INIT: &[u8] = include_bytes!("../../assets/cmaf/audio-init.mp4");
    const AUDIO_SEGMENT: &[u8] = include_bytes!("../../assets/cmaf/audio-segment.m4s");

    #[test]
    fn reads_cmafmux_video() {
        let init = InitInfo::parse(VIDEO_INIT).expect("init parses");
        assert_eq!(init.kind, TrackKind::Video);
        assert_eq!((init.width, init.height), (426, 240));
        assert!(init.codec.starts_with("avc1."), "{}", init.codec);
        let fragment = FragmentInfo::parse(VIDEO_SEGMENT).expect("segment parses");
        assert_eq!(fragment.sample_count, 60);
        assert!(fragment.first_sample_is_sync);
        let secs = fragment.duration_ticks as f64 / f64::from(init.timescale);
        assert!((secs - 2.0).abs() < 0.01, "{secs}");
    }

    #[test]
    fn reads_cmafmux_audio() {
        let init = InitInfo::parse(AUDIO_INIT).expect("init parses");
        assert_eq!(init.kind, TrackKind::Audio);
        assert_eq!(init.codec, "mp4a.40.2");
        assert_eq!((init.sample_rate, init.channels), (48_000, 2));
        let fragment = FragmentInfo::parse(AUDIO_SEGMENT).expect("segment parses");
        let secs = fragment.duration_ticks as f64 / f64::from(init.timescale);
        assert!((1.9..2.1).contains(&secs), "{secs}");
    }
}
