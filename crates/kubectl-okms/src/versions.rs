//! `kubectl okms versions NAME`: the OKMS versions of an OkmsSecret's path, marked with the
//! remote current version, the version mirrored into the target Secret and the version the
//! operator wrote last. Values only with `--show-values`.

use chrono::{DateTime, SecondsFormat, Utc};
use okms_operator::crd::OkmsSecret;
use okms_operator::okms::{SecretVersion, VersionState};
use serde::Serialize;
use serde_json::Value;

use crate::cli::Format;
use crate::error::{Error, Result};
use crate::output::{self, NONE};
use crate::remote::Remote;

/// The versions of one OkmsSecret's path, as printed by `-o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespace: String,
    pub name: String,
    pub path: String,
    /// `push` (spec.source set) or `mirror`.
    pub mode: &'static str,
    /// OKMS metadata `currentVersion`.
    pub current_version: Option<u32>,
    /// `status.syncedVersion`: whose data is in the target Secret.
    pub synced_version: Option<u32>,
    /// `status.lastWrittenVersion`: the last version the operator wrote.
    pub last_written_version: Option<u32>,
    /// Newest first.
    pub versions: Vec<Row>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub version: u32,
    pub state: VersionState,
    pub created_at: Option<String>,
    pub deactivated_at: Option<String>,
    pub current: bool,
    pub mirrored: bool,
    pub last_written: bool,
    /// Only with `--show-values`, for versions whose data OKMS returns (active ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// The rows of a version list, newest first, marked. Never carries data, whatever the list
/// holds: values are added only by an explicit `--show-values` read.
pub fn rows(
    versions: &[SecretVersion],
    current: Option<u32>,
    synced: Option<u32>,
    written: Option<u32>,
) -> Vec<Row> {
    let mut rows: Vec<Row> = versions
        .iter()
        .map(|v| Row {
            version: v.id,
            state: v.state,
            created_at: v.created_at.map(time),
            deactivated_at: v.deactivated_at.map(time),
            current: current == Some(v.id),
            mirrored: synced == Some(v.id),
            last_written: written == Some(v.id),
            data: None,
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.version));
    rows
}

pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Reads the versions (and, with `show_values`, each active version's data) and builds the
/// report.
pub async fn report(obj: &OkmsSecret, remote: &Remote, show_values: bool) -> Result<Report> {
    let metadata = match remote.client.get_secret(&remote.path, None, false).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => {
            return Err(Error::new(format!(
                "OKMS secret {:?} does not exist (in domain {})",
                remote.path,
                remote.client.okms_id()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let versions = remote.client.list_all_versions(&remote.path).await?;
    let status = obj.status.clone().unwrap_or_default();
    let mut rows = rows(
        &versions,
        metadata.metadata.current_version,
        status.synced_version,
        status.last_written_version,
    );
    if show_values {
        for row in rows.iter_mut().filter(|r| r.state == VersionState::Active) {
            let full = remote
                .client
                .get_version(&remote.path, row.version, true)
                .await?;
            row.data = full.data.map(|d| Value::Object(d.into_map()));
        }
    }
    Ok(Report {
        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        name: obj.metadata.name.clone().unwrap_or_default(),
        path: remote.path.clone(),
        mode: if obj.spec.source.is_some() {
            "push"
        } else {
            "mirror"
        },
        current_version: metadata.metadata.current_version,
        synced_version: status.synced_version,
        last_written_version: status.last_written_version,
        versions: rows,
    })
}

/// The report as a table (or JSON/YAML).
pub fn render(report: &Report, format: Option<Format>, show_values: bool) -> Result<String> {
    if let Some(format) = format {
        return output::render(format, report);
    }
    let mark = |b: bool| if b { "*" } else { "" }.to_string();
    let mut headers = vec![
        "VERSION",
        "STATE",
        "CREATED",
        "DEACTIVATED",
        "CURRENT",
        "MIRRORED",
        "WRITTEN",
    ];
    if show_values {
        headers.push("DATA");
    }
    let rows: Vec<Vec<String>> = report
        .versions
        .iter()
        .map(|r| {
            let mut row = vec![
                r.version.to_string(),
                r.state.to_string(),
                r.created_at.clone().unwrap_or_else(|| NONE.into()),
                r.deactivated_at.clone().unwrap_or_else(|| NONE.into()),
                mark(r.current),
                mark(r.mirrored),
                mark(r.last_written),
            ];
            if show_values {
                row.push(match &r.data {
                    Some(d) => d.to_string(),
                    None => format!("<{}: not readable>", r.state),
                });
            }
            row
        })
        .collect();
    Ok(output::table(&headers, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: u32, state: VersionState, data: Option<&str>) -> SecretVersion {
        serde_json::from_value(serde_json::json!({
            "id": id, "state": state, "createdAt": format!("2025-01-0{id}T10:00:00Z"),
            "deactivatedAt": (state != VersionState::Active).then_some("2025-02-01T00:00:00Z"),
            "data": data.map(|d| serde_json::json!({"v": d})),
        }))
        .unwrap()
    }

    #[test]
    fn rows_are_newest_first_marked_and_without_data() {
        let list = [
            version(1, VersionState::Active, Some("canary-1")),
            version(3, VersionState::Deactivated, None),
            version(2, VersionState::Active, Some("canary-2")),
        ];
        let rows = rows(&list, Some(3), Some(2), Some(1));
        assert_eq!(
            rows.iter().map(|r| r.version).collect::<Vec<_>>(),
            [3, 2, 1]
        );
        assert!(rows[0].current && !rows[0].mirrored && !rows[0].last_written);
        assert!(!rows[1].current && rows[1].mirrored && !rows[1].last_written);
        assert!(rows[2].last_written);
        assert_eq!(rows[0].created_at.as_deref(), Some("2025-01-03T10:00:00Z"));
        assert_eq!(
            rows[0].deactivated_at.as_deref(),
            Some("2025-02-01T00:00:00Z")
        );
        assert!(rows.iter().all(|r| r.data.is_none()));
        let report = Report {
            namespace: "apps".into(),
            name: "db".into(),
            path: "team/db".into(),
            mode: "push",
            current_version: Some(3),
            synced_version: Some(2),
            last_written_version: Some(1),
            versions: rows,
        };
        for format in [None, Some(Format::Json), Some(Format::Yaml)] {
            let text = render(&report, format, false).unwrap();
            assert!(!text.contains("canary"), "{text}");
        }
        let table = render(&report, None, false).unwrap();
        assert_eq!(
            table.lines().next().unwrap(),
            "VERSION   STATE         CREATED                DEACTIVATED            CURRENT   MIRRORED   WRITTEN"
        );
        assert_eq!(
            table.lines().nth(1).unwrap(),
            "3         deactivated   2025-01-03T10:00:00Z   2025-02-01T00:00:00Z   *"
        );
    }
}
