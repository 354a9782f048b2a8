//! How Go prints the time values of the Kubernetes API in JSON, so that
//! decoded protobuf objects read exactly like Kubernetes' own JSON.

/// `2006-01-02T15:04:05Z` (Go's RFC3339) or, with `micros`,
/// `2006-01-02T15:04:05.000000Z` (RFC3339Micro), in UTC.
/// `None` when the year is outside 0..=9999, which Go refuses to write.
pub fn rfc3339(seconds: i64, nanos: i64, micros: bool) -> Option<String> {
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    let at = jiff::Timestamp::from_nanosecond(total).ok()?;
    let t = jiff::tz::Offset::UTC.to_datetime(at);
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Some(if micros {
        format!("{base}.{:06}Z", t.subsec_nanosecond() / 1000)
    } else {
        format!("{base}Z")
    })
}

/// Formats nanoseconds like Go's `time.Duration.String` (`1h2m3.5s`,
/// `1.5ms`, `0s`).
pub fn go_duration(nanos: i64) -> String {
    /// `value / 10^digits` with the fraction's trailing zeros dropped.
    fn split(value: u64, digits: u32) -> (u64, String) {
        let scale = 10u64.pow(digits);
        let fraction = value % scale;
        if fraction == 0 {
            return (value / scale, String::new());
        }
        let text = format!(".{fraction:0width$}", width = digits as usize);
        (value / scale, text.trim_end_matches('0').to_string())
    }
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u < 1_000_000_000 {
        let (unit, digits) = match u {
            0..1_000 => ("ns", 0),
            1_000..1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        let (whole, fraction) = split(u, digits);
        return format!("{sign}{whole}{fraction}{unit}");
    }
    let (seconds, fraction) = split(u, 9);
    let mut out = sign.to_string();
    if seconds >= 3600 {
        out.push_str(&format!("{}h", seconds / 3600));
    }
    if seconds >= 60 {
        out.push_str(&format!("{}m", seconds / 60 % 60));
    }
    out.push_str(&format!("{}{fraction}s", seconds % 60));
    out
}
