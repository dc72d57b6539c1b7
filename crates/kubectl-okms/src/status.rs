//! `kubectl okms status [-A]`: one line per OkmsSecret, from Kubernetes alone (no OKMS call).

use chrono::{DateTime, Utc};
use kube::api::{Api, ListParams};
use okms_operator::crd::OkmsSecret;
use serde::Serialize;

use crate::cli::Format;
use crate::cluster::Cluster;
use crate::error::{Result, kube_error};
use crate::output::{self, NONE};

/// One OkmsSecret, as printed by `-o json|yaml`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub path: String,
    pub synced_version: Option<u32>,
    pub current_version: Option<u32>,
    /// The Ready condition's status (`True`, `False`), absent before the first reconcile.
    pub ready: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_sync_time: Option<String>,
}

pub fn row(o: &OkmsSecret) -> Row {
    let status = o.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    Row {
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
        path: o.spec.path.clone(),
        synced_version: status.synced_version,
        current_version: status.current_version,
        ready: ready.map(|c| c.status.clone()),
        reason: ready.map(|c| c.reason.clone()).filter(|r| !r.is_empty()),
        message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
        last_sync_time: status.last_sync_time,
    }
}

/// `3/4`: the synced version over the current one, `-` for an unknown one.
fn versions(r: &Row) -> String {
    let v = |n: Option<u32>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    format!("{}/{}", v(r.synced_version), v(r.current_version))
}

/// Age of an RFC 3339 time at `now`, kubectl-style.
fn age(time: Option<&str>, now: DateTime<Utc>) -> String {
    time.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| output::human_duration((now - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|| NONE.into())
}

pub fn render(
    rows: &[Row],
    all_namespaces: bool,
    format: Option<Format>,
    now: DateTime<Utc>,
) -> Result<String> {
    if let Some(format) = format {
        return output::render(format, &rows);
    }
    let mut headers = vec!["NAME", "PATH", "VERSION", "READY", "REASON", "LAST SYNC"];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.name.clone(),
                r.path.clone(),
                versions(r),
                r.ready.clone().unwrap_or_else(|| NONE.into()),
                r.reason.clone().unwrap_or_else(|| NONE.into()),
                age(r.last_sync_time.as_deref(), now),
            ];
            if all_namespaces {
                cells.insert(0, r.namespace.clone());
            }
            cells
        })
        .collect();
    Ok(output::table(&headers, &cells))
}

/// The OkmsSecrets of the namespace (or of all), sorted by namespace and name.
pub async fn list(cluster: &Cluster, all_namespaces: bool) -> Result<Vec<Row>> {
    let (api, scope) = if all_namespaces {
        (
            Api::<OkmsSecret>::all(cluster.client.clone()),
            "OkmsSecrets in all namespaces".to_string(),
        )
    } else {
        (
            Api::<OkmsSecret>::namespaced(cluster.client.clone(), &cluster.namespace),
            format!("OkmsSecrets in namespace {}", cluster.namespace),
        )
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_error(&scope, "list", &e))?;
    let mut rows: Vec<Row> = list.items.iter().map(row).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(ns: &str, name: &str, status: serde_json::Value) -> OkmsSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "okms.dev/v1alpha1", "kind": "OkmsSecret",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"connectionRef": {"name": "okms"}, "path": format!("{ns}/{name}")},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_line_per_object_with_versions_readiness_and_age() {
        let now = DateTime::parse_from_rfc3339("2025-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let synced = object(
            "apps",
            "db",
            serde_json::json!({
                "syncedVersion": 3, "currentVersion": 4, "lastSyncTime": "2025-01-01T11:55:00Z",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Mirrored",
                    "message": "ok", "lastTransitionTime": "2025-01-01T11:55:00Z"}]
            }),
        );
        let fresh = object("shop", "api", serde_json::json!(null));
        let rows = vec![row(&synced), row(&fresh)];
        let table = render(&rows, true, None, now).unwrap();
        assert_eq!(
            table,
            "NAMESPACE   NAME   PATH       VERSION   READY    REASON     LAST SYNC\n\
             apps        db     apps/db    3/4       True     Mirrored   5m\n\
             shop        api    shop/api   -/-       <none>   <none>     <none>\n"
        );
        let one_namespace = render(&rows[..1], false, None, now).unwrap();
        assert!(one_namespace.starts_with("NAME   PATH"), "{one_namespace}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, true, Some(Format::Json), now).unwrap()).unwrap();
        assert_eq!(json[0]["syncedVersion"], 3);
        assert_eq!(json[0]["ready"], "True");
        assert_eq!(json[1]["ready"], serde_json::Value::Null);
    }
}
