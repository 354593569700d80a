//! `oidc-bench`: the benchmark harness of issue 8.
//!
//! The Kubernetes API simulator (`kube-sim`) and the Keycloak admin-API simulator run in this
//! process; the operator's real release binary runs as a separate process (`run`, pointed at the
//! simulator by `KUBECONFIG`), so its CPU time (`/proc/<pid>/stat` utime+stime) and peak RSS
//! (`/proc/<pid>/status` VmHWM) are its own. The scenario is seeded through the simulator's direct
//! store access (not counted as API requests), then the operator is started and the harness polls
//! the store (again without API requests) until every policy is `Ready=True` for its generation.
//!
//! Scenario 5 adds policies aimed at a tarpit: a listener in this process that accepts every
//! connection, sends a response head promising a 100,000-byte body and then one byte a second,
//! and keeps the connection open until the operator gives up. Each of its runs is paired with a
//! baseline run without the tarpit policies (same policies, same flags), and the healthy
//! policies' time to all-Ready of the two is compared.
//!
//! Every loop here is bounded in count and in time, and all traffic is on loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod tarpit;

const USAGE: &str = "\
oidc-bench: convergence time, memory, CPU and API calls of oidc-refresh-operator

USAGE: oidc-bench [OPTIONS]

  --scenario 1|2|3|4|5|all scenario(s) to run (default all = 1,2,3,4)
                           1: N policies in M namespaces, one Keycloak simulator
                           2: 1 + unrelated Deployments and Secrets (default 10000 each)
                           3: 1 + steady state for --steady-intervals intervals
                           4: 1 + the IdP throttles (--throttle share of admin calls get 429)
                           5: 1 + --tarpit-policies policies aimed at a tarpit host, each run
                              paired with a baseline run without them (not part of all)
  --policies N             policies (default 1000)
  --namespaces N           namespaces (default 100)
  --unrelated N            unrelated Deployments and Secrets each (default: 0; 10000 in scenario 2)
  --idp-latency D          delay of every IdP answer (default 20ms)
  --throttle R             share of admin calls answered 429 in scenario 4 (default 0.2)
  --retry-after S          Retry-After seconds of those 429s (default 1)
  --interval D             the policies' spec.interval (default 30s, the minimum)
  --steady-intervals N     intervals observed in scenario 3 (default 3)
  --tarpit-policies N      policies aimed at the tarpit in scenario 5 (default 20)
  --runs N                 runs per scenario; medians are reported (default 3)
  --timeout D              give up waiting for all-Ready after this long (default 300s)
  --operator PATH          operator binary (default target/release/oidc-refresh-operator)
  --operator-arg ARG       passed to `run` (repeatable), e.g. --operator-arg=--concurrency=16
  --sweep LIST             instead of scenarios: scenario 1 once per operator-arg set; sets are
                           separated by ';' and args inside a set by ' ', e.g.
                           --sweep '--concurrency=4;--concurrency=8 --provider-qps=0'
  --json                   print JSON instead of tables
  --keep-logs DIR          keep the operator's logs there
";

#[derive(Clone, Debug)]
struct Args {
    scenarios: Vec<u8>,
    policies: usize,
    namespaces: usize,
    unrelated: Option<usize>,
    idp_latency: Duration,
    throttle: f64,
    retry_after: u64,
    interval: Duration,
    steady_intervals: u32,
    tarpit_policies: usize,
    runs: usize,
    timeout: Duration,
    operator: PathBuf,
    operator_args: Vec<String>,
    sweep: Option<Vec<Vec<String>>>,
    json: bool,
    keep_logs: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        scenarios: vec![1, 2, 3, 4],
        policies: 1000,
        namespaces: 100,
        unrelated: None,
        idp_latency: Duration::from_millis(20),
        throttle: 0.2,
        retry_after: 1,
        interval: Duration::from_secs(30),
        steady_intervals: 3,
        tarpit_policies: 20,
        runs: 3,
        timeout: Duration::from_secs(300),
        operator: PathBuf::from("target/release/oidc-refresh-operator"),
        operator_args: Vec::new(),
        sweep: None,
        json: false,
        keep_logs: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{key}: {e}"));
        match key.as_str() {
            "--scenario" => {
                let v = value()?;
                a.scenarios = if v == "all" {
                    vec![1, 2, 3, 4]
                } else {
                    v.split(',')
                        .map(|s| match s.trim() {
                            "1" => Ok(1),
                            "2" => Ok(2),
                            "3" => Ok(3),
                            "4" => Ok(4),
                            "5" => Ok(5),
                            o => Err(format!("unknown scenario {o:?}")),
                        })
                        .collect::<Result<_, _>>()?
                };
            }
            "--policies" => a.policies = num(value()?)?.max(1),
            "--namespaces" => a.namespaces = num(value()?)?.max(1),
            "--unrelated" => a.unrelated = Some(num(value()?)?),
            "--idp-latency" => a.idp_latency = parse_duration(&value()?)?,
            "--throttle" => {
                a.throttle = value()?
                    .parse::<f64>()
                    .map_err(|e| format!("{key}: {e}"))?
                    .clamp(0.0, 1.0)
            }
            "--retry-after" => a.retry_after = num(value()?)? as u64,
            "--interval" => a.interval = parse_duration(&value()?)?,
            "--steady-intervals" => a.steady_intervals = num(value()?)?.min(100) as u32,
            "--tarpit-policies" => a.tarpit_policies = num(value()?)?.min(10_000),
            "--runs" => a.runs = num(value()?)?.clamp(1, 50),
            "--timeout" => a.timeout = parse_duration(&value()?)?,
            "--operator" => a.operator = PathBuf::from(value()?),
            "--operator-arg" => a.operator_args.push(value()?),
            "--sweep" => {
                a.sweep = Some(
                    value()?
                        .split(';')
                        .map(|set| set.split_whitespace().map(String::from).collect())
                        .collect(),
                )
            }
            "--json" => a.json = true,
            "--keep-logs" => a.keep_logs = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if a.interval < Duration::from_secs(30) {
        return Err("--interval must be at least 30s (the CRD's minimum)".into());
    }
    Ok(a)
}

/// One scenario's configuration.
#[derive(Clone, Debug)]
struct Plan {
    label: String,
    scenario: u8,
    policies: usize,
    namespaces: usize,
    unrelated: usize,
    idp_latency: Duration,
    throttle: f64,
    retry_after: u64,
    interval: Duration,
    steady_intervals: u32,
    /// Policies aimed at the tarpit host (scenario 5; 0 in its baseline runs).
    tarpit_policies: usize,
    timeout: Duration,
    operator_args: Vec<String>,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct RunResult {
    ready: usize,
    all_ready: bool,
    time_to_ready_s: f64,
    reconciles: f64,
    reconciles_per_s: f64,
    /// Peak RSS (VmHWM) at all-Ready, MiB.
    rss_ready_mib: f64,
    /// Peak RSS (VmHWM) at the end of the run, MiB.
    rss_peak_mib: f64,
    cpu_ready_s: f64,
    cpu_total_s: f64,
    /// Kubernetes requests during convergence, by "verb resource".
    kube_converge: BTreeMap<String, u64>,
    kube_converge_writes: u64,
    /// IdP requests during convergence, by "METHOD route".
    idp_converge: BTreeMap<String, u64>,
    idp_converge_total: u64,
    idp_converge_writes: u64,
    idp_converge_429: u64,
    /// Steady state (only when observed).
    steady_seconds: f64,
    steady_intervals: f64,
    kube_steady: BTreeMap<String, u64>,
    kube_steady_writes: u64,
    kube_steady_reads: u64,
    idp_steady: BTreeMap<String, u64>,
    idp_steady_writes: u64,
    idp_steady_reads: u64,
    idp_steady_total: u64,
    reconciles_steady: f64,
    /// Tarpit connections open at once, at most (scenario 5).
    tarpit_max_open: u64,
    /// Tarpit connections accepted until all healthy policies were Ready (scenario 5).
    tarpit_accepted: u64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32, tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may contain spaces) start at field 3.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime is field 14, stime 15 (1-based), i.e. 11 and 12 after the state field (3).
    (n(11) + n(12)) / tck
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `GET /metrics` of the operator (HTTP/1.0, loopback, 2 s timeout).
fn scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.take(4 << 20).read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn reconciles(addr: SocketAddr) -> f64 {
    scrape(addr)
        .and_then(|t| metric(&t, "oidc_refresh_reconciles_total"))
        .unwrap_or(f64::NAN)
}

fn kube_map(c: &kube_sim::RequestCounters) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (verb, resource, _outcome, n) in c.entries() {
        *m.entry(format!("{verb} {resource}")).or_insert(0) += n;
    }
    m
}

fn idp_map(c: &sim_keycloak::SimCounters) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for ((method, route, _), n) in &c.by_route {
        *m.entry(format!("{method} {route}")).or_insert(0) += n;
    }
    m
}

fn idp_diff(
    a: &sim_keycloak::SimCounters,
    b: &sim_keycloak::SimCounters,
) -> sim_keycloak::SimCounters {
    let mut out = sim_keycloak::SimCounters::default();
    for (k, v) in &b.by_route {
        let before = a.by_route.get(k).copied().unwrap_or(0);
        if *v > before {
            out.by_route.insert(k.clone(), v - before);
        }
    }
    out
}

const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

fn kube_reads(c: &kube_sim::RequestCounters) -> u64 {
    c.entries()
        .iter()
        .filter(|(v, ..)| READ_VERBS.contains(&v.as_str()))
        .map(|e| e.3)
        .sum()
}

/// The Coder Deployment, shaped like the Coder Helm chart's (as in `src/sandbox.rs`).
fn coder_deployment(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": ns}
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": name}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": name}},
                "spec": {
                    "serviceAccountName": "coder",
                    "containers": [{
                        "name": "coder",
                        "image": "ghcr.io/coder/coder:v2.27.0",
                        "args": ["server"],
                        "env": [
                            {"name": "CODER_HTTP_ADDRESS", "value": "0.0.0.0:8080"},
                            {"name": "CODER_PROMETHEUS_ADDRESS", "value": "0.0.0.0:2112"},
                            {"name": "CODER_ACCESS_URL", "value": format!("https://{name}.{ns}.example.com")},
                            {"name": "CODER_PG_CONNECTION_URL", "valueFrom": {"secretKeyRef": {"name": "coder-db-url", "key": "url"}}},
                            {"name": "CODER_OIDC_ISSUER_URL", "value": "https://sso.example.com/realms/bench"},
                            {"name": "CODER_OIDC_CLIENT_ID", "value": name},
                            {"name": "CODER_OIDC_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "coder-oidc", "key": "client-secret"}}}
                        ],
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}
                    }]
                }
            }
        }
    })
}

/// An unrelated workload Deployment (what else runs in a busy cluster).
fn unrelated_deployment(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "team": "other"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "registry.example.com/app:1.2.3",
                    "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
                }]}
            }
        }
    })
}

const ADMIN_CLIENT: &str = "bench-operator";
const ADMIN_SECRET: &str = "bench-operator-secret";
const REALM: &str = "bench";

fn policy_name(i: usize) -> String {
    format!("coder-{i:05}")
}

fn namespace_of(plan: &Plan, i: usize) -> String {
    format!("bench-{:03}", i % plan.namespaces)
}

/// The Keycloak realm: one realm `bench` with one Coder client per policy (as `seed_sandbox`
/// shapes it: refresh tokens off, `offline_access` not linked, `fullScopeAllowed` off) and one
/// service account with view/manage-clients and view-realm.
fn seed_keycloak(kc: &sim_keycloak::SimHandle, plan: &Plan) {
    kc.add_realm(REALM);
    kc.add_service_account(
        REALM,
        ADMIN_CLIENT,
        ADMIN_SECRET,
        REALM,
        &["view-clients", "manage-clients", "view-realm"],
    );
    for i in 0..plan.policies {
        let name = policy_name(i);
        let mut c = sim_keycloak::stock_client(&name);
        c["name"] = json!("Coder");
        c["redirectUris"] = json!([format!(
            "https://{name}.example.com/api/v2/users/oidc/callback"
        )]);
        c["fullScopeAllowed"] = json!(false);
        c["attributes"]["use.refresh.tokens"] = json!("false");
        c["attributes"]["pkce.code.challenge.method"] = json!("S256");
        kc.add_client(REALM, c);
        kc.unlink_client_scope(REALM, &name, "offline_access");
    }
}

fn create(
    sim: &kube_sim::SimHandle,
    api_version: &str,
    kind: &str,
    obj: Value,
) -> Result<(), String> {
    sim.create_object(api_version, kind, obj)
        .map(|_| ())
        .map_err(|e| format!("create {kind}: {e:?}"))
}

fn crd_json(operator: &Path) -> Result<Value, String> {
    let out = Command::new(operator)
        .arg("crd")
        .output()
        .map_err(|e| format!("{}: {e} (build it: cargo build --release -p oidc-refresh-operator --no-default-features)", operator.display()))?;
    if !out.status.success() {
        return Err(format!("{} crd failed", operator.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_saphyr::from_str::<Value>(&text).map_err(|e| format!("CRD YAML: {e}"))
}

/// One policy with its Coder Deployment and its labelled credentials Secret, aimed at the
/// Keycloak at `idp_url`.
fn seed_policy(
    sim: &kube_sim::SimHandle,
    ns: &str,
    name: &str,
    idp_url: &str,
    interval: &str,
) -> Result<(), String> {
    create(sim, "apps/v1", "Deployment", coder_deployment(ns, name))?;
    create(
        sim,
        "v1",
        "Secret",
        json!({"metadata": {"name": format!("{name}-keycloak"), "namespace": ns,
                            "labels": {"oidcrefresh.dev/credentials": "true"}},
               "type": "Opaque",
               "stringData": {"client-id": ADMIN_CLIENT, "client-secret": ADMIN_SECRET}}),
    )?;
    let policy = json!({
        "apiVersion": "oidcrefresh.dev/v1alpha1",
        "kind": "OidcRefreshPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "provider": {"keycloak": {
                "url": idp_url,
                "realm": REALM,
                "clientId": name,
                "credentialsSecret": format!("{name}-keycloak"),
            }},
            "refreshTokens": {"offlineAccess": true, "idleTimeout": "720h"},
            "coder": {"deployment": name, "scopes": ["groups"]},
            "interval": interval,
        }
    });
    // The CRD is served as soon as it is created; retry briefly in case registration lags.
    let mut attempt = 0;
    loop {
        match sim.create_object(
            "oidcrefresh.dev/v1alpha1",
            "OidcRefreshPolicy",
            policy.clone(),
        ) {
            Ok(_) => return Ok(()),
            Err(_) if attempt < 50 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("create policy: {e:?}")),
        }
    }
}

/// Seeds the cluster: CRD, namespaces, per policy a Coder Deployment, a credentials Secret and the
/// policy; then the unrelated objects.
fn seed_cluster(
    sim: &kube_sim::SimHandle,
    plan: &Plan,
    crd: &Value,
    idp_url: &str,
    tarpit_url: Option<&str>,
) -> Result<(), String> {
    create(
        sim,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        crd.clone(),
    )?;
    for n in 0..plan.namespaces {
        create(
            sim,
            "v1",
            "Namespace",
            json!({"metadata": {"name": format!("bench-{n:03}")}}),
        )?;
    }
    let interval = format!("{}s", plan.interval.as_secs());
    // Scenario 5: the tarpit policies, in namespaces of their own that sort (and are created)
    // before the healthy ones, so they are at the front of the operator's first queue.
    if let Some(url) = tarpit_url {
        for t in 0..plan.tarpit_policies {
            let ns = format!("a-tarpit-{t:03}");
            create(sim, "v1", "Namespace", json!({"metadata": {"name": ns}}))?;
            seed_policy(sim, &ns, &format!("tarpit-{t:05}"), url, &interval)?;
        }
    }
    for i in 0..plan.policies {
        seed_policy(
            sim,
            &namespace_of(plan, i),
            &policy_name(i),
            idp_url,
            &interval,
        )?;
    }
    for u in 0..plan.unrelated {
        let ns = format!("bench-{:03}", u % plan.namespaces);
        let name = format!("app-{u:05}");
        create(
            sim,
            "apps/v1",
            "Deployment",
            unrelated_deployment(&ns, &name),
        )?;
        create(
            sim,
            "v1",
            "Secret",
            json!({"metadata": {"name": format!("{name}-tls"), "namespace": ns, "labels": {"app": name}},
                   "type": "Opaque",
                   "stringData": {"tls.crt": "-----BEGIN CERTIFICATE-----\nMIIBbench\n-----END CERTIFICATE-----\n",
                                  "password": format!("not-a-real-password-{u}")}}),
        )?;
    }
    Ok(())
}

/// Number of policies Ready=True for their generation (direct store reads: no API requests).
fn count_ready(sim: &kube_sim::SimHandle, plan: &Plan) -> usize {
    (0..plan.policies)
        .filter(|i| {
            let Some(p) = sim.get_object(
                "oidcrefresh.dev/v1alpha1",
                "OidcRefreshPolicy",
                Some(&namespace_of(plan, *i)),
                &policy_name(*i),
            ) else {
                return false;
            };
            let generation = p.pointer("/metadata/generation").cloned();
            p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == "Ready"
                            && c["status"] == "True"
                            && c.get("observedGeneration").cloned() == generation
                    })
                })
        })
        .count()
}

struct Operator {
    child: Child,
    admin: SocketAddr,
}

impl Operator {
    fn spawn(plan: &Plan, args: &Args, kubeconfig: &Path, log: &Path) -> Result<Operator, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let admin: SocketAddr = ([127, 0, 0, 1], port).into();
        let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let err_file = log_file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&args.operator)
            .arg("run")
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--log-format")
            .arg("json")
            // The identity-provider simulators listen on loopback over plain http.
            .arg("--allow-insecure-http")
            .args(&plan.operator_args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("{}: {e}", args.operator.display()))?;
        Ok(Operator { child, admin })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to 10 s (SIGKILL after that).
    fn stop(mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn run_once(plan: &Plan, args: &Args, crd: &Value, run: usize) -> Result<RunResult, String> {
    let tck = clk_tck();
    let kube = kube_sim::Simulator::start(kube_sim::SimConfig {
        watch_history: 100_000,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("kube-sim: {e}"))?;
    let kc = sim_keycloak::start(sim_keycloak::SimConfig {
        latency: plan.idp_latency,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("sim-keycloak: {e}"))?;
    seed_keycloak(&kc, plan);
    let tarpit = if plan.tarpit_policies > 0 {
        Some(
            tarpit::Tarpit::start()
                .await
                .map_err(|e| format!("tarpit: {e}"))?,
        )
    } else {
        None
    };
    {
        let (kube, plan, crd, url) = (kube.clone(), plan.clone(), crd.clone(), kc.base_url());
        let tarpit_url = tarpit.as_ref().map(|t| t.url().to_string());
        tokio::task::spawn_blocking(move || {
            seed_cluster(&kube, &plan, &crd, &url, tarpit_url.as_deref())
        })
        .await
        .map_err(|e| e.to_string())??;
    }
    if plan.throttle > 0.0 {
        kc.set_throttle(plan.throttle, plan.retry_after);
    }
    // Let the Deployment emulation finish the initial rollouts before the operator starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let dir = std::env::temp_dir().join(format!("oidc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig_yaml(None)).map_err(|e| e.to_string())?;
    let log = match &args.keep_logs {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            d.join(format!(
                "{}-run{run}.log",
                plan.label.replace([' ', '/', '='], "_")
            ))
        }
        None => dir.join("operator.log"),
    };

    kube.reset_counters();
    kc.reset_counters();
    let k0 = kube.counters();
    let i0 = kc.counters();
    let started = Instant::now();
    let mut op = Operator::spawn(plan, args, &kubeconfig, &log)?;
    let pid = op.pid();

    let mut r = RunResult::default();
    let poll = Duration::from_millis(500);
    let max_polls = (plan.timeout.as_secs_f64() / poll.as_secs_f64()).ceil() as u64 + 1;
    for _ in 0..max_polls {
        tokio::time::sleep(poll).await;
        let (kube2, plan2) = (kube.clone(), plan.clone());
        r.ready = tokio::task::spawn_blocking(move || count_ready(&kube2, &plan2))
            .await
            .map_err(|e| e.to_string())?;
        if r.ready == plan.policies {
            r.all_ready = true;
            break;
        }
        if started.elapsed() > plan.timeout {
            break;
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            return Err(format!(
                "the operator exited early ({status}); log: {}",
                log.display()
            ));
        }
    }
    r.time_to_ready_s = started.elapsed().as_secs_f64();
    let k1 = kube.counters();
    let i1 = kc.counters();
    r.cpu_ready_s = cpu_seconds(pid, tck);
    r.rss_ready_mib = mib(status_kib(pid, "VmHWM:"));
    r.reconciles = reconciles(op.admin);
    r.reconciles_per_s = r.reconciles / r.time_to_ready_s;
    let kc_conv = k1.diff(&k0);
    r.kube_converge = kube_map(&kc_conv);
    r.kube_converge_writes = kc_conv.writes();
    let ic_conv = idp_diff(&i0, &i1);
    r.idp_converge = idp_map(&ic_conv);
    r.idp_converge_total = ic_conv.total();
    r.idp_converge_writes = ic_conv.writes();
    r.idp_converge_429 = ic_conv.with_status(429);
    if let Some(t) = &tarpit {
        r.tarpit_max_open = t.max_open();
        r.tarpit_accepted = t.accepted();
    }

    if plan.steady_intervals > 0 && r.all_ready {
        // Let trailing requeues (rollout checks, Events) settle before counting.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let k2 = kube.counters();
        let i2 = kc.counters();
        let rec2 = reconciles(op.admin);
        let t2 = Instant::now();
        tokio::time::sleep(plan.interval * plan.steady_intervals).await;
        let k3 = kube.counters();
        let i3 = kc.counters();
        r.reconciles_steady = reconciles(op.admin) - rec2;
        r.steady_seconds = t2.elapsed().as_secs_f64();
        r.steady_intervals = r.steady_seconds / plan.interval.as_secs_f64();
        let ks = k3.diff(&k2);
        r.kube_steady = kube_map(&ks);
        r.kube_steady_writes = ks.writes();
        r.kube_steady_reads = kube_reads(&ks);
        let is = idp_diff(&i2, &i3);
        r.idp_steady = idp_map(&is);
        r.idp_steady_writes = is.writes();
        r.idp_steady_reads = is.reads();
        r.idp_steady_total = is.total();
    }
    r.cpu_total_s = cpu_seconds(pid, tck);
    r.rss_peak_mib = mib(status_kib(pid, "VmHWM:"));
    if let Some(t) = &tarpit {
        // Over the whole run, not only until all-Ready.
        r.tarpit_max_open = t.max_open();
    }
    let status = op.stop();
    if let Some(t) = &tarpit {
        t.stop();
    }
    if !args.json {
        eprintln!(
            "  run {run}: {}/{} Ready in {:.1}s, peak RSS {:.1} MiB, CPU {:.1}s, operator exit {:?}",
            r.ready,
            plan.policies,
            r.time_to_ready_s,
            r.rss_peak_mib,
            r.cpu_total_s,
            status.and_then(|s| s.code())
        );
        if tarpit.is_some() {
            eprintln!(
                "         tarpit: {} policies, {} connections accepted until all-Ready, at most {} open at once",
                plan.tarpit_policies, r.tarpit_accepted, r.tarpit_max_open
            );
        }
    }
    kc.shutdown().await;
    kube.shutdown().await;
    if args.keep_logs.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_map(
    runs: &[RunResult],
    pick: fn(&RunResult) -> &BTreeMap<String, u64>,
) -> BTreeMap<String, f64> {
    let mut keys: Vec<&String> = runs.iter().flat_map(|r| pick(r).keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            (
                k.clone(),
                median(
                    runs.iter()
                        .map(|r| *pick(r).get(k).unwrap_or(&0) as f64)
                        .collect(),
                ),
            )
        })
        .collect()
}

struct Summary {
    plan: Plan,
    runs: Vec<RunResult>,
}

impl Summary {
    fn m(&self, f: fn(&RunResult) -> f64) -> f64 {
        median(self.runs.iter().map(f).collect())
    }

    fn to_json(&self) -> Value {
        let mut v = self.to_json_common();
        if self.plan.scenario == 5 {
            v["tarpit_policies"] = json!(self.plan.tarpit_policies);
            v["tarpit_max_open_connections"] = json!(
                self.runs
                    .iter()
                    .map(|r| r.tarpit_max_open)
                    .max()
                    .unwrap_or(0)
            );
        }
        v
    }

    fn to_json_common(&self) -> Value {
        let p = self.plan.policies as f64;
        let per = |m: BTreeMap<String, f64>, d: f64| -> Value {
            m.into_iter()
                .map(|(k, v)| (k, json!((v / d * 1000.0).round() / 1000.0)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let steady_div = p * self.m(|r| r.steady_intervals).max(f64::MIN_POSITIVE);
        json!({
            "label": self.plan.label,
            "scenario": self.plan.scenario,
            "policies": self.plan.policies,
            "namespaces": self.plan.namespaces,
            "unrelated": self.plan.unrelated,
            "idp_latency_ms": self.plan.idp_latency.as_millis() as u64,
            "throttle": self.plan.throttle,
            "interval_s": self.plan.interval.as_secs(),
            "operator_args": self.plan.operator_args,
            "runs": self.runs.len(),
            "all_ready_runs": self.runs.iter().filter(|r| r.all_ready).count(),
            "median": {
                "ready": self.m(|r| r.ready as f64),
                "time_to_all_ready_s": self.m(|r| r.time_to_ready_s),
                "reconciles": self.m(|r| r.reconciles),
                "reconciles_per_s": self.m(|r| r.reconciles_per_s),
                "peak_rss_at_ready_mib": self.m(|r| r.rss_ready_mib),
                "peak_rss_mib": self.m(|r| r.rss_peak_mib),
                "cpu_s_to_ready": self.m(|r| r.cpu_ready_s),
                "cpu_s_total": self.m(|r| r.cpu_total_s),
                "converge": {
                    "kube_writes_per_policy": self.m(|r| r.kube_converge_writes as f64) / p,
                    "idp_requests_per_policy": self.m(|r| r.idp_converge_total as f64) / p,
                    "idp_writes_per_policy": self.m(|r| r.idp_converge_writes as f64) / p,
                    "idp_429_per_policy": self.m(|r| r.idp_converge_429 as f64) / p,
                    "kube_per_policy": per(median_map(&self.runs, |r| &r.kube_converge), p),
                    "idp_per_policy": per(median_map(&self.runs, |r| &r.idp_converge), p),
                },
                "steady": if self.plan.steady_intervals > 0 { json!({
                    "seconds": self.m(|r| r.steady_seconds),
                    "intervals": self.m(|r| r.steady_intervals),
                    "reconciles_per_policy_per_interval": self.m(|r| r.reconciles_steady) / steady_div,
                    "kube_writes": self.m(|r| r.kube_steady_writes as f64),
                    "kube_reads_per_policy_per_interval": self.m(|r| r.kube_steady_reads as f64) / steady_div,
                    "idp_writes": self.m(|r| r.idp_steady_writes as f64),
                    "idp_reads_per_policy_per_interval": self.m(|r| r.idp_steady_reads as f64) / steady_div,
                    "idp_requests_per_policy_per_interval": self.m(|r| r.idp_steady_total as f64) / steady_div,
                    "kube_per_policy_per_interval": per(median_map(&self.runs, |r| &r.kube_steady), steady_div),
                    "idp_per_policy_per_interval": per(median_map(&self.runs, |r| &r.idp_steady), steady_div),
                }) } else { Value::Null },
            },
            "each_run": self.runs.iter().map(|r| json!({
                "ready": r.ready,
                "time_to_all_ready_s": r.time_to_ready_s,
                "peak_rss_mib": r.rss_peak_mib,
                "cpu_s_total": r.cpu_total_s,
                "reconciles": r.reconciles,
            })).collect::<Vec<_>>(),
        })
    }
}

fn f1(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.1}")
    }
}

fn f2(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.2}")
    }
}

fn print_tables(summaries: &[Summary]) {
    println!("\n## Results (medians)\n");
    println!(
        "| scenario | policies | unrelated | IdP latency | throttle | operator args | runs (all Ready) | time to all-Ready (s) | reconciles/s | peak RSS (MiB) | CPU s | K8s writes/policy | IdP req/policy | IdP writes/policy | IdP 429/policy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in summaries {
        let p = s.plan.policies as f64;
        println!(
            "| {} | {} | {} | {} ms | {} | `{}` | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.plan.label,
            s.plan.policies,
            s.plan.unrelated,
            s.plan.idp_latency.as_millis(),
            s.plan.throttle,
            s.plan.operator_args.join(" "),
            s.runs.len(),
            s.runs.iter().filter(|r| r.all_ready).count(),
            f1(s.m(|r| r.time_to_ready_s)),
            f1(s.m(|r| r.reconciles_per_s)),
            f1(s.m(|r| r.rss_peak_mib)),
            f1(s.m(|r| r.cpu_total_s)),
            f2(s.m(|r| r.kube_converge_writes as f64) / p),
            f2(s.m(|r| r.idp_converge_total as f64) / p),
            f2(s.m(|r| r.idp_converge_writes as f64) / p),
            f2(s.m(|r| r.idp_converge_429 as f64) / p),
        );
    }
    for s in summaries {
        let p = s.plan.policies as f64;
        println!(
            "\n### {}: requests per policy during first convergence (medians)\n",
            s.plan.label
        );
        println!("| API | request | per policy |\n|---|---|---|");
        for (k, v) in median_map(&s.runs, |r| &r.kube_converge) {
            println!("| Kubernetes | {k} | {} |", f2(v / p));
        }
        for (k, v) in median_map(&s.runs, |r| &r.idp_converge) {
            println!("| Keycloak | {k} | {} |", f2(v / p));
        }
        if s.plan.steady_intervals > 0 {
            let div = p * s.m(|r| r.steady_intervals);
            println!(
                "\n### {}: steady state, {} s = {:.2} intervals of {} s (medians)\n",
                s.plan.label,
                f1(s.m(|r| r.steady_seconds)),
                s.m(|r| r.steady_intervals),
                s.plan.interval.as_secs()
            );
            println!(
                "Kubernetes writes: {}; IdP writes: {}; reconciles per policy per interval: {}\n",
                s.m(|r| r.kube_steady_writes as f64),
                s.m(|r| r.idp_steady_writes as f64),
                f2(s.m(|r| r.reconciles_steady) / div)
            );
            println!("| API | request | per policy per interval |\n|---|---|---|");
            for (k, v) in median_map(&s.runs, |r| &r.kube_steady) {
                println!("| Kubernetes | {k} | {} |", f2(v / div));
            }
            for (k, v) in median_map(&s.runs, |r| &r.idp_steady) {
                println!("| Keycloak | {k} | {} |", f2(v / div));
            }
        }
    }
    let find = |n: u8| {
        summaries
            .iter()
            .find(|s| s.plan.scenario == n && s.plan.label.starts_with("scenario"))
    };
    if let (Some(a), Some(b)) = (find(1), find(2)) {
        let (ra, rb) = (a.m(|r| r.rss_peak_mib), b.m(|r| r.rss_peak_mib));
        println!(
            "\nPeak RSS, scenario 2 / scenario 1: {:.1} / {:.1} MiB = {:.3}",
            rb,
            ra,
            rb / ra
        );
    }
}

/// The plans to run, in groups whose runs are interleaved (run 1 of each, then run 2 of each...):
/// scenario 5 is its baseline and its tarpit plan, paired run by run so that both see the same
/// load of the machine; every other plan is a group of its own.
/// Scenario 5's outcome: the healthy policies' time to all-Ready with the tarpit policies
/// present against the paired baseline runs without them.
struct TarpitComparison<'a> {
    baseline: &'a Summary,
    tarpit: &'a Summary,
}

/// The per-host in-flight cap the operator runs with: its flag if passed, else its default.
fn per_host_cap(operator_args: &[String]) -> String {
    let flag = "--provider-max-in-flight-per-host";
    let mut it = operator_args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(flag) {
            if let Some(v) = v.strip_prefix('=') {
                return v.to_string();
            }
            if v.is_empty() {
                return it.next().cloned().unwrap_or_default();
            }
        }
    }
    "8 (default)".into()
}

impl TarpitComparison<'_> {
    fn time_baseline(&self) -> f64 {
        self.baseline.m(|r| r.time_to_ready_s)
    }

    fn time_tarpit(&self) -> f64 {
        self.tarpit.m(|r| r.time_to_ready_s)
    }

    fn ratio(&self) -> f64 {
        self.time_tarpit() / self.time_baseline()
    }

    fn max_open(&self) -> u64 {
        self.tarpit
            .runs
            .iter()
            .map(|r| r.tarpit_max_open)
            .max()
            .unwrap_or(0)
    }

    fn to_json(&self) -> Value {
        json!({
            "healthy_policies": self.tarpit.plan.policies,
            "tarpit_policies": self.tarpit.plan.tarpit_policies,
            "paired_runs": self.baseline.runs.len().min(self.tarpit.runs.len()),
            "per_host_cap": per_host_cap(&self.tarpit.plan.operator_args),
            "median_time_to_all_ready_s": {"baseline": self.time_baseline(), "with_tarpit": self.time_tarpit()},
            "ratio": self.ratio(),
            "within_10_percent": self.ratio() <= 1.10,
            "tarpit_max_open_connections": self.max_open(),
            "tarpit_connections_accepted_median": self.tarpit.m(|r| r.tarpit_accepted as f64),
            "median_peak_rss_mib": {"baseline": self.baseline.m(|r| r.rss_peak_mib), "with_tarpit": self.tarpit.m(|r| r.rss_peak_mib)},
            "each_run_time_to_all_ready_s": {
                "baseline": self.baseline.runs.iter().map(|r| r.time_to_ready_s).collect::<Vec<_>>(),
                "with_tarpit": self.tarpit.runs.iter().map(|r| r.time_to_ready_s).collect::<Vec<_>>(),
            },
        })
    }

    fn print(&self) {
        let each = |s: &Summary| {
            s.runs
                .iter()
                .map(|r| f1(r.time_to_ready_s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "\n### scenario 5: {} healthy policies with {} policies aimed at a tarpit host (medians)\n",
            self.tarpit.plan.policies, self.tarpit.plan.tarpit_policies
        );
        println!("| | baseline (no tarpit) | with the tarpit |\n|---|---|---|");
        println!(
            "| healthy policies' time to all-Ready (s) | {} ({}) | {} ({}) |",
            f1(self.time_baseline()),
            each(self.baseline),
            f1(self.time_tarpit()),
            each(self.tarpit)
        );
        println!(
            "| operator peak RSS (MiB) | {} | {} |",
            f1(self.baseline.m(|r| r.rss_peak_mib)),
            f1(self.tarpit.m(|r| r.rss_peak_mib))
        );
        println!(
            "\nRatio with / without the tarpit: {:.3} (target: at most 1.10: {}). Tarpit connections open at once, at most: {} (per-host cap {}); accepted until all-Ready: {} (median).",
            self.ratio(),
            if self.ratio() <= 1.10 {
                "met"
            } else {
                "missed"
            },
            self.max_open(),
            per_host_cap(&self.tarpit.plan.operator_args),
            self.tarpit.m(|r| r.tarpit_accepted as f64)
        );
    }
}

fn tarpit_comparison(summaries: &[Summary]) -> Option<TarpitComparison<'_>> {
    let find = |tarpit: bool| {
        summaries
            .iter()
            .find(|s| s.plan.scenario == 5 && (s.plan.tarpit_policies > 0) == tarpit)
    };
    Some(TarpitComparison {
        baseline: find(false)?,
        tarpit: find(true)?,
    })
}

fn plans(args: &Args) -> Vec<Vec<Plan>> {
    let base = |scenario: u8, label: String, operator_args: Vec<String>| Plan {
        label,
        scenario,
        policies: args.policies,
        namespaces: args.namespaces,
        unrelated: args.unrelated.unwrap_or(0),
        idp_latency: args.idp_latency,
        throttle: 0.0,
        retry_after: args.retry_after,
        interval: args.interval,
        steady_intervals: 0,
        tarpit_policies: 0,
        timeout: args.timeout,
        operator_args,
    };
    if let Some(sets) = &args.sweep {
        return sets
            .iter()
            .map(|set| {
                let mut all = args.operator_args.clone();
                all.extend(set.iter().cloned());
                vec![base(1, format!("sweep {}", set.join(" ")), all)]
            })
            .collect();
    }
    args.scenarios
        .iter()
        .map(|&n| {
            let mut p = base(n, format!("scenario {n}"), args.operator_args.clone());
            match n {
                2 => p.unrelated = args.unrelated.unwrap_or(10_000),
                3 => p.steady_intervals = args.steady_intervals,
                4 => p.throttle = args.throttle,
                5 => {
                    let baseline = Plan {
                        label: "scenario 5 baseline".into(),
                        ..p.clone()
                    };
                    p.tarpit_policies = args.tarpit_policies;
                    return vec![baseline, p];
                }
                _ => {}
            }
            vec![p]
        })
        .collect()
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    json!({"cpus": cpus, "cpu_model": model, "mem_total_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0, "loadavg_at_end": load})
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let crd = match crd_json(&args.operator) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut summaries = Vec::new();
    let mut failed = false;
    for group in plans(&args) {
        if !args.json {
            for plan in &group {
                eprintln!(
                    "{}: {} policies, {} namespaces, {} unrelated, IdP {} ms, throttle {}, tarpit policies {}, args {:?}",
                    plan.label,
                    plan.policies,
                    plan.namespaces,
                    plan.unrelated,
                    plan.idp_latency.as_millis(),
                    plan.throttle,
                    plan.tarpit_policies,
                    plan.operator_args
                );
            }
        }
        let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); group.len()];
        for run in 1..=args.runs {
            for (plan, runs) in group.iter().zip(runs.iter_mut()) {
                if !args.json && group.len() > 1 {
                    eprintln!(" {}:", plan.label);
                }
                match rt.block_on(run_once(plan, &args, &crd, run)) {
                    Ok(r) => {
                        failed |= !r.all_ready;
                        runs.push(r);
                    }
                    Err(e) => {
                        eprintln!("{}: run {run} failed: {e}", plan.label);
                        failed = true;
                    }
                }
            }
        }
        for (plan, runs) in group.into_iter().zip(runs) {
            if !runs.is_empty() {
                summaries.push(Summary { plan, runs });
            }
        }
    }
    if args.json {
        let mut out = json!({
            "machine": machine(),
            "results": summaries.iter().map(Summary::to_json).collect::<Vec<_>>(),
        });
        if let Some(c) = tarpit_comparison(&summaries) {
            out["tarpit_comparison"] = c.to_json();
        }
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("machine: {}", machine());
        print_tables(&summaries);
        if let Some(c) = tarpit_comparison(&summaries) {
            c.print();
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_host_cap_is_read_from_the_operator_args() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(per_host_cap(&args(&[])), "8 (default)");
        assert_eq!(
            per_host_cap(&args(&[
                "--concurrency=8",
                "--provider-max-in-flight-per-host=2"
            ])),
            "2"
        );
        assert_eq!(
            per_host_cap(&args(&["--provider-max-in-flight-per-host", "4"])),
            "4"
        );
    }
}
