//! `kubectl okms rollback NAME --to N`: deactivate the active versions newer than N, so that N
//! is the newest active version — the one the operator mirrors.

use okms_operator::crd::OkmsSecret;
use okms_operator::okms::{SecretVersion, VersionState};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::remote::Remote;

/// What a rollback to `to` must deactivate: the active versions newer than it, newest first
/// (empty: `to` is already the newest active one). Refused when `to` is not an active version.
pub fn plan(versions: &[SecretVersion], to: u32, path: &str) -> Result<Vec<u32>> {
    match versions.iter().find(|v| v.id == to) {
        None => {
            let mut ids: Vec<u32> = versions.iter().map(|v| v.id).collect();
            ids.sort_unstable();
            return Err(Error::new(format!(
                "OKMS secret {path:?} has no version {to} (versions: {})",
                list(&ids)
            )));
        }
        Some(v) if v.state != VersionState::Active => {
            return Err(Error::new(format!(
                "version {to} of OKMS secret {path:?} is {}, not active: a rollback goes back to \
                 an active version only (reactivate it in OKMS first)",
                v.state
            )));
        }
        Some(_) => {}
    }
    let mut newer: Vec<u32> = versions
        .iter()
        .filter(|v| v.id > to && v.state == VersionState::Active)
        .map(|v| v.id)
        .collect();
    newer.sort_unstable_by_key(|id| std::cmp::Reverse(*id));
    Ok(newer)
}

/// `5, 4 and 3`.
pub fn list(ids: &[u32]) -> String {
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    match ids.split_last() {
        None => "none".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// What the user should know before confirming (and is told with `--yes` too).
pub fn notes(obj: &OkmsSecret, display: &str, to: u32) -> Vec<String> {
    let mut notes = Vec::new();
    if obj.spec.source.is_some() {
        notes.push(format!(
            "note: {display} pushes spec.source to OKMS: the rollback holds only until the \
             source changes; its next change is written as a new version, and the source wins"
        ));
    }
    if let Some(pinned) = obj.spec.version
        && pinned != to
    {
        notes.push(format!(
            "note: {display} pins spec.version {pinned}: the operator mirrors that version, \
             whichever is the newest active one"
        ));
    }
    notes
}

/// The outcome, as printed by `-o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub namespace: String,
    pub name: String,
    pub path: String,
    pub to: u32,
    /// Newest first.
    pub deactivated: Vec<u32>,
}

/// Lists the versions and plans the rollback.
pub async fn prepare(remote: &Remote, to: u32) -> Result<Vec<u32>> {
    let versions = remote.client.list_all_versions(&remote.path).await?;
    plan(&versions, to, &remote.path)
}

/// Deactivates the planned versions, newest first; on a failure, says which were done.
pub async fn execute(remote: &Remote, newer: &[u32]) -> Result<()> {
    for (i, id) in newer.iter().enumerate() {
        if let Err(e) = remote
            .client
            .update_version_state(&remote.path, *id, VersionState::Deactivated)
            .await
        {
            let done = if i == 0 {
                "nothing was deactivated".to_string()
            } else {
                format!("versions {} were deactivated", list(&newer[..i]))
            };
            return Err(Error::new(format!(
                "deactivating version {id} failed ({done}): {e}"
            )));
        }
    }
    Ok(())
}

/// Whether a confirmation answer is a yes (`y`, `yes`, any case); anything else is a no.
pub fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(states: &[(u32, VersionState)]) -> Vec<SecretVersion> {
        states
            .iter()
            .map(|(id, state)| {
                serde_json::from_value(serde_json::json!({"id": id, "state": state})).unwrap()
            })
            .collect()
    }

    #[test]
    fn only_newer_active_versions_are_deactivated_newest_first() {
        use VersionState::*;
        let v = versions(&[
            (1, Active),
            (2, Active),
            (3, Deactivated),
            (4, Active),
            (5, Active),
            (6, Deleted),
        ]);
        assert_eq!(plan(&v, 2, "p").unwrap(), vec![5, 4]);
        assert_eq!(plan(&v, 1, "p").unwrap(), vec![5, 4, 2]);
        assert_eq!(plan(&v, 5, "p").unwrap(), Vec::<u32>::new());
        let inactive = plan(&v, 3, "p").unwrap_err();
        assert!(inactive.0.contains("deactivated, not active"), "{inactive}");
        assert!(plan(&v, 6, "p").unwrap_err().0.contains("deleted"));
        let missing = plan(&v, 9, "p").unwrap_err();
        assert!(
            missing
                .0
                .contains("no version 9 (versions: 1, 2, 3, 4, 5 and 6)"),
            "{missing}"
        );
    }

    #[test]
    fn only_a_yes_confirms() {
        for yes in ["y", "Y", "yes", " YES\n"] {
            assert!(confirmed(yes), "{yes:?}");
        }
        for no in ["", "n", "no", "yep", "\n"] {
            assert!(!confirmed(no), "{no:?}");
        }
    }

    #[test]
    fn lists_read_as_sentences() {
        assert_eq!(list(&[]), "none");
        assert_eq!(list(&[5]), "5");
        assert_eq!(list(&[5, 4]), "5 and 4");
        assert_eq!(list(&[5, 4, 2]), "5, 4 and 2");
    }
}
