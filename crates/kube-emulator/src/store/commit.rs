//! What the API server does to an object it stores, on a create or an update: the type and
//! namespace checks, the name (`generateName`), server-set metadata, the status subresource,
//! `generation`, a CRD's finalizer and status, and a custom resource pruned, defaulted and
//! validated against its schema.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Value, json};

use super::write::removed_fields;
use super::{
    EventType, ObjKey, State, WriteOpts, finalizers, into_version, meta_str, metadata_mut, now,
    to_version,
};
use crate::error::ApiError;
use crate::registry::ResourceDef;
use crate::{builtin, crd, schema, ssa};

impl State {
    fn check_namespace(&self, def: &ResourceDef, ns: &str) -> Result<(), ApiError> {
        let terminating = self
            .terminating(
                &(String::new(), "namespaces".into()),
                &(String::new(), ns.to_string()),
            )
            .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
        if terminating {
            return Err(ApiError::forbidden(
                &def.group,
                &def.resource,
                "",
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    /// Prunes and validates a custom resource against its version's schema.
    fn validate_custom(
        &self,
        def: &ResourceDef,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<(), ApiError> {
        let Some(s) = def.schema(version) else {
            return Ok(());
        };
        let before = strict.then(|| obj.clone());
        schema::prune(s, obj);
        if let Some(before) = before {
            let mut unknown = Vec::new();
            removed_fields(&before, obj, "", &mut unknown);
            if !unknown.is_empty() {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = def.kind
                )));
            }
        }
        schema::apply_defaults(s, obj);
        let causes = schema::validate(s, obj, old);
        if causes.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid(
            &def.kind,
            &def.group,
            meta_str(obj, "name"),
            &schema_causes(causes),
        ))
    }

    pub(super) fn create(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOpts,
        from_apply: bool,
    ) -> Result<Arc<Value>, ApiError> {
        require_object(&obj)?;
        let api_version = def.api_version(version);
        check_type(def, &api_version, &obj)?;
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(def.kind);
        let body_ns = meta_str(&obj, "namespace").to_string();
        let ns = if def.namespaced {
            let ns = ns.unwrap_or_default().to_string();
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            self.check_namespace(def, &ns)?;
            metadata_mut(&mut obj).insert("namespace".into(), json!(ns));
            ns
        } else {
            metadata_mut(&mut obj).remove("namespace");
            String::new()
        };
        if let Some(crd_name) = &def.crd_name {
            let terminating = self.terminating(
                &(
                    "apiextensions.k8s.io".into(),
                    "customresourcedefinitions".into(),
                ),
                &(String::new(), crd_name.clone()),
            );
            if terminating == Some(true) {
                // kube-apiserver 1.34 answers 403 Forbidden here (405 before)
                return Err(ApiError::forbidden(
                    &def.group,
                    &def.resource,
                    meta_str(&obj, "name"),
                    "create not allowed while custom resource definition is terminating",
                ));
            }
        }
        let gr = def.gr();
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let gen_name = meta_str(&obj, "generateName").to_string();
            if gen_name.is_empty() {
                return Err(ApiError::invalid(
                    &def.kind,
                    &def.group,
                    "",
                    &[(
                        "FieldValueRequired".into(),
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
            for _ in 0..16 {
                let candidate = format!("{gen_name}{}", random_suffix());
                if !self.contains(&gr, &(ns.clone(), candidate.clone())) {
                    name = candidate;
                    break;
                }
            }
            metadata_mut(&mut obj).insert("name".into(), json!(name));
        }
        builtin::check_name(def, &obj, &name)?;
        let key: ObjKey = (ns, name.clone());
        if self.contains(&gr, &key) {
            return Err(ApiError::already_exists(&def.group, &def.resource, &name));
        }
        {
            let m = metadata_mut(&mut obj);
            for f in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(f);
            }
            if !from_apply {
                m.remove("managedFields");
            }
        }
        if def.has_status
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        builtin::prepare_create(def, &mut obj)?;
        if def.is_custom() {
            self.validate_custom(def, version, &mut obj, None, opts.strict)?;
        }
        let crd_def =
            if def.group == "apiextensions.k8s.io" && def.resource == "customresourcedefinitions" {
                let d = crd::resource_def(&obj)?;
                let mut fins = finalizers(&obj);
                if !fins.iter().any(|f| f == crd::CLEANUP_FINALIZER) {
                    fins.push(crd::CLEANUP_FINALIZER.into());
                }
                metadata_mut(&mut obj).insert("finalizers".into(), json!(fins));
                obj["status"] = crd::status(&obj, None, &d, &now());
                Some(d)
            } else {
                None
            };
        {
            let m = metadata_mut(&mut obj);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            if def.tracks_generation {
                m.insert("generation".into(), json!(1));
            }
        }
        if !from_apply {
            ssa::record_update(None, &mut obj, &opts.manager, def.schema(version), None);
        }
        if opts.dry_run {
            return Ok(Arc::new(obj));
        }
        let obj = into_version(obj, &def.storage_api_version());
        let stored = self.put(&gr, &key, obj, EventType::Added);
        if let Some(d) = crd_def {
            self.registry.defs.insert(d.gr(), Arc::new(d));
        }
        Ok(stored)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit_update(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        key: &ObjKey,
        old: Arc<Value>,
        mut new: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
        record: bool,
    ) -> Result<Arc<Value>, ApiError> {
        require_object(&new)?;
        let gr = def.gr();
        let api_version = def.api_version(version);
        check_type(def, &api_version, &new)?;
        let old_v = to_version(&old, &api_version);
        let body_rv = meta_str(&new, "resourceVersion").to_string();
        if !body_rv.is_empty() && body_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(&def.group, &def.resource, &key.1));
        }
        new["apiVersion"] = json!(api_version);
        new["kind"] = json!(def.kind);
        match sub {
            Some("status") => {
                if !def.has_status {
                    return Err(ApiError::no_route());
                }
                let mut merged = (*old_v).clone();
                match new.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        if let Some(o) = merged.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
                if !record && let Some(mf) = new.pointer("/metadata/managedFields") {
                    metadata_mut(&mut merged).insert("managedFields".into(), mf.clone());
                }
                new = merged;
            }
            Some("finalize") if def.resource == "namespaces" && def.group.is_empty() => {}
            Some(_) => return Err(ApiError::no_route()),
            None => {
                if def.has_status
                    && let Some(o) = new.as_object_mut()
                {
                    match old_v.get("status") {
                        Some(s) => {
                            o.insert("status".into(), s.clone());
                        }
                        None => {
                            o.remove("status");
                        }
                    }
                }
            }
        }
        {
            let old_meta = old_v.get("metadata").cloned().unwrap_or(Value::Null);
            let m = metadata_mut(&mut new);
            m.insert("name".into(), json!(key.1));
            if def.namespaced {
                m.insert("namespace".into(), json!(key.0));
            } else {
                m.remove("namespace");
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            if !record
                && m.get("managedFields").is_none()
                && let Some(mf) = old_meta.get("managedFields")
            {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        if sub.is_none() {
            builtin::prepare_update(def, &old_v, &mut new)?;
        }
        if def.is_custom() {
            self.validate_custom(def, version, &mut new, Some(&old_v), opts.strict)?;
        }
        let crd_def = if gr.0 == "apiextensions.k8s.io" && gr.1 == "customresourcedefinitions" {
            let d = crd::resource_def(&new)?;
            let od = crd::resource_def(&old_v)?;
            if d.gr() != od.gr() {
                return Err(ApiError::invalid(
                    &def.kind,
                    &def.group,
                    &key.1,
                    &[(
                        "FieldValueInvalid".into(),
                        "spec.group".into(),
                        "Invalid value: field is immutable".into(),
                    )],
                ));
            }
            let mut fins = finalizers(&new);
            if meta_str(&new, "deletionTimestamp").is_empty()
                && !fins.iter().any(|f| f == crd::CLEANUP_FINALIZER)
            {
                fins.push(crd::CLEANUP_FINALIZER.into());
                metadata_mut(&mut new).insert("finalizers".into(), json!(fins));
            }
            new["status"] = crd::status(&new, Some(&old_v), &d, &now());
            Some(d)
        } else {
            None
        };
        if def.tracks_generation && spec_part(&new) != spec_part(&old_v) {
            let g = old_v
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if record {
            ssa::record_update(
                Some(&old_v),
                &mut new,
                &opts.manager,
                def.schema(version),
                sub,
            );
        }
        if comparable(&new) == comparable(&old_v) {
            return Ok(old_v);
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        let new = into_version(new, &def.storage_api_version());
        if !meta_str(&new, "deletionTimestamp").is_empty() && finalizers(&new).is_empty() {
            let mut follow = VecDeque::new();
            self.put(&gr, key, new, EventType::Modified);
            let out = self.remove(&gr, key, &mut follow);
            self.run_followups(follow);
            return out.ok_or_else(|| ApiError::internal("object vanished during update"));
        }
        let stored = self.put(&gr, key, new, EventType::Modified);
        if let Some(d) = crd_def {
            self.registry.defs.insert(d.gr(), Arc::new(d));
        }
        Ok(stored)
    }
}

fn require_object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the body of the request must be a JSON object",
    ))
}

fn check_type(def: &ResourceDef, api_version: &str, obj: &Value) -> Result<(), ApiError> {
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the body ({k}) does not match the kind of the resource ({})",
            def.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != api_version
    {
        // A body for another served version of the same group is converted by rewriting.
        let same_group = match av.split_once('/') {
            Some((g, v)) => g == def.group && def.version(v).is_some(),
            None => def.group.is_empty() && def.version(av).is_some(),
        };
        if !same_group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({api_version})"
            )));
        }
    }
    Ok(())
}

/// The object without what the server may change on a no-op write.
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn schema_causes(causes: Vec<schema::Cause>) -> Vec<(String, String, String)> {
    causes
        .into_iter()
        .map(|c| (c.reason, c.field, c.message))
        .collect()
}
