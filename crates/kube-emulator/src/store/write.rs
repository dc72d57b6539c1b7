//! The four writes as requested (create, update, patch, delete) and the computation of a patch:
//! merge, JSON, strategic merge, and server-side apply, done outside the store's lock from the
//! object as read and committed only if it is still that one.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    DeleteOpts, Obj, ObjKey, PatchType, State, Store, WriteOpts, meta_str, metadata_mut, to_version,
};
use crate::error::ApiError;
use crate::registry::ResourceDef;
use crate::ssa;

impl Store {
    pub fn create(
        &self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        self.state.lock().create(def, version, ns, obj, opts, false)
    }

    pub fn update(
        &self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        obj: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.state.lock();
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != key.1 {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                key.1
            )));
        }
        let body_ns = meta_str(&obj, "namespace");
        if def.namespaced && !body_ns.is_empty() && body_ns != key.0 {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old = st
            .get(&def.gr(), key)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, &key.1))?;
        st.commit_update(def, version, key, old, obj, sub, opts, true)
    }

    /// Patches one object. The patched object is computed outside the store's lock (server-side
    /// apply is most of a write's cost) from the object as read, and committed only if the
    /// object is still that one; otherwise it is computed again from the newer object, like the
    /// API server's optimistic `GuaranteedUpdate`. After a few lost races the work is done under
    /// the lock, so a hot object cannot starve a writer.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        const OPTIMISTIC_ATTEMPTS: usize = 4;
        let gr = def.gr();
        let stored = |st: &State| st.tables.get(&gr).and_then(|t| t.get(key)).cloned();
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let seen = self.get_stored(&gr, key);
            let patched = patched(def, version, key, &ptype, body, sub, opts, seen.as_ref())?;
            let mut st = self.state.lock();
            if same(stored(&st).as_ref(), seen.as_ref()) {
                return st.commit_patch(def, version, key, patched, sub, opts);
            }
        }
        let mut st = self.state.lock();
        let seen = stored(&st);
        let patched = patched(def, version, key, &ptype, body, sub, opts, seen.as_ref())?;
        st.commit_patch(def, version, key, patched, sub, opts)
    }

    pub fn delete(
        &self,
        def: &Arc<ResourceDef>,
        key: &ObjKey,
        opts: &DeleteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.state.lock();
        let old = st
            .get(&def.gr(), key)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, &key.1))?;
        let preconditions = [
            (&opts.uid, "uid", "UID", "deleted and then recreated"),
            (
                &opts.resource_version,
                "resourceVersion",
                "ResourceVersion",
                "modified",
            ),
        ];
        for (wanted, field, name, since) in preconditions {
            let actual = meta_str(&old, field);
            if let Some(wanted) = wanted
                && wanted != actual
            {
                // as kube-apiserver's rest.BeforeDelete: the group and *kind*, not resource
                return Err(ApiError::conflict(
                    &def.group,
                    &def.kind,
                    &key.1,
                    &format!(
                        "the {name} in the precondition ({wanted}) does not match the {name} in record ({actual}). The object might have been {since}"
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok(old);
        }
        let mut follow = VecDeque::new();
        let out = st.delete_object(def, key, opts.propagation, &mut follow);
        st.run_followups(follow);
        Ok(out.unwrap_or(old))
    }
}

fn apply_error(def: &ResourceDef, name: &str, e: ssa::ApplyError) -> ApiError {
    match e {
        ssa::ApplyError::Conflicts(cs) => {
            let mut err = ApiError::new(409, "Conflict", ssa::conflict_message(&cs));
            let mut d = json!({ "name": name, "kind": def.resource });
            if !def.group.is_empty() {
                d["group"] = json!(def.group);
            }
            d["causes"] = Value::Array(
                cs.iter()
                    .map(|c| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": c.cause_message(),
                            "field": c.field,
                        })
                    })
                    .collect(),
            );
            err.details = Some(d);
            err
        }
        ssa::ApplyError::Invalid(msg) => ApiError::invalid(
            &def.kind,
            &def.group,
            name,
            &[("FieldValueInvalid".into(), String::new(), msg)],
        ),
    }
}

/// Whether two reads of an object are the same stored version (every write stores new bytes,
/// and a held read keeps its bytes alive, so their address cannot be reused meanwhile).
fn same(a: Option<&Obj>, b: Option<&Obj>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.0.as_ptr() == b.0.as_ptr() && a.0.len() == b.0.len(),
        _ => false,
    }
}

/// What a patch makes of an object: a new object to create (apply to an absent one), or the
/// old and the new value of an update.
enum Patched {
    Create(Value),
    Update {
        old: Arc<Value>,
        new: Value,
        record: bool,
    },
}

/// Applies a patch to the object as read (`seen`), without the store.
#[allow(clippy::too_many_arguments)]
fn patched(
    def: &ResourceDef,
    version: &str,
    key: &ObjKey,
    ptype: &PatchType,
    body: &Value,
    sub: Option<&str>,
    opts: &WriteOpts,
    seen: Option<&Obj>,
) -> Result<Patched, ApiError> {
    let api_version = def.api_version(version);
    let old = seen.map(Obj::value);
    let schema = def.schema(version);
    let live = old.as_ref().map(|o| to_version(o, &api_version));
    let not_found = || ApiError::not_found(&def.group, &def.resource, &key.1);
    match ptype {
        PatchType::Apply { force } => {
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the apply configuration must be an object",
                ));
            }
            let body_name = meta_str(body, "name");
            if !body_name.is_empty() && body_name != key.1 {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({})",
                    key.1
                )));
            }
            // An apply configuration without a name takes the URL's.
            let mut body = body.clone();
            metadata_mut(&mut body).insert("name".into(), json!(key.1));
            // Server-side apply types the configuration against the schema: a field it does not
            // declare is an error, not pruned (kube-apiserver: "field not declared in schema").
            if let Some(schema) = schema {
                let mut pruned = body.clone();
                crate::schema::prune(schema, &mut pruned);
                let mut unknown = Vec::new();
                removed_fields(&body, &pruned, "", &mut unknown);
                unknown.retain(|f| f != "apiVersion" && f != "kind" && !f.starts_with("metadata"));
                if let Some(field) = unknown.first() {
                    return Err(ApiError::new(
                        500,
                        "",
                        format!(
                            "failed to create typed patch object ({}/{}; {api_version}, Kind={}): .{field}: field not declared in schema",
                            key.0, key.1, def.kind
                        ),
                    ));
                }
            }
            let applied = ssa::apply(live.as_deref(), &body, &opts.manager, *force, schema, sub)
                .map_err(|e| apply_error(def, &key.1, e))?;
            match old {
                None if sub.is_some() => Err(not_found()),
                None => Ok(Patched::Create(applied)),
                Some(old) => Ok(Patched::Update {
                    old,
                    new: applied,
                    record: false,
                }),
            }
        }
        other => {
            let old = old.ok_or_else(not_found)?;
            let mut new = live.map(|l| (*l).clone()).unwrap_or(Value::Null);
            match other {
                PatchType::Merge => crate::patch::merge_patch(&mut new, body),
                PatchType::Json => {
                    let ops = null_tests_for_absent(&new, body);
                    crate::patch::json_patch(&mut new, &ops)
                        .map_err(|e| ApiError::new(422, "Invalid", e))?
                }
                _ => {
                    if def.is_custom() {
                        return Err(ApiError::unsupported_media_type(
                            "application/strategic-merge-patch+json is not supported for custom resources",
                        ));
                    }
                    crate::patch::strategic_merge_patch(&mut new, body, &api_version, &def.kind)
                        .map_err(|e| ApiError::new(422, "Invalid", e))?
                }
            }
            Ok(Patched::Update {
                old,
                new,
                record: true,
            })
        }
    }
}

impl State {
    /// Commits what [`patched`] computed.
    fn commit_patch(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        patched: Patched,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> Result<Arc<Value>, ApiError> {
        match patched {
            Patched::Create(applied) => {
                let ns = def.namespaced.then_some(key.0.as_str());
                self.create(def, version, ns, applied, opts, true)
            }
            Patched::Update { old, new, record } => {
                self.commit_update(def, version, key, old, new, sub, opts, record)
            }
        }
    }
}

/// Kubernetes' JSON patch treats `{"op":"test","value":null}` on an absent path as passing
/// (kube-runtime's finalizer helper relies on it); drop such ops before the RFC 6902 patch.
fn null_tests_for_absent(target: &Value, patch: &Value) -> Value {
    match patch.as_array() {
        Some(ops) => Value::Array(
            ops.iter()
                .filter(|op| {
                    let is_null_test = op.get("op").and_then(Value::as_str) == Some("test")
                        && op.get("value").is_some_and(Value::is_null);
                    let path = op.get("path").and_then(Value::as_str).unwrap_or("");
                    !(is_null_test && target.pointer(path).is_none_or(Value::is_null))
                })
                .cloned()
                .collect(),
        ),
        None => patch.clone(),
    }
}

/// Paths (`spec.a`, `spec.list[0].b`) present in `before` but not in `after`, skipping nulls.
pub(super) fn removed_fields(before: &Value, after: &Value, prefix: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                match a.get(k) {
                    None if !v.is_null() => out.push(join(k)),
                    Some(av) => removed_fields(v, av, &join(k), out),
                    None => {}
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if a.len() == b.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                removed_fields(bv, av, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}
