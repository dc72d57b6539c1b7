//! The resources the server serves: the built-in kinds and those CRDs add.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// (group, plural resource name): the key of one stored resource.
pub type Gr = (String, String);

/// One version of a resource, as served.
#[derive(Debug, Clone, Default)]
pub struct VersionDef {
    pub name: String,
    /// The CRD's `openAPIV3Schema` for this version (None for built-ins).
    pub schema: Option<Value>,
    /// The CRD's `spec.versions[i]` entry (printer columns), None for built-ins.
    pub crd_version: Option<Value>,
}

/// A served resource.
#[derive(Debug, Clone, Default)]
pub struct ResourceDef {
    pub group: String,
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Served versions, in the order they are preferred.
    pub versions: Vec<VersionDef>,
    /// The version objects are stored in, in `storage_group`'s API.
    pub storage_version: String,
    /// The group whose store holds this resource's objects when it is not this resource's own:
    /// another group serves the same objects converted (`events.k8s.io` `events` are core
    /// `events`, as in kube-apiserver). None: the resource's own group.
    pub storage_group: Option<String>,
    pub has_status: bool,
    /// Whether `metadata.generation` is maintained (CRs, workloads, CRDs).
    pub tracks_generation: bool,
    /// The CRD object's name for custom resources.
    pub crd_name: Option<String>,
}

impl ResourceDef {
    /// The key of the store holding this resource's objects (shared by the resources that
    /// serve the same objects).
    pub fn gr(&self) -> Gr {
        let group = self.storage_group.as_ref().unwrap_or(&self.group);
        (group.clone(), self.resource.clone())
    }

    /// The key this resource is served (and registered) under.
    pub fn served_gr(&self) -> Gr {
        (self.group.clone(), self.resource.clone())
    }

    /// The `apiVersion` of stored objects.
    pub fn storage_api_version(&self) -> String {
        match self.storage_group.as_deref() {
            Some("") => self.storage_version.clone(),
            Some(g) => format!("{g}/{}", self.storage_version),
            None => self.api_version(&self.storage_version),
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn version(&self, version: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.name == version)
    }

    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.version(version).and_then(|v| v.schema.as_ref())
    }

    pub fn is_custom(&self) -> bool {
        self.crd_name.is_some()
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    resource: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    has_status: bool,
    tracks_generation: bool,
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        resource: resource.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        versions: vec![VersionDef {
            name: version.into(),
            ..VersionDef::default()
        }],
        storage_version: version.into(),
        storage_group: None,
        has_status,
        tracks_generation,
        crd_name: None,
    }
}

/// The built-in kinds the emulator stores.
pub fn builtins() -> Vec<ResourceDef> {
    let mut v = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], false, false),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], false, false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
        ),
        builtin("", "v1", "services", "Service", true, &["svc"], true, false),
        builtin("", "v1", "pods", "Pod", true, &["po"], true, false),
        // One store with core `events`: the same objects, converted (kube-apiserver).
        ResourceDef {
            storage_group: Some(String::new()),
            ..builtin(
                "events.k8s.io",
                "v1",
                "events",
                "Event",
                true,
                &["ev"],
                false,
                false,
            )
        },
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            true,
            true,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            true,
        ),
    ];
    for d in &mut v {
        if matches!(
            d.resource.as_str(),
            "pods" | "services" | "deployments" | "statefulsets" | "daemonsets"
        ) {
            d.categories = vec!["all".into()];
        }
        if d.resource == "customresourcedefinitions" {
            d.categories = vec!["api-extensions".into()];
        }
    }
    v
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u64, u64, String) {
    let rest = match v.strip_prefix('v') {
        Some(r) => r,
        None => return (0, 0, 0, v.to_string()),
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0, v.to_string());
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0, String::new());
    }
    for (prefix, class) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix)
            && let Ok(minor) = n.parse::<u64>()
        {
            return (class, major, minor, String::new());
        }
    }
    (0, 0, 0, v.to_string())
}

/// All served resources, by group/resource, plus a lookup by kind.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub defs: BTreeMap<Gr, Arc<ResourceDef>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for d in builtins() {
            r.defs.insert(d.served_gr(), Arc::new(d));
        }
        r
    }

    pub fn get(&self, group: &str, resource: &str) -> Option<&Arc<ResourceDef>> {
        self.defs.get(&(group.to_string(), resource.to_string()))
    }

    /// The resource served at `group/version/resource`.
    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceDef>> {
        self.get(group, resource)
            .filter(|d| d.version(version).is_some())
            .cloned()
    }

    /// Served groups: name → versions sorted by preference.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in self.defs.values() {
            let vs = out.entry(d.group.clone()).or_default();
            for v in &d.versions {
                if !vs.contains(&v.name) {
                    vs.push(v.name.clone());
                }
            }
        }
        for vs in out.values_mut() {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// Resources served in one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.defs
            .values()
            .filter(|d| d.group == group && d.version(version).is_some())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order_is_kube_aware() {
        let mut v = vec!["v1alpha1", "v2", "v1beta1", "v1", "v1beta2"];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }
}
