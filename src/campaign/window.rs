//! Calling windows: the hours and weekdays a lead may be called, in the callee's own time zone,
//! and when a closed window next opens, correctly across daylight-saving transitions.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveTime, Offset, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// How far ahead `next_open` looks. A window with an allowed day opens within a week; the rest
/// is margin for a day swallowed by a time-zone change (Samoa skipped 2011-12-30).
const SCAN_DAYS: u32 = 366;

/// Offset changes are looked for at this step; no zone changes its offset twice within it.
const TRANSITION_STEP: Duration = Duration::hours(6);

/// Local hours `[start, end)` on the allowed weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
    /// Indexed by `Weekday::num_days_from_monday()`.
    pub days: [bool; 7],
}

impl Default for CallingWindow {
    /// 09:00–20:00, Monday to Saturday: inside the hours US rules (TCPA: 8am–9pm) and most
    /// European customs allow, and never on Sunday.
    fn default() -> Self {
        Self {
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(20, 0, 0).unwrap(),
            days: [true, true, true, true, true, true, false],
        }
    }
}

impl CallingWindow {
    /// `hours` like "09:00-20:00" and `days` like `["mon-fri", "sat"]`. Error messages are
    /// phrased to follow the name of the setting ("window.hours must …").
    pub fn parse(hours: &str, days: &[String]) -> Result<Self, String> {
        let (start, end) = parse_hours(hours)?;
        Ok(Self {
            start,
            end,
            days: parse_days(days)?,
        })
    }

    /// Whether `at` falls in the window in `tz`: local weekday allowed and start <= local
    /// time < end.
    pub fn is_open(&self, tz: Tz, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&tz);
        self.days[local.weekday().num_days_from_monday() as usize]
            && self.start <= local.time()
            && local.time() < self.end
    }

    /// `at` when open, else the first instant after `at` at which the window opens. When the
    /// local opening time falls in a spring-forward gap, that is the end of the gap; when it
    /// occurs twice (fall-back), the earlier occurrence that is still ahead. None only when no
    /// day is allowed.
    pub fn next_open(&self, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.days.contains(&true) {
            return None;
        }
        if self.is_open(tz, at) {
            return Some(at);
        }
        // The window can only open where local time reaches `start` or where the UTC offset
        // changes (a gap jumping over `start`, or a fall-back jumping back from past `end`).
        // Day by day, the earliest such instant that is open is the answer.
        let mut lo = at;
        for _ in 0..SCAN_DAYS {
            let hi = lo + Duration::days(1);
            let first = self
                .start_instants(tz, lo, hi)
                .chain(offset_changes(tz, lo, hi))
                .filter(|&t| lo < t && t <= hi && self.is_open(tz, t))
                .min();
            if first.is_some() {
                return first;
            }
            lo = hi;
        }
        None
    }

    /// Every instant whose local time is exactly `start`, on the local dates around `(lo, hi]`
    /// (a day earlier too: a fall-back across midnight can return to the previous date).
    fn start_instants(
        &self,
        tz: Tz,
        lo: DateTime<Utc>,
        hi: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> {
        let first = lo.with_timezone(&tz).date_naive().pred_opt();
        let last = hi.with_timezone(&tz).date_naive();
        let start = self.start;
        first
            .into_iter()
            .flat_map(|d| d.iter_days())
            .take_while(move |d| *d <= last)
            .flat_map(move |d| match tz.from_local_datetime(&d.and_time(start)) {
                LocalResult::Single(t) => vec![t],
                LocalResult::Ambiguous(earlier, later) => vec![earlier, later],
                LocalResult::None => vec![],
            })
            .map(|t| t.with_timezone(&Utc))
    }

    /// "09:00–20:00 Mon–Sat", for messages.
    pub fn describe(&self) -> String {
        let end = if self.end == END_OF_DAY {
            "24:00".to_string()
        } else {
            self.end.format("%H:%M").to_string()
        };
        format!(
            "{}–{end} {}",
            self.start.format("%H:%M"),
            describe_days(&self.days)
        )
    }
}

/// The instants in `(lo, hi]` at which `tz` changes its UTC offset.
fn offset_changes(tz: Tz, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let offset = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
    let mut changes = Vec::new();
    let mut a = lo;
    while a < hi {
        let b = (a + TRANSITION_STEP).min(hi);
        if offset(a) != offset(b) {
            // Bisect on whole seconds: tz database transitions are whole seconds.
            let (mut before, mut after) = (a.timestamp(), b.timestamp());
            while after - before > 1 {
                let mid = before + (after - before) / 2;
                let t = DateTime::from_timestamp(mid, 0).unwrap_or(b);
                if offset(t) == offset(a) {
                    before = mid;
                } else {
                    after = mid;
                }
            }
            changes.extend(DateTime::from_timestamp(after, 0));
        }
        a = b;
    }
    changes
}

/// "09:00-20:00" (also "9:00 - 20:00", with an en dash) into start and end.
/// The last instant of a day: a window ending at "24:00".
const END_OF_DAY: NaiveTime = match NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999) {
    Some(t) => t,
    None => panic!("a valid time"),
};

pub(super) fn parse_hours(hours: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let malformed = || format!("must look like \"09:00-20:00\" (24-hour clock), got \"{hours}\"");
    let (start, end) = hours.split_once(['-', '–']).ok_or_else(malformed)?;
    let time = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| malformed());
    // "24:00" closes the window at midnight, so "00:00-24:00" is the whole day.
    let end = if end.trim() == "24:00" {
        END_OF_DAY
    } else {
        time(end)?
    };
    let start = time(start)?;
    if end <= start {
        return Err(format!(
            "must end after it starts, got \"{hours}\" (overnight windows are not supported)"
        ));
    }
    Ok((start, end))
}

/// Day names ("mon", "Monday") and ranges ("mon-fri", which may wrap: "fri-mon") into the
/// allowed weekdays.
pub(super) fn parse_days(days: &[String]) -> Result<[bool; 7], String> {
    if days.is_empty() {
        return Err("must name at least one day, like [\"mon-fri\"]".into());
    }
    let mut allowed = [false; 7];
    for entry in days {
        let (first, last) = match entry.split_once(['-', '–']) {
            Some((a, b)) => (day_index(a, entry)?, day_index(b, entry)?),
            None => {
                let d = day_index(entry, entry)?;
                (d, d)
            }
        };
        let mut d = first;
        loop {
            allowed[d] = true;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(allowed)
}

fn day_index(name: &str, entry: &str) -> Result<usize, String> {
    let name = name.trim().to_lowercase();
    DAY_NAMES
        .iter()
        .position(|(short, long)| name == *short || name == *long)
        .ok_or_else(|| {
            format!(
                "has an unknown day in \"{entry}\": use mon, tue, wed, thu, fri, sat, sun \
                 (or full names) and ranges like \"mon-fri\""
            )
        })
}

/// "Mon–Fri", "Mon, Wed, Fri", "Mon–Wed, Sat".
fn describe_days(days: &[bool; 7]) -> String {
    let name = |i: usize| {
        Weekday::try_from(i as u8)
            .map(|d| d.to_string())
            .unwrap_or_default()
    };
    let mut runs = Vec::new();
    let mut i = 0;
    while i < 7 {
        if !days[i] {
            i += 1;
            continue;
        }
        let first = i;
        while i + 1 < 7 && days[i + 1] {
            i += 1;
        }
        runs.push(match i - first {
            0 => name(first),
            1 => format!("{}, {}", name(first), name(i)),
            _ => format!("{}–{}", name(first), name(i)),
        });
        i += 1;
    }
    if runs.is_empty() {
        "no days".into()
    } else {
        runs.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York;
    use chrono_tz::Australia::Lord_Howe;
    use chrono_tz::Europe::London;
    use chrono_tz::Pacific::Chatham;

    fn window(hours: &str, days: &[&str]) -> CallingWindow {
        let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
        CallingWindow::parse(hours, &days).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Checks `next_open` at every minute of `days` days from `from` against a brute-force scan
    /// of a minute grid reaching a week and a half further.
    fn check_against_grid(w: &CallingWindow, tz: Tz, from: DateTime<Utc>, days: i64) {
        let minute = |i: i64| from + Duration::minutes(i);
        let checked = days * 24 * 60;
        let grid = checked + 10 * 24 * 60;
        // first_open[i]: the first open grid minute at or after minute i.
        let mut first_open = vec![None; grid as usize + 1];
        for i in (0..grid).rev() {
            first_open[i as usize] = if w.is_open(tz, minute(i)) {
                Some(minute(i))
            } else {
                first_open[i as usize + 1]
            };
        }
        for i in 0..checked {
            let at = minute(i);
            let next = w.next_open(tz, at).unwrap();
            assert!(next >= at, "{w:?} {tz} at {at}: {next} is earlier");
            assert!(w.is_open(tz, next), "{w:?} {tz} at {at}: closed at {next}");
            let bound = first_open[i as usize].unwrap_or(minute(grid));
            assert!(
                next <= bound,
                "{w:?} {tz} at {at}: open at {bound}, before {next}"
            );
        }
    }

    #[test]
    fn parses_hours_in_several_spellings() {
        let w = window("9:00 - 20:00", &["mon"]);
        assert_eq!(w.start, NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        assert_eq!(w.end, NaiveTime::from_hms_opt(20, 0, 0).unwrap());
        assert_eq!(
            window("09:00–17:30", &["mon"]).describe(),
            "09:00–17:30 Mon"
        );
    }

    #[test]
    fn rejects_bad_hours() {
        for bad in [
            "",
            "9-5",
            "09:00",
            "9am-5pm",
            "25:00-26:00",
            "09:00-20:00-21:00",
        ] {
            assert!(parse_hours(bad).is_err(), "{bad}");
        }
        let err = parse_hours("20:00-09:00").unwrap_err();
        assert!(err.contains("overnight"), "{err}");
        assert!(parse_hours("09:00-09:00").is_err());
    }

    #[test]
    fn parses_days_names_and_ranges() {
        let days =
            |list: &[&str]| parse_days(&list.iter().map(|d| d.to_string()).collect::<Vec<_>>());
        assert_eq!(
            days(&["mon-fri"]).unwrap(),
            [true, true, true, true, true, false, false]
        );
        assert_eq!(
            days(&["Monday", "WED", "friday"]).unwrap(),
            [true, false, true, false, true, false, false]
        );
        assert_eq!(
            days(&["fri - mon"]).unwrap(),
            [true, false, false, false, true, true, true]
        );
        assert_eq!(
            days(&["sun"]).unwrap(),
            [false, false, false, false, false, false, true]
        );
        assert!(days(&[]).unwrap_err().contains("at least one day"));
        assert!(days(&["tues"]).unwrap_err().contains("tues"));
        assert!(days(&["mon-"]).is_err());
        assert!(days(&[""]).is_err());
    }

    #[test]
    fn describes_days() {
        assert_eq!(CallingWindow::default().describe(), "09:00–20:00 Mon–Sat");
        assert_eq!(
            window("08:00-12:00", &["mon", "wed", "fri"]).describe(),
            "08:00–12:00 Mon, Wed, Fri"
        );
        assert_eq!(
            window("08:00-12:00", &["sat-mon", "wed"]).describe(),
            "08:00–12:00 Mon, Wed, Sat, Sun"
        );
        assert_eq!(
            window("08:00-12:00", &["mon-wed", "fri"]).describe(),
            "08:00–12:00 Mon–Wed, Fri"
        );
        let none = CallingWindow {
            days: [false; 7],
            ..CallingWindow::default()
        };
        assert_eq!(none.describe(), "09:00–20:00 no days");
    }

    #[test]
    fn start_is_inclusive_and_end_exclusive() {
        let w = CallingWindow::default();
        // Tuesday 2026-03-03 in New York (EST, -05:00).
        let start = utc("2026-03-03T09:00:00-05:00");
        let end = utc("2026-03-03T20:00:00-05:00");
        assert!(w.is_open(New_York, start));
        assert_eq!(w.next_open(New_York, start), Some(start));
        assert!(!w.is_open(New_York, start - Duration::nanoseconds(1)));
        assert!(w.is_open(New_York, end - Duration::nanoseconds(1)));
        assert!(!w.is_open(New_York, end));
        assert_eq!(
            w.next_open(New_York, end),
            Some(utc("2026-03-04T09:00:00-05:00"))
        );
        assert_eq!(
            w.next_open(New_York, utc("2026-03-03T06:12:34.5-05:00")),
            Some(start)
        );
    }

    #[test]
    fn skips_disallowed_days() {
        let w = CallingWindow::default();
        // Saturday evening 2026-03-07 → Monday morning (Sunday closed).
        let sat = utc("2026-03-07T21:00:00-05:00");
        assert_eq!(
            w.next_open(New_York, sat),
            Some(utc("2026-03-09T09:00:00-04:00"))
        );
        let weekdays = window("10:00-16:00", &["mon-fri"]);
        let fri = utc("2026-06-05T16:00:00+01:00");
        assert_eq!(
            weekdays.next_open(London, fri),
            Some(utc("2026-06-08T10:00:00+01:00"))
        );
        // The callee's weekday counts, not UTC's: Saturday 00:30 in London is Friday in UTC.
        let sat_london = utc("2026-06-05T23:30:00Z");
        assert!(!window("00:00-23:59", &["mon-fri"]).is_open(London, sat_london));
        // Monday 10:30 in Chatham is still Sunday in UTC.
        let mon_chatham = utc("2026-06-07T22:00:00Z");
        assert!(window("10:00-11:00", &["mon"]).is_open(Chatham, mon_chatham));
    }

    #[test]
    fn no_allowed_day_never_opens() {
        let w = CallingWindow {
            days: [false; 7],
            ..CallingWindow::default()
        };
        assert_eq!(w.next_open(London, utc("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn spring_forward_gap_opens_at_its_end() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist.
        let w = window("02:30-04:00", &["sun"]);
        let at = utc("2026-03-08T00:00:00-05:00");
        let opens = utc("2026-03-08T03:00:00-04:00");
        assert_eq!(w.next_open(New_York, at), Some(opens));
        assert!(!w.is_open(New_York, opens - Duration::seconds(1)));
        // London, 2026-03-29: 01:00 GMT jumps to 02:00 BST.
        let w = window("01:30-09:00", &["sun"]);
        assert_eq!(
            w.next_open(London, utc("2026-03-28T23:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        // A window entirely inside the gap does not open that day; the next Sunday it does.
        let w = window("02:00-02:45", &["sun"]);
        assert_eq!(
            w.next_open(New_York, at),
            Some(utc("2026-03-15T02:00:00-04:00"))
        );
    }

    #[test]
    fn fall_back_opens_at_the_earlier_time_and_reopens() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let w = window("01:30-03:00", &["sun"]);
        let first = utc("2026-11-01T01:30:00-04:00");
        let second = utc("2026-11-01T01:30:00-05:00");
        assert_eq!(
            w.next_open(New_York, utc("2026-11-01T00:00:00-04:00")),
            Some(first)
        );
        // Local time falls back to 01:00 < 01:30, so the window closes and opens again.
        let closed = utc("2026-11-01T01:10:00-05:00");
        assert!(!w.is_open(New_York, closed));
        assert_eq!(w.next_open(New_York, closed), Some(second));
        // A window ending at 01:30 reopens at the fall-back instant itself.
        let w = window("00:00-01:30", &["sun"]);
        let after_end = utc("2026-11-01T01:45:00-04:00");
        assert_eq!(
            w.next_open(New_York, after_end),
            Some(utc("2026-11-01T01:00:00-05:00"))
        );
        // London, 2026-10-25: 02:00 BST falls back to 01:00 GMT.
        let w = window("01:30-09:00", &["sun"]);
        assert_eq!(
            w.next_open(London, utc("2026-10-24T22:00:00Z")),
            Some(utc("2026-10-25T01:30:00+01:00"))
        );
    }

    #[test]
    fn half_hour_and_odd_offsets() {
        // Lord Howe, 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11:00).
        let w = window("02:15-05:00", &["sun"]);
        assert_eq!(
            w.next_open(Lord_Howe, utc("2026-10-03T12:00:00Z")),
            Some(utc("2026-10-04T02:30:00+11:00"))
        );
        // Lord Howe, 2026-04-05: 02:00 (+11:00) falls back to 01:30 (+10:30).
        let w = window("01:45-05:00", &["sun"]);
        assert_eq!(
            w.next_open(Lord_Howe, utc("2026-04-04T12:00:00Z")),
            Some(utc("2026-04-05T01:45:00+11:00"))
        );
        // Chatham, 2026-09-27: 02:45 (+12:45) jumps to 03:45 (+13:45).
        let w = window("03:00-06:00", &["sun"]);
        assert_eq!(
            w.next_open(Chatham, utc("2026-09-26T10:00:00Z")),
            Some(utc("2026-09-27T03:45:00+13:45"))
        );
        assert_eq!(
            CallingWindow::default().next_open(Chatham, utc("2026-06-01T00:00:00Z")),
            Some(utc("2026-06-01T12:45:00+12:45"))
        );
    }

    #[test]
    fn next_open_matches_a_minute_grid_around_transitions() {
        let windows = [
            CallingWindow::default(),
            window("02:30-04:00", &["mon-sun"]),
            window("01:30-03:00", &["mon-sun"]),
            window("00:00-01:30", &["mon-sun"]),
            window("01:00-02:00", &["sat-sun"]),
            window("02:00-02:30", &["sun"]),
            window("00:00-23:59", &["sun"]),
        ];
        // Two days around each transition.
        let cases = [
            (New_York, "2026-03-07T12:00:00Z"),
            (New_York, "2026-10-31T12:00:00Z"),
            (London, "2026-03-28T12:00:00Z"),
            (London, "2026-10-24T12:00:00Z"),
            (Lord_Howe, "2026-10-03T00:00:00Z"),
            (Lord_Howe, "2026-04-04T00:00:00Z"),
            (Chatham, "2026-09-26T00:00:00Z"),
            (Chatham, "2026-04-04T00:00:00Z"),
        ];
        for (tz, from) in cases {
            for w in &windows {
                check_against_grid(w, tz, utc(from), 2);
            }
        }
    }

    #[test]
    fn next_open_is_open_and_an_opening_across_a_year() {
        let windows = [
            CallingWindow::default(),
            window("02:30-04:00", &["sun"]),
            window("01:30-02:30", &["sat", "sun"]),
        ];
        for tz in [New_York, London, Lord_Howe, Chatham] {
            for w in &windows {
                let mut at = utc("2026-01-01T00:00:00Z");
                while at < utc("2027-01-01T00:00:00Z") {
                    let next = w.next_open(tz, at).unwrap();
                    assert!(
                        next >= at && w.is_open(tz, next),
                        "{w:?} {tz} at {at}: {next}"
                    );
                    // Either already open, or it really just opened.
                    assert!(
                        next == at || !w.is_open(tz, next - Duration::seconds(1)),
                        "{w:?} {tz} at {at}: {next} was open before"
                    );
                    assert!(
                        next - at <= Duration::days(14),
                        "{w:?} {tz} at {at}: {next}"
                    );
                    at += Duration::minutes(7 * 60 + 13);
                }
            }
        }
    }

    #[test]
    fn sample_days_have_no_opening_before_next_open() {
        for (tz, day) in [
            (New_York, "2026-07-04T00:00:00Z"),
            (London, "2026-01-10T00:00:00Z"),
            (Chatham, "2026-12-24T00:00:00Z"),
        ] {
            check_against_grid(&CallingWindow::default(), tz, utc(day), 1);
        }
    }

    #[test]
    fn a_window_to_24_00_covers_the_whole_day() {
        let w = CallingWindow::parse("00:00-24:00", &["mon-sun".to_string()]).unwrap();
        assert_eq!(w.describe(), "00:00–24:00 Mon–Sun");
        let tz = chrono_tz::America::New_York;
        for minute in 0..(48 * 60) {
            let at = Utc.with_ymd_and_hms(2026, 3, 7, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(minute)
                + chrono::Duration::seconds(59);
            assert!(w.is_open(tz, at), "{at}");
        }
    }
}
