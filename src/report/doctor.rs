//! The view of `dialer doctor`: one line per check on stdout — a mark, the setting, what was
//! found and what to do — then a count; or one JSON object per check with `--json`.

use super::{Printer, Style};
use crate::doctor::{Check, Report, Status};

pub(crate) fn show(report: &Report, printer: &Printer) {
    for check in &report.checks {
        match printer.style() {
            Style::Json => {
                if let Ok(json) = serde_json::to_string(check) {
                    printer.out(&json);
                }
            }
            Style::Live | Style::Plain => printer.out(&line(check)),
        }
    }
    if printer.style() != Style::Json {
        printer.out(&summary(report));
    }
}

/// `✘ TWILIO_AUTH_TOKEN: Twilio refused the credentials (20003) — copy …`.
pub(crate) fn line(check: &Check) -> String {
    let mark = match check.status {
        Status::Pass => "✔",
        Status::Warn => "⚠",
        Status::Fail => "✘",
        Status::Skipped => "–",
    };
    let mut text = match check.status {
        Status::Skipped => format!("{mark} {}: skipped, {}", check.setting, check.detail),
        _ => format!("{mark} {}: {}", check.setting, check.detail),
    };
    if let Some(fix) = &check.fix {
        text.push_str(" — ");
        text.push_str(fix);
    }
    text
}

/// `1 check failed, 2 skipped, 1 warning: fix the ✘ lines and run dialer doctor again`.
pub(crate) fn summary(report: &Report) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let failed = report.count(Status::Fail);
    let warned = report.count(Status::Warn);
    let skipped = report.count(Status::Skipped);
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(plural(failed, "check failed", "checks failed"));
    }
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    if warned > 0 {
        parts.push(plural(warned, "warning", "warnings"));
    }
    if failed > 0 {
        format!(
            "{}: fix the ✘ lines and run dialer doctor again",
            parts.join(", ")
        )
    } else if parts.is_empty() {
        "all checks passed".into()
    } else {
        format!("ready to call ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::CheckId;

    fn check(status: Status, fix: Option<&str>) -> Check {
        Check {
            check: CheckId::TwilioAccount,
            setting: "TWILIO_AUTH_TOKEN".into(),
            status,
            detail: "Twilio refused the credentials (20003)".into(),
            fix: fix.map(str::to_string),
        }
    }

    #[test]
    fn a_line_has_a_mark_the_setting_what_was_found_and_what_to_do() {
        assert_eq!(
            line(&check(
                Status::Fail,
                Some("copy the Auth Token from console.twilio.com")
            )),
            "✘ TWILIO_AUTH_TOKEN: Twilio refused the credentials (20003) — copy the Auth Token from console.twilio.com"
        );
        assert_eq!(
            line(&check(Status::Pass, None)),
            "✔ TWILIO_AUTH_TOKEN: Twilio refused the credentials (20003)"
        );
        assert!(line(&check(Status::Warn, None)).starts_with("⚠ "));
        let skipped = Check {
            check: CheckId::FromNumber,
            setting: "TWILIO_FROM_NUMBER".into(),
            status: Status::Skipped,
            detail: "needs the Twilio account check to pass".into(),
            fix: None,
        };
        assert_eq!(
            line(&skipped),
            "– TWILIO_FROM_NUMBER: skipped, needs the Twilio account check to pass"
        );
    }

    #[test]
    fn the_summary_counts_failures_skips_and_warnings() {
        let report = |statuses: &[Status]| Report {
            checks: statuses.iter().map(|s| check(*s, None)).collect(),
        };
        assert_eq!(
            summary(&report(&[Status::Pass, Status::Pass])),
            "all checks passed"
        );
        assert_eq!(
            summary(&report(&[Status::Pass, Status::Warn])),
            "ready to call (1 warning)"
        );
        assert_eq!(
            summary(&report(&[
                Status::Fail,
                Status::Skipped,
                Status::Skipped,
                Status::Warn,
                Status::Warn
            ])),
            "1 check failed, 2 skipped, 2 warnings: fix the ✘ lines and run dialer doctor again"
        );
    }

    #[test]
    fn json_lines_name_the_check_and_its_status() {
        let json = serde_json::to_value(check(Status::Skipped, None)).unwrap();
        assert_eq!(json["check"], "twilio_account");
        assert_eq!(json["status"], "skipped");
        assert_eq!(json["setting"], "TWILIO_AUTH_TOKEN");
    }
}
