//! The memory every live wasm agent maps: its component's data image.
//!
//! Each instance maps its component's initialised data (rodata and data) copy-on-write from one
//! shared file. A read of any of it makes the kernel map the whole image into that instance (fault-
//! around maps up to 64 KiB of neighbouring cached pages), so RSS counts the whole image once per
//! live agent. With the image at 21 KiB a live idle echo agent is 57 KiB of RSS; the budget is 64
//! KiB (issue #6). serde_json from 1.0.146 formats floats in its error messages with `zmij`, whose
//! 17 KiB table then sits in every guest's image (echo's was 37.5 KiB); the guest SDK stays on an
//! earlier serde_json, with ryu's small tables, and this test keeps it that way.

use super::guests;

/// Bytes of initialised data in all core modules of a component.
fn data_image_bytes(component: &str) -> usize {
    let bytes = std::fs::read(component).unwrap_or_else(|e| panic!("{component}: {e}"));
    let mut total = 0;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::DataSection(reader) =
            payload.unwrap_or_else(|e| panic!("{component}: {e}"))
        {
            for data in reader {
                total += data.expect("a data segment").data.len();
            }
        }
    }
    total
}

/// The most initialised data an example plugin may have: with 7 pages (28 KiB) of image, the
/// pooled table pages, guest stack and heap pages and wasmtime's per-store heap, an idle agent
/// stays under 64 KiB of RSS.
const BUDGET: usize = 28 << 10;

#[test]
fn example_plugins_data_images_fit_the_per_agent_memory_budget() {
    for (name, component) in [
        ("echo", guests::ECHO),
        ("counter", guests::COUNTER),
        ("worker", guests::WORKER),
        ("monitor", guests::MONITOR),
        ("relay", guests::RELAY),
    ] {
        let size = data_image_bytes(component);
        assert!(
            size > 0,
            "{name}: no data segments found: the parse is wrong"
        );
        assert!(
            size <= BUDGET,
            "{name}: {size} bytes of initialised data, budget {BUDGET}: every live agent maps \
             all of it (look for a dependency that brought in a large table, e.g. serde_json's \
             float formatting)"
        );
    }
}
