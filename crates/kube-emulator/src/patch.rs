//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! for the built-in kinds the emulator stores. (Pure: no I/O.)

use serde_json::Value;

/// RFC 7386 JSON merge patch, applied in place.
pub fn merge_patch(_target: &mut Value, _patch: &Value) {}

/// RFC 6902 JSON patch, applied in place; the error names the failing operation.
pub fn json_patch(_target: &mut Value, _patch: &Value) -> Result<(), String> {
    Ok(())
}

/// Strategic merge patch for a built-in kind (`api_version`/`kind` select the merge keys); for a
/// kind it does not know it behaves as a JSON merge patch.
pub fn strategic_merge_patch(
    _target: &mut Value,
    _patch: &Value,
    _api_version: &str,
    _kind: &str,
) -> Result<(), String> {
    Ok(())
}
