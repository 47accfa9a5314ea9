//! Upstream's Priority admission: a pod's `priorityClassName` (or the
//! global default class) sets its `priority` and `preemptionPolicy`.

use async_trait::async_trait;
use serde_json::{json, Value};
use skiff_core::registry;
use skiff_core::{meta, ApiError};

use super::{Attributes, Mutating, Operation, Validating, Verdict};
use crate::storage::{mentions, Objects};

pub struct Priority(pub Objects);

#[async_trait]
impl Mutating for Priority {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        pod: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        if a.operation != Operation::Create || !a.is("", "Pod") {
            return Ok(());
        }
        let classes = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priority classes are served");
        let name = pod["spec"]["priorityClassName"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let class = if name.is_empty() {
            // Only a class that says `globalDefault: true` is decoded.
            let may_default = |b: &[u8]| mentions(b, br#""globalDefault":true"#);
            let items = self.0.recent_list_where(classes, None, may_default).await?;
            items.into_iter().find(|c| c["globalDefault"] == true)
        } else {
            let found = self.0.try_get(classes, None, &name).await?;
            Some(found.ok_or_else(|| {
                ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: no PriorityClass with name {name} was found",
                    meta::name(pod)
                ))
            })?)
        };
        if let Some(class) = class {
            if !pod["spec"]["priority"].is_null() && pod["spec"]["priority"] != class["value"] {
                return Err(ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: the integer value of priority ({}) must not be provided in pod spec; priority admission controller computed {} from the given PriorityClass name",
                    meta::name(pod),
                    pod["spec"]["priority"],
                    class["value"]
                )));
            }
            pod["spec"]["priorityClassName"] = class["metadata"]["name"].clone();
            pod["spec"]["priority"] = class["value"].clone();
            if let Some(policy) = class["preemptionPolicy"].as_str() {
                pod["spec"]["preemptionPolicy"] = json!(policy);
            }
        }
        Ok(())
    }
}

/// A class may be the global default only while no other is.
#[async_trait]
impl Validating for Priority {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        matches!(a.operation, Operation::Create | Operation::Update)
            && a.subresource.is_none()
            && a.is("scheduling.k8s.io", "PriorityClass")
    }

    async fn validate(
        &self,
        _a: &Attributes<'_>,
        class: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        if class["globalDefault"] != true {
            return Ok(());
        }
        let classes = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priority classes are served");
        let may_default = |b: &[u8]| mentions(b, br#""globalDefault":true"#);
        let items = self.0.recent_list_where(classes, None, may_default).await?;
        let name = meta::name(class);
        match items.iter().find(|c| c["globalDefault"] == true && meta::name(c) != name) {
            Some(other) => Err(ApiError::forbidden(format!(
                "priorityclasses.scheduling.k8s.io {name:?} is forbidden: PriorityClass {} is already marked as default. Only one default can exist",
                meta::name(other)
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user, Fixture};

    #[tokio::test]
    async fn a_pods_class_sets_its_priority() {
        let f = Fixture::new();
        f.put(
            "scheduling.k8s.io",
            "priorityclasses",
            json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
        )
        .await;
        let plugin = Priority(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("", "pods", &alice);
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high"}});
        plugin
            .admit(&a, &mut pod, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(pod["spec"]["priority"], 1000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
        let mut forged = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high", "priority": 5}});
        assert_eq!(
            plugin
                .admit(&a, &mut forged, &mut Default::default())
                .await
                .unwrap_err()
                .code,
            403
        );
        let mut unknown = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "nope"}});
        let err = plugin
            .admit(&a, &mut unknown, &mut Default::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: no PriorityClass with name nope was found"
        );
        // Without a name and without a global default, nothing is set.
        let mut plain = json!({"metadata": {"name": "p"}, "spec": {}});
        plugin
            .admit(&a, &mut plain, &mut Default::default())
            .await
            .unwrap();
        assert!(plain["spec"]["priority"].is_null());
        // With one, a pod without a name takes it.
        f.put(
            "scheduling.k8s.io",
            "priorityclasses",
            json!({"metadata": {"name": "usual"}, "value": 7, "globalDefault": true}),
        )
        .await;
        plugin
            .admit(&a, &mut plain, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(
            (
                &plain["spec"]["priority"],
                &plain["spec"]["priorityClassName"]
            ),
            (&json!(7), &json!("usual"))
        );
    }

    #[tokio::test]
    async fn one_class_at_most_is_the_default() {
        let f = Fixture::new();
        let usual = json!({"metadata": {"name": "usual"}, "value": 7, "globalDefault": true});
        f.put("scheduling.k8s.io", "priorityclasses", usual.clone())
            .await;
        let plugin = Priority(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("scheduling.k8s.io", "priorityclasses", &alice);
        let second = json!({"metadata": {"name": "other"}, "value": 8, "globalDefault": true});
        let err = plugin
            .validate(&a, &second, &mut Verdict::default())
            .await
            .unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (403, "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass usual is already marked as default. Only one default can exist")
        );
        // The default itself, written again, and a class that is not one.
        plugin
            .validate(&a, &usual, &mut Verdict::default())
            .await
            .unwrap();
        let plain = json!({"metadata": {"name": "plain"}, "value": 9});
        plugin
            .validate(&a, &plain, &mut Verdict::default())
            .await
            .unwrap();
    }
}
