//! Dates and times: proleptic Gregorian calendar arithmetic and the ISO
//! DateStyle text forms PostgreSQL prints (PostgreSQL docs §8.5 "Date/Time
//! Types"; ranges and infinities from PostgreSQL
//! `src/include/datatype/timestamp.h`, input/output rules of
//! `src/backend/utils/adt/date.c` and `timestamp.c`).
//!
//! Internal units: days since 2000-01-01 for dates, microseconds since
//! midnight for times, microseconds since 2000-01-01 00:00:00 for
//! timestamps (UTC for timestamptz).

use super::numeric::is_pg_space;
use super::ValueError;

/// Microseconds per day.
pub(crate) const USECS_PER_DAY: i64 = 86_400_000_000;
/// First valid date: 4714-11-24 BC (Julian day 0) as days since 2000-01-01
/// (`DATETIME_MIN_JULIAN - POSTGRES_EPOCH_JDATE`).
pub(crate) const MIN_DATE: i64 = -2_451_545;
/// One past the last valid date, 5874898-01-01
/// (`DATE_END_JULIAN - POSTGRES_EPOCH_JDATE`).
pub(crate) const END_DATE: i64 = 2_147_483_494 - 2_451_545;
/// First valid timestamp, 4714-11-24 00:00:00 BC (`MIN_TIMESTAMP`, µs).
pub(crate) const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// One past the last valid timestamp, 294277-01-01 00:00:00
/// (`END_TIMESTAMP`, µs).
pub(crate) const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

/// Days from 2000-01-01 to the proleptic Gregorian date `y-m-d`, with
/// astronomical year numbering (1 BC = year 0).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - 10_957
}

/// Inverse of [`days_from_civil`]: (astronomical year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A cursor over ASCII text.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// Up to `max` digits, at least one; value and count.
    fn digits(&mut self, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut v: i64 = 0;
        while self.i - start < max {
            match self.peek() {
                Some(c) if c.is_ascii_digit() => {
                    v = v * 10 + i64::from(c - b'0');
                    self.i += 1;
                }
                _ => break,
            }
        }
        (self.i > start).then_some((v, self.i - start))
    }
    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_pg_space) {
            self.i += 1;
        }
    }
    fn rest_lower(&self) -> String {
        String::from_utf8_lossy(&self.b[self.i..]).to_ascii_lowercase()
    }
}

fn syntax(ty: &str, s: &str) -> ValueError {
    ValueError::Malformed(format!("invalid input syntax for type {ty}: \"{s}\""))
}

fn field_range(s: &str) -> ValueError {
    ValueError::DatetimeOutOfRange(format!("date/time field value out of range: \"{s}\""))
}

/// Parses `Y-MM-DD` (year of 1+ digits) and returns (year as written,
/// month, day); `None` on bad syntax.
fn ymd(c: &mut Cur<'_>) -> Option<(i64, u32, u32)> {
    let (y, _) = c.digits(9)?;
    if !c.eat(b'-') {
        return None;
    }
    let (m, _) = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let (d, _) = c.digits(2)?;
    Some((y, m as u32, d as u32))
}

/// Parses `HH:MM[:SS[.frac]]` into microseconds since midnight (fraction
/// rounded to µs, half to even). `None` on bad syntax; `Some(Err)` when a
/// field is out of range.
fn hms(c: &mut Cur<'_>, s: &str) -> Option<Result<i64, ValueError>> {
    let (h, _) = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let (mi, _) = c.digits(2)?;
    let mut sec = 0;
    let mut usec: i64 = 0;
    if c.eat(b':') {
        sec = c.digits(2)?.0;
        if c.eat(b'.') {
            let start = c.i;
            let mut frac = Vec::new();
            while let Some(d) = c.peek().filter(u8::is_ascii_digit) {
                frac.push(d - b'0');
                c.i += 1;
            }
            if c.i == start {
                return None;
            }
            for k in 0..6 {
                usec = usec * 10 + i64::from(frac.get(k).copied().unwrap_or(0));
            }
            if frac.len() > 6 {
                let rest = &frac[6..];
                let half = rest[0] > 5
                    || (rest[0] == 5 && (rest[1..].iter().any(|&d| d != 0) || usec % 2 == 1));
                if half {
                    usec += 1;
                }
            }
        }
    }
    if h > 24 || mi > 59 || sec > 60 {
        return Some(Err(field_range(s)));
    }
    let t = ((h * 60 + mi) * 60 + sec) * 1_000_000 + usec;
    if t > USECS_PER_DAY {
        return Some(Err(field_range(s)));
    }
    Some(Ok(t))
}

/// Optional trailing " BC"/" AD" (case-insensitive); true for BC.
fn era(c: &mut Cur<'_>) -> bool {
    c.skip_space();
    let rest = c.rest_lower();
    if rest.starts_with("bc") {
        c.i += 2;
        true
    } else {
        if rest.starts_with("ad") {
            c.i += 2;
        }
        false
    }
}

/// Validates a calendar date and returns days since 2000-01-01.
fn date_days(y: i64, m: u32, d: u32, bc: bool, ty: &str, s: &str) -> Result<i64, ValueError> {
    if y == 0 || m == 0 || m > 12 || d == 0 {
        return Err(field_range(s));
    }
    let year = if bc { 1 - y } else { y };
    if d > days_in_month(year, m) {
        return Err(field_range(s));
    }
    let days = days_from_civil(year, m, d);
    if !(MIN_DATE..END_DATE).contains(&days) {
        return Err(ValueError::DatetimeOutOfRange(format!(
            "{ty} out of range: \"{s}\""
        )));
    }
    Ok(days)
}

/// PostgreSQL `date_in` for ISO input: `Y-MM-DD[ BC]`, `infinity`,
/// `-infinity`, `epoch`; surrounding whitespace allowed. Returns days
/// since 2000-01-01 (`i32::MIN`/`i32::MAX` for ∓infinity).
pub(crate) fn parse_date(s: &str) -> Result<i32, ValueError> {
    let t = s
        .trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8))
        .to_ascii_lowercase();
    match t.as_str() {
        "infinity" | "+infinity" => return Ok(i32::MAX),
        "-infinity" => return Ok(i32::MIN),
        "epoch" => return Ok(-10_957),
        _ => {}
    }
    let mut c = Cur {
        b: t.as_bytes(),
        i: 0,
    };
    let (y, m, d) = ymd(&mut c).ok_or_else(|| syntax("date", s))?;
    let bc = era(&mut c);
    c.skip_space();
    if c.i != c.b.len() {
        return Err(syntax("date", s));
    }
    let days = date_days(y, m, d, bc, "date", s)?;
    i32::try_from(days).map_err(|_| syntax("date", s))
}

/// PostgreSQL `time_in` for ISO input `HH:MM[:SS[.ffffff]]` (24:00:00
/// allowed). Returns microseconds since midnight.
pub(crate) fn parse_time(s: &str) -> Result<i64, ValueError> {
    let t = s.trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8));
    let mut c = Cur {
        b: t.as_bytes(),
        i: 0,
    };
    let v = hms(&mut c, s).ok_or_else(|| syntax("time without time zone", s))??;
    if c.i != c.b.len() {
        return Err(syntax("time without time zone", s));
    }
    Ok(v)
}

/// Parses a numeric UTC offset `+HH[:MM[:SS]]`, `+HHMM` or `Z` into
/// seconds east of Greenwich.
fn offset(c: &mut Cur<'_>) -> Option<i64> {
    if c.eat(b'z') {
        return Some(0);
    }
    let neg = match c.peek() {
        Some(b'+') => false,
        Some(b'-') => true,
        _ => return None,
    };
    c.i += 1;
    let (v, n) = c.digits(4)?;
    let (h, mut m) = if n > 2 { (v / 100, v % 100) } else { (v, 0) };
    let mut sec = 0;
    if n <= 2 && c.eat(b':') {
        m = c.digits(2)?.0;
        if c.eat(b':') {
            sec = c.digits(2)?.0;
        }
    }
    if h > 15 || m > 59 || sec > 59 {
        return None;
    }
    let total = h * 3600 + m * 60 + sec;
    Some(if neg { -total } else { total })
}

/// PostgreSQL `timestamp_in`/`timestamptz_in` for ISO DateStyle input:
/// `Y-MM-DD[( |T)HH:MM[:SS[.ffffff]]][offset][ BC]`, `infinity`,
/// `-infinity`, `epoch`. With `with_tz` the offset (`+05:30`, `-04`,
/// `+00:53:28`, `Z`) is subtracted to get UTC; without an offset the text
/// is taken as UTC. Without `with_tz` an offset is ignored, as PostgreSQL
/// does. Returns µs since 2000-01-01 (`i64::MIN`/`i64::MAX` = ∓infinity).
pub(crate) fn parse_timestamp(s: &str, with_tz: bool) -> Result<i64, ValueError> {
    let ty = if with_tz {
        "timestamp with time zone"
    } else {
        "timestamp"
    };
    let t = s
        .trim_matches(|c: char| c.is_ascii() && is_pg_space(c as u8))
        .to_ascii_lowercase();
    match t.as_str() {
        "infinity" | "+infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        "epoch" => return Ok(-946_684_800_000_000),
        _ => {}
    }
    let mut c = Cur {
        b: t.as_bytes(),
        i: 0,
    };
    let bad = || syntax(ty, s);
    let (y, m, d) = ymd(&mut c).ok_or_else(bad)?;
    let mut usec = 0;
    let mut off = 0;
    if c.eat(b't') || c.eat(b' ') {
        c.skip_space();
        usec = hms(&mut c, s).ok_or_else(bad)??;
        c.skip_space();
        if matches!(c.peek(), Some(b'+' | b'-' | b'z')) {
            off = offset(&mut c).ok_or_else(bad)?;
        }
    }
    let bc = era(&mut c);
    c.skip_space();
    if c.i != c.b.len() {
        return Err(bad());
    }
    let days = date_days(y, m, d, bc, "timestamp", s)?;
    let local = i128::from(days) * i128::from(USECS_PER_DAY) + i128::from(usec);
    let utc = if with_tz {
        local - i128::from(off) * 1_000_000
    } else {
        local
    };
    if utc < i128::from(MIN_TIMESTAMP) || utc >= i128::from(END_TIMESTAMP) {
        return Err(ValueError::DatetimeOutOfRange(format!(
            "timestamp out of range: \"{s}\""
        )));
    }
    Ok(utc as i64)
}

/// ISO year-month-day with PostgreSQL's BC rendering; the era suffix is
/// returned separately because timestamps print it after the time.
fn ymd_text(days: i64) -> (String, bool) {
    let (y, m, d) = civil_from_days(days);
    let (yy, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    (format!("{yy:04}-{m:02}-{d:02}"), bc)
}

/// `HH:MM:SS[.ffffff]` with trailing fraction zeros dropped (PostgreSQL
/// `AppendSeconds` with `fillzeros`).
fn time_text(t: i64) -> String {
    let (h, rem) = (t / 3_600_000_000, t % 3_600_000_000);
    let (m, rem) = (rem / 60_000_000, rem % 60_000_000);
    let (sec, us) = (rem / 1_000_000, rem % 1_000_000);
    let mut out = format!("{h:02}:{m:02}:{sec:02}");
    if us != 0 {
        let f = format!("{us:06}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out
}

/// PostgreSQL `date_out`, ISO DateStyle: `2024-01-02`, `0044-03-15 BC`,
/// `infinity`, `-infinity`.
pub(crate) fn date_out(d: i32) -> String {
    match d {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        _ => {
            let (s, bc) = ymd_text(i64::from(d));
            if bc {
                s + " BC"
            } else {
                s
            }
        }
    }
}

/// PostgreSQL `time_out`: `03:04:05.123456`, `24:00:00`.
pub(crate) fn time_out(t: i64) -> String {
    time_text(t.clamp(0, USECS_PER_DAY))
}

/// PostgreSQL `timestamp_out`, ISO DateStyle:
/// `2024-01-02 03:04:05.123456`, `0001-01-01 00:00:00 BC`, `infinity`.
pub(crate) fn timestamp_out(ts: i64) -> String {
    match ts {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => {
            let days = ts.div_euclid(USECS_PER_DAY);
            let t = ts.rem_euclid(USECS_PER_DAY);
            let (date, bc) = ymd_text(days);
            let mut out = format!("{date} {}", time_text(t));
            if bc {
                out.push_str(" BC");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trip() {
        assert_eq!(days_from_civil(2000, 1, 1), 0);
        assert_eq!(days_from_civil(1999, 12, 31), -1);
        assert_eq!(days_from_civil(2024, 1, 2), 0x223f);
        assert_eq!(days_from_civil(-4713, 11, 24), MIN_DATE);
        for d in (-3_000_000..3_000_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(civil_from_days(END_DATE - 1), (5_874_897, 12, 31));
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(parse_date("2024-01-02"), Ok(0x223f));
        assert_eq!(parse_date(" 0001-12-31 BC "), Ok(-(0xb2408)));
        assert_eq!(date_out(-(0xb2408)), "0001-12-31 BC");
        assert!(parse_date("2023-02-29").is_err());
        assert_eq!(parse_date("2023-02-29").unwrap_err().sqlstate(), "22008");
        assert_eq!(parse_date("2023-0x-29").unwrap_err().sqlstate(), "22007");
        assert_eq!(parse_time("24:00:00"), Ok(USECS_PER_DAY));
        assert!(parse_time("24:00:01").is_err());
        assert_eq!(parse_time("12:00:00.0000005"), Ok(43_200_000_000));
        assert_eq!(parse_time("12:00:00.0000015"), Ok(43_200_000_002));
        assert_eq!(parse_time("12:00"), Ok(43_200_000_000));
        assert_eq!(time_out(43_200_500_000), "12:00:00.5");
        assert_eq!(parse_timestamp("2000-01-01T00:00:01Z", true), Ok(1_000_000));
        assert_eq!(parse_timestamp("2000-01-01 05:30:00+0530", true), Ok(0));
        assert_eq!(
            parse_timestamp("2000-01-01 05:30:00+05:30", false),
            Ok(19_800_000_000)
        );
        assert_eq!(parse_timestamp("2000-01-01", false), Ok(0));
        assert!(parse_timestamp("294277-01-01 00:00:00", false).is_err());
        assert!(parse_timestamp("2000-01-01 00:00:00 xx", false).is_err());
        assert_eq!(timestamp_out(-1), "1999-12-31 23:59:59.999999");
    }
}
