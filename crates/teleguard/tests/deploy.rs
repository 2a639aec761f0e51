//! `deploy/docker-compose.yml` holds up without a Docker engine: valid YAML, every file it mounts
//! or builds from exists, every teleguard command and role it runs exists in the binary, and the
//! config it gives the roles is valid for each of them.

mod common;

use common::installed_or_skip;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use teleguard_pipeline::config::{Config, Overrides, RawConfig};
use teleguard_pipeline::kafka::Role;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The compose file as JSON, read by PyYAML (scripts/test puts it in the tests' venv).
fn compose_or_skip(test: &str) -> Option<serde_json::Value> {
    let python = std::env::var_os("TELEGUARD_PYTHON").map(PathBuf::from).filter(|p| {
        Command::new(p).args(["-c", "import yaml"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    });
    let python = installed_or_skip(python, test, "PyYAML", "the PyPI package pyyaml")?;
    let output = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(deploy().join("docker-compose.yml"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "docker-compose.yml is not valid YAML: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("YAML as JSON"))
}

#[test]
fn the_compose_stack_refers_to_files_commands_and_roles_that_exist() {
    let Some(compose) = compose_or_skip("the_compose_stack_refers_to_files_commands_and_roles_that_exist") else {
        return;
    };
    let services = compose["services"].as_object().expect("services");
    for wanted in [
        "redpanda",
        "clickhouse",
        "mosquitto",
        "prometheus",
        "grafana",
        "gateway",
        "enrich",
        "detect",
        "history",
        "serve",
    ] {
        assert!(services.contains_key(wanted), "the stack has {wanted}");
    }
    let mut roles_run = Vec::new();
    for (name, service) in services {
        if let Some(build) = service.get("build") {
            let context = deploy().join(build["context"].as_str().unwrap());
            assert!(context.join(build["dockerfile"].as_str().unwrap()).is_file(), "{name}: its Dockerfile exists");
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(deploy().join(source).exists(), "{name} mounts {source}, which exists");
            }
        }
        let is_teleguard = service["image"] == "teleguard:local";
        let Some(command) = service["command"].as_array().filter(|_| is_teleguard) else { continue };
        let words: Vec<&str> = command.iter().map(|w| w.as_str().unwrap()).collect();
        // The subcommand exists (its --help answers) with every flag the service passes.
        let subcommand: Vec<&str> = words.iter().take_while(|w| !w.starts_with('-')).copied().collect();
        let help = Command::new(env!("CARGO_BIN_EXE_teleguard")).args(&subcommand).arg("--help").output().unwrap();
        assert!(help.status.success(), "{name}: `teleguard {}` exists", subcommand.join(" "));
        let help = String::from_utf8(help.stdout).unwrap();
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(help.contains(flag), "{name}: `teleguard {}` takes {flag}", subcommand.join(" "));
        }
        if let Some(at) = words.iter().position(|w| *w == "--role") {
            let roles = Role::parse_list(words[at + 1]).unwrap_or_else(|e| panic!("{name}: {e}"));
            roles_run.extend(roles);
        }
    }
    for role in [Role::Gateway, Role::Enrich, Role::Detect, Role::History] {
        assert!(roles_run.contains(&role), "the stack runs {}", role.name());
    }
}

#[test]
fn the_compose_config_is_valid_for_every_role() {
    // The certificates the `certs` service makes, made here, where the config looks for them.
    let folder = tempfile::tempdir().unwrap();
    let certs = folder.path().join("certs");
    let status = Command::new(env!("CARGO_BIN_EXE_teleguard"))
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--server-name", "mosquitto", "--client", "teleguard"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(deploy().join("compose/teleguard.toml")).unwrap();
    let text = text.replace("\"/certs/", &format!("\"{}/", certs.display()));
    for role in ["gateway", "enrich", "detect", "history", "serve"] {
        let raw: RawConfig = toml::from_str(&text).expect("the compose config is TOML");
        let overrides = Overrides { role: Some(role.into()), ..Default::default() };
        let config = Config::validate(raw, overrides).unwrap_or_else(|e| panic!("--role {role}: {e}"));
        assert_eq!(config.kafka.as_ref().unwrap().brokers, "redpanda:9092");
        if role == "history" {
            assert!(config.plan.external_sinks && config.sinks.clickhouse.is_some());
        }
    }
}
