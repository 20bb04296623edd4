//! When the daemon runs next: a pure function of the schedules and `now`.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, TimeZone};

use crate::plan::Mode;

/// Parses a cron expression. The usual 5-field form (`*/15 * * * *`) is read as
/// cron reads it, with seconds = 0: weekdays 0-7 with 0 and 7 Sunday (the cron crate
/// counts 1-7 from Sunday). 6 and 7 fields are the cron crate's own (with seconds,
/// and an optional year).
pub fn parse(expr: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let full = match fields.as_slice() {
        [minute, hour, day, month, weekday] => {
            // cron runs when either day field matches (unless one starts with `*`),
            // the crate when both do.
            let open = |f: &str| f.starts_with('*') || f == "?";
            if !open(day) && !open(weekday) {
                return Err(format!(
                    "`{expr}` restricts both the day of the month and the day of the week, which \
                     cron reads as either and this schedule as both: leave one of them `*`"
                ));
            }
            let weekday = crate_weekdays(weekday).map_err(|e| format!("`{expr}`: {e}"))?;
            format!("0 {minute} {hour} {day} {month} {weekday}")
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => expr.to_owned(),
        _ => {
            return Err(format!(
                "`{expr}`: a cron expression has 5 fields (min hour day month weekday), or 6-7 with seconds"
            ));
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("`{expr}`: {e}"))
}

/// A 5-field expression's weekday field (0-7, 0 and 7 Sunday) as the cron crate
/// counts weekdays (1-7, 1 Sunday). Numbers, ranges and steps of numbers become the
/// list of days they name; `*`, `*/n` (both count from Sunday) and names stay.
fn crate_weekdays(field: &str) -> Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let day = |d: &str| -> Option<u32> { d.parse::<u32>().ok() };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (day(a), day(b)),
            // `n/step`: from n to the end of the week, 7 (Sunday) included.
            None if step.is_some() => (day(range), Some(7)),
            None => (day(range), day(range)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            out.push(item.to_owned());
            continue;
        };
        if first > 7 || last > 7 || first > last {
            return Err(format!(
                "`{item}` is not a weekday or range of weekdays (0-7, 0 and 7 Sunday)"
            ));
        }
        let step = match step {
            None => 1,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("`{item}`: the step is not a number above 0"))?,
        };
        for d in (first..=last).step_by(step) {
            let day = (d % 7 + 1).to_string();
            if !out.contains(&day) {
                out.push(day);
            }
        }
    }
    Ok(out.join(","))
}

/// The service's schedules (`[daemon]`), each optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedules<'a> {
    pub sync: Option<&'a cron::Schedule>,
    pub resync: Option<&'a cron::Schedule>,
    pub verify: Option<&'a cron::Schedule>,
}

/// What falls due at one time: a sync or a resync, a verify, or a run and then a
/// verify (which then reads what the run just pushed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub run: Option<Mode>,
    pub verify: bool,
}

/// The next time strictly after `after` that something is due, and what. When a sync
/// and a resync fall at the same time, the resync wins: it does everything a sync does.
pub fn next<Tz: TimeZone>(schedules: Schedules<'_>, after: &DateTime<Tz>) -> Option<(DateTime<Tz>, Due)> {
    let first = |s: Option<&cron::Schedule>| s.and_then(|s| first_after(s, after));
    let s = first(schedules.sync).map(|t| (t, Mode::Sync));
    let r = first(schedules.resync).map(|t| (t, Mode::Resync));
    let run = match (s, r) {
        (Some(s), Some(r)) => Some(if r.0 <= s.0 { r } else { s }),
        (s, r) => s.or(r),
    };
    let verify = first(schedules.verify);
    let at = match (&run, &verify) {
        (Some((r, _)), Some(v)) => r.clone().min(v.clone()),
        (Some((r, _)), None) => r.clone(),
        (None, Some(v)) => v.clone(),
        (None, None) => return None,
    };
    let due = Due {
        run: run.filter(|(t, _)| *t == at).map(|(_, m)| m),
        verify: verify.is_some_and(|v| v == at),
    };
    Some((at, due))
}

/// The first tick of `schedule` after `after`. A tick at a local time that comes
/// twice (the hour repeated when the clocks go back) falls at its first instant still
/// to come: chrono gives a local zone's later instant first, and taking it would skip
/// the repeated hour's first pass, and every tick in it.
fn first_after<Tz: TimeZone>(schedule: &cron::Schedule, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    let t = schedule.after(after).next()?;
    match t.timezone().from_local_datetime(&t.naive_local()) {
        LocalResult::Ambiguous(a, b) => {
            let earlier = if a < b { a } else { b };
            Some(if earlier > *after { earlier } else { t })
        }
        _ => Some(t),
    }
}

/// What fell due in `(from, to]` that `done`, the work the service did in that time,
/// does not cover: a resync tick when no resync ran, a verify tick when no verify
/// ran, and a sync tick when no run at all (a verify alone). A tick of a kind that
/// ran in that time is covered by it (`missed` counts those that fell inside it).
/// The service runs what is owed at once, once however many ticks of a kind fell.
pub fn owed<Tz: TimeZone>(
    schedules: Schedules<'_>,
    from: &DateTime<Tz>,
    to: &DateTime<Tz>,
    done: Due,
) -> Due {
    let fell = |s: Option<&cron::Schedule>| s.is_some_and(|s| first_after(s, from).is_some_and(|t| t <= *to));
    let run = if fell(schedules.resync) && done.run != Some(Mode::Resync) {
        Some(Mode::Resync)
    } else if fell(schedules.sync) && done.run.is_none() {
        Some(Mode::Sync)
    } else {
        None
    };
    Due {
        run,
        verify: fell(schedules.verify) && !done.verify,
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

    fn runs<'a>(sync: Option<&'a cron::Schedule>, resync: Option<&'a cron::Schedule>) -> Schedules<'a> {
        Schedules {
            sync,
            resync,
            verify: None,
        }
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
                next(runs(Some(&s), None), &at(now)).map(|(t, _)| t),
                Some(at(want)),
                "{expr}"
            );
        }
    }

    /// Weekdays as cron counts them: 0 and 7 Sunday, 1 Monday … 6 Saturday; a
    /// schedule that restricts both day fields is refused.
    #[test]
    fn five_field_weekdays_are_crons() {
        // 2026-11-28 is a Saturday, 2026-11-29 a Sunday, 2026-11-30 a Monday.
        let cases = [
            ("0 3 * * 1-5", "2026-11-28T04:00:00Z", "2026-11-30T03:00:00Z"),
            ("0 3 * * 1-5", "2026-11-30T04:00:00Z", "2026-12-01T03:00:00Z"),
            ("0 3 * * 6", "2026-11-27T04:00:00Z", "2026-11-28T03:00:00Z"),
            ("0 3 * * 0", "2026-11-28T04:00:00Z", "2026-11-29T03:00:00Z"),
            ("0 3 * * 7", "2026-11-28T04:00:00Z", "2026-11-29T03:00:00Z"),
            ("0 3 * * 5-7", "2026-11-29T04:00:00Z", "2026-12-04T03:00:00Z"),
            ("0 3 * * 0,6", "2026-11-27T04:00:00Z", "2026-11-28T03:00:00Z"),
            ("0 3 * * 1-5/2", "2026-11-30T04:00:00Z", "2026-12-02T03:00:00Z"),
            ("0 3 * * */2", "2026-11-28T04:00:00Z", "2026-11-29T03:00:00Z"),
            ("0 3 * * MON", "2026-11-28T04:00:00Z", "2026-11-30T03:00:00Z"),
            ("0 3 1 * *", "2026-11-28T04:00:00Z", "2026-12-01T03:00:00Z"),
        ];
        for (expr, now, want) in cases {
            let s = parse(expr).expect(expr);
            assert_eq!(
                next(runs(Some(&s), None), &at(now)).map(|(t, _)| t),
                Some(at(want)),
                "{expr} after {now}"
            );
        }
        let both = parse("0 3 1 * 2").expect_err("both day fields");
        assert!(both.contains("leave one of them `*`"), "{both}");
        // A field that starts with `*` makes cron match both, as the crate does.
        let every_other_monday = parse("0 3 */2 * 1").expect("a day field with *");
        assert_eq!(
            next(runs(Some(&every_other_monday), None), &at("2026-11-28T04:00:00Z")).map(|(t, _)| t),
            Some(at("2026-12-07T03:00:00Z")),
        );
        // `1/2`: Monday, Wednesday, Friday and Sunday (7).
        let odd = parse("0 3 * * 1/2").expect("a step from a day");
        assert_eq!(
            next(runs(Some(&odd), None), &at("2026-11-28T04:00:00Z")).map(|(t, _)| t),
            Some(at("2026-11-29T03:00:00Z")),
        );
        assert!(parse("0 3 * * 8").is_err());
        assert!(parse("0 3 * * 5-2").is_err());
    }

    /// A zone that leaves summer time (+02:00 → +01:00) at 2026-10-25T01:00:00Z, and
    /// gives an ambiguous local time's later instant first, as chrono's `Local` does.
    #[derive(Debug, Clone, Copy)]
    struct Autumn;

    impl Autumn {
        fn change() -> chrono::NaiveDateTime {
            at("2026-10-25T01:00:00Z").naive_utc()
        }
        fn offset(hours: i32) -> chrono::FixedOffset {
            chrono::FixedOffset::east_opt(hours * 3600).expect("offset")
        }
    }

    impl TimeZone for Autumn {
        type Offset = chrono::FixedOffset;
        fn from_offset(_: &chrono::FixedOffset) -> Self {
            Autumn
        }
        fn offset_from_local_date(&self, local: &chrono::NaiveDate) -> LocalResult<chrono::FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(12, 0, 0).expect("noon"))
        }
        fn offset_from_local_datetime(
            &self,
            local: &chrono::NaiveDateTime,
        ) -> LocalResult<chrono::FixedOffset> {
            let summer = *local - chrono::Duration::hours(2) < Self::change();
            let winter = *local - chrono::Duration::hours(1) >= Self::change();
            match (summer, winter) {
                (true, true) => LocalResult::Ambiguous(Self::offset(1), Self::offset(2)),
                (true, false) => LocalResult::Single(Self::offset(2)),
                (false, true) => LocalResult::Single(Self::offset(1)),
                (false, false) => LocalResult::None,
            }
        }
        fn offset_from_utc_date(&self, utc: &chrono::NaiveDate) -> chrono::FixedOffset {
            self.offset_from_utc_datetime(&utc.and_hms_opt(12, 0, 0).expect("noon"))
        }
        fn offset_from_utc_datetime(&self, utc: &chrono::NaiveDateTime) -> chrono::FixedOffset {
            Self::offset(if *utc < Self::change() { 2 } else { 1 })
        }
    }

    /// In the hour the clocks go back, a tick falls at its first instant still to
    /// come: the repeated hour is run through, not slept over.
    #[test]
    fn the_hour_repeated_when_the_clocks_go_back_is_not_skipped() {
        let every_minute = parse("* * * * *").expect("parses");
        let half_past_two = parse("30 2 * * *").expect("parses");
        let local = |s: &str| at(s).with_timezone(&Autumn);
        // 02:20+02:00, the first pass through 02:20.
        let cases = [
            (&every_minute, "2026-10-25T00:20:00Z", "2026-10-25T00:21:00Z"),
            (&half_past_two, "2026-10-25T00:20:00Z", "2026-10-25T00:30:00Z"),
            // The second pass (02:20+01:00): its own instants.
            (&every_minute, "2026-10-25T01:20:00Z", "2026-10-25T01:21:00Z"),
            // The day before: 02:30+02:00 the next day is the first 02:30.
            (&half_past_two, "2026-10-24T01:00:00Z", "2026-10-25T00:30:00Z"),
        ];
        for (schedule, now, want) in cases {
            let got = next(runs(Some(schedule), None), &local(now)).map(|(t, _)| t.with_timezone(&Utc));
            assert_eq!(got, Some(at(want)), "after {now}");
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
        let due = |mode| Due {
            run: Some(mode),
            verify: false,
        };
        assert_eq!(
            next(runs(Some(&sync), Some(&resync)), &at("2026-11-24T02:30:00Z")),
            Some((at("2026-11-24T03:00:00Z"), due(Mode::Resync)))
        );
        assert_eq!(
            next(runs(Some(&sync), Some(&resync)), &at("2026-11-24T03:30:00Z")),
            Some((at("2026-11-24T04:00:00Z"), due(Mode::Sync)))
        );
        assert_eq!(next(runs(None, None), &at("2026-11-24T03:30:00Z")), None);
    }

    /// (sync, verify, now, expected time, expected run, expected verify)
    #[test]
    fn a_verify_runs_alone_or_after_a_run_due_at_the_same_time() {
        let cases = [
            (
                Some("0 * * * *"),
                "30 * * * *",
                "2026-11-24T02:10:00Z",
                "2026-11-24T02:30:00Z",
                None,
                true,
            ),
            (
                Some("0 * * * *"),
                "30 * * * *",
                "2026-11-24T02:40:00Z",
                "2026-11-24T03:00:00Z",
                Some(Mode::Sync),
                false,
            ),
            (
                Some("0 * * * *"),
                "0 */2 * * *",
                "2026-11-24T03:10:00Z",
                "2026-11-24T04:00:00Z",
                Some(Mode::Sync),
                true,
            ),
            (
                None,
                "0 4 * * *",
                "2026-11-24T03:10:00Z",
                "2026-11-24T04:00:00Z",
                None,
                true,
            ),
        ];
        for (sync, verify, now, when, run, verifies) in cases {
            let sync = sync.map(|s| parse(s).expect("sync"));
            let verify = parse(verify).expect("verify");
            let schedules = Schedules {
                sync: sync.as_ref(),
                resync: None,
                verify: Some(&verify),
            };
            assert_eq!(
                next(schedules, &at(now)),
                Some((
                    at(when),
                    Due {
                        run,
                        verify: verifies
                    }
                )),
                "{now}"
            );
        }
    }

    /// A resync or a verify that fell due in a debounce, in a run of another kind, or
    /// at the moment a directory change won the wait, is owed; a sync is owed only
    /// when nothing ran.
    #[test]
    fn ticks_passed_by_other_work_are_owed_once() {
        let sync = parse("*/5 * * * *").expect("sync");
        let resync = parse("0 3 * * *").expect("resync");
        let verify = parse("30 * * * *").expect("verify");
        let all = Schedules {
            sync: Some(&sync),
            resync: Some(&resync),
            verify: Some(&verify),
        };
        let owed_in = |from: &str, to: &str, run, verify| owed(all, &at(from), &at(to), Due { run, verify });
        let due = |run, verify| Due { run, verify };
        // A watched sync from 02:59:58 to 03:00:02 passed the resync at 03:00.
        assert_eq!(
            owed_in(
                "2026-11-24T02:59:58Z",
                "2026-11-24T03:00:02Z",
                Some(Mode::Sync),
                false
            ),
            due(Some(Mode::Resync), false)
        );
        // The resync itself covers it, and the sync tick at 03:00 with it.
        assert_eq!(
            owed_in(
                "2026-11-24T02:59:58Z",
                "2026-11-24T03:00:02Z",
                Some(Mode::Resync),
                false
            ),
            due(None, false)
        );
        // A sync from 02:29 to 02:33 passed the verify at 02:30 and the sync at 02:30.
        assert_eq!(
            owed_in(
                "2026-11-24T02:29:00Z",
                "2026-11-24T02:33:00Z",
                Some(Mode::Sync),
                false
            ),
            due(None, true)
        );
        // A verify alone from 02:30 to 02:36 passed the sync at 02:35.
        assert_eq!(
            owed_in("2026-11-24T02:30:00Z", "2026-11-24T02:36:00Z", None, true),
            due(Some(Mode::Sync), false)
        );
        // Nothing fell due.
        assert_eq!(
            owed_in("2026-11-24T02:31:00Z", "2026-11-24T02:34:59Z", None, false),
            due(None, false)
        );
        // A tick at `from` was accounted for before; one at `to` is owed.
        assert_eq!(
            owed_in("2026-11-24T02:30:00Z", "2026-11-24T02:35:00Z", None, false),
            due(Some(Mode::Sync), false)
        );
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
