//! Just enough of the protobuf wire format to rewrite an ONNX graph's node list. Fields the
//! rewrite does not touch are copied as their original bytes, so whatever else a model holds
//! (metadata, value infos, external-data references, fields newer than this code) survives.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed protobuf: {}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// One field occurrence; `raw` is its whole encoding, tag included.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&'a str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn varint(&self) -> Option<u64> {
        match self.value {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }
}

/// The fields of one message, in order.
pub fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = varint(buf, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| DecodeError("field number"))?;
        let value = match tag & 7 {
            0 => Value::Varint(varint(buf, &mut pos)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                take(buf, &mut pos, 8)?
                    .try_into()
                    .map_err(|_| DecodeError("fixed64"))?,
            )),
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| DecodeError("length"))?;
                Value::Bytes(take(buf, &mut pos, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                take(buf, &mut pos, 4)?
                    .try_into()
                    .map_err(|_| DecodeError("fixed32"))?,
            )),
            _ => return Err(DecodeError("unsupported wire type")),
        };
        out.push(Field {
            number,
            value,
            raw: &buf[start..pos],
        });
    }
    Ok(out)
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], DecodeError> {
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or(DecodeError("truncated"))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(DecodeError("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint too long"))
}

/// Varints packed in one length-delimited field, or a single unpacked one.
pub fn packed_varints(field: &Field) -> Result<Vec<u64>, DecodeError> {
    match field.value {
        Value::Varint(v) => Ok(vec![v]),
        Value::Bytes(b) => {
            let mut pos = 0;
            let mut out = Vec::new();
            while pos < b.len() {
                out.push(varint(b, &mut pos)?);
            }
            Ok(out)
        }
        _ => Err(DecodeError("expected varints")),
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn put_varint_field(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_byte_for_byte() {
        let mut msg = Vec::new();
        put_bytes(&mut msg, 1, b"abc");
        put_varint_field(&mut msg, 2, 300);
        put_varint_field(&mut msg, 3, u64::MAX);
        msg.extend_from_slice(&[0x25, 1, 2, 3, 4]); // field 4, fixed32
        let parsed = fields(&msg).unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].str(), Some("abc"));
        assert_eq!(parsed[1].varint(), Some(300));
        assert_eq!(parsed[2].varint(), Some(u64::MAX));
        assert_eq!(parsed[3].value, Value::Fixed32(0x0403_0201));
        let rebuilt: Vec<u8> = parsed.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(rebuilt, msg);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut msg = Vec::new();
        put_bytes(&mut msg, 1, b"abcdef");
        for cut in 1..msg.len() {
            assert!(fields(&msg[..cut]).is_err(), "cut at {cut}");
        }
        assert!(fields(&[0x0b]).is_err(), "group wire type");
        assert!(fields(&[0x80; 11]).is_err(), "endless varint");
    }
}
