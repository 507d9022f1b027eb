//! `worker`: the Worker of AutoGen's Complete Example. Answers a `WorkRequest` with a
//! `WorkResponse` after publishing four `ProgressEvent`s to topic `progress/<work_id>`, 100 ms
//! apart.

use serde::{Deserialize, Serialize};
use warren_guest::{Agent, Context, Error, Handlers, Level, TopicId};

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkRequest {
    pub work_id: String,
    pub data: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkResponse {
    pub work_id: String,
    pub result: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub work_id: String,
    pub progress: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Worker {}

impl Agent for Worker {
    fn description() -> String {
        "Worker agent".into()
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(|_: &mut Worker, m: WorkRequest, ctx: &Context| {
            let topic = TopicId::new("progress", m.work_id.clone());
            for progress in [0.25, 0.5, 0.75, 1.0] {
                let event = ProgressEvent {
                    work_id: m.work_id.clone(),
                    progress,
                };
                ctx.publish(&event, &topic)?;
                // As in AutoGen's example: give subscribers time to print. The sleep suspends
                // only this instance; the host keeps running the monitor meanwhile.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            warren_guest::log(Level::Info, &format!("processed {}", m.work_id));
            Ok::<_, Error>(WorkResponse {
                result: format!("Processed: {}", m.data),
                work_id: m.work_id,
            })
        });
    }
}

warren_guest::export_agent!(Worker);
