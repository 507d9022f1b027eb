//! Issue #2 point 7: the seed's Complete Example runs natively and prints what AutoGen prints.

use std::sync::{Arc, Mutex};

use crate::common::within;

#[allow(dead_code)]
#[path = "../../runtime/core/examples/complete_example.rs"]
mod example;

#[tokio::test]
async fn complete_example_prints_progress_then_result() {
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    within(example::run(buf.clone())).await.unwrap();
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text,
        "Progress: task-1 - 25.0%\nProgress: task-1 - 50.0%\nProgress: task-1 - 75.0%\n\
         Progress: task-1 - 100.0%\nResult: Processed: sample data\n"
    );
}
