//! A Job's spec, checked as upstream's batch validation checks it: counts,
//! completion mode, the pod failure, success and replacement policies,
//! and the restart policy its pods may have.

use serde_json::Value;

use crate::completion_indexes::Indexes;
use crate::status::Cause;

/// Indexed Jobs may run at most this many pods at once.
const MAX_INDEXED_PARALLELISM: i64 = 100_000;
const MAX_FAILED_INDEXES: i64 = 100_000;
/// Past this many completions, a per-index backoff needs tighter bounds.
const COMPLETIONS_SOFT_LIMIT: i64 = 100_000;
const HIGH_COMPLETIONS_LIMIT: i64 = 10_000;
const MAX_RULES: usize = 20;
const MAX_EXIT_CODES: usize = 255;
const MAX_CONDITION_PATTERNS: usize = 20;
const MAX_SUCCEEDED_INDEXES_LEN: usize = 64 * 1024;

/// The spec of a Job (`at` = `spec`) or of a CronJob's template.
pub fn spec(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let field = |name: &str| format!("{at}.{name}");
    for name in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        if spec[name].as_i64().is_some_and(|n| n < 0) {
            let why = "must be greater than or equal to 0";
            causes.push(Cause::invalid_value(field(name), &spec[name], why));
        }
    }
    let per_index = !spec["backoffLimitPerIndex"].is_null();
    let max_failed = &spec["maxFailedIndexes"];
    if !max_failed.is_null() && !per_index {
        let why = "when maxFailedIndexes is specified";
        causes.push(Cause::required_because(field("backoffLimitPerIndex"), why));
    }
    let indexed = spec["completionMode"] == "Indexed";
    match spec["completionMode"].as_str() {
        None | Some("NonIndexed" | "Indexed") => {}
        Some(other) => causes.push(Cause::unsupported(
            field("completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    if indexed {
        indexed_bounds(spec, at, causes);
    } else {
        for name in ["backoffLimitPerIndex", "maxFailedIndexes"] {
            if !spec[name].is_null() {
                let why = "requires indexed completion mode";
                causes.push(Cause::invalid_value(field(name), &spec[name], why));
            }
        }
    }
    if !spec["podFailurePolicy"].is_null() {
        failure_policy(spec, &field("podFailurePolicy"), causes);
    }
    let success = &spec["successPolicy"];
    if !success.is_null() {
        if indexed {
            success_policy(spec, &field("successPolicy"), causes);
        } else {
            let why = "requires indexed completion mode";
            causes.push(Cause::invalid_value(field("successPolicy"), success, why));
        }
    }
    if let Some(policy) = spec["podReplacementPolicy"].as_str() {
        let allowed: &[&str] = if spec["podFailurePolicy"].is_null() {
            &["Failed", "TerminatingOrFailed"]
        } else {
            &["Failed"]
        };
        if !allowed.contains(&policy) {
            causes.push(Cause::unsupported(
                field("podReplacementPolicy"),
                policy,
                allowed,
            ));
        }
    }
    let restart = &field("template.spec.restartPolicy");
    match spec["template"]["spec"]["restartPolicy"].as_str() {
        None | Some("" | "Always") => causes.push(Cause::required_because(
            restart,
            r#"valid values: "OnFailure", "Never""#,
        )),
        Some("OnFailure") if !spec["podFailurePolicy"].is_null() => {
            let why = r#"only "Never" is supported when podFailurePolicy is specified"#;
            causes.push(Cause::invalid(restart, "OnFailure", why));
        }
        // Any other value is the pod template's own error.
        Some(_) => {}
    }
}

/// An indexed Job's name must leave room for its pods' hostnames
/// (`<name>-<index>`).
pub fn name(name: &str, spec: &Value, causes: &mut Vec<Cause>) {
    let Some(completions) = spec["completions"].as_i64().filter(|&c| c > 0) else {
        return;
    };
    if spec["completionMode"] != "Indexed" {
        return;
    }
    let hostname = format!("{name}-{}", completions - 1);
    if !super::is_dns_label(&hostname) {
        let why = format!("will not able to create pod with invalid DNS label: {hostname}");
        causes.push(Cause::invalid("metadata.name", name, why));
    }
}

/// A CronJob's own fields (its template is a Job's spec); `created`
/// when it is new.
pub fn cron_job(name: &str, spec: &Value, created: bool, causes: &mut Vec<Cause>) {
    // Its Jobs are named after it with an 11-character suffix.
    if created && name.len() > 52 {
        let why = "must be no more than 52 characters";
        causes.push(Cause::invalid("metadata.name", name, why));
    }
    match spec["schedule"].as_str().unwrap_or_default() {
        "" => causes.push(Cause::required("spec.schedule")),
        // The zone goes in `timeZone`, as upstream requires.
        s if s.contains("TZ") => causes.push(Cause::invalid(
            "spec.schedule",
            s,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        )),
        s => {
            if let Err(e) = crate::cron::parse(s) {
                causes.push(Cause::invalid("spec.schedule", s, e));
            }
        }
    }
    if let Some(zone) = spec["timeZone"].as_str() {
        if let Err(e) = jiff::tz::TimeZone::get(zone) {
            let why = format!("unknown time zone {zone}: {e}");
            causes.push(Cause::invalid("spec.timeZone", zone, why));
        }
    }
    for field in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if spec[field].as_i64().is_some_and(|n| n < 0) {
            let why = "must be greater than or equal to 0";
            causes.push(Cause::invalid_value(
                format!("spec.{field}"),
                &spec[field],
                why,
            ));
        }
    }
    let policies = ["Allow", "Forbid", "Replace"];
    match spec["concurrencyPolicy"].as_str().unwrap_or_default() {
        "" => causes.push(Cause::required("spec.concurrencyPolicy")),
        p if !policies.contains(&p) => {
            causes.push(Cause::unsupported("spec.concurrencyPolicy", p, &policies));
        }
        _ => {}
    }
}

fn indexed_bounds(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let field = |name: &str| format!("{at}.{name}");
    let completions = spec["completions"].as_i64();
    let parallelism = spec["parallelism"].as_i64();
    let max_failed = spec["maxFailedIndexes"].as_i64();
    if completions.is_none() {
        let why = "when completion mode is Indexed";
        causes.push(Cause::required_because(field("completions"), why));
    }
    if parallelism.is_some_and(|p| p > MAX_INDEXED_PARALLELISM) {
        let why = format!(
            "must be less than or equal to {MAX_INDEXED_PARALLELISM} when completion mode is Indexed"
        );
        causes.push(Cause::invalid_value(
            field("parallelism"),
            &spec["parallelism"],
            why,
        ));
    }
    let failed = &spec["maxFailedIndexes"];
    if let (Some(c), Some(m)) = (completions, max_failed) {
        if m > c {
            let why = "must be less than or equal to completions";
            causes.push(Cause::invalid_value(field("maxFailedIndexes"), failed, why));
        }
    }
    if max_failed.is_some_and(|m| m > MAX_FAILED_INDEXES) {
        let why = format!("must be less than or equal to {MAX_FAILED_INDEXES}");
        causes.push(Cause::invalid_value(field("maxFailedIndexes"), failed, why));
    }
    let high = completions.is_some_and(|c| c > COMPLETIONS_SOFT_LIMIT);
    if !high || spec["backoffLimitPerIndex"].is_null() {
        return;
    }
    let beyond = format!(
        "must be less than or equal to {HIGH_COMPLETIONS_LIMIT} when completions are above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index"
    );
    match max_failed {
        None => causes.push(Cause::required_because(
            field("maxFailedIndexes"),
            format!("must be specified when completions is above {COMPLETIONS_SOFT_LIMIT}"),
        )),
        Some(m) if m > HIGH_COMPLETIONS_LIMIT => {
            causes.push(Cause::invalid_value(
                field("maxFailedIndexes"),
                failed,
                &beyond,
            ));
        }
        Some(_) => {}
    }
    if parallelism.is_some_and(|p| p > HIGH_COMPLETIONS_LIMIT) {
        let parallelism = &spec["parallelism"];
        causes.push(Cause::invalid_value(
            field("parallelism"),
            parallelism,
            &beyond,
        ));
    }
}

fn failure_policy(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let rules = spec["podFailurePolicy"]["rules"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if rules.len() > MAX_RULES {
        causes.push(Cause::too_many(
            format!("{at}.rules"),
            rules.len(),
            MAX_RULES,
        ));
    }
    let pod = &spec["template"]["spec"];
    let containers: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod[list].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let actions = ["Count", "FailIndex", "FailJob", "Ignore"];
    for (i, rule) in rules.iter().enumerate() {
        let here = format!("{at}.rules[{i}]");
        match rule["action"].as_str() {
            None | Some("") => causes.push(Cause::required_because(
                format!("{here}.action"),
                r#"valid values: ["Count" "FailIndex" "FailJob" "Ignore"]"#,
            )),
            Some("FailIndex") if spec["backoffLimitPerIndex"].is_null() => {
                let why = "requires the backoffLimitPerIndex to be set";
                causes.push(Cause::invalid(format!("{here}.action"), "FailIndex", why));
            }
            Some(a) if !actions.contains(&a) => {
                causes.push(Cause::unsupported(format!("{here}.action"), a, &actions));
            }
            Some(_) => {}
        }
        let exit_codes = &rule["onExitCodes"];
        let conditions = rule["onPodConditions"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        if !exit_codes.is_null() {
            on_exit_codes(
                exit_codes,
                &format!("{here}.onExitCodes"),
                &containers,
                causes,
            );
        }
        on_conditions(conditions, &format!("{here}.onPodConditions"), causes);
        let why = match (exit_codes.is_null(), conditions.is_empty()) {
            (false, false) => "specifying both OnExitCodes and OnPodConditions is not supported",
            (true, true) => "specifying one of OnExitCodes and OnPodConditions is required",
            _ => continue,
        };
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: here,
            message: format!("Invalid value: {why}"),
        });
    }
}

fn on_exit_codes(req: &Value, at: &str, containers: &[&str], causes: &mut Vec<Cause>) {
    let operator = req["operator"].as_str();
    match operator {
        None | Some("") => causes.push(Cause::required_because(
            format!("{at}.operator"),
            r#"valid values: ["In" "NotIn"]"#,
        )),
        Some("In" | "NotIn") => {}
        Some(other) => causes.push(Cause::unsupported(
            format!("{at}.operator"),
            other,
            &["In", "NotIn"],
        )),
    }
    if let Some(name) = req["containerName"].as_str() {
        if !containers.contains(&name) {
            let why = "must be one of the container or initContainer names in the pod template";
            causes.push(Cause::invalid(format!("{at}.containerName"), name, why));
        }
    }
    let values = req["values"].as_array().map_or(&[][..], Vec::as_slice);
    let field = format!("{at}.values");
    if values.is_empty() {
        let why = "at least one value is required";
        causes.push(Cause::invalid_value(&field, &req["values"], why));
    } else if values.len() > MAX_EXIT_CODES {
        causes.push(Cause::too_many(&field, values.len(), MAX_EXIT_CODES));
    }
    let codes: Vec<i64> = values.iter().filter_map(Value::as_i64).collect();
    for (j, &code) in codes.iter().enumerate() {
        if operator == Some("In") && code == 0 {
            let why = "must not be 0 for the In operator";
            causes.push(Cause::invalid_value(
                format!("{field}[{j}]"),
                &values[j],
                why,
            ));
        }
        if codes[..j].contains(&code) {
            causes.push(Cause::duplicate(format!("{field}[{j}]"), code));
        }
    }
    if codes.windows(2).any(|w| w[0] > w[1]) {
        causes.push(Cause::invalid_value(
            &field,
            &req["values"],
            "must be ordered",
        ));
    }
}

fn on_conditions(patterns: &[Value], at: &str, causes: &mut Vec<Cause>) {
    if patterns.len() > MAX_CONDITION_PATTERNS {
        causes.push(Cause::too_many(at, patterns.len(), MAX_CONDITION_PATTERNS));
    }
    let statuses = ["False", "True", "Unknown"];
    for (j, pattern) in patterns.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let kind = pattern["type"].as_str().unwrap_or("");
        if let Some(why) = super::qualified_name_problem(kind) {
            causes.push(Cause::invalid(format!("{here}.type"), kind, why));
        }
        match pattern["status"].as_str() {
            None | Some("") => causes.push(Cause::required_because(
                format!("{here}.status"),
                r#"valid values: ["False" "True" "Unknown"]"#,
            )),
            Some(s) if !statuses.contains(&s) => {
                causes.push(Cause::unsupported(format!("{here}.status"), s, &statuses));
            }
            Some(_) => {}
        }
    }
}

fn success_policy(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let rules = spec["successPolicy"]["rules"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let field = format!("{at}.rules");
    if rules.is_empty() {
        let why = "at least one rules must be specified when the successPolicy is specified";
        causes.push(Cause::required_because(&field, why));
    }
    if rules.len() > MAX_RULES {
        causes.push(Cause::too_many(&field, rules.len(), MAX_RULES));
    }
    let completions = spec["completions"].as_i64().unwrap_or(0);
    for (i, rule) in rules.iter().enumerate() {
        let here = format!("{field}[{i}]");
        let (indexes, count) = (&rule["succeededIndexes"], &rule["succeededCount"]);
        if indexes.is_null() && count.is_null() {
            let why = "at least one of succeededCount or succeededIndexes must be specified";
            causes.push(Cause::required_because(&here, why));
        }
        let mut named = 0;
        if let Some(text) = indexes.as_str() {
            let at = format!("{here}.succeededIndexes");
            if text.len() > MAX_SUCCEEDED_INDEXES_LEN {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: at.clone(),
                    message: format!(
                        "Too long: may not be more than {MAX_SUCCEEDED_INDEXES_LEN} bytes"
                    ),
                });
            }
            match Indexes::check(text, completions.clamp(0, i32::MAX.into()) as i32) {
                Ok(total) => named = total,
                Err(e) => {
                    let why = format!("error parsing succeededIndexes: {e}");
                    causes.push(Cause::invalid(at, text, why));
                }
            }
        }
        let Some(n) = count.as_i64() else { continue };
        let at = format!("{here}.succeededCount");
        if n < 0 {
            let why = "must be greater than or equal to 0";
            causes.push(Cause::invalid_value(&at, count, why));
        }
        if n > completions {
            let why = format!(
                "must be less than or equal to {completions} (the number of specified completions)"
            );
            causes.push(Cause::invalid_value(&at, count, why));
        }
        if indexes.is_string() && n > named {
            let why = format!("must be less than or equal to {named} (the number of indexes in the specified succeededIndexes field)");
            causes.push(Cause::invalid_value(&at, count, why));
        }
    }
}
