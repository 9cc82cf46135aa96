//! Incremental server-sent-events parser for upstream streams: bytes in, complete events out,
//! whatever way the network splits them. Pure (no I/O) so it can be unit-tested and fuzzed.
//!
//! Follows the WHATWG event-stream rules that matter for OpenAI-style streams: lines end in
//! `\n`, `\r\n` or a lone `\r` (even when split across chunks); `:` starts a comment (keepalive);
//! `field: value` strips one space after the colon; several `data:` lines join with `\n`; a blank
//! line dispatches the event; a leading UTF-8 BOM is ignored; an unfinished event at the end of
//! the stream is discarded.

use std::fmt::Write as _;

/// Largest event (all its lines together) accepted by [`SseParser::new`]. A misbehaving upstream
/// that never sends a line end must not make the gateway buffer without bound.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The `data:` payload that ends an OpenAI stream.
pub const DONE_MARKER: &str = "[DONE]";

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the upstream set one (OpenAI streams do not).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// Whether this is the `data: [DONE]` terminator.
    pub fn is_done(&self) -> bool {
        self.data.trim() == DONE_MARKER
    }

    /// Appends the event as `data: ...\n\n` (one `data:` line per payload line, so multi-line
    /// payloads survive), the framing our clients parse.
    pub fn encode_data(&self, out: &mut String) {
        for line in self.data.split('\n') {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "data: {line}");
        }
        out.push('\n');
    }
}

/// Why the byte stream is not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event larger than {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// Parser state carried between chunks.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` starting the next chunk belongs to that line end.
    pending_cr: bool,
    /// Bytes seen so far while the stream could still start with a BOM (at most 3).
    bom_prefix: Option<Vec<u8>>,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser for a fresh stream with the default event size limit.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser rejecting events larger than `max_event_bytes`.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event: None,
            pending_cr: false,
            bom_prefix: Some(Vec::with_capacity(BOM.len())),
            max_event_bytes,
        }
    }

    /// Feeds one chunk, appending every event it completes to `out`. After an error the parser
    /// is in an unspecified state; the stream should be abandoned.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let chunk = self.strip_bom(chunk);
        let mut rest = chunk.as_ref();
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            if let Some(after) = rest.strip_prefix(b"\n") {
                rest = after;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&rest[..end])?;
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            self.finish_line(out);
        }
        self.extend_line(rest)
    }

    /// Whether bytes of an undispatched event are buffered: at end of stream, the upstream
    /// stopped in the middle of an event.
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.event.is_some()
    }

    fn strip_bom<'a>(&mut self, chunk: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        use std::borrow::Cow;
        let Some(prefix) = self.bom_prefix.as_mut() else {
            return Cow::Borrowed(chunk);
        };
        let take = (BOM.len() - prefix.len()).min(chunk.len());
        prefix.extend_from_slice(&chunk[..take]);
        if !BOM.starts_with(prefix) {
            // Not a BOM: the held-back bytes are ordinary input.
            let mut held = self.bom_prefix.take().unwrap_or_default();
            held.extend_from_slice(&chunk[take..]);
            return Cow::Owned(held);
        }
        if prefix.len() == BOM.len() {
            self.bom_prefix = None;
        }
        // Either the whole BOM was consumed or we still cannot tell; hold the bytes back.
        Cow::Borrowed(&chunk[take..])
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if bytes.is_empty() {
            return Ok(());
        }
        // Counts what stays buffered (this line plus the event's fields), so a long run of
        // keepalive comments is fine but one endless line or event is not.
        let buffered = self.line.len()
            + bytes.len()
            + self.data.len()
            + self.event.as_ref().map_or(0, String::len);
        if buffered > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn finish_line(&mut self, out: &mut Vec<SseEvent>) {
        if self.line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.first() == Some(&b':') {
            // Comment, typically a keepalive; it only resets the idle timer upstream of us.
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line.as_slice(), &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // `id` and `retry` steer browser reconnection, which a relay does not do.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        out.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out).expect("valid stream");
        }
        (out, parser)
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn one_chunk_with_several_events_yields_all() {
        let (events, _) =
            parse_chunks(&[b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n"]);
        assert_eq!(data(&events), ["{\"a\":1}", "{\"b\":2}", "[DONE]"]);
        assert!(events[2].is_done());
        assert!(!events[0].is_done());
    }

    #[test]
    fn event_split_at_every_byte_is_reassembled() {
        let stream = b"data: {\"x\":\"hello\"}\r\n\r\ndata: [DONE]\r\n\r\n";
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let (events, parser) = parse_chunks(&chunks);
        assert_eq!(data(&events), ["{\"x\":\"hello\"}", "[DONE]"]);
        assert!(!parser.has_partial_event());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let stream: &[u8] =
            b": keepalive\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: b\rdata: c\r\r\ndata: [DONE]\n\n";
        let (whole, _) = parse_chunks(&[stream]);
        for split in 0..=stream.len() {
            let (parts, _) = parse_chunks(&[&stream[..split], &stream[split..]]);
            assert_eq!(parts, whole, "split at {split}");
        }
        assert_eq!(data(&whole), ["{\"a\":1}", "b\nc", "[DONE]"]);
        assert_eq!(whole[1].event.as_deref(), Some("x"));
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        let (events, _) = parse_chunks(&[b"data: a\r", b"", b"\n\r", b"\ndata: b\n\n"]);
        assert_eq!(data(&events), ["a", "b"]);
    }

    #[test]
    fn comments_and_keepalives_produce_no_events() {
        let (events, parser) = parse_chunks(&[b": ping\n\n:\n\n: another\n"]);
        assert!(events.is_empty());
        assert!(!parser.has_partial_event());
    }

    #[test]
    fn value_keeps_everything_after_one_space() {
        let (events, _) = parse_chunks(&[b"data:no-space\n\ndata:  two\n\ndata\n\n"]);
        assert_eq!(data(&events), ["no-space", " two", ""]);
    }

    #[test]
    fn unknown_fields_and_blank_events_are_ignored() {
        let (events, _) = parse_chunks(&[b"id: 7\nretry: 10\nfoo: bar\n\n\n\ndata: x\n\n"]);
        assert_eq!(data(&events), ["x"]);
    }

    #[test]
    fn unterminated_event_is_reported_as_partial() {
        let (events, parser) = parse_chunks(&[b"data: {\"a\":1}\n\ndata: {\"b\""]);
        assert_eq!(data(&events), ["{\"a\":1}"]);
        assert!(parser.has_partial_event());
        let (_, parser) = parse_chunks(&[b"data: {\"a\":1}\n"]);
        assert!(parser.has_partial_event(), "data line without blank line");
    }

    #[test]
    fn leading_bom_is_skipped_even_when_split() {
        let (events, _) = parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(data(&events), ["a"]);
        let (events, _) = parse_chunks(&[b"\xEFdata: a\n\n"]);
        assert_eq!(
            events.len(),
            0,
            "a broken BOM corrupts the first field name"
        );
        let (events, _) = parse_chunks(&[b"da", b"ta: a\n\n"]);
        assert_eq!(
            data(&events),
            ["a"],
            "short first chunk is not mistaken for a BOM"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let (events, _) = parse_chunks(&[b"data: a\xFFb\n\n"]);
        assert_eq!(data(&events), ["a\u{FFFD}b"]);
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut parser = SseParser::with_limit(16);
        let mut out = Vec::new();
        let err = parser
            .push(b"data: 0123456789abcdef\n\n", &mut out)
            .expect_err("too large");
        assert_eq!(err, SseError::EventTooLarge { limit: 16 });
        let mut parser = SseParser::with_limit(16);
        for _ in 0..10 {
            parser
                .push(b"data: 0123\n\n", &mut out)
                .expect("small events reset the budget");
            parser
                .push(b": keepalive\n", &mut out)
                .expect("comments are not buffered");
        }
    }

    #[test]
    fn encode_data_writes_one_data_line_per_payload_line() {
        let mut out = String::new();
        SseEvent {
            event: None,
            data: "{\"a\":1}".into(),
        }
        .encode_data(&mut out);
        SseEvent {
            event: None,
            data: "x\ny".into(),
        }
        .encode_data(&mut out);
        assert_eq!(out, "data: {\"a\":1}\n\ndata: x\ndata: y\n\n");
    }

    #[test]
    fn done_marker_tolerates_surrounding_space() {
        let (events, _) = parse_chunks(&[b"data:[DONE] \n\n"]);
        assert!(events[0].is_done());
    }
}
