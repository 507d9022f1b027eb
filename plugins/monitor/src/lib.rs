//! `monitor`: the Monitor of AutoGen's Complete Example. Logs every `ProgressEvent` it receives
//! (as `Progress: <id> - <pct>%`) and keeps them in its state.

use serde::{Deserialize, Serialize};
use warren_guest::{Agent, Context, Handlers, Level};

#[derive(Debug, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub work_id: String,
    pub progress: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Monitor {
    progress_log: Vec<(String, f64)>,
}

impl Agent for Monitor {
    fn description() -> String {
        "Monitor agent".into()
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.event(|me: &mut Monitor, m: ProgressEvent, _: &Context| {
            let line = format!("Progress: {} - {:.1}%", m.work_id, m.progress * 100.0);
            warren_guest::log(Level::Info, &line);
            me.progress_log.push((m.work_id, m.progress));
            Ok(())
        });
    }
}

warren_guest::export_agent!(Monitor);
