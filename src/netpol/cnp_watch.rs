//! Live mode's ClusterNetworkPolicy resource (`policy.networking.k8s.io/v1alpha2`,
//! `/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies`): a CRD, so it has no
//! k8s-openapi type; [`ClusterNetworkPolicyObject`] is its metadata plus the rest of the
//! object as JSON, converted by `cnp_parse` like a file's item.
//!
//! The CRD may not be installed: the API server then answers 404, and the kind counts as
//! listed and empty (NetworkPolicy is still enforced) until a later re-check finds it
//! served (`watch::watch_kind`, every resync interval; `Store::not_served`).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ClusterResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cnp::ClusterPolicy;
use super::cnp_parse::cluster_policy;
use super::store::{Objects, Store, Watched};
use crate::error::Result;

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

impl Watched for ClusterNetworkPolicyObject {
    type Item = ClusterPolicy;
    const PLURAL: &'static str = "clusternetworkpolicies";
    const NOT_SERVED: Option<&'static str> =
        Some("ClusterNetworkPolicy CRD not served; NetworkPolicy still enforced");
    fn convert(v: &Value) -> Result<ClusterPolicy> {
        cluster_policy(v)
    }
    fn store(o: &mut Objects) -> &mut Store<ClusterPolicy> {
        &mut o.cluster_policies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netpol::store::{Note, apply_event};
    use kube::runtime::watcher;
    use serde_json::json;

    fn cnp(priority: i64) -> ClusterNetworkPolicyObject {
        serde_json::from_value(json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "deny-all", "resourceVersion": "3"},
            "spec": {"tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
                "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn served_objects_convert_and_a_refused_one_is_named() {
        use kube::Resource;
        assert_eq!(
            ClusterNetworkPolicyObject::url_path(&(), None),
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
        );
        let mut o = Objects::synced_for_tests();
        apply_event(&mut o, watcher::Event::Apply(cnp(10)));
        let c = o.complete().unwrap();
        assert_eq!(c.cluster_policies.len(), 1);
        assert_eq!(c.cluster_policies[0].priority, 10);
        apply_event(&mut o, watcher::Event::Apply(cnp(1001)));
        let msg = o.complete().unwrap_err().to_string();
        assert!(
            msg.contains("clusternetworkpolicies deny-all")
                && msg.contains("spec.priority")
                && msg.contains("1001"),
            "{msg}"
        );
    }

    #[test]
    fn a_crd_not_served_is_listed_and_empty_until_it_is() {
        let mut o = Objects::synced_for_tests();
        let store = ClusterNetworkPolicyObject::store(&mut o);
        *store = Store::default();
        // First answer 404: synced, nothing changed, told once.
        assert_eq!(store.not_served(), (vec![Note::Synced], true));
        assert_eq!(store.not_served(), (vec![], false));
        assert!(o.synced() && o.complete().unwrap().cluster_policies.is_empty());
        // Installed later: the next list fills it.
        apply_event(&mut o, watcher::Event::<ClusterNetworkPolicyObject>::Init);
        apply_event(&mut o, watcher::Event::InitApply(cnp(3)));
        assert_eq!(
            apply_event::<ClusterNetworkPolicyObject>(&mut o, watcher::Event::InitDone),
            vec![Note::Changed]
        );
        assert_eq!(o.complete().unwrap().cluster_policies.len(), 1);
        // Removed again: its objects go with it (and the change is told once more).
        let store = ClusterNetworkPolicyObject::store(&mut o);
        assert_eq!(store.not_served(), (vec![Note::Changed], true));
        assert!(o.complete().unwrap().cluster_policies.is_empty());
    }
}
