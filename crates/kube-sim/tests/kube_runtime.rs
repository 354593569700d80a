//! kube-runtime's Controller and metadata_watcher against the simulator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
#[allow(deprecated)]
use kube::runtime::metadata_watcher;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use kube_sim::{SimConfig, SimHandle};
use tokio::sync::mpsc;

fn client(sim: &SimHandle) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::new(sim.base_url().parse().unwrap());
    Client::try_from(config).unwrap()
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

async fn expect_reconcile(rx: &mut mpsc::UnboundedReceiver<String>, name: &str) {
    // kube-runtime backs off exponentially across its watchers' errors (after a
    // 410 on three watches that is up to ~13s), so allow for that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) if n == name => return,
            Ok(Some(_)) => continue,
            _ => panic!("no reconcile of {name}"),
        }
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<String>) {
    while rx.try_recv().is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_sees_changes_resumes_after_410_and_shuts_down() {
    let sim = start_with(SimConfig {
        bookmark_interval: Duration::from_secs(600),
        ..SimConfig::default()
    })
    .await;
    let client = client(&sim);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");

    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .owns(secrets.clone(), watcher::Config::default())
        .watches(
            deployments.clone(),
            watcher::Config::default(),
            |d: Deployment| {
                d.labels()
                    .get("configmap")
                    .map(|n| ObjectRef::<ConfigMap>::new(n).within("default"))
            },
        )
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        });
    let store = controller.store();
    let tx2 = tx.clone();
    let task = tokio::spawn(async move {
        controller
            .run(
                move |cm: Arc<ConfigMap>, tx: Arc<mpsc::UnboundedSender<String>>| async move {
                    let _ = tx.send(cm.name_any());
                    Ok::<_, Never>(Action::await_change())
                },
                |_cm, _err, _ctx| Action::requeue(Duration::from_secs(1)),
                Arc::new(tx2),
            )
            .for_each(|_| async {})
            .await;
    });

    // Create.
    let cm_a = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("a", serde_json::json!({"k": "1"}))).unwrap(),
        )
        .await
        .unwrap();
    expect_reconcile(&mut rx, "a").await;
    // Update.
    drain(&mut rx);
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    expect_reconcile(&mut rx, "a").await;
    // Owned object created and deleted.
    drain(&mut rx);
    let owner = cm_a.controller_owner_ref(&()).unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("a-secret".into()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        string_data: Some([("x".to_string(), "y".to_string())].into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    expect_reconcile(&mut rx, "a").await;
    drain(&mut rx);
    secrets
        .delete("a-secret", &DeleteParams::default())
        .await
        .unwrap();
    expect_reconcile(&mut rx, "a").await;
    // Watched object mapped to the configmap.
    drain(&mut rx);
    let mut d: Deployment = serde_json::from_value(deployment("web", "nginx:1")).unwrap();
    d.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("configmap".into(), "a".into());
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    expect_reconcile(&mut rx, "a").await;

    // 410: the history is compacted past the watchers' RV, and all watches break.
    let lists_before = sim.counters().get("list", "configmaps");
    let before_410 = sim.counters();
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "bump"}, "spec": {}}))
                .unwrap(),
        )
        .await
        .unwrap();
    sim.compact_watch_history();
    sim.break_watches();
    drain(&mut rx);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("b", serde_json::json!({}))).unwrap(),
    )
    .await
    .unwrap();
    expect_reconcile(&mut rx, "b").await;
    // One failed re-watch (410), then a re-list and a new watch per watched resource.
    // The three watchers recover independently (each with its own backoff), so the
    // ConfigMap watcher may deliver "b" before the other two have re-listed: wait
    // for them, then check that each re-listed exactly once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = sim.counters().diff(&before_410);
        if d.get("list", "secrets") >= 1 && d.get("list", "deployments") >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watchers did not re-list after 410"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = sim.counters().diff(&before_410);
    assert_eq!(d.get("list", "secrets"), 1);
    assert_eq!(d.get("list", "deployments"), 1);
    let lists_after = sim.counters().get("list", "configmaps");
    assert!(
        lists_after > lists_before,
        "controller re-listed after 410 ({lists_before} -> {lists_after})"
    );

    // Delete: the reflector store forgets it.
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if store.get(&ObjectRef::new("b").within("default")).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "deleted object still in the controller's store");
    assert!(store.get(&ObjectRef::new("a").within("default")).is_some());

    // Graceful shutdown.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("controller stopped")
        .unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)]
async fn metadata_watcher_sees_apply_and_delete() {
    let sim = start().await;
    let client = client(&sim);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("pre", serde_json::json!({"a": "b"}))).unwrap(),
    )
    .await
    .unwrap();
    let mut stream = metadata_watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut seen_init = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(m) => {
                assert_eq!(m.metadata.name.as_deref(), Some("pre"));
                assert_eq!(
                    m.types.as_ref().map(|t| t.kind.as_str()),
                    Some("PartialObjectMetadata")
                );
                seen_init = true;
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert!(seen_init);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("new", serde_json::json!({}))).unwrap(),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        watcher::Event::Apply(m) => assert_eq!(m.metadata.name.as_deref(), Some("new")),
        other => panic!("unexpected {other:?}"),
    }
    cms.delete("new", &DeleteParams::default()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        watcher::Event::Delete(m) => assert_eq!(m.metadata.name.as_deref(), Some("new")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(sim.counters().get("watch", "configmaps") >= 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_visible_through_core_api() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let sim = start().await;
    let client = client(&sim);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let obj = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("target", serde_json::json!({}))).unwrap(),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "my-operator".into(),
            instance: Some("pod-0".into()),
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("configured the provider".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = obj.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let uid = obj.metadata.uid.clone().unwrap();
    let (_, list) = get(&sim, &format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dtarget,involvedObject.kind%3DConfigMap,involvedObject.uid%3D{uid}")).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["message"], "configured the provider");
    assert_eq!(items[0]["reportingComponent"], "my-operator");
    assert_eq!(items[0]["reportingInstance"], "pod-0");
    assert_eq!(items[0]["series"]["count"], 2);
    assert_eq!(sim.counters().get("create", "events"), 1);
    assert_eq!(sim.counters().get("patch", "events"), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_streaming_lists_and_field_selectors() {
    let sim = start().await;
    let client = client(&sim);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for n in ["one", "two"] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(cm(n, serde_json::json!({}))).unwrap(),
        )
        .await
        .unwrap();
    }
    let cfg = watcher::Config::default()
        .streaming_lists()
        .fields("metadata.name=two");
    let mut stream = watcher(cms.clone(), cfg).boxed();
    let mut initial = vec![];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(o) => initial.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, vec!["two".to_string()]);
    cms.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "two",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"x": "2"}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        watcher::Event::Apply(o) => {
            assert_eq!(o.name_any(), "two");
            assert_eq!(o.data.unwrap()["x"], "2");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        sim.counters().get("list", "configmaps"),
        0,
        "streaming lists need no list call"
    );
    sim.shutdown().await;
}
