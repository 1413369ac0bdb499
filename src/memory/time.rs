//! Times for people: unix seconds in, RFC 3339 UTC text and "about 12 minutes ago" out; and the
//! times people type (`--before 2026-12-01`, `--before 7d`) in, unix seconds out.

use super::MemoryError;

/// Seconds since 1970 now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// (year, month, day) of a day counted from 1970-01-01 (H. Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days from 1970-01-01 to a civil date (days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `at` as RFC 3339 in UTC: 2026-12-05T01:02:03Z.
pub fn rfc3339(at: i64) -> String {
    let (y, mo, d) = civil(at.div_euclid(86_400));
    let s = at.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Serialises unix seconds as RFC 3339 (for JSON).
pub fn serialize_rfc3339<S: serde::Serializer>(at: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*at))
}

/// How long ago `at` was, seen at `now`, in words: "just now", "about a minute ago", "about 12
/// minutes ago", "about 3 hours ago", "2 days ago".
pub fn ago(at: i64, now: i64) -> String {
    let s = (now - at).max(0);
    let plural = |n: i64, unit: &str| match n {
        1 => format!("a{} {unit}", if unit == "hour" { "n" } else { "" }),
        n => format!("{n} {unit}s"),
    };
    match s {
        0..60 => "just now".into(),
        60..5400 => format!("about {} ago", plural((s + 30) / 60, "minute")),
        5400..129_600 => format!("about {} ago", plural((s + 1800) / 3600, "hour")),
        _ => format!("{} ago", plural((s + 43_200) / 86_400, "day")),
    }
}

/// A time a person typed: RFC 3339 (`2026-12-05T10:00:00Z`, UTC or with an offset), a date
/// (`2026-12-05`, midnight UTC), unix seconds, or an age before `now` (`30m`, `12h`, `7d`, `2w`).
pub fn parse_time(text: &str, now: i64) -> Result<i64, MemoryError> {
    let t = text.trim();
    let bad = || MemoryError::BadTime(text.to_string());
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c)) {
        if let Ok(n) = t[..t.len() - 1].trim().parse::<f64>() {
            let secs = match unit {
                's' => 1.0,
                'm' => 60.0,
                'h' => 3600.0,
                'd' => 86_400.0,
                _ => 604_800.0,
            };
            return Ok(now - (n * secs) as i64);
        }
    }
    parse_rfc3339(t).ok_or_else(bad)
}

fn parse_rfc3339(t: &str) -> Option<i64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if rest.is_empty() {
        return Some(secs);
    }
    // The clock, then Z or an offset such as +02:00.
    let split = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(split);
    let mut c = clock.split(':');
    let (h, mi) = (num(c.next()?)?, num(c.next()?)?);
    let s = c.next().map_or(Some(0.0), |s| s.parse::<f64>().ok())? as i64;
    secs += h * 3600 + mi * 60 + s;
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (oh, om) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    Some(secs - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_432_523), "2026-12-05T01:02:03Z");
        for at in [0, 951_782_400, 1_796_432_523, 4_102_444_799] {
            assert_eq!(parse_time(&rfc3339(at), 0).unwrap(), at);
        }
        assert_eq!(
            parse_time("2026-12-05T03:02:03+02:00", 0).unwrap(),
            1_796_432_523
        );
        assert_eq!(parse_time("2026-12-05", 0).unwrap(), 1_796_428_800);
    }

    #[test]
    fn ages_and_numbers_are_times_too() {
        let now = 1_000_000;
        assert_eq!(parse_time("7d", now).unwrap(), now - 7 * 86_400);
        assert_eq!(parse_time("30m", now).unwrap(), now - 1800);
        assert_eq!(parse_time("12345", now).unwrap(), 12345);
        assert!(matches!(
            parse_time("last tuesday", now),
            Err(MemoryError::BadTime(_))
        ));
        assert!(parse_time("2026-13-01", now).is_err());
    }

    #[test]
    fn ago_reads_like_speech() {
        let now = 10_000_000;
        assert_eq!(ago(now - 5, now), "just now");
        assert_eq!(ago(now + 50, now), "just now");
        assert_eq!(ago(now - 70, now), "about a minute ago");
        assert_eq!(ago(now - 12 * 60, now), "about 12 minutes ago");
        assert_eq!(ago(now - 3600 * 3, now), "about 3 hours ago");
        assert_eq!(ago(now - 3600 * 2, now), "about 2 hours ago");
        assert_eq!(ago(now - 86_400 * 2, now), "2 days ago");
        assert_eq!(ago(now - 86_400 * 2 + 3600, now), "2 days ago");
    }
}
