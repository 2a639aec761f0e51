//! Writes simulated messages as JSON without building a tree: the simulator's hot path.

use crate::time::format_millis;

/// Appends JSON objects field by field to a byte buffer.
#[derive(Debug, Default)]
pub struct JsonWriter {
    pub buf: Vec<u8>,
    /// `YYYY-MM-DDT` of the day last formatted, and that day's number since the epoch.
    day_prefix: Vec<u8>,
    day: Option<i64>,
}

const MS_PER_DAY: i64 = 86_400_000;

impl JsonWriter {
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn open(&mut self) {
        self.buf.push(b'{');
    }

    pub fn close(&mut self) {
        if self.buf.last() == Some(&b',') {
            self.buf.pop();
        }
        self.buf.push(b'}');
    }

    fn key(&mut self, key: &str) {
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// A string field; `value` must need no escaping (ids and enum words the simulator makes).
    pub fn str(&mut self, key: &str, value: &str) {
        debug_assert!(!value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20), "{value:?} needs escaping");
        self.key(key);
        self.buf.push(b'"');
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.extend_from_slice(b"\",");
    }

    pub fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        self.buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.buf.push(b',');
    }

    /// A number rounded to `decimals` places, written in fixed notation (e.g. `45.60`).
    pub fn fixed(&mut self, key: &str, value: f64, decimals: u32) {
        self.key(key);
        let scale = 10i64.pow(decimals);
        let scaled = (value * scale as f64).round() as i64;
        if scaled < 0 {
            self.buf.push(b'-');
        }
        let magnitude = scaled.unsigned_abs();
        let scale = scale as u64;
        self.buf.extend_from_slice(itoa::Buffer::new().format(magnitude / scale).as_bytes());
        if decimals > 0 {
            self.buf.push(b'.');
            let fraction = magnitude % scale;
            let mut digits = [b'0'; 12];
            let mut text = itoa::Buffer::new();
            let text = text.format(fraction).as_bytes();
            let width = decimals as usize;
            digits[width - text.len()..width].copy_from_slice(text);
            self.buf.extend_from_slice(&digits[..width]);
        }
        self.buf.push(b',');
    }

    /// RFC 3339 UTC with milliseconds, e.g. `2024-09-04T10:00:05.000Z`, as `format_millis` writes it.
    pub fn timestamp(&mut self, key: &str, ms: i64) {
        self.key(key);
        let day = ms.div_euclid(MS_PER_DAY);
        if self.day != Some(day) {
            let text = format_millis(day * MS_PER_DAY);
            self.day_prefix = text.as_bytes()[..11].to_vec();
            self.day = Some(day);
        }
        let in_day = ms.rem_euclid(MS_PER_DAY);
        let (hours, minutes, seconds, millis) =
            (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
        self.buf.push(b'"');
        self.buf.extend_from_slice(&self.day_prefix);
        let two = |n: i64| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        self.buf.extend_from_slice(&two(hours));
        self.buf.push(b':');
        self.buf.extend_from_slice(&two(minutes));
        self.buf.push(b':');
        self.buf.extend_from_slice(&two(seconds));
        self.buf.push(b'.');
        self.buf.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
        ]);
        self.buf.extend_from_slice(b"Z\",");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_serde_json_reads() {
        let mut w = JsonWriter::default();
        w.open();
        w.str("id", "V001");
        w.timestamp("timestamp", 1_725_444_005_123);
        w.fixed("speed", 45.6049, 2);
        w.fixed("lat", -0.0000004, 6);
        w.fixed("lon", -122.4, 6);
        w.int("ms", -42);
        w.close();
        let value: serde_json::Value = serde_json::from_slice(&w.buf).unwrap();
        assert_eq!(value["timestamp"], format_millis(1_725_444_005_123));
        assert_eq!(value["speed"], 45.6);
        assert_eq!(value["lat"], 0.0);
        assert_eq!(value["lon"], -122.4);
        assert_eq!(value["ms"], -42);
        assert_eq!(std::str::from_utf8(&w.buf).unwrap().matches("45.60").count(), 1);
        for ms in [0, 86_399_999, 1_725_444_005_123, -1] {
            w.clear();
            w.open();
            w.timestamp("t", ms);
            w.close();
            let value: serde_json::Value = serde_json::from_slice(&w.buf).unwrap();
            assert_eq!(value["t"], format_millis(ms), "{ms}");
        }
    }
}
