//! From an OkmsSecret to an OKMS client, as the operator builds it, but through the user's own
//! Kubernetes access: the connection and its credential Secrets are read with the user's
//! credentials, so RBAC decides (a Secret the user cannot read is named in the error).
//!
//! The operator's rules are applied in the operator's order, from its own code
//! (`okms_operator::controller::connection`): the path's form and binding, then `allowedPaths`
//! and (ClusterOkmsConnection) `allowedNamespaces`, then the endpoint's form and the endpoint
//! allow-list — all before any credential is read or any OKMS request is sent.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use okms_operator::controller::connection::{self, Fetched, IN_USE_FINALIZER};
use okms_operator::controller::plan;
use okms_operator::crd::{ClusterOkmsConnection, ConnectionKind, OkmsConnection, OkmsSecret};
use okms_operator::error::Error as OperatorError;
use okms_operator::isolation::AllowedEndpoints;
use okms_operator::okms::OkmsClient;

use crate::cluster::Cluster;
use crate::error::{Error, Result, kube_error, kube_message, kube_status};

/// An OkmsSecret's OKMS path and a client allowed to reach it.
pub struct Remote {
    pub client: OkmsClient,
    pub path: String,
}

/// The OKMS path an object acts on: `spec.path`, valid, and the path it is bound to
/// (`status.path`) when it has one — the operator itself acts on no other.
pub fn path_of(obj: &OkmsSecret) -> Result<String> {
    plan::validate_path(&obj.spec.path)?;
    if let Some(bound) = obj.status.as_ref().and_then(|s| s.path.as_deref())
        && bound != obj.spec.path
    {
        return Err(OperatorError::PathImmutable {
            bound: bound.to_string(),
            requested: obj.spec.path.clone(),
        }
        .into());
    }
    Ok(obj.spec.path.clone())
}

/// Resolves the object's connection into an OKMS client, checking every isolation rule first.
pub async fn connect(
    cluster: &Cluster,
    obj: &OkmsSecret,
    allowed_endpoints: &AllowedEndpoints,
) -> Result<Remote> {
    let path = path_of(obj)?;
    let namespace = obj.namespace().unwrap_or_else(|| cluster.namespace.clone());
    let kind = obj.spec.connection_ref.kind.unwrap_or_default();
    let conn = fetch_connection(
        &cluster.client,
        kind,
        &namespace,
        &obj.spec.connection_ref.name,
    )
    .await?;
    conn.check_allowed_with(&cluster.client, &namespace, &path)
        .await?;
    let endpoint = connection::validate(&conn.spec, allowed_endpoints, &conn.display()).map_err(
        |e| match e {
            OperatorError::NotAllowed(why) => Error::new(format!(
                "not allowed: {why} (kubectl okms checks the same list: its own \
                 --allowed-endpoints flag, or KUBECTL_OKMS_ALLOWED_ENDPOINTS)"
            )),
            other => other.into(),
        },
    )?;
    let client = cluster.client.clone();
    let credentials = connection::read_credentials(&conn, |ns, name| {
        let client = client.clone();
        async move { read_secret(client, ns, name).await }
    })
    .await?;
    let config = connection::client_config(&conn, endpoint, credentials)?;
    let client = OkmsClient::new(config).map_err(|e| OperatorError::ConnectionNotReady {
        name: conn.display(),
        message: e.to_string(),
    })?;
    Ok(Remote { client, path })
}

/// A credential Secret, read as the user. Only `None` (absent) or the Secret comes back; a
/// refusal is said as such, naming the Secret and the access needed.
async fn read_secret(client: kube::Client, ns: String, name: String) -> Result<Option<Secret>> {
    match Api::<Secret>::namespaced(client, &ns).get_opt(&name).await {
        Ok(secret) => Ok(secret),
        Err(e) if kube_status(&e) == Some(403) => Err(Error::new(format!(
            "cannot read Secret {ns}/{name}: forbidden; kubectl okms needs read access to the \
             connection's credentials"
        ))),
        Err(e) => Err(Error::new(format!(
            "cannot read Secret {ns}/{name}: {}",
            kube_message(&e)
        ))),
    }
}

/// The connection an OkmsSecret refers to, as the operator sees it.
async fn fetch_connection(
    client: &kube::Client,
    kind: ConnectionKind,
    namespace: &str,
    name: &str,
) -> Result<Fetched> {
    match kind {
        ConnectionKind::OkmsConnection => {
            let c = Api::<OkmsConnection>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| {
                    kube_error(&format!("OkmsConnection {namespace}/{name}"), "get", &e)
                })?;
            Ok(Fetched {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
                resource_version: c.resource_version().unwrap_or_default(),
                spec: c.spec.connection.clone(),
                allowed_namespaces: None,
                in_use: c.finalizers().iter().any(|f| f == IN_USE_FINALIZER),
                terminating: c.meta().deletion_timestamp.is_some(),
            })
        }
        ConnectionKind::ClusterOkmsConnection => {
            let c = Api::<ClusterOkmsConnection>::all(client.clone())
                .get(name)
                .await
                .map_err(|e| kube_error(&format!("ClusterOkmsConnection {name}"), "get", &e))?;
            Ok(Fetched {
                kind,
                namespace: String::new(),
                name: name.to_string(),
                resource_version: c.resource_version().unwrap_or_default(),
                spec: c.spec.connection.clone(),
                allowed_namespaces: c.spec.allowed_namespaces.clone(),
                in_use: c.finalizers().iter().any(|f| f == IN_USE_FINALIZER),
                terminating: c.meta().deletion_timestamp.is_some(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(path: &str, bound: Option<&str>) -> OkmsSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"connectionRef": {"name": "okms"}, "path": path},
            "status": {"path": bound}
        }))
        .unwrap()
    }

    #[test]
    fn the_path_is_the_bound_and_valid_one() {
        assert_eq!(path_of(&object("team/db", None)).unwrap(), "team/db");
        assert_eq!(
            path_of(&object("team/db", Some("team/db"))).unwrap(),
            "team/db"
        );
        let moved = path_of(&object("team/other", Some("team/db"))).unwrap_err();
        assert!(moved.0.contains("immutable"), "{moved}");
        let escape = path_of(&object("team-a/../team-b/db", None)).unwrap_err();
        assert!(escape.0.contains("'..'"), "{escape}");
    }
}
