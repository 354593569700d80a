//! List, watch, discovery, Table and metadata-only answers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const T: Duration = Duration::from_secs(3);

async fn seed(sim: &kube_sim::SimHandle) {
    for i in 0..5 {
        let mut o = cm(&format!("c{i}"), json!({}));
        o["metadata"]["labels"] =
            json!({"idx": i.to_string(), "tier": if i % 2 == 0 { "even" } else { "odd" }});
        let (s, _) = post(sim, CMS, o).await;
        assert_eq!(s, 201);
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_pagination_and_selectors() {
    let sim = start().await;
    seed(&sim).await;
    let (_, all) = get(&sim, CMS).await;
    assert_eq!(all["kind"], "ConfigMapList");
    assert_eq!(names(&all), vec!["c0", "c1", "c2", "c3", "c4"]);
    let list_rv = rv(&all);
    let (_, p1) = get(&sim, &format!("{CMS}?limit=2")).await;
    assert_eq!(names(&p1), vec!["c0", "c1"]);
    assert_eq!(p1["metadata"]["remainingItemCount"], 3);
    let c = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, p2) = get(&sim, &format!("{CMS}?limit=2&continue={c}")).await;
    assert_eq!(names(&p2), vec!["c2", "c3"]);
    assert_eq!(rv(&p2), list_rv);
    let c2 = p2["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, p3) = get(&sim, &format!("{CMS}?limit=2&continue={c2}")).await;
    assert_eq!(names(&p3), vec!["c4"]);
    assert!(p3["metadata"].get("continue").is_none());
    let (s, _) = get(&sim, &format!("{CMS}?continue=!!!")).await;
    assert_eq!(s, 400);

    let q = |s: &str| {
        format!(
            "{CMS}?labelSelector={}",
            s.replace(' ', "%20")
                .replace('=', "%3D")
                .replace('!', "%21")
        )
    };
    assert_eq!(
        names(&get(&sim, &q("tier=even")).await.1),
        vec!["c0", "c2", "c4"]
    );
    assert_eq!(names(&get(&sim, &q("tier==odd")).await.1), vec!["c1", "c3"]);
    assert_eq!(
        names(&get(&sim, &q("tier!=even")).await.1),
        vec!["c1", "c3"]
    );
    assert_eq!(
        names(&get(&sim, &q("idx in (1,4)")).await.1),
        vec!["c1", "c4"]
    );
    assert_eq!(
        names(&get(&sim, &q("idx notin (1,4),tier")).await.1),
        vec!["c0", "c2", "c3"]
    );
    assert_eq!(names(&get(&sim, &q("!tier")).await.1), Vec::<String>::new());
    assert_eq!(
        names(
            &get(&sim, &format!("{CMS}?fieldSelector=metadata.name%3Dc3"))
                .await
                .1
        ),
        vec!["c3"]
    );
    assert_eq!(
        names(
            &get(&sim, &format!("{CMS}?fieldSelector=metadata.name%21%3Dc3"))
                .await
                .1
        )
        .len(),
        4
    );
    let (s, e) = get(&sim, &format!("{CMS}?fieldSelector=data.x%3D1")).await;
    assert_eq!(s, 400);
    assert_eq!(e["message"], "field label not supported: data.x");

    // All namespaces.
    post(
        &sim,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "other"}}),
    )
    .await;
    post(
        &sim,
        "/api/v1/namespaces/other/configmaps",
        cm("z", json!({})),
    )
    .await;
    let (_, everywhere) = get(&sim, "/api/v1/configmaps").await;
    assert_eq!(names(&everywhere), vec!["c0", "c1", "c2", "c3", "c4", "z"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_initial_resume_and_gone() {
    let sim = start().await;
    seed(&sim).await;
    let (_, list) = get(&sim, CMS).await;
    let list_rv: u64 = rv(&list).parse().unwrap();
    // Without RV: synthetic ADDED for current objects.
    let mut w0 = Watch::open(&sim, &format!("{CMS}?watch=true")).await;
    let evs = w0.take(5, T).await;
    assert_eq!(evs.iter().filter(|e| e["type"] == "ADDED").count(), 5);
    // Resume from the list RV: only later changes.
    let mut w = Watch::open(&sim, &format!("{CMS}?watch=true&resourceVersion={list_rv}")).await;
    let (_, upd) = patch(
        &sim,
        &format!("{CMS}/c1"),
        "application/merge-patch+json",
        json!({"data": {"a": "b"}}),
    )
    .await;
    delete(&sim, &format!("{CMS}/c2")).await;
    let evs = w.take(2, T).await;
    assert_eq!(evs[0]["type"], "MODIFIED");
    assert_eq!(evs[0]["object"]["metadata"]["name"], "c1");
    assert_eq!(
        evs[0]["object"]["metadata"]["resourceVersion"],
        upd["metadata"]["resourceVersion"]
    );
    assert_eq!(evs[1]["type"], "DELETED");
    assert_eq!(evs[1]["object"]["metadata"]["name"], "c2");
    let rv_del: u64 = rv(&evs[1]["object"]).parse().unwrap();
    assert!(
        rv_del
            > upd["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
    );
    // A late watcher replays history after the list RV.
    let mut replay = Watch::open(&sim, &format!("{CMS}?watch=1&resourceVersion={list_rv}")).await;
    let evs = replay.take(2, T).await;
    assert_eq!(
        evs.iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["MODIFIED", "DELETED"]
    );
    // Compacted history: 410 Expired as a single ERROR event, then the stream ends.
    sim.compact_watch_history();
    let mut gone = Watch::open(&sim, &format!("{CMS}?watch=1&resourceVersion={list_rv}")).await;
    let ev = gone.next(T).await.unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        ev["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {list_rv} ("))
    );
    assert!(gone.next(T).await.is_none());
    // break_watches ends open streams.
    sim.break_watches();
    assert!(w.next(T).await.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_history_limit_gives_gone() {
    let sim = start_with(kube_sim::SimConfig {
        watch_history: 3,
        ..Default::default()
    })
    .await;
    let (_, v) = post(&sim, CMS, cm("x", json!({}))).await;
    for i in 0..5 {
        patch(
            &sim,
            &format!("{CMS}/x"),
            "application/merge-patch+json",
            json!({"data": {"i": i.to_string()}}),
        )
        .await;
    }
    let mut w = Watch::open(&sim, &format!("{CMS}?watch=1&resourceVersion={}", rv(&v))).await;
    assert_eq!(w.next(T).await.unwrap()["object"]["code"], 410);
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_selectors_bookmarks_timeout_and_streaming_lists() {
    let sim = start_with(kube_sim::SimConfig {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let (_, base) = post(&sim, CMS, cm("s", json!({}))).await;
    let mut w = Watch::open(
        &sim,
        &format!(
            "{CMS}?watch=1&labelSelector=app%3Dweb&allowWatchBookmarks=true&resourceVersion={}",
            rv(&base)
        ),
    )
    .await;
    patch(
        &sim,
        &format!("{CMS}/s"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "web"}}}),
    )
    .await;
    patch(
        &sim,
        &format!("{CMS}/s"),
        "application/merge-patch+json",
        json!({"data": {"k": "v"}}),
    )
    .await;
    patch(
        &sim,
        &format!("{CMS}/s"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "db"}}}),
    )
    .await;
    let mut types = vec![];
    let mut bookmark = None;
    while let Some(e) = w.next(Duration::from_secs(2)).await {
        if e["type"] == "BOOKMARK" {
            bookmark = Some(e);
            if types.len() == 3 {
                break;
            }
        } else {
            types.push(e["type"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        types,
        vec!["ADDED", "MODIFIED", "DELETED"],
        "selector transitions"
    );
    let b = bookmark.expect("bookmark");
    assert_eq!(b["object"]["kind"], "ConfigMap");
    assert!(
        b["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&base).parse().unwrap()
    );

    // timeoutSeconds closes the stream.
    let (_, now) = get(&sim, CMS).await;
    let start = std::time::Instant::now();
    let mut t = Watch::open(
        &sim,
        &format!(
            "{CMS}?watch=1&timeoutSeconds=1&resourceVersion={}",
            rv(&now)
        ),
    )
    .await;
    assert!(t.next(Duration::from_secs(15)).await.is_none());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "closed by timeoutSeconds, not by our read timeout"
    );

    // Streaming list: initial ADDED events then a bookmark marking the end.
    let mut s = Watch::open(&sim, &format!("{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")).await;
    let first = s.next(T).await.unwrap();
    assert_eq!(first["type"], "ADDED");
    let second = s.next(T).await.unwrap();
    assert_eq!(second["type"], "BOOKMARK");
    assert_eq!(
        second["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_watches() {
    let sim = start().await;
    let mut watches = vec![];
    for _ in 0..100 {
        watches.push(Watch::open(&sim, &format!("{CMS}?watch=1&resourceVersion=1")).await);
    }
    for i in 0..10 {
        post(&sim, CMS, cm(&format!("m{i}"), json!({}))).await;
    }
    for w in watches.iter_mut() {
        let evs = w.take(10, Duration::from_secs(10)).await;
        assert_eq!(evs.len(), 10);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn discovery_documents() {
    let sim = start().await;
    install_crd(&sim).await;
    let (_, v) = get(&sim, "/version").await;
    assert_eq!(v["gitVersion"], "v1.33.0");
    let (_, api) = get(&sim, "/api").await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, core) = get(&sim, "/api/v1").await;
    let ns = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap();
    assert_eq!(ns["namespaced"], false);
    assert_eq!(ns["shortNames"], json!(["ns"]));
    let (_, groups) = get(&sim, "/apis").await;
    let g = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "example.dev")
        .unwrap();
    assert_eq!(g["preferredVersion"]["version"], "v1alpha1");
    let (_, rl) = get(&sim, "/apis/example.dev/v1alpha1").await;
    let names: Vec<&str> = rl["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["widgets", "widgets/status"]);
    let w = &rl["resources"][0];
    assert_eq!(w["kind"], "Widget");
    assert_eq!(w["singularName"], "widget");
    assert_eq!(w["shortNames"], json!(["wg"]));
    assert_eq!(w["categories"], json!(["all"]));
    assert_eq!(w["namespaced"], true);
    assert_eq!(
        w["verbs"],
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    );
    let (_, apps) = get(&sim, "/apis/apps/v1").await;
    assert!(
        apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/status")
    );
    // OpenAPI v3.
    let (_, idx) = get(&sim, "/openapi/v3").await;
    let url = idx["paths"]["apis/example.dev/v1alpha1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, doc) = get(&sim, &url).await;
    assert_eq!(s, 200);
    let schema = &doc["components"]["schemas"]["dev.example.v1alpha1.Widget"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"][0]["kind"],
        "Widget"
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["mode"]["description"],
        "How the widget operates."
    );
    let patch_op =
        &doc["paths"]["/apis/example.dev/v1alpha1/namespaces/{namespace}/widgets/{name}"]["patch"];
    let params: Vec<&str> = patch_op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        vec!["dryRun", "fieldManager", "fieldValidation", "force"]
    );
    sim.shutdown().await;
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[tokio::test]
async fn table_and_metadata_answers() {
    let sim = start().await;
    install_crd(&sim).await;
    let base = "/apis/example.dev/v1alpha1/namespaces/default/widgets";
    post(&sim, base, json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"mode": "Manual", "url": "u"}})).await;
    patch(&sim, &format!("{base}/w/status"), "application/merge-patch+json", json!({"status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}})).await;
    let (_, t, _) = call_h(&sim, "GET", base, None, None, Some(TABLE)).await;
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, vec!["Name", "Mode", "Ready", "Age"]);
    let cells = &t["rows"][0]["cells"];
    assert_eq!(cells[0], "w");
    assert_eq!(cells[1], "Manual");
    assert_eq!(cells[2], "True");
    assert!(cells[3].as_str().unwrap().ends_with('s'));
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert!(t["rows"][0]["object"].get("spec").is_none());
    // Deployment columns.
    post(
        &sim,
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("web", "nginx:1"),
    )
    .await;
    let (_, t, _) = call_h(
        &sim,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        None,
        None,
        Some(TABLE),
    )
    .await;
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        vec!["Name", "Ready", "Up-to-date", "Available", "Age"]
    );
    // Default columns.
    post(&sim, CMS, cm("c", json!({"a": "1", "b": "2"}))).await;
    let (_, t, _) = call_h(
        &sim,
        "GET",
        "/api/v1/namespaces/default/serviceaccounts",
        None,
        None,
        Some(TABLE),
    )
    .await;
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, vec!["Name", "Age"]);
    // Metadata only.
    let (_, m, _) = call_h(
        &sim,
        "GET",
        CMS,
        None,
        None,
        Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
    )
    .await;
    assert_eq!(m["kind"], "PartialObjectMetadataList");
    assert_eq!(m["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(m["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(m["items"][0]["metadata"]["name"], "c");
    assert!(m["items"][0].get("data").is_none());
    let (_, one, _) = call_h(
        &sim,
        "GET",
        &format!("{CMS}/c"),
        None,
        None,
        Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
    )
    .await;
    assert_eq!(one["kind"], "PartialObjectMetadata");
    let mut mw = Watch::open_accept(
        &sim,
        &format!("{CMS}?watch=1"),
        Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
    )
    .await;
    let ev = mw.next(T).await.unwrap();
    assert_eq!(ev["object"]["kind"], "PartialObjectMetadata");
    assert!(ev["object"].get("data").is_none());
    // `kubectl get -w` watches with Table output: one-row Tables per event.
    let mut tw = Watch::open_accept(&sim, &format!("{CMS}?watch=1"), Some(TABLE)).await;
    let ev = tw.next(T).await.unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "Table");
    assert_eq!(ev["object"]["rows"][0]["cells"][0], "c");
    assert_eq!(ev["object"]["rows"][0]["cells"][1], 2);
    sim.shutdown().await;
}

/// A group-version is discoverable exactly while a CRD serves it: 404 (a `Status`) before, the
/// resource listed after, 404 again once the CRD is deleted; its custom resources can be listed
/// across namespaces with a `metadata.name` field selector. Discovery requests are counted under
/// their path.
#[tokio::test]
async fn a_crds_group_version_is_discoverable_only_while_the_crd_exists() {
    let sim = start().await;
    let (s, v) = get(&sim, "/apis/example.dev/v1alpha1").await;
    assert_eq!(
        (s, v["kind"].as_str(), v["code"].as_u64()),
        (404, Some("Status"), Some(404))
    );
    let (s, _) = get(&sim, "/apis/example.dev/v1alpha1/widgets").await;
    assert_eq!(s, 404);
    install_crd(&sim).await;
    let (s, rl) = get(&sim, "/apis/example.dev/v1alpha1").await;
    assert_eq!(s, 200);
    assert_eq!(rl["resources"][0]["name"], "widgets");
    for ns in ["a", "b"] {
        let (s, v) = post(
            &sim,
            "/api/v1/namespaces",
            json!({"metadata": {"name": ns}}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    for (ns, name) in [("a", "w1"), ("b", "w1"), ("b", "w2")] {
        let (s, v) = post(
            &sim,
            &format!("/apis/example.dev/v1alpha1/namespaces/{ns}/widgets"),
            json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": {"mode": "Auto", "url": "https://example.dev"}}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, list) = get(
        &sim,
        "/apis/example.dev/v1alpha1/widgets?fieldSelector=metadata.name%3Dw1",
    )
    .await;
    assert_eq!(s, 200, "{list}");
    let mut found: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    assert_eq!(found, vec!["a/w1", "b/w1"]);
    let (s, _) = delete(
        &sim,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev",
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = get(&sim, "/apis/example.dev/v1alpha1").await;
    assert_eq!(s, 404);
    let c = sim.counters();
    assert_eq!(c.get("get", "/apis/example.dev/v1alpha1"), 3);
    sim.shutdown().await;
}
