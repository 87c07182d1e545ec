//! The files under `deploy/` stay true: the Kubernetes `ConfigMap`'s policy passes
//! `flowgate check`, the Deployment's drain fits its grace period, the systemd unit passes
//! `systemd-analyze verify` and keeps its sandbox, the Dockerfile's `HEALTHCHECK` command
//! works against a running gateway, and a ConfigMap-style atomic swap of the policy
//! directory reloads the policy.

use crate::common;

use common::{Fixture, closed_port, echo_trigger, start_echo, start_gateway_for};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flowgate");

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The block scalar under `key: |` in a YAML text, de-indented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no `{key}: |` block"));
    let outer = header.len() - header.trim_start().len();
    let mut indent = None;
    let mut out = String::new();
    for line in lines {
        if line.trim().is_empty() {
            out.push('\n');
            continue;
        }
        let this = line.len() - line.trim_start().len();
        if this <= outer {
            break;
        }
        let indent = *indent.get_or_insert(this);
        out.push_str(&line[indent.min(this)..]);
        out.push('\n');
    }
    out
}

/// The first value of `key:` in a YAML text (plain scalars only).
fn yaml_value<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("no `{key}:` value"))
}

/// Seconds of a policy duration such as `25s`.
fn seconds(duration: &str) -> u64 {
    humantime::parse_duration(duration).unwrap_or_else(|e| panic!("{duration}: {e}")).as_secs()
}

#[test]
fn the_configmap_policy_passes_flowgate_check() {
    let policy = block_scalar(&read("deploy/kubernetes/configmap.yaml"), "policy.toml");
    assert!(policy.contains("[[trigger]]"), "extracted nothing useful:\n{policy}");
    // The pod's mounts (TLS and vault Secrets, state emptyDir) become stand-ins in a
    // temporary directory; everything else is checked as written.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["tls", "vault", "policy"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let pki = flowgate::tls::dev::DevPki::generate().unwrap();
    std::fs::write(root.join("tls/tls.crt"), &pki.server_cert_pem).unwrap();
    std::fs::write(root.join("tls/tls.key"), &pki.server_key_pem).unwrap();
    std::fs::write(root.join("vault/role_id"), "00000000-0000-0000-0000-000000000000").unwrap();
    std::fs::write(root.join("vault/secret_id"), "stand-in").unwrap();
    let text = policy.replace("/etc/flowgate/", &format!("{}/", root.display()));
    let path = root.join("policy/policy.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ok: 1 trigger(s)"), "{stdout}");
    assert!(stdout.contains("rate limit: 600 per 60s by principal (trigger)"), "{stdout}");
    // The pod's paths are the ones the Deployment mounts.
    let deployment = read("deploy/kubernetes/deployment.yaml");
    for mount in ["/etc/flowgate/policy", "/etc/flowgate/tls", "/etc/flowgate/vault", "/var/lib/flowgate"] {
        assert!(deployment.contains(&format!("mountPath: {mount}\n")), "{mount} is not mounted");
    }
    assert!(deployment.contains("\"--config\", \"/etc/flowgate/policy/policy.toml\""));
    assert!(text.contains(&format!("file = \"{}/", "/var/lib/flowgate")), "the run history is not on the state volume");
}

#[test]
fn the_deployment_drains_within_its_grace_and_scales_out() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let policy = block_scalar(&read("deploy/kubernetes/configmap.yaml"), "policy.toml");
    let replicas: u32 = yaml_value(&deployment, "replicas").parse().unwrap();
    assert!(replicas >= 2, "{replicas} replica(s)");
    assert!(deployment.contains("readinessProbe:\n            httpGet:\n              path: /readyz"));
    assert!(deployment.contains("livenessProbe:\n            httpGet:\n              path: /healthz"));
    assert!(deployment.contains("readOnlyRootFilesystem: true"));
    assert!(deployment.contains("runAsNonRoot: true"));
    assert!(!deployment.contains("subPath:"), "a subPath mount never sees ConfigMap updates");
    // SIGTERM arrives after the preStop pause; then flowgate drains for shutdown_grace and
    // flushes the run history for up to 5 s. The pod must not be killed before that.
    let grace: u64 = yaml_value(&deployment, "terminationGracePeriodSeconds").parse().unwrap();
    let pause: u64 = yaml_value(&deployment, "seconds").parse().unwrap();
    let drain = seconds(yaml_value(&policy.replace(" = ", ": "), "shutdown_grace").trim_matches('"'));
    assert!(grace >= pause + drain + 5, "terminationGracePeriodSeconds {grace} < {pause} + {drain} + 5");
    let pdb = read("deploy/kubernetes/pdb.yaml");
    assert!(pdb.contains("kind: PodDisruptionBudget") && pdb.contains("minAvailable: 1"));
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    for file in ["configmap.yaml", "deployment.yaml", "pdb.yaml", "redis.yaml", "service.yaml"] {
        assert!(kustomization.contains(&format!("- {file}")), "{file} is not in kustomization.yaml");
    }
    assert!(!kustomization.contains("secret.example.yaml"), "the example Secret must not be applied");
    assert!(policy.contains("redis = \"redis://flowgate-redis:6379/0\""), "budgets are not shared");
    assert!(read("deploy/kubernetes/redis.yaml").contains("name: flowgate-redis"));
}

/// `KEY=value` lines of a unit file (the last wins for plain keys).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

#[test]
fn the_systemd_unit_is_sandboxed_and_verifies() {
    let unit = read("deploy/systemd/flowgate.service");
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    assert_eq!(unit_values(&unit, "CapabilityBoundingSet"), [""], "no capabilities for ports above 1024");
    assert_eq!(unit_values(&unit, "AmbientCapabilities"), [""]);
    assert_eq!(unit_values(&unit, "ReadWritePaths"), ["/var/lib/flowgate"]);
    assert!(unit_values(&unit, "User").iter().all(|u| *u != "root") && unit_values(&unit, "User").len() == 1);
    let stop: u64 = seconds(&format!("{}s", unit_values(&unit, "TimeoutStopSec")[0]));
    // The default shutdown_grace (30 s) plus the run-history flush (5 s).
    assert!(stop >= 35, "TimeoutStopSec={stop} cuts the drain short");
    let exec = unit_values(&unit, "ExecStart")[0];
    assert!(exec.starts_with("/usr/local/bin/flowgate ") && exec.contains(" serve --config "), "{exec}");

    // systemd-analyze checks every key and that the command exists: point it at the built
    // binary.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing; install it: apt-get install -y systemd");
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("flowgate.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/flowgate", BIN)).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (a container's own unit files may be broken).
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("flowgate.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[tokio::test]
async fn the_dockerfile_healthcheck_probes_the_admin_listener() {
    let dockerfile = read("deploy/Dockerfile");
    let froms = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "not multi-stage");
    let user = dockerfile.lines().find_map(|l| l.strip_prefix("USER ")).expect("no USER line");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "USER {user}");
    let healthcheck = dockerfile
        .split("HEALTHCHECK ")
        .nth(1)
        .map(|rest| rest.split("\n\n").next().unwrap().replace("\\\n", " "))
        .expect("no HEALTHCHECK");
    let command = healthcheck.split("CMD ").nth(1).expect("HEALTHCHECK without CMD");
    let argv: Vec<String> = serde_json::from_str(command.lines().next().unwrap().trim()).unwrap();
    assert_eq!(argv[..2], ["/usr/local/bin/flowgate", "probe"]);
    assert!(argv[2].ends_with("/healthz"), "{argv:?}");

    // The same command against a running gateway's admin listener, and against nothing.
    let fx = Fixture::new();
    let echo = start_echo().await;
    let gw = fx.serve_policy(&fx.policy_text(&echo_trigger("t", "/t", echo, ""))).await;
    let probe = |url: String| async move {
        tokio::task::spawn_blocking(move || Command::new(BIN).arg("probe").arg(url).status().unwrap()).await.unwrap()
    };
    let url = argv[2].replace("127.0.0.1:9901", &gw.admin.to_string());
    assert!(probe(url).await.success(), "the probe failed against a healthy gateway");
    assert!(!probe(format!("http://{}/healthz", closed_port())).await.success(), "the probe passed against nothing");
    assert!(!probe(gw.admin_url("/no-such-endpoint")).await.success(), "a 404 passed the probe");
    gw.shutdown().await;
}

/// What the kubelet does to a `ConfigMap` volume: each version in its own directory, the
/// visible files linked through `..data`, which is renamed into place at once.
fn configmap_version(dir: &Path, version: &str, policy: &str) {
    let data = dir.join(version);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("policy.toml"), policy).unwrap();
    std::os::unix::fs::symlink(version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

#[tokio::test]
async fn a_configmap_swap_reloads_the_policy() {
    let fx = Fixture::new();
    let echo = start_echo().await;
    // Certificates outside the mounted directory, like the TLS Secret.
    let policy_dir = fx.path().join("policy");
    std::fs::create_dir(&policy_dir).unwrap();
    let text = |calls: u32| {
        fx.policy_text(&echo_trigger("t", "/t", echo, &format!("rate_limit = {{ calls = {calls}, period = \"60s\" }}")))
            .replace("\"server.crt\"", &format!("\"{}\"", fx.path().join("server.crt").display()))
            .replace("\"server.key\"", &format!("\"{}\"", fx.path().join("server.key").display()))
    };
    configmap_version(&policy_dir, "..2026_01_01_00_00_00.1", &text(5));
    let path = policy_dir.join("policy.toml");
    std::os::unix::fs::symlink("..data/policy.toml", &path).unwrap();
    let gw = start_gateway_for(&fx, &path).await;
    let _watcher = flowgate::reload::watch_files(gw.gateway.clone(), &path).unwrap();
    let before = gw.gateway.policy().version.clone();

    configmap_version(&policy_dir, "..2026_01_01_00_01_00.2", &text(7));
    let mut after = before.clone();
    for _ in 0..100 {
        after = gw.gateway.policy().version.clone();
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(after, before, "the swapped ConfigMap was never loaded");
    let limit = gw.gateway.policy().routes.triggers()[0].rate_limit.as_ref().map(|r| r.calls);
    assert_eq!(limit, Some(7));
    gw.shutdown().await;
}

/// The shipped manifests put no proxy in front of flowgate (an L4 Service with
/// `externalTrafficPolicy: Local`), so the policy must trust none: a trusted range would
/// let any pod in it choose its own client address and skip `max_connections_per_ip`.
#[test]
fn the_manifests_trust_no_proxy_they_do_not_deploy() {
    let service = read("deploy/kubernetes/service.yaml");
    assert_eq!(yaml_value(&service, "externalTrafficPolicy"), "Local", "callers' addresses must reach the pods");
    let policy = block_scalar(&read("deploy/kubernetes/configmap.yaml"), "policy.toml");
    let active: Vec<&str> = policy.lines().filter(|line| !line.trim_start().starts_with('#')).collect();
    assert!(
        !active.iter().any(|line| line.trim_start().starts_with("trusted_proxies")),
        "the ConfigMap trusts proxies that no manifest deploys: {active:?}"
    );
    let kinds: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!kinds.iter().any(|text| text.contains("kind: Ingress")), "an Ingress is a proxy: trust exactly it");
}
