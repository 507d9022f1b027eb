//! The "Complete Example" of AutoGen's agent-runtime page, with native Rust agents: a Worker
//! answers a `WorkRequest` while publishing four `ProgressEvent`s that a Monitor prints.
//!
//! Run it with `cargo run -p warren-core --example complete_example`. The same two agents exist as
//! wasm plugins in `plugins/worker` and `plugins/monitor`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_core::{
    AgentId, AgentRuntime, AgentType, BoxError, MessageContext, RoutedAgent, Routes, Subscription,
    TopicId,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkRequest {
    pub work_id: String,
    pub data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkResponse {
    pub work_id: String,
    pub result: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub work_id: String,
    pub progress: f64,
}

/// Where the example prints: stdout for the binary, a buffer for the test that checks it.
pub type Output = Arc<Mutex<dyn Write + Send>>;

#[derive(Debug)]
pub struct Worker;

impl RoutedAgent for Worker {
    fn routes(r: &mut Routes<Self>) {
        r.rpc(|_: &mut Worker, m: &WorkRequest, ctx: &MessageContext| {
            Box::pin(async move {
                let topic = TopicId::new("progress", &m.work_id)?;
                for progress in [0.25, 0.5, 0.75, 1.0] {
                    let event = ProgressEvent {
                        work_id: m.work_id.clone(),
                        progress,
                    };
                    ctx.publish(event, &topic).await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok::<_, BoxError>(WorkResponse {
                    work_id: m.work_id.clone(),
                    result: format!("Processed: {}", m.data),
                })
            })
        });
    }

    fn description(&self) -> String {
        "Worker agent".to_owned()
    }
}

struct Monitor {
    progress_log: Vec<(String, f64)>,
    out: Output,
}

impl RoutedAgent for Monitor {
    fn routes(r: &mut Routes<Self>) {
        r.event_sync(|me: &mut Monitor, m: &ProgressEvent, _ctx| {
            me.progress_log.push((m.work_id.clone(), m.progress));
            let mut out = me.out.lock().map_err(|_| "output lock poisoned")?;
            writeln!(out, "Progress: {} - {:.1}%", m.work_id, m.progress * 100.0)?;
            Ok::<_, BoxError>(())
        });
    }

    fn description(&self) -> String {
        "Monitor agent".to_owned()
    }
}

/// Registers both agents, sends the work request, prints the result, and shuts down cleanly.
pub async fn run(out: Output) -> Result<(), BoxError> {
    let runtime = AgentRuntime::new();
    runtime.register_routed("worker", |_| Worker).await?;
    let monitor_out = out.clone();
    runtime
        .register_routed("monitor", move |_| Monitor {
            progress_log: Vec::new(),
            out: monitor_out.clone(),
        })
        .await?;
    runtime
        .add_subscription(Subscription::type_subscription(
            "progress",
            AgentType::new("monitor")?,
        ))
        .await?;
    runtime.start()?;

    let response: WorkResponse = runtime
        .send(
            WorkRequest {
                work_id: "task-1".into(),
                data: "sample data".into(),
            },
            &AgentId::new("worker", "default")?,
        )
        .await?;
    writeln!(
        out.lock().map_err(|_| "output lock poisoned")?,
        "Result: {}",
        response.result
    )?;

    runtime.stop_when_idle().await?;
    runtime.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run(Arc::new(Mutex::new(std::io::stdout()))).await
}
