//! OpenAPI v3 discovery (`/openapi/v3`) and per group-version documents with
//! paths, operations (with `dryRun`, `fieldManager`, `fieldValidation`, `force`
//! parameters) and component schemas carrying `x-kubernetes-group-version-kind`.
//! Schemas are inlined (no `$ref`s).

use serde_json::{Map, Value, json};

use crate::resources::ResourceInfo;

fn gv_path(r: &ResourceInfo) -> String {
    if r.group.is_empty() {
        format!("api/{}", r.version)
    } else {
        format!("apis/{}/{}", r.group, r.version)
    }
}

fn hash(resources: &[ResourceInfo], gv: &str) -> String {
    let mut s = String::new();
    for r in resources.iter().filter(|r| gv_path(r) == gv) {
        s.push_str(&r.resource);
        s.push_str(&r.schema.to_string());
    }
    format!("{:08X}", crate::util::fnv32(s.as_bytes()))
}

/// `/openapi/v3`.
pub fn index(resources: &[ResourceInfo]) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<String> = resources.iter().map(gv_path).collect();
    gvs.sort();
    gvs.dedup();
    for gv in gvs {
        let h = hash(resources, &gv);
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={h}")}),
        );
    }
    json!({"paths": paths})
}

/// Component schema name (`io.k8s.api.apps.v1.Deployment`, `dev.example.v1.Widget`).
pub fn schema_name(r: &ResourceInfo) -> String {
    if r.custom {
        let rev: Vec<&str> = r.group.split('.').rev().collect();
        format!("{}.{}.{}", rev.join("."), r.version, r.kind)
    } else {
        let g = if r.group.is_empty() {
            "core".to_string()
        } else {
            r.group.trim_end_matches(".k8s.io").replace('.', "")
        };
        let g = match g.as_str() {
            "rbac.authorization" | "rbacauthorization" => "rbac".to_string(),
            "apiextensions" => {
                return format!(
                    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{}.{}",
                    r.version, r.kind
                );
            }
            _ => g,
        };
        format!("io.k8s.api.{g}.{}.{}", r.version, r.kind)
    }
}

fn param(name: &str, desc: &str) -> Value {
    json!({"name": name, "in": "query", "description": desc, "schema": {"type": "string", "uniqueItems": true}})
}

fn op(r: &ResourceInfo, action: &str, id: &str, with_write_params: bool, patch: bool) -> Value {
    let mut params = vec![];
    if with_write_params {
        params.push(param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ));
        params.push(param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."));
        params.push(param("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields."));
    }
    if patch {
        params.push(json!({"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
    let mut o = json!({
        "description": format!("{action} the specified {}", r.kind),
        "operationId": id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    if patch {
        let patch_schema = json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}});
        let mut content = Map::new();
        content.insert("application/apply-patch+yaml".into(), patch_schema.clone());
        content.insert("application/json-patch+json".into(), patch_schema.clone());
        content.insert("application/merge-patch+json".into(), patch_schema.clone());
        // Custom resources do not support strategic merge patch (kubectl's
        // client-side apply checks this to choose the patch type).
        if !r.custom {
            content.insert(
                "application/strategic-merge-patch+json".into(),
                patch_schema,
            );
        }
        o["requestBody"] = json!({"content": content, "required": true});
    }
    o
}

/// `/openapi/v3/{gv}`.
pub fn document(resources: &[ResourceInfo], gv: &str) -> Option<Value> {
    let rs: Vec<&ResourceInfo> = resources.iter().filter(|r| gv_path(r) == gv).collect();
    if rs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(), json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}));
    for r in rs {
        let base = if r.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}", r.resource)
        } else {
            format!("/{gv}/{}", r.resource)
        };
        let k = &r.kind;
        let mut item = Map::new();
        item.insert(
            "get".into(),
            op(r, "get", &format!("read{k}"), false, false),
        );
        item.insert(
            "put".into(),
            op(r, "put", &format!("replace{k}"), true, false),
        );
        item.insert(
            "patch".into(),
            op(r, "patch", &format!("patch{k}"), true, true),
        );
        item.insert(
            "delete".into(),
            op(r, "delete", &format!("delete{k}"), false, false),
        );
        item.insert(
            "parameters".into(),
            json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]),
        );
        paths.insert(format!("{base}/{{name}}"), Value::Object(item));
        let mut coll = Map::new();
        coll.insert(
            "get".into(),
            op(r, "list", &format!("list{k}"), false, false),
        );
        coll.insert(
            "post".into(),
            op(r, "post", &format!("create{k}"), true, false),
        );
        paths.insert(base.clone(), Value::Object(coll));
        if r.status_subresource {
            let mut st = Map::new();
            st.insert(
                "get".into(),
                op(r, "get", &format!("read{k}Status"), false, false),
            );
            st.insert(
                "put".into(),
                op(r, "put", &format!("replace{k}Status"), true, false),
            );
            st.insert(
                "patch".into(),
                op(r, "patch", &format!("patch{k}Status"), true, true),
            );
            paths.insert(format!("{base}/{{name}}/status"), Value::Object(st));
        }
        let mut schema = (*r.schema).clone();
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        schemas.insert(schema_name(r), schema);
        let mut list_schema = json!({"type": "object", "description": format!("{}List is a list of {}", k, k), "required": ["items"], "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{}", schema_name(r))}},
            "metadata": {"type": "object"}}});
        list_schema["x-kubernetes-group-version-kind"] =
            json!([{"group": r.group, "version": r.version, "kind": format!("{k}List")}]);
        schemas.insert(format!("{}List", schema_name(r)), list_schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}
