//! When the daemon runs next: a pure function of the schedules and `now`.

use std::str::FromStr;

use chrono::{DateTime, TimeZone};

use crate::plan::Mode;

/// Parses a cron expression. The usual 5-field form (`*/15 * * * *`) is accepted and
/// read with seconds = 0; 6 and 7 fields are the cron crate's own (with seconds, and
/// an optional year).
pub fn parse(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_owned(),
        _ => {
            return Err(format!(
                "`{expr}`: a cron expression has 5 fields (min hour day month weekday), or 6-7 with seconds"
            ));
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("`{expr}`: {e}"))
}

/// The next run strictly after `after`, and whether it is a sync or a resync. When
/// both fall at the same time, the resync wins: it does everything a sync does.
pub fn next<Tz: TimeZone>(
    sync: Option<&cron::Schedule>,
    resync: Option<&cron::Schedule>,
    after: &DateTime<Tz>,
) -> Option<(DateTime<Tz>, Mode)> {
    let s = sync.and_then(|s| s.after(after).next()).map(|t| (t, Mode::Sync));
    let r = resync
        .and_then(|s| s.after(after).next())
        .map(|t| (t, Mode::Resync));
    match (s, r) {
        (Some(s), Some(r)) => Some(if r.0 <= s.0 { r } else { s }),
        (s, r) => s.or(r),
    }
}

/// Ticks of `schedule` strictly between `from` and `to`: runs skipped because the
/// previous one overran.
pub fn missed<Tz: TimeZone>(schedule: &cron::Schedule, from: &DateTime<Tz>, to: &DateTime<Tz>) -> usize {
    schedule.after(from).take_while(|t| t < to).take(10_000).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn five_fields_and_seconds() {
        let cases = [
            ("*/15 * * * *", "2026-11-24T10:07:30Z", "2026-11-24T10:15:00Z"),
            ("0 3 * * *", "2026-11-24T10:07:30Z", "2026-11-25T03:00:00Z"),
            ("*/2 * * * * *", "2026-11-24T10:07:31Z", "2026-11-24T10:07:32Z"),
        ];
        for (expr, now, want) in cases {
            let s = parse(expr).expect("parses");
            assert_eq!(
                next(Some(&s), None, &at(now)).map(|(t, _)| t),
                Some(at(want)),
                "{expr}"
            );
        }
    }

    #[test]
    fn bad_expressions_say_why() {
        assert!(parse("* * *").expect_err("3 fields").contains("5 fields"));
        assert!(parse("61 * * * *").is_err());
    }

    #[test]
    fn resync_wins_a_tie_and_the_earliest_wins_otherwise() {
        let sync = parse("0 * * * *").expect("sync");
        let resync = parse("0 3 * * *").expect("resync");
        assert_eq!(
            next(Some(&sync), Some(&resync), &at("2026-11-24T02:30:00Z")),
            Some((at("2026-11-24T03:00:00Z"), Mode::Resync))
        );
        assert_eq!(
            next(Some(&sync), Some(&resync), &at("2026-11-24T03:30:00Z")),
            Some((at("2026-11-24T04:00:00Z"), Mode::Sync))
        );
        assert_eq!(next(None, None, &at("2026-11-24T03:30:00Z")), None);
    }

    #[test]
    fn overrun_counts_missed_ticks() {
        let s = parse("*/5 * * * *").expect("parses");
        assert_eq!(
            missed(&s, &at("2026-11-24T10:00:00Z"), &at("2026-11-24T10:17:00Z")),
            3
        );
        assert_eq!(
            missed(&s, &at("2026-11-24T10:00:00Z"), &at("2026-11-24T10:04:00Z")),
            0
        );
    }
}
