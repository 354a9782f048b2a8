//! A reader for the protobuf wire format: just enough to walk the fields
//! of a message. It never panics on malformed input; every read is
//! bounds-checked and reports what was wrong.

/// One field value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    LengthDelimited(&'a [u8]),
    Fixed32(u32),
}

impl WireValue<'_> {
    pub fn type_name(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64(_) => "64-bit",
            WireValue::LengthDelimited(_) => "length-delimited",
            WireValue::Fixed32(_) => "32-bit",
        }
    }
}

/// Iterates over the fields of one encoded message.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads a base-128 varint (at most ten bytes).
    pub fn varint(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some((&byte, rest)) = self.buf.split_first() else {
                return Err("truncated varint".into());
            };
            self.buf = rest;
            if i == 9 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than ten bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!(
                "field needs {n} bytes but only {} remain",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Reads the next field: its number and value. `None` at the end.
    pub fn field(&mut self) -> Option<Result<(u32, WireValue<'a>), String>> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u32, WireValue<'a>), String> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| (1..=0x1fff_ffff).contains(n))
            .ok_or_else(|| format!("invalid field number {}", key >> 3))?;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                let bytes: [u8; 8] = self.take(8)?.try_into().expect("took 8 bytes");
                WireValue::Fixed64(u64::from_le_bytes(bytes))
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| format!("length {len} does not fit in memory"))?;
                WireValue::LengthDelimited(self.take(len)?)
            }
            5 => {
                let bytes: [u8; 4] = self.take(4)?.try_into().expect("took 4 bytes");
                WireValue::Fixed32(u32::from_le_bytes(bytes))
            }
            // Groups (3, 4) are deprecated and never used by Kubernetes.
            other => {
                return Err(format!("field {number} has unsupported wire type {other}"));
            }
        };
        Ok((number, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut r = Reader::new(&[0x96, 0x01, 0x00]);
        assert_eq!(r.varint(), Ok(150));
        assert_eq!(r.varint(), Ok(0));
        assert!(r.varint().is_err());
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Reader::new(&too_big).varint().is_err());
    }

    #[test]
    fn fields() {
        // 1: varint 1, 2: "hi", 3: fixed32, 4: fixed64
        let buf = [
            0x08, 0x01, 0x12, 0x02, b'h', b'i', 0x1d, 1, 0, 0, 0, 0x21, 2, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut r = Reader::new(&buf);
        assert_eq!(r.field(), Some(Ok((1, WireValue::Varint(1)))));
        assert_eq!(r.field(), Some(Ok((2, WireValue::LengthDelimited(b"hi")))));
        assert_eq!(r.field(), Some(Ok((3, WireValue::Fixed32(1)))));
        assert_eq!(r.field(), Some(Ok((4, WireValue::Fixed64(2)))));
        assert_eq!(r.field(), None);
    }

    #[test]
    fn malformed() {
        // Length beyond the end, field number 0, group wire type.
        for buf in [&[0x12, 0x05, b'a'][..], &[0x00, 0x01], &[0x0b]] {
            assert!(Reader::new(buf).field().is_some_and(|r| r.is_err()));
        }
    }
}
