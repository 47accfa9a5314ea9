//! Status counts written as upstream's Go types encode them.

use serde_json::Value;

/// A count whose Go field is tagged `omitempty`, as a merge patch sets it:
/// zero removes the field, so a stored status shows what upstream's does.
pub fn omit_zero(n: impl TryInto<i64>) -> Value {
    match n.try_into().unwrap_or(0) {
        0 => Value::Null,
        n => n.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zero_removes_the_field_and_other_counts_are_kept() {
        let mut status = json!({"replicas": 2, "readyReplicas": 1});
        let patch = json!({"replicas": omit_zero(0_usize), "readyReplicas": omit_zero(3_i32)});
        json_patch::merge(&mut status, &patch);
        assert_eq!(status, json!({"readyReplicas": 3}));
    }
}
