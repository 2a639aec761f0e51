//! ClickHouse's RowBinary input format: each row's values one after another, little-endian,
//! strings as a LEB128 length and their bytes, `Nullable` as a 0/1 byte before the value.
//! Read by 18.16 and by current releases alike; no text to escape or parse on either side.

/// A RowBinary body being built, one value at a time in the insert's column order.
#[derive(Debug, Default)]
pub struct RowBinary {
    bytes: Vec<u8>,
}

impl RowBinary {
    pub fn with_capacity(bytes: usize) -> Self {
        RowBinary { bytes: Vec::with_capacity(bytes) }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// `UInt64`; store ids are never negative (a negative one is written as 0).
    pub fn u64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&u64::try_from(value).unwrap_or(0).to_le_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn f64(&mut self, value: f64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// `DateTime`: seconds since the epoch as `UInt32`, clamped to its range.
    pub fn date_time(&mut self, millis: i64) {
        let seconds = millis.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32;
        self.bytes.extend_from_slice(&seconds.to_le_bytes());
    }

    pub fn string(&mut self, text: &str) {
        let mut length = text.len();
        loop {
            let low = (length & 0x7f) as u8;
            length >>= 7;
            if length == 0 {
                self.bytes.push(low);
                break;
            }
            self.bytes.push(low | 0x80);
        }
        self.bytes.extend_from_slice(text.as_bytes());
    }

    /// `Nullable(..)`: the null byte, then the value when there is one.
    fn nullable<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => {
                self.bytes.push(0);
                write(self, value);
            }
            None => self.bytes.push(1),
        }
    }

    pub fn nullable_i64(&mut self, value: Option<i64>) {
        self.nullable(value, Self::i64);
    }

    pub fn nullable_f64(&mut self, value: Option<f64>) {
        self.nullable(value, Self::f64);
    }

    pub fn nullable_string(&mut self, value: Option<&str>) {
        self.nullable(value, Self::string);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_little_endian_strings_length_prefixed_and_nulls_flagged() {
        let mut row = RowBinary::default();
        row.u64(7);
        row.date_time(1_725_446_400_999);
        row.string("V001");
        row.nullable_f64(None);
        row.nullable_string(Some("on"));
        let mut expected = 7u64.to_le_bytes().to_vec();
        expected.extend_from_slice(&1_725_446_400u32.to_le_bytes());
        expected.extend_from_slice(b"\x04V001");
        expected.push(1);
        expected.extend_from_slice(b"\x00\x02on");
        assert_eq!(row.into_bytes(), expected);
    }

    #[test]
    fn long_strings_take_a_varint_length_and_times_clamp_to_date_time_range() {
        let mut row = RowBinary::default();
        row.string(&"x".repeat(300));
        assert_eq!(&row.bytes[..2], &[0xac, 0x02]);
        assert_eq!(row.bytes.len(), 302);
        let mut row = RowBinary::default();
        row.date_time(-5);
        row.date_time(i64::MAX);
        assert_eq!(row.into_bytes(), [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    }
}
