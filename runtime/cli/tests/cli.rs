//! The real `warren` binary on the example plugins and on broken plugin directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn warren(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running warren")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = root().join("target").join("cli-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds the example plugins once for all tests (with `warren build` itself) and returns a
/// private copy of the plugins directory, components included.
fn built_plugins() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let plugins = root().join("plugins");
            let target = root().join("target").join("plugins");
            let mut args = vec![
                "build".to_owned(),
                "--target-dir".to_owned(),
                target.display().to_string(),
            ];
            for p in ["echo", "counter", "worker", "monitor", "relay"] {
                args.push(plugins.join(p).display().to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = warren(&args);
            assert!(o.status.success(), "{:?}", text(&o));
            let copy = scratch("plugins");
            for p in ["echo", "counter", "worker", "monitor", "relay"] {
                let d = copy.join(p);
                std::fs::create_dir_all(&d).unwrap();
                for f in ["plugin.toml", &format!("{p}.wasm")] {
                    std::fs::copy(plugins.join(p).join(f), d.join(f)).unwrap();
                }
            }
            copy
        })
        .clone()
}

fn plugin(name: &str) -> String {
    built_plugins().join(name).display().to_string()
}

#[test]
fn the_main_job_runs_the_complete_example_on_wasm_agents() {
    let o = warren(&[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let events: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("event progress/task-1"))
        .collect();
    assert_eq!(events.len(), 4, "{out}");
    for pct in ["25.0", "50.0", "75.0", "100.0"] {
        assert!(
            err.contains(&format!("Progress: task-1 - {pct}%")),
            "monitor did not print {pct}: {err}"
        );
    }
    let answer = out
        .lines()
        .position(|l| l.contains("Processed: sample data"))
        .expect("answer");
    let lines: Vec<&str> = out.lines().collect();
    let last_event = lines.iter().rposition(|l| l.starts_with("event")).unwrap();
    assert!(
        answer > last_event,
        "the answer comes after the four events: {out}"
    );
}

#[test]
fn run_sends_prints_the_answer_and_exits_when_idle() {
    let o = warren(&[
        "run",
        &plugin("echo"),
        "--send",
        "echo/k",
        "Ping",
        r#"{"i": 41}"#,
        "--until-idle",
        "-q",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(out.trim(), r#"echo/k answered Pong {"i":41}"#);
}

#[test]
fn json_output_is_one_object_per_line_and_stdin_is_read() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "run",
            &plugin("counter"),
            "--stdin",
            "--until-idle",
            "--json",
            "--events",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            r#"{{"send": "counter/a", "type": "Inc", "body": {{"by": 2}}}}"#
        )
        .unwrap();
        writeln!(
            stdin,
            r#"{{"publish": "news/a", "type": "News", "body": {{"i": 1}}}}"#
        )
        .unwrap();
        writeln!(
            stdin,
            r#"{{"send": "counter/a", "type": "GetState", "body": {{}}}}"#
        )
        .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for l in out.lines().chain(err.lines()) {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["kind"], "response");
    assert_eq!(lines[0]["body"]["i"], 2);
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "event" && l["topic"] == "news/a")
    );
    let last = lines.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["body"]["counter"].as_i64()),
        (Some("StateView"), Some(3))
    );
}

#[test]
fn state_is_loaded_at_start_and_saved_at_exit() {
    let dir = scratch("state");
    let file = dir.join("state.json");
    let f = file.display().to_string();
    for expected in [5, 10] {
        let o = warren(&[
            "run",
            &plugin("counter"),
            "--send",
            "counter/s",
            "Inc",
            r#"{"by": 5}"#,
            "--state",
            &f,
            "--until-idle",
            "-q",
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        assert!(out.contains(&format!(r#"{{"i":{expected}}}"#)), "{out}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        doc["counter/s"]["counter"], 10,
        "AutoGen's save_state shape: {doc}"
    );
}

#[test]
fn a_failed_message_exits_1_and_names_the_agent() {
    let o = warren(&[
        "run",
        &plugin("echo"),
        &plugin("counter"),
        "--send",
        "counter/k",
        "Nope",
        "{}",
        "--until-idle",
        "-q",
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("counter/k failed Nope") && out.contains("cannot handle"),
        "{out}"
    );
    let o = warren(&[
        "run",
        &plugin("echo"),
        "--send",
        "ghost/k",
        "Ping",
        "{}",
        "--until-idle",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).0.contains("unknown agent type `ghost`"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn bad_setups_exit_2_with_one_clear_line_each() {
    // A missing directory.
    let o = warren(&["run", "/no/such/dir", "--until-idle"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/no/such/dir") && err.contains("does not exist"),
        "{err}"
    );
    // Malformed JSON for a message.
    let o = warren(&[
        "run",
        &plugin("echo"),
        "--send",
        "echo/k",
        "Ping",
        "{oops",
        "--until-idle",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--send echo/k") && err.contains("not valid JSON"),
        "{err}"
    );
    // A manifest with an unknown key and one with a wrong type, and two plugins claiming a type.
    let dir = scratch("broken");
    for (d, m) in [
        (
            "a",
            "[agent]\ntype = \"a\"\ncomponent = \"a.wasm\"\ncolour = \"red\"\n",
        ),
        ("b", "[agent]\ntype = 7\ncomponent = \"b.wasm\"\n"),
        ("c", "[agent]\ntype = \"dup\"\ncomponent = \"c.wasm\"\n"),
        ("d", "[agent]\ntype = \"dup\"\ncomponent = \"d.wasm\"\n"),
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
        std::fs::write(dir.join(d).join("plugin.toml"), m).unwrap();
    }
    let o = warren(&["validate", &dir.display().to_string()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 3, "one line per problem: {err}");
    assert!(
        err.contains("a/plugin.toml") && err.contains("colour"),
        "{err}"
    );
    assert!(
        err.contains("b/plugin.toml") && err.contains("invalid type"),
        "{err}"
    );
    assert!(err.contains("also claimed by"), "{err}");
    // A component that does not match its manifest (junk bytes).
    let bad = scratch("mismatch");
    std::fs::write(
        bad.join("plugin.toml"),
        "[agent]\ntype = \"x\"\ncomponent = \"x.wasm\"\n",
    )
    .unwrap();
    std::fs::write(bad.join("x.wasm"), b"not wasm").unwrap();
    let o = warren(&["run", &bad.display().to_string(), "--until-idle"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("plugin `x`") && err.contains("not a WebAssembly"),
        "{err}"
    );
}

#[test]
fn inspect_and_validate_the_example_plugins() {
    let o = warren(&["inspect", &plugin("echo")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("agent type  echo") && out.contains("Ping"),
        "{out}"
    );
    assert!(
        out.contains("warren:agent/host") && out.contains("warren:agent/agent"),
        "{out}"
    );
    assert!(out.contains("calls       synchronous"), "{out}");
    assert!(
        out.contains("instances   shared, up to 256 agents each"),
        "{out}"
    );
    let o = warren(&["inspect", &plugin("relay")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("calls       on a fiber"), "{out}");
    assert!(out.contains("instances   one per agent"), "{out}");
    let o = warren(&["validate", &built_plugins().display().to_string()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok")).count(),
        5,
        "{out}"
    );
}

/// A machine whose toolchain was installed without the wasm target (rust-toolchain.toml's
/// `targets` are added only when rustup installs the toolchain) gets it from `warren build`,
/// which asks rustup for it in the plugin's directory, where its toolchain file applies.
#[cfg(unix)]
#[test]
fn build_asks_rustup_for_the_wasm_target_in_the_plugins_directory() {
    use std::os::unix::fs::PermissionsExt;
    let bin = scratch("fake-rustup");
    let log = bin.join("calls");
    let fake = bin.join("rustup");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$PWD $*\" >> '{}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let echo = root().join("plugins").join("echo");
    let target = root().join("target").join("plugins");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["build", &echo.display().to_string(), "--target-dir"])
        .arg(&target)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .output()
        .expect("running warren");
    assert!(o.status.success(), "{:?}", text(&o));
    let calls = std::fs::read_to_string(&log).expect("warren build ran rustup");
    assert_eq!(
        calls.trim(),
        format!("{} target add wasm32-wasip2", echo.display())
    );
}

#[test]
fn a_new_plugin_builds_and_runs_first_time() {
    let dir = scratch("new");
    let o = warren(&["new", "hello", "--dir", &dir.display().to_string()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let p = dir.join("hello").display().to_string();
    let target = root().join("target").join("plugins").display().to_string();
    let o = warren(&["build", &p, "--target-dir", &target]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = warren(&[
        "run",
        &p,
        "--send",
        "hello/x",
        "Greet",
        r#"{"name": "Ada"}"#,
        "--until-idle",
        "-q",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("Hello, Ada! (hello/x says so, greeting #1)"),
        "{out}"
    );
    let o = warren(&["new", "9lives"]);
    assert_eq!(o.status.code(), Some(2));
}

#[cfg(unix)]
#[test]
fn ctrl_c_finishes_in_flight_work_and_writes_the_state() {
    use std::io::BufRead;
    let dir = scratch("sigint");
    let file = dir.join("state.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "run",
            &plugin("counter"),
            "--send",
            "counter/c",
            "Inc",
            r#"{"by": 7}"#,
            "--state",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the message has been answered (the runtime is now serving), then interrupt.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains(r#"{"i":7}"#), "{first}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "interrupted runs exit 1: {err}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(doc["counter/c"]["counter"], 7);
}
