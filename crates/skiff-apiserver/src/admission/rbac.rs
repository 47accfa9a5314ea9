//! RBAC's escalation prevention for roles and bindings (upstream does it
//! in the RBAC registry; the rules are in [`crate::authz::escalation`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::ApiError;

use super::{Attributes, Operation, Validating, Verdict};
use crate::authz::{escalation, Authorizer};

pub struct Escalation(pub Arc<dyn Authorizer>);

#[async_trait]
impl Validating for Escalation {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation != Operation::Delete && a.resource.group == "rbac.authorization.k8s.io"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        escalation::check(self.0.as_ref(), a.user, a.resource, obj)
    }
}
