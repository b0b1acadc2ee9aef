//! The RTMP chunk layer, read with limits, in front of `rml_rtmp`.
//!
//! `rml_rtmp`'s chunk deserializer trusts its peer: it reserves a message's
//! declared length before any of it arrives, keeps one partial payload for
//! all chunk streams (interleaved chunk streams make it subtract past zero
//! and panic), and accepts a chunk size of zero. [`ChunkReader`] reassembles
//! messages itself instead: payload buffers grow only as bytes arrive, a
//! message may not declare more than the configured maximum, chunk sizes
//! must be `1..=0x7FFF_FFFF`, and a peer may open only a few chunk streams.
//! The session hands `rml_rtmp` whole messages re-encoded by
//! [`single_chunk`], so its deserializer only ever sees well-formed type-0
//! chunks.
//!
//! Pure code over bytes: no IO, no clocks.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

/// Chunk size a peer starts with (RTMP 1.0, 5.4.1).
const INITIAL_CHUNK_SIZE: usize = 128;
/// Largest chunk size the protocol allows (the top bit must be zero).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Chunk streams one peer may open. Encoders use three to six.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Timestamp field value that says an extended timestamp follows.
const EXTENDED: u32 = 0xFF_FFFF;

/// Protocol control message: Set Chunk Size.
pub const SET_CHUNK_SIZE: u8 = 1;
/// Protocol control message: Abort (drop a chunk stream's partial message).
pub const ABORT: u8 = 2;

/// One whole RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// 32-bit RTMP timestamp in milliseconds (wraps).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Why the chunk stream cannot be read any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("message of type {type_id} declares {length} bytes; the limit is {limit}")]
    MessageTooLarge {
        type_id: u8,
        length: u32,
        limit: usize,
    },
    #[error("chunk size {0} is invalid (must be 1 to 2147483647)")]
    BadChunkSize(u32),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams,
    #[error("chunk stream {0} continues a message header it never sent")]
    NoPreviousHeader(u32),
    #[error("chunk stream {0} starts a new message before finishing the last one")]
    InterruptedMessage(u32),
    #[error("partly received messages hold more than {0} bytes")]
    TooMuchBuffered(usize),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// What the peer last told us on one chunk stream.
#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    /// The last timestamp field (or extended timestamp): the delta a type-3
    /// chunk that starts a new message adds.
    delta: u32,
    /// Whether the last header carried an extended timestamp, so that type-3
    /// chunks do too.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Payload of the message in progress; empty between messages.
    partial: BytesMut,
    /// True while a message is in progress (it may still be empty when the
    /// first chunk had no payload bytes yet).
    in_progress: bool,
}

/// A parsed chunk header, before it is applied.
struct Header {
    fmt: u8,
    csid: u32,
    /// Timestamp or delta, extended timestamp already resolved.
    time: Option<u32>,
    extended: bool,
    length: Option<u32>,
    type_id: Option<u8>,
    stream_id: Option<u32>,
}

/// Reassembles RTMP messages from chunks with hard limits.
#[derive(Debug)]
pub struct ChunkReader {
    max_message_bytes: usize,
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    /// Unparsed input: at most one chunk header plus what one read brought.
    input: BytesMut,
    /// The chunk stream whose payload is being read, and how many payload
    /// bytes of the current chunk are still to come.
    reading: Option<(u32, usize)>,
    /// Bytes held in partial payloads across all chunk streams.
    buffered: usize,
}

impl ChunkReader {
    /// A reader that refuses messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: HashMap::new(),
            input: BytesMut::new(),
            reading: None,
            buffered: 0,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Reads `bytes`; returns the messages they complete. Set Chunk Size and
    /// Abort are applied here and not returned.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<RawMessage>, ChunkError> {
        self.input.extend_from_slice(bytes);
        let mut messages = Vec::new();
        loop {
            match self.reading {
                Some((csid, left)) => {
                    if !self.read_payload(csid, left, &mut messages)? {
                        break;
                    }
                }
                None => {
                    let Some((header, used)) = self.parse_header()? else {
                        break;
                    };
                    let _ = self.input.split_to(used);
                    self.apply(header, &mut messages)?;
                }
            }
        }
        Ok(messages)
    }

    /// Copies what has arrived of the current chunk's payload; false when
    /// more input is needed.
    fn read_payload(
        &mut self,
        csid: u32,
        left: usize,
        messages: &mut Vec<RawMessage>,
    ) -> Result<bool, ChunkError> {
        if self.input.is_empty() && left > 0 {
            return Ok(false);
        }
        let take = left.min(self.input.len());
        let piece = self.input.split_to(take);
        self.buffered = self.buffered.saturating_add(take);
        let limit = self.max_message_bytes.saturating_mul(2);
        if self.buffered > limit {
            return Err(ChunkError::TooMuchBuffered(limit));
        }
        let stream = self
            .streams
            .get_mut(&csid)
            .ok_or(ChunkError::NoPreviousHeader(csid))?;
        stream.partial.extend_from_slice(&piece);
        let left = left - take;
        if left > 0 {
            self.reading = Some((csid, left));
            return Ok(false);
        }
        self.reading = None;
        if stream.partial.len() >= stream.length as usize {
            let payload = std::mem::take(&mut stream.partial).freeze();
            stream.in_progress = false;
            self.buffered = self.buffered.saturating_sub(payload.len());
            let message = RawMessage {
                timestamp: stream.timestamp,
                type_id: stream.type_id,
                stream_id: stream.stream_id,
                payload,
            };
            self.complete(message, messages)?;
        }
        Ok(true)
    }

    /// Parses the next chunk header if all of it has arrived.
    fn parse_header(&self) -> Result<Option<(Header, usize)>, ChunkError> {
        let buf = &self.input[..];
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3f {
            0 => match buf.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match buf.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let previous = self.streams.get(&csid);
        if fmt != 0 && previous.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        let field_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(fields) = buf.get(at..at + field_len) else {
            return Ok(None);
        };
        at += field_len;
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let time = (fmt < 3).then(|| u24(&fields[0..3]));
        let length = (fmt < 2).then(|| u24(&fields[3..6]));
        let type_id = (fmt < 2).then(|| fields[6]);
        let stream_id =
            (fmt == 0).then(|| u32::from_le_bytes([fields[7], fields[8], fields[9], fields[10]]));
        let extended = match time {
            Some(t) => t == EXTENDED,
            None => previous.is_some_and(|p| p.extended),
        };
        let mut resolved = time;
        if extended {
            let Some(ext) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            resolved = Some(u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]));
        }
        let header = Header {
            fmt,
            csid,
            time: resolved,
            extended,
            length,
            type_id,
            stream_id,
        };
        Ok(Some((header, at)))
    }

    /// Applies a header to its chunk stream and starts reading its payload.
    fn apply(&mut self, header: Header, messages: &mut Vec<RawMessage>) -> Result<(), ChunkError> {
        let opened = self.streams.len();
        let stream = match self.streams.get_mut(&header.csid) {
            Some(stream) => stream,
            None if opened >= MAX_CHUNK_STREAMS => return Err(ChunkError::TooManyChunkStreams),
            None => self.streams.entry(header.csid).or_default(),
        };
        if header.fmt < 3 && stream.in_progress {
            return Err(ChunkError::InterruptedMessage(header.csid));
        }
        match header.fmt {
            0 => {
                stream.timestamp = header.time.unwrap_or_default();
                stream.delta = stream.timestamp;
            }
            1 | 2 => {
                let delta = header.time.unwrap_or_default();
                stream.timestamp = stream.timestamp.wrapping_add(delta);
                stream.delta = delta;
            }
            // Type 3: a continuation keeps the message's time; a new message
            // repeats the last delta. The extended field of a continuation
            // repeats the message's and is not applied again.
            _ if !stream.in_progress => {
                stream.timestamp = stream.timestamp.wrapping_add(stream.delta);
            }
            _ => {}
        }
        if header.fmt < 3 {
            stream.extended = header.extended;
        }
        if let Some(length) = header.length {
            stream.length = length;
        }
        if let Some(type_id) = header.type_id {
            stream.type_id = type_id;
        }
        if let Some(stream_id) = header.stream_id {
            stream.stream_id = stream_id;
        }
        if !stream.in_progress && stream.length as usize > self.max_message_bytes {
            return Err(ChunkError::MessageTooLarge {
                type_id: stream.type_id,
                length: stream.length,
                limit: self.max_message_bytes,
            });
        }
        stream.in_progress = true;
        let remaining = (stream.length as usize).saturating_sub(stream.partial.len());
        let this_chunk = remaining.min(self.chunk_size);
        self.reading = Some((header.csid, this_chunk));
        if this_chunk == 0 {
            // An empty message: complete it now, without waiting for input.
            self.read_payload(header.csid, 0, messages)?;
        }
        Ok(())
    }

    /// Handles protocol control messages; queues the others.
    fn complete(
        &mut self,
        message: RawMessage,
        messages: &mut Vec<RawMessage>,
    ) -> Result<(), ChunkError> {
        match message.type_id {
            SET_CHUNK_SIZE => {
                let size =
                    read_u32(&message.payload).ok_or(ChunkError::Malformed("Set Chunk Size"))?;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.chunk_size = size as usize;
            }
            ABORT => {
                let csid = read_u32(&message.payload).ok_or(ChunkError::Malformed("Abort"))?;
                if let Some(stream) = self.streams.get_mut(&csid) {
                    self.buffered = self.buffered.saturating_sub(stream.partial.len());
                    stream.partial.clear();
                    stream.in_progress = false;
                }
            }
            _ => messages.push(message),
        }
        Ok(())
    }
}

fn read_u32(payload: &[u8]) -> Option<u32> {
    let b = payload.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Appends `message` as one type-0 chunk on chunk stream `csid` (2 to 63),
/// for a reader whose chunk size is at least the message's length.
pub fn single_chunk(csid: u8, message: &RawMessage, out: &mut Vec<u8>) {
    let length = message.payload.len().min(EXTENDED as usize) as u32;
    let extended = message.timestamp >= EXTENDED;
    out.push(csid.clamp(2, 63));
    let field = if extended {
        EXTENDED
    } else {
        message.timestamp
    };
    out.extend_from_slice(&field.to_be_bytes()[1..]);
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(message.type_id);
    out.extend_from_slice(&message.stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&message.timestamp.to_be_bytes());
    }
    out.extend_from_slice(&message.payload[..length as usize]);
}

/// A Set Chunk Size message announcing `size`.
pub fn set_chunk_size(size: u32) -> RawMessage {
    RawMessage {
        timestamp: 0,
        type_id: SET_CHUNK_SIZE,
        stream_id: 0,
        payload: Bytes::copy_from_slice(&size.to_be_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    /// A chunk: basic header, message header fields for `fmt`, extended
    /// timestamp when `time` needs it (or `ext` forces it), payload.
    fn chunk(
        fmt: u8,
        csid: u8,
        time: u32,
        len: u32,
        type_id: u8,
        ext: bool,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = vec![(fmt << 6) | csid];
        let extended = ext || time >= EXTENDED;
        if fmt < 3 {
            let field = if extended { EXTENDED } else { time };
            out.extend_from_slice(&field.to_be_bytes()[1..]);
        }
        if fmt < 2 {
            out.extend_from_slice(&len.to_be_bytes()[1..]);
            out.push(type_id);
        }
        if fmt == 0 {
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        if extended {
            out.extend_from_slice(&time.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reassembles_a_message_split_over_chunks() {
        let body: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut bytes = chunk(0, 6, 1000, 300, 9, false, &body[..128]);
        bytes.extend(chunk(3, 6, 0, 0, 0, false, &body[128..256]));
        bytes.extend(chunk(3, 6, 0, 0, 0, false, &body[256..]));
        let mut reader = ChunkReader::new(LIMIT);
        // One byte at a time: every partial state is exercised.
        let mut messages = Vec::new();
        for b in &bytes {
            messages.extend(reader.push(std::slice::from_ref(b)).expect("valid"));
        }
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].timestamp, 1000);
        assert_eq!(messages[0].type_id, 9);
        assert_eq!(messages[0].stream_id, 1);
        assert_eq!(&messages[0].payload[..], &body[..]);
    }

    #[test]
    fn extended_timestamps_on_continuation_chunks() {
        let start = 0x0100_0000;
        let body = [7u8; 200];
        let mut bytes = chunk(0, 6, start, 200, 9, false, &body[..128]);
        // The continuation repeats the extended timestamp; it is not a delta.
        bytes.extend(chunk(3, 6, start, 0, 0, true, &body[128..]));
        // A new message with a type-1 header and an extended delta.
        bytes.extend(chunk(1, 6, 0x0100_0000, 4, 9, false, &[1, 2, 3, 4]));
        let mut reader = ChunkReader::new(LIMIT);
        let messages = reader.push(&bytes).expect("valid");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].timestamp, start);
        assert_eq!(messages[0].payload.len(), 200);
        assert_eq!(messages[1].timestamp, start + 0x0100_0000);
    }

    #[test]
    fn interleaved_chunk_streams_are_kept_apart() {
        let video = [9u8; 200];
        let mut bytes = chunk(0, 6, 40, 200, 9, false, &video[..128]);
        bytes.extend(chunk(0, 4, 41, 3, 8, false, &[0xaf, 1, 2]));
        bytes.extend(chunk(3, 6, 0, 0, 0, false, &video[128..]));
        let messages = ChunkReader::new(LIMIT).push(&bytes).expect("valid");
        let types: Vec<u8> = messages.iter().map(|m| m.type_id).collect();
        assert_eq!(types, [8, 9]);
        assert_eq!(messages[1].payload.len(), 200);
    }

    #[test]
    fn refuses_large_declared_messages_before_any_payload() {
        let mut reader = ChunkReader::new(LIMIT);
        let header = chunk(0, 3, 0, 0xFF_FFFF, 0x42, false, &[]);
        let err = reader.push(&header).expect_err("too large");
        assert!(matches!(
            err,
            ChunkError::MessageTooLarge {
                length: 0xFF_FFFF,
                ..
            }
        ));
    }

    #[test]
    fn refuses_invalid_chunk_sizes() {
        for size in [0u32, 0x8000_0000, u32::MAX] {
            let bytes = chunk(0, 2, 0, 4, SET_CHUNK_SIZE, false, &size.to_be_bytes());
            let err = ChunkReader::new(LIMIT).push(&bytes).expect_err("invalid");
            assert_eq!(err, ChunkError::BadChunkSize(size));
        }
        let mut reader = ChunkReader::new(LIMIT);
        let bytes = chunk(
            0,
            2,
            0,
            4,
            SET_CHUNK_SIZE,
            false,
            &MAX_CHUNK_SIZE.to_be_bytes(),
        );
        reader.push(&bytes).expect("largest valid size");
        assert_eq!(reader.chunk_size(), MAX_CHUNK_SIZE as usize);
    }

    #[test]
    fn new_chunk_size_applies_to_the_next_chunk() {
        let mut bytes = chunk(0, 2, 0, 4, SET_CHUNK_SIZE, false, &4u32.to_be_bytes());
        bytes.extend(chunk(0, 6, 0, 6, 9, false, &[1, 2, 3, 4]));
        bytes.extend(chunk(3, 6, 0, 0, 0, false, &[5, 6]));
        let messages = ChunkReader::new(LIMIT).push(&bytes).expect("valid");
        assert_eq!(&messages[0].payload[..], &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn hostile_headers_are_errors() {
        let continuation = chunk(3, 9, 0, 0, 0, false, &[1]);
        assert_eq!(
            ChunkReader::new(LIMIT).push(&continuation),
            Err(ChunkError::NoPreviousHeader(9))
        );
        let mut bytes = chunk(0, 6, 0, 200, 9, false, &[0; 128]);
        bytes.extend(chunk(1, 6, 0, 10, 9, false, &[]));
        assert_eq!(
            ChunkReader::new(LIMIT).push(&bytes),
            Err(ChunkError::InterruptedMessage(6))
        );
        let mut many = Vec::new();
        for csid in 0..=MAX_CHUNK_STREAMS as u32 {
            many.extend([0x00, csid as u8]);
            many.extend(&chunk(0, 0, 0, 0, 9, false, &[])[1..]);
        }
        assert_eq!(
            ChunkReader::new(LIMIT).push(&many),
            Err(ChunkError::TooManyChunkStreams)
        );
    }

    #[test]
    fn buffered_partial_messages_are_capped() {
        let mut reader = ChunkReader::new(1000);
        // Five messages, each stopped after its first 500-byte chunk.
        let mut bytes = chunk(0, 2, 0, 4, SET_CHUNK_SIZE, false, &500u32.to_be_bytes());
        for csid in 3..8 {
            bytes.extend(chunk(0, csid, 0, 1000, 9, false, &[0; 500]));
        }
        assert_eq!(reader.push(&bytes), Err(ChunkError::TooMuchBuffered(2000)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9u32;
        for _ in 0..300 {
            let mut reader = ChunkReader::new(4096);
            for _ in 0..20 {
                let len = (seed % 64) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (seed >> 24) as u8
                    })
                    .collect();
                if reader.push(&bytes).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn single_chunk_round_trips() {
        let message = RawMessage {
            timestamp: 0x0123_4567,
            type_id: 9,
            stream_id: 1,
            payload: Bytes::from(vec![5u8; 5000]),
        };
        let mut bytes = Vec::new();
        single_chunk(2, &set_chunk_size(MAX_CHUNK_SIZE), &mut bytes);
        single_chunk(3, &message, &mut bytes);
        let messages = ChunkReader::new(LIMIT).push(&bytes).expect("valid");
        assert_eq!(messages, [message]);
    }
}
