//! `get_time`: nothing in; the local date, time, weekday and time zone from the system clock out.

use serde_json::{json, Value};

use super::tool::{Tool, ToolError};

/// A moment on the local clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1-12.
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    /// 0 = Sunday.
    pub weekday: u32,
    /// The zone's abbreviation (e.g. CET) and its offset from UTC in seconds.
    pub zone: String,
    pub offset_s: i64,
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The local time now, as the system clock and time zone (`TZ`, /etc/localtime) say.
pub fn now() -> Result<LocalTime, ToolError> {
    let t: libc::time_t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ToolError::Failed("the system clock is before 1970: set it".into()))?
        .as_secs() as libc::time_t;
    // SAFETY: `tm` is plain old data, filled by localtime_r from a valid time_t; tm_zone
    // points into the C library's static zone names (or is null), read at once.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return Err(ToolError::Failed(
                "the C library cannot tell the local time".into(),
            ));
        }
        let zone = match tm.tm_zone.is_null() {
            true => String::new(),
            false => std::ffi::CStr::from_ptr(tm.tm_zone)
                .to_string_lossy()
                .into_owned(),
        };
        Ok(LocalTime {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            weekday: tm.tm_wday as u32,
            zone,
            offset_s: tm.tm_gmtoff,
        })
    }
}

impl LocalTime {
    /// "It is 14:05 (2:05 PM) on Saturday, 5 December 2026, time zone CET (UTC+01:00)."
    pub fn sentence(&self) -> String {
        let h12 = match self.hour % 12 {
            0 => 12,
            h => h,
        };
        let ampm = if self.hour < 12 { "AM" } else { "PM" };
        let off = self.offset_s.abs();
        let sign = if self.offset_s < 0 { '-' } else { '+' };
        format!(
            "It is {:02}:{:02} ({h12}:{:02} {ampm}) on {}, {} {} {}, time zone {} (UTC{sign}{:02}:{:02}).",
            self.hour,
            self.minute,
            self.minute,
            WEEKDAYS[self.weekday as usize % 7],
            self.day,
            MONTHS[(self.month as usize + 11) % 12],
            self.year,
            self.zone,
            off / 3600,
            off % 3600 / 60,
        )
    }
}

/// The current local date and time.
pub struct GetTime;

impl Tool for GetTime {
    fn name(&self) -> &str {
        "get_time"
    }
    fn description(&self) -> &str {
        "Get today's date and the current local time (with weekday and time zone) from the system clock."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}, "required": []})
    }
    fn call(&self, _args: Value) -> Result<String, ToolError> {
        Ok(now()?.sentence())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_told_in_words() {
        let t = LocalTime {
            year: 2026,
            month: 12,
            day: 5,
            hour: 14,
            minute: 5,
            weekday: 6,
            zone: "CET".into(),
            offset_s: 3600,
        };
        assert_eq!(
            t.sentence(),
            "It is 14:05 (2:05 PM) on Saturday, 5 December 2026, time zone CET (UTC+01:00)."
        );
        let midnight = LocalTime {
            hour: 0,
            offset_s: -(5 * 3600 + 1800),
            zone: "X".into(),
            ..t
        };
        assert!(midnight.sentence().contains("00:05 (12:05 AM)"));
        assert!(midnight.sentence().contains("UTC-05:30"));
    }

    #[test]
    fn now_agrees_with_the_system_clock() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let t = now().unwrap();
        // The local minute of the day, back to UTC, is the clock's (give or take a minute).
        let local = (t.hour * 60 + t.minute) as i64;
        let utc = (local - t.offset_s / 60).rem_euclid(1440);
        let clock = secs / 60 % 1440;
        let diff = (utc - clock).rem_euclid(1440);
        assert!(
            diff <= 1 || diff == 1439,
            "local {local} utc {utc} clock {clock}"
        );
        assert!(GetTime.call(json!({})).unwrap().starts_with("It is "));
    }
}
