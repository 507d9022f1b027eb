//! `warren run`: load plugin directories, start the runtime, deliver the initial messages, print
//! the answers, and shut down cleanly (Ctrl-C included: in-flight messages finish or fail, and the
//! `--state` file is written).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use warren_runtime::discover::{check_components, discover};
use warren_runtime::{
    AgentId, AgentRuntime, BoxError, Intervention, InterventionHandler, Message, Payload,
    PublishContext, SavedState, SendOptions, TopicId, WasmHost, async_trait,
};

use crate::output::{self, body, fatal, line};
use crate::{EXIT_MESSAGE_FAILED, EXIT_SETUP};

/// Arguments of `warren run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directories to search for plugins (folders with a plugin.toml).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Send a message and print the answer: AGENT (type/key), message TYPE name, JSON body.
    #[arg(long, num_args = 3, value_names = ["AGENT", "TYPE", "JSON"], action = clap::ArgAction::Append)]
    pub send: Vec<String>,
    /// Publish a message: TOPIC (type/source), message TYPE name, JSON body.
    #[arg(long, num_args = 3, value_names = ["TOPIC", "TYPE", "JSON"], action = clap::ArgAction::Append)]
    pub publish: Vec<String>,
    /// Also read messages from stdin, one JSON object per line:
    /// {"send": "type/key" | "publish": "type/source", "type": "Name", "body": {...}}.
    #[arg(long)]
    pub stdin: bool,
    /// Exit once every message has been handled and the runtime is idle.
    #[arg(long)]
    pub until_idle: bool,
    /// Print every published event as it is routed.
    #[arg(long)]
    pub events: bool,
    /// Load agent state from FILE at start (if it exists) and save it there at exit, in AutoGen's
    /// `save_state` format.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

/// One initial message.
#[derive(Debug, Clone)]
pub enum Order {
    Send { to: AgentId, message: Payload },
    Publish { topic: TopicId, message: Payload },
}

fn payload(type_name: &str, json_text: &str, what: &str) -> anyhow::Result<Payload> {
    let value: Value = serde_json::from_str(json_text)
        .with_context(|| format!("{what}: the body is not valid JSON: {json_text}"))?;
    if type_name.is_empty() {
        bail!("{what}: the message type name is empty");
    }
    Ok(Payload::json(type_name, serde_json::to_vec(&value)?))
}

/// Parses `--send`/`--publish` triples, in command-line order.
fn orders(args: &RunArgs) -> anyhow::Result<Vec<Order>> {
    let matches = <crate::Cli as clap::CommandFactory>::command().get_matches();
    let run = matches.subcommand_matches("run");
    let index = |name: &str| -> Vec<usize> {
        run.and_then(|m| m.indices_of(name))
            .map(|i| i.step_by(3).collect())
            .unwrap_or_default()
    };
    let mut out: Vec<(usize, Order)> = Vec::new();
    for (n, chunk) in args.send.chunks(3).enumerate() {
        let what = format!("--send {}", chunk[0]);
        let to: AgentId = chunk[0]
            .parse()
            .with_context(|| format!("{what}: expected an agent id as type/key"))?;
        let at = index("send").get(n).copied().unwrap_or(n);
        out.push((
            at,
            Order::Send {
                to,
                message: payload(&chunk[1], &chunk[2], &what)?,
            },
        ));
    }
    for (n, chunk) in args.publish.chunks(3).enumerate() {
        let what = format!("--publish {}", chunk[0]);
        let topic: TopicId = chunk[0]
            .parse()
            .with_context(|| format!("{what}: expected a topic as type/source"))?;
        let at = index("publish").get(n).copied().unwrap_or(usize::MAX - n);
        out.push((
            at,
            Order::Publish {
                topic,
                message: payload(&chunk[1], &chunk[2], &what)?,
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, o)| o).collect())
}

/// Parses one stdin line.
fn stdin_order(text: &str, lineno: usize) -> anyhow::Result<Order> {
    let what = format!("stdin line {lineno}");
    let v: Value = serde_json::from_str(text).with_context(|| format!("{what}: not JSON"))?;
    let type_name = v["type"]
        .as_str()
        .ok_or_else(|| anyhow!("{what}: missing \"type\" (the message type name)"))?;
    let body = serde_json::to_string(v.get("body").unwrap_or(&json!({})))?;
    let message = payload(type_name, &body, &what)?;
    if let Some(to) = v["send"].as_str() {
        let to = to
            .parse()
            .with_context(|| format!("{what}: \"send\" must be type/key"))?;
        Ok(Order::Send { to, message })
    } else if let Some(topic) = v["publish"].as_str() {
        let topic = topic
            .parse()
            .with_context(|| format!("{what}: \"publish\" must be type/source"))?;
        Ok(Order::Publish { topic, message })
    } else {
        bail!("{what}: needs \"send\": \"type/key\" or \"publish\": \"type/source\"")
    }
}

/// Prints published events (`--events`).
struct EventPrinter;

#[async_trait]
impl InterventionHandler for EventPrinter {
    async fn on_publish(&self, m: Message, ctx: &PublishContext) -> Result<Intervention, BoxError> {
        let (type_name, b) = match m.to_payload(None) {
            Ok(p) => (p.type_name.clone(), body(&p)),
            Err(_) => (m.type_name(), json!(null)),
        };
        let from = ctx.sender.as_ref().map(|s| s.to_string());
        line(
            "event",
            json!({ "topic": ctx.topic_id.to_string(), "from": from, "type": type_name, "body": b }),
            format!(
                "event {} from {}: {type_name} {b}",
                ctx.topic_id,
                from.as_deref().unwrap_or("outside")
            ),
        );
        Ok(Intervention::Forward(m))
    }
}

/// Loads every plugin under `dirs` into a new runtime. Setup errors are printed; `Err` carries the
/// exit code.
pub async fn load_all(dirs: &[PathBuf], events: bool) -> Result<AgentRuntime, u8> {
    let found = match discover(dirs) {
        Ok(f) => f,
        Err(errors) => {
            for e in errors {
                fatal(&e.to_string());
            }
            return Err(EXIT_SETUP);
        }
    };
    let missing = check_components(&found);
    if !missing.is_empty() {
        for e in missing {
            fatal(&e.to_string());
        }
        return Err(EXIT_SETUP);
    }
    let host = match WasmHost::new() {
        Ok(h) => h,
        Err(e) => {
            fatal(&e.to_string());
            return Err(EXIT_SETUP);
        }
    };
    let mut builder = AgentRuntime::builder();
    if events {
        builder = builder.intervention_handler(EventPrinter);
    }
    let runtime = builder.build();
    let bar = ProgressBar::new(found.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} loading plugins {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut failed = false;
    for p in &found {
        bar.set_message(p.manifest.agent.agent_type.clone());
        match host
            .load_with_component(p.manifest.clone(), &p.manifest_path, &p.component_path)
            .await
        {
            Ok(loaded) => {
                if let Err(e) = host.register(&runtime, &loaded).await {
                    fatal(&e.to_string());
                    failed = true;
                }
                tracing::info!(
                    plugin = %loaded.manifest.agent.agent_type,
                    cached = loaded.from_cache,
                    "loaded {}",
                    loaded.component_path.display()
                );
            }
            Err(e) => {
                fatal(&e.to_string());
                failed = true;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failed { Err(EXIT_SETUP) } else { Ok(runtime) }
}

/// Delivers one order; prints the answer. Returns false if it failed.
async fn deliver(runtime: &AgentRuntime, order: Order) -> bool {
    match order {
        Order::Send { to, message } => {
            let type_name = message.type_name.clone();
            match runtime
                .send_message(
                    Message::from_payload(message),
                    to.clone(),
                    SendOptions::default(),
                )
                .await
            {
                Ok(answer) => {
                    let (t, b) = match runtime.serialize(&answer) {
                        Ok(p) if !answer.is_empty() => (p.type_name.clone(), body(&p)),
                        _ => ("()".to_owned(), json!(null)),
                    };
                    line(
                        "response",
                        json!({ "agent": to.to_string(), "request": type_name, "type": t, "body": b }),
                        format!("{to} answered {t} {b}"),
                    );
                    true
                }
                Err(e) => {
                    line(
                        "failed",
                        json!({ "agent": to.to_string(), "request": type_name, "error": e.to_string(), "error_kind": e.kind() }),
                        format!("{to} failed {type_name}: {e}"),
                    );
                    false
                }
            }
        }
        Order::Publish { topic, message } => {
            let type_name = message.type_name.clone();
            match runtime
                .publish_message(
                    Message::from_payload(message),
                    topic.clone(),
                    Default::default(),
                )
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    line(
                        "failed",
                        json!({ "topic": topic.to_string(), "request": type_name, "error": e.to_string(), "error_kind": e.kind() }),
                        format!("publish to {topic} failed: {e}"),
                    );
                    false
                }
            }
        }
    }
}

fn write_state(path: &Path, state: &SavedState) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// `warren run`.
pub async fn run(args: RunArgs) -> u8 {
    let orders = match orders(&args) {
        Ok(o) => o,
        Err(e) => {
            fatal(&format!("{e:#}"));
            return EXIT_SETUP;
        }
    };
    let runtime = match load_all(&args.dirs, args.events).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(path) = &args.state
        && path.exists()
    {
        let loaded = std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<SavedState>(&b)?));
        let result = match loaded {
            Ok(doc) => runtime.load_state(doc).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            fatal(&format!("--state {}: {e:#}", path.display()));
            return EXIT_SETUP;
        }
    }
    if let Err(e) = runtime.start() {
        fatal(&e.to_string());
        return EXIT_SETUP;
    }

    let work = {
        let runtime = runtime.clone();
        let stdin = args.stdin;
        async move {
            let mut ok = true;
            for order in orders {
                ok &= deliver(&runtime, order).await;
            }
            if stdin {
                let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                let mut n = 0;
                while let Ok(Some(text)) = lines.next_line().await {
                    n += 1;
                    if text.trim().is_empty() {
                        continue;
                    }
                    match stdin_order(&text, n) {
                        Ok(order) => ok &= deliver(&runtime, order).await,
                        Err(e) => {
                            line(
                                "failed",
                                json!({ "error": format!("{e:#}") }),
                                format!("{e:#}"),
                            );
                            ok = false;
                        }
                    }
                }
            }
            ok
        }
    };
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = tokio::select! {
        // Polled first: `ctrl_c` installs its handler when first polled, and the work may print
        // its answers within its own first poll. An interrupt right after the first answer must
        // find the handler there (and finish and save), not the default action (exit at once).
        biased;
        _ = tokio::signal::ctrl_c() => {
            interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!("interrupted: finishing in-flight messages");
            false
        }
        ok = async {
            let ok = work.await;
            if args.until_idle {
                ok
            } else {
                // Keep serving until interrupted.
                std::future::pending::<()>().await;
                ok
            }
        } => ok,
    };
    // Shut down: let in-flight work finish (bounded), then stop; stop() fails whatever is left.
    let drained = tokio::time::timeout(Duration::from_secs(10), runtime.stop_when_idle()).await;
    let mut background_ok = true;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            fatal(&e.to_string());
            background_ok = false;
        }
        Err(_) => {
            tracing::warn!("still busy after 10 s; stopping");
            let _ = runtime.stop().await;
        }
    }
    if let Some(path) = &args.state {
        match runtime.save_state().await {
            Ok(state) => {
                if let Err(e) = write_state(path, &state) {
                    fatal(&format!("--state: {e:#}"));
                    return EXIT_SETUP;
                }
                tracing::info!(agents = state.len(), "state written to {}", path.display());
            }
            Err(e) => {
                fatal(&format!("--state: saving failed: {e}"));
                return EXIT_MESSAGE_FAILED;
            }
        }
    }
    let _ = runtime.close().await;
    if ok && background_ok && !interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        0
    } else {
        EXIT_MESSAGE_FAILED
    }
}

/// The main job: builds the example worker and monitor plugins and runs AutoGen's Complete
/// Example on them (the Worker answers after four progress events that the Monitor logs).
pub async fn demo() -> u8 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let plugins = ["worker", "monitor"].map(|p| root.join("plugins").join(p));
    if let Err(e) = crate::build::build_dirs(&plugins, Some(&root.join("target").join("plugins"))) {
        fatal(&format!("{e:#}"));
        return EXIT_SETUP;
    }
    output::line(
        "info",
        json!({ "message": "running AutoGen's Complete Example on the wasm worker and monitor plugins" }),
        "Running AutoGen's Complete Example on the wasm `worker` and `monitor` plugins:".to_owned(),
    );
    run(RunArgs {
        dirs: plugins.to_vec(),
        send: vec![
            "worker/default".into(),
            "WorkRequest".into(),
            r#"{"work_id": "task-1", "data": "sample data"}"#.into(),
        ],
        publish: vec![],
        stdin: false,
        until_idle: true,
        events: true,
        state: None,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_lines_parse_or_name_the_problem() {
        let o = stdin_order(r#"{"send": "echo/k", "type": "Ping", "body": {"i": 1}}"#, 1).unwrap();
        assert!(matches!(o, Order::Send { ref to, .. } if to.to_string() == "echo/k"));
        let o = stdin_order(r#"{"publish": "news/s", "type": "News"}"#, 2).unwrap();
        assert!(matches!(o, Order::Publish { ref message, .. } if message.data == b"{}"));
        let e = stdin_order(r#"{"type": "X"}"#, 3).unwrap_err().to_string();
        assert!(e.contains("stdin line 3") && e.contains("\"send\""), "{e}");
        let e = stdin_order("not json", 4).unwrap_err().to_string();
        assert!(e.contains("stdin line 4"), "{e}");
    }

    #[test]
    fn bodies_must_be_json() {
        let e = payload("T", "{oops", "--send a/b").unwrap_err().to_string();
        assert!(
            e.contains("--send a/b") && e.contains("not valid JSON"),
            "{e}"
        );
    }
}
