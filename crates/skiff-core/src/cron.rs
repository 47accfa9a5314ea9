//! CronJob schedules: five cron fields or an `@hourly`-style shorthand,
//! read by the API server (a schedule that does not parse is refused) and
//! by the CronJob controller.

/// Parses a schedule, accepting the `@hourly`-style shorthands.
pub fn parse(schedule: &str) -> Result<croner::Cron, String> {
    let expanded = match schedule.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    if expanded.split_whitespace().count() != 5 {
        return Err(format!("{schedule:?} is not a five-field cron schedule"));
    }
    croner::Cron::new(expanded)
        .parse()
        .map_err(|e| format!("{schedule:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn five_fields_or_a_shorthand() {
        assert!(parse("@hourly").is_ok());
        assert!(parse("*/5 * * * 1-5").is_ok());
        assert!(parse("* * *").is_err());
        assert!(parse("61 * * * *").is_err());
    }
}
