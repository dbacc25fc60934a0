//! Live mode's ClusterNetworkPolicy resource (`policy.networking.k8s.io/v1alpha2`,
//! `/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies`): a CRD, so it has no
//! k8s-openapi type; [`ClusterNetworkPolicyObject`] is its metadata plus the rest of the
//! object as JSON, converted by `cnp_parse` like a file's item (`store` says how it is
//! watched).
//!
//! The CRD may not be installed: the API server then answers 404, and the kind counts as
//! listed and empty (NetworkPolicy is still enforced) until a later re-check finds it
//! served (`watch::watch_kind`, every resync interval; `Store::not_served`).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ClusterResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One ClusterNetworkPolicy as the API server sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ClusterNetworkPolicyObject {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `apiVersion`, `kind` (watch events only), `spec`, `status`, ...
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl kube::Resource for ClusterNetworkPolicyObject {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "ClusterNetworkPolicy".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "policy.networking.k8s.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha2".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "clusternetworkpolicies".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
