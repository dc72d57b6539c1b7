//! The Kubernetes permissions the operator's code needs: the single source of truth that the
//! chart's ClusterRole and Role are checked against (`tests/rbac_matches_code.rs`), and that the
//! requests seen in an end-to-end run are checked against.
//!
//! Every rule names the code that needs it. When code starts (or stops) calling an API, change
//! this list and `charts/okms-operator/templates/{clusterrole,role}.yaml` together.

/// Where a rule is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every namespace (chart: ClusterRole + ClusterRoleBinding).
    Cluster,
    /// Only the operator's own namespace (chart: Role + RoleBinding in the release namespace).
    OperatorNamespace,
}

/// One RBAC rule: verbs on one resource of one API group (`""` = core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    /// Plural resource, with `/subresource` when it is one (`okmssecrets/status`).
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
}

impl Rule {
    /// Whether this rule allows `verb` on `resource` (any group when `api_group` is `None`).
    pub fn allows(&self, api_group: Option<&str>, resource: &str, verb: &str) -> bool {
        api_group.is_none_or(|g| g == self.api_group)
            && self.resource == resource
            && self.verbs.contains(&verb)
    }
}

type Verbs = &'static [&'static str];

const fn cluster(api_group: &'static str, resource: &'static str, verbs: Verbs) -> Rule {
    rule(Scope::Cluster, api_group, resource, verbs)
}

const fn operator_ns(api_group: &'static str, resource: &'static str, verbs: Verbs) -> Rule {
    rule(Scope::OperatorNamespace, api_group, resource, verbs)
}

const fn rule(scope: Scope, api_group: &'static str, resource: &'static str, verbs: Verbs) -> Rule {
    Rule {
        api_group,
        resource,
        verbs,
        scope,
    }
}

/// Everything the operator calls, and nothing more.
pub const RULES: &[Rule] = &[
    // controller/run.rs: `watcher(Api<OkmsSecret>)` (list + watch) feeds the OkmsSecret
    // controller; apply.rs `patch_finalizers` merge-patches metadata.finalizers. The
    // controller works from its reflector cache: no `get`.
    cluster("okms.dev", "okmssecrets", &["list", "watch", "patch"]),
    // report.rs `write_status`: server-side apply of the status subresource.
    cluster("okms.dev", "okmssecrets/status", &["patch"]),
    // connection.rs `fetch` (get_opt on a cache miss); run.rs `.watches(OkmsConnection)` and
    // the connection `Controller::new` (list + watch); patch: connection.rs `apply_in_use`
    // (server-side apply of the in-use finalizer).
    cluster(
        "okms.dev",
        "okmsconnections",
        &["get", "list", "watch", "patch"],
    ),
    // connection.rs `reconcile_connection`: merge patch of the status subresource.
    cluster("okms.dev", "okmsconnections/status", &["patch"]),
    // connection.rs `fetch` (get_opt on a cache miss); run.rs `.watches(ClusterOkmsConnection)`
    // and the cluster-connection `Controller::new` (list + watch).
    cluster(
        "okms.dev",
        "clusterokmsconnections",
        &["get", "list", "watch", "patch"],
    ),
    // connection.rs `reconcile_connection`: merge patch of the status subresource.
    cluster("okms.dev", "clusterokmsconnections/status", &["patch"]),
    // get: dereference.rs (source and current target, get_opt), connection.rs (credential
    // Secrets), hmac.rs (the key Secret); list + watch: run.rs metadata-only watchers of target
    // and source Secrets; patch + create: apply.rs server-side apply of target Secrets (an
    // apply that creates the object is authorized as `patch` and then `create` by the real API
    // server; the kube-emulator authorizes nothing, kube-envtest's real-RBAC run showed it).
    cluster("", "secrets", &["get", "list", "watch", "patch", "create"]),
    // connection.rs `check_allowed`: the namespace's labels for ClusterOkmsConnection
    // allowedNamespaces selectors (get_opt).
    cluster("", "namespaces", &["get"]),
    // controller/recorder.rs `Recorder`: creates events.k8s.io/v1 Events (never updates them).
    cluster("events.k8s.io", "events", &["create"]),
    // apply.rs `restart_one`: reads the workload's metadata (its opt-in annotation), then
    // merge-patches the pod template's restartedAt annotation.
    cluster("apps", "deployments", &["get", "patch"]),
    cluster("apps", "statefulsets", &["get", "patch"]),
    cluster("apps", "daemonsets", &["get", "patch"]),
    // hmac.rs `load_or_create`: creates the `okms-operator-hmac` key Secret on first start, only
    // ever in the operator namespace (reading it is covered by the cluster-wide `get`).
    operator_ns("", "secrets", &["create"]),
    // leader.rs `Elector`: get_opt, create and replace (update) of the `okms-operator` Lease.
    operator_ns(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// Whether some rule of `scope` allows `verb` on `resource` (any group when `api_group` is None).
pub fn allowed(scope: Scope, api_group: Option<&str>, resource: &str, verb: &str) -> bool {
    RULES
        .iter()
        .any(|r| r.scope == scope && r.allows(api_group, resource, verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_unique_per_scope_group_and_resource() {
        for (i, a) in RULES.iter().enumerate() {
            for b in &RULES[i + 1..] {
                assert!(
                    !(a.scope == b.scope && a.api_group == b.api_group && a.resource == b.resource),
                    "duplicate rule for {} {}",
                    a.api_group,
                    a.resource
                );
            }
        }
    }

    #[test]
    fn allowed_distinguishes_scope_and_verb() {
        assert!(allowed(Scope::Cluster, Some(""), "secrets", "patch"));
        assert!(allowed(Scope::Cluster, Some(""), "secrets", "create"));
        assert!(!allowed(Scope::Cluster, Some(""), "secrets", "delete"));
        assert!(allowed(Scope::OperatorNamespace, None, "secrets", "create"));
        assert!(!allowed(
            Scope::Cluster,
            Some("okms.dev"),
            "okmssecrets",
            "delete"
        ));
    }
}
